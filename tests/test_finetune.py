"""Fine-tuning on text classification: masked- and causal-LM exports, stock pipeline, metrics, errors.

Two tiny exports are pretrained once per session. The GPT one trains long enough (800 steps of a
64-wide model, ~30 s) to learn the story world, which the pretrained-vs-scratch guard relies on.
"""

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import tiny_overrides
from nlpssl.errors import NlpsslError
from nlpssl.recipe import FinetuneSection, RecipeError, load_recipe, recipe_from_dict

# `<where>: <what is wrong> (got <value>). <how to fix>.` (STYLE.md)
ERROR_FORMAT = re.compile(r"^\S.*: .+ \(got .+\)\.? .+\.$", re.S)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pretrain(tmp_path: Path, name: str, **extra) -> Path:
    from nlpssl.pretrain import pretrain

    return pretrain(load_recipe(name, tiny_overrides(tmp_path, **extra))).export_dir


@pytest.fixture(scope="session")
def bert_export(tmp_path_factory):
    return _pretrain(tmp_path_factory.mktemp("bert"), "bert-tiny")


@pytest.fixture(scope="session")
def gpt_export(tmp_path_factory):
    # Long enough to reach perplexity ~8 on the stories (MLM at this size needs far longer). No time
    # budget: gpt-tiny's 7 minutes would decay the rate by wall time on a loaded machine, and the
    # pretrained-vs-scratch margin below fell to 0.655 vs 0.630 when the suite ran beside another.
    return _pretrain(
        tmp_path_factory.mktemp("gpt"), "gpt-tiny", **{
            "model.hidden_size": 64, "model.intermediate_size": 128, "data.block_size": 64,
            "data.builtin_stories": 2000, "tokenizer.vocab_size": 1000, "training.max_steps": 800,
            "training.per_device_train_batch_size": 16, "training.warmup_steps": 50,
            "training.eval_steps": 800, "training.save_steps": 800, "training.logging_steps": 100,
            "training.budget_minutes": "null",
            "speed.bf16": "'off'",
        })


def ft_recipe(model, out: Path, task=None, init="pretrained", bf16="off", **training):
    """A small fine-tuning recipe (what a YAML file would hold); bf16 off: slower at width 32-64 on CPU."""
    train = {"output_dir": str(out), "num_train_epochs": 1, "per_device_train_batch_size": 16,
             "per_device_eval_batch_size": 64, "learning_rate": 2e-3, "logging_steps": 2,
             "disable_tqdm": True, "seed": 42}
    train.update(training)
    return recipe_from_dict(
        {"kind": "finetune", "model": str(model), "init": init, "speed": {"bf16": bf16},
         "task": {"builtin_train_size": 48, "builtin_eval_size": 32, **(task or {})}, "training": train},
        name="ft-test",
    )


def write_tsv(path: Path, rows, header=("sentence", "label")) -> Path:
    # Plain tab-joined lines, as GLUE writes them (no quoting).
    path.write_text("".join("\t".join(map(str, row)) + "\n" for row in [header, *rows]))
    return path


def sentiment_rows(n: int, offset: int = 0):
    # Bare quotes, as in GLUE TSVs: the .tsv reader must not treat them as quoting.
    return [(f'"{w}" it was {"great" if i % 2 else "awful"} number {i + offset}', i % 2)
            for i, w in zip(range(n), ["a", "b", "c", "d"] * n)]


# ------------------------------------------------------------------------------------------------
# End to end


def test_masked_lm_export_from_tsv_with_integer_labels(tmp_path, bert_export, capsys):
    from transformers import AutoConfig, AutoTokenizer, pipeline

    from nlpssl.cli import main
    from nlpssl.demo import classify
    from nlpssl.finetune import finetune, finetune_arguments

    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(60))
    task = {"source": str(train), "text_column": "sentence", "label_names": ["negative", "positive"],
            "validation_fraction": 0.2, "test_fraction": 0.2}
    # speed.bf16=on: the bf16 autocast path runs here whatever the CPU (slow but correct without AVX512-BF16).
    recipe = ft_recipe(bert_export, tmp_path / "ft", task, bf16="on", max_steps=6)
    assert finetune_arguments(recipe)[0].bf16, "the fine-tuning Trainer is given bf16"
    result = finetune(recipe)
    m = result.metrics
    for key in ("eval_accuracy", "eval_macro_f1", "test_accuracy", "test_macro_f1", "train_runtime_s"):
        assert 0 <= m[key] <= 1 or key == "train_runtime_s", key
    assert m["steps"] == 6 and m["labels"] == ["negative", "positive"]
    assert (m["train_examples"], m["validation_examples"], m["test_examples"]) == (36, 12, 12)  # 0.2 of 60 each
    per_class = m["report"]["test"]["per_class"]
    assert set(per_class) == {"negative", "positive"} and {"precision", "recall"} <= set(per_class["positive"])
    out = result.output_dir
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == m["test_accuracy"]
    assert (out / "confusion_matrix.png").stat().st_size > 1000 and (out / "recipe.yaml").is_file()

    export = result.export_dir
    assert not list(export.parent.glob(".export.tmp-*")), "the export is written atomically"
    config = AutoConfig.from_pretrained(export)
    assert config.id2label == {0: "negative", 1: "positive"}
    assert config.architectures[0].endswith("ForSequenceClassification")  # whatever encoder bert-tiny names
    card = (export / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: text-classification" in card
    preds = pipeline("text-classification", model=str(export))("it was great", top_k=None)
    assert {p["label"] for p in preds} == {"negative", "positive"}
    scores = classify(export, "it was awful")
    assert [s.label for s in scores] != [] and abs(sum(s.score for s in scores) - 1) < 1e-4
    capsys.readouterr()  # drop the training logs
    assert main(["classify", str(export), "it was great", "--json", "--top-k", "1"]) == 0
    said = capsys.readouterr()
    assert json.loads(said.out)[0]["label"] in ("negative", "positive") and "tokens" not in said.err
    tokenizer = AutoTokenizer.from_pretrained(export)
    limit, long = tokenizer.model_max_length, "it was great " * tokenizer.model_max_length
    assert main(["classify", str(export), long, "--json"]) == 0
    said = capsys.readouterr()
    assert len(json.loads(said.out)) == 2  # stdout stays the answer; the remark goes to stderr
    n = len(tokenizer(long, verbose=False)["input_ids"])
    assert f"classify: the input has {n} tokens and the classifier reads its first {limit}" in said.err


def test_inputs_longer_than_max_length_are_counted_and_said_once(bert_export, capsys):
    from nlpssl.finetune import encode_texts, load_classifier_tokenizer, report_truncation
    from nlpssl.labelled import Split

    tokenizer = load_classifier_tokenizer(bert_export)
    texts = ["the cat sat on the mat . " * k for k in (1, 2, 6, 12)]
    split = Split(texts, ["a"] * 4)
    full = [len(ids) for ids in tokenizer(texts)["input_ids"]]  # short enough for the tokenizer's own limit
    limit = sorted(full)[1]  # the two longest exceed it
    capsys.readouterr()
    assert report_truncation(split, tokenizer, limit, "train") == 2
    said = capsys.readouterr().out
    assert f"2 of 4 train inputs (50%) are longer than task.max_length ({limit} tokens; the longest has {max(full)})" in said
    assert f"Raise task.max_length (up to {tokenizer.model_max_length})" in said
    report_truncation(split, tokenizer, limit, "train")
    assert capsys.readouterr().out == "", "the same report is printed once per process"
    # what the model then reads: exactly the counted rows are cut
    assert [len(x) for x in encode_texts(split, tokenizer, limit)["input_ids"]] == [min(n, limit) for n in full]
    pairs = Split(texts[:2], ["a", "b"], pairs=texts[2:])
    assert report_truncation(pairs, tokenizer, limit, "test") == 2  # the pair's tokens together
    assert report_truncation(split, tokenizer, 512, "train") == 0
    tokenizer.model_max_length = limit  # the model's own limit binds: raising task.max_length cannot help
    capsys.readouterr()
    assert report_truncation(split, tokenizer, 512, "train") == 2
    said = capsys.readouterr().out
    assert "longer than the model's length (tokenizer model_max_length)" in said and "The model reads no more" in said


def test_a_classifier_of_text_pairs_is_used_with_pairs(tmp_path, bert_export, recwarn):
    """classify takes the second text of a pair model (pipeline's text/text_pair), and refuses one text alone."""
    import torch
    from transformers import pipeline

    from nlpssl.demo import classify
    from nlpssl.finetune import finetune

    rows = [(f"the film {i}", f"it was {'great' if i % 2 else 'awful'}", i % 2) for i in range(60)]
    train = write_tsv(tmp_path / "pairs.tsv", rows, header=("first", "second", "label"))
    task = {"source": str(train), "text_column": "first", "text_pair_column": "second",
            "validation_fraction": 0.2, "test_fraction": 0.2}
    export = finetune(ft_recipe(bert_export, tmp_path / "ft", task, max_steps=4)).export_dir
    if not torch.cuda.is_available():  # pinned memory is for GPU copies; on a CPU torch warned at each loader
        assert not [w for w in recwarn if "pin_memory" in str(w.message)]
    assert 'pipe({"text": "first text", "text_pair": "second text"}' in (export / "README.md").read_text()
    with pytest.raises(NlpsslError, match=r"fine-tuned on text pairs \(task.text_pair_column='second'\).* --pair"):
        classify(export, "the film 3")
    scores = classify(export, "the film 3", pair="it was great")
    stock = pipeline("text-classification", model=str(export))({"text": "the film 3", "text_pair": "it was great"},
                                                               top_k=None)
    assert {s.label: round(s.score, 5) for s in scores} == {p["label"]: round(p["score"], 5) for p in stock}
    with pytest.raises(NlpsslError, match=r"classify: text must be one string \(got list"):
        classify(export, ["a", "b"], pair="c")
    single = finetune(ft_recipe(bert_export, tmp_path / "ft1", {**task, "text_pair_column": None}, max_steps=2))
    with pytest.raises(NlpsslError, match=r"fine-tuned on single texts .* takes no --pair"):
        classify(single.export_dir, "the film 3", pair="it was great")


def test_causal_lm_export_and_pretraining_beats_scratch(tmp_path, gpt_export):
    """Pad token and [BOS]/[EOS] framing for decoders; the pretrained model wins by a margin."""
    from transformers import AutoConfig, AutoTokenizer, pipeline

    from nlpssl.finetune import finetune

    task = {"builtin_train_size": 400, "builtin_eval_size": 200, "early_stopping_patience": None}
    runs = {init: finetune(ft_recipe(gpt_export, tmp_path / init, task, init=init, num_train_epochs=5,
                                     logging_steps=25))
            for init in ("pretrained", "scratch")}
    export = runs["pretrained"].export_dir
    config = AutoConfig.from_pretrained(export)
    assert config.pad_token_id == 0 and config.architectures == ["GPT2ForSequenceClassification"]
    tok = AutoTokenizer.from_pretrained(export)
    ids = tok("Mia was glad.")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id, "the head reads [EOS] after the text"
    preds = pipeline("text-classification", model=str(export))(["Mia was glad.", "Tom felt sad."], top_k=None)
    assert all({p["label"] for p in row} == {"negative", "positive"} for row in preds)
    pre, scratch = (runs[i].metrics["test_accuracy"] for i in ("pretrained", "scratch"))
    # Measured 0.765 vs 0.63 (200 test examples); the margin leaves room for numeric drift.
    assert pre >= scratch + 0.05, f"pretrained {pre:.3f} vs scratch {scratch:.3f}"


def test_metrics_through_evaluate_offline_match_scikit_learn():
    import os

    import numpy as np
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    from nlpssl.metrics import METRICS_DIR, classification_scores, load_metric

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert type(load_metric("accuracy")).__module__.split(".")[-1] == "accuracy"
    assert (METRICS_DIR / "macro_f1" / "macro_f1.py").is_file()
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 4, 300)
    preds = np.where(rng.random(300) < 0.6, refs, rng.integers(0, 3, 300))  # class 3 never predicted
    s = classification_scores(preds.tolist(), refs.tolist(), ["a", "b", "c", "d"])
    assert s.accuracy == pytest.approx(accuracy_score(refs, preds))
    assert s.macro_f1 == pytest.approx(f1_score(refs, preds, average="macro", labels=[0, 1, 2, 3], zero_division=0))
    p, r, _, support = precision_recall_fscore_support(refs, preds, labels=[0, 1, 2, 3], zero_division=0)
    assert [s.per_class[n]["precision"] for n in "abcd"] == pytest.approx(p.tolist())
    assert [s.per_class[n]["recall"] for n in "abcd"] == pytest.approx(r.tolist())
    assert [s.per_class[n]["support"] for n in "abcd"] == support.tolist()
    assert s.confusion_matrix == confusion_matrix(refs, preds, labels=[0, 1, 2, 3]).tolist()


# ------------------------------------------------------------------------------------------------
# Data loading (no model needed)


def test_file_formats_labels_pairs_and_seeded_carving(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nlpssl.labelled import load_task_data

    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "y": ["yes", "no", "maybe"][i % 3]} for i in range(30)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    with (tmp_path / "d.csv").open("w", newline="") as f:
        csv.DictWriter(f, ["premise", "hypothesis", "y"]).writeheader()
        csv.DictWriter(f, ["premise", "hypothesis", "y"]).writerows(rows)
    for name in ("d.jsonl", "d.parquet", "d.csv"):
        task = FinetuneSection(source=str(tmp_path / name), text_column="premise", text_pair_column="hypothesis",
                               label_column="y", validation_fraction=0.2, test_fraction=0.2, seed=3)
        data = load_task_data(task)
        assert data.label_names == ["maybe", "no", "yes"], name
        sizes = {k: len(v) for k, v in data.splits.items()}
        assert sizes == {"train": 18, "validation": 6, "test": 6}, name
        assert sorted(data.splits["validation"].labels) == ["maybe", "maybe", "no", "no", "yes", "yes"]
        train = data.splits["train"]
        assert train.pairs[train.texts.index("p0")] == "h0"
        again = load_task_data(task)
        assert again.splits["test"].texts == data.splits["test"].texts, "carving is seeded"
    tsv = write_tsv(tmp_path / "t.tsv", sentiment_rows(12))
    data = load_task_data(FinetuneSection(source=str(tsv), text_column="sentence", max_train_examples=5))
    assert data.label_names == ["0", "1"] and len(data.splits["train"]) == 5
    assert data.splits["validation"].texts[0].startswith('"'), "bare quotes in a .tsv are text"


def test_labelled_files_are_read_as_pretraining_text_is(tmp_path):
    """One reader per format: compression, quoted .tsv fields (csv.writer, pandas), bad rows and files."""
    import lzma

    from nlpssl.labelled import load_task_data
    from nlpssl.sources import load_texts

    rows = [("review 0\twith a tab\nand a line break" if i == 0 else f"review {i}", i % 2) for i in range(20)]
    with (tmp_path / "quoted.tsv").open("w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows([("text", "label"), *rows])
    (tmp_path / "quoted.tsv.xz").write_bytes(lzma.compress((tmp_path / "quoted.tsv").read_bytes()))
    for name in ("quoted.tsv", "quoted.tsv.xz"):
        data = load_task_data(FinetuneSection(source=str(tmp_path / name)))
        assert sorted(data.splits["train"].texts + data.splits["validation"].texts) == sorted(r[0] for r in rows)
        assert load_texts(tmp_path / name)["text"] == [r[0] for r in rows], "pretraining reads the same texts"
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\nfine,1\nnot, quoted,0\n")
    for read in (lambda: load_task_data(FinetuneSection(source=str(ragged))), lambda: load_texts(ragged)):
        raises(read, r"ragged\.csv:3: expected 2 fields like the header \['text', 'label'\] \(got 3\)\. Fix that line")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    raises(lambda: load_task_data(FinetuneSection(source=str(tmp_path / "broken.parquet"))),
           r"broken\.parquet: not a readable Parquet file")


def test_builtin_set_has_disjoint_splits():
    from nlpssl.labelled import load_task_data

    data = load_task_data(FinetuneSection(builtin_train_size=50, builtin_eval_size=20))
    assert data.label_names == ["negative", "positive"]
    assert not set(data.splits["train"].texts) & set(data.splits["test"].texts)


# ------------------------------------------------------------------------------------------------
# Errors: each says where, what (with the value) and how to fix it


def raises(fn, match: str) -> str:
    with pytest.raises(NlpsslError) as info:
        fn()
    msg = str(info.value)
    assert re.search(match, msg), msg
    assert ERROR_FORMAT.match(msg), f"not in the house error format: {msg}"
    return msg


def test_missing_label_column_lists_columns_and_suggests(tmp_path, bert_export):
    from nlpssl.finetune import finetune

    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(20))
    task = {"source": str(train), "text_column": "sentence", "label_column": "labels"}
    msg = raises(lambda: finetune(ft_recipe(bert_export, tmp_path / "ft", task)), r"no label column 'labels'")
    assert "(got columns ['sentence', 'label'])" in msg and "Did you mean 'label'?" in msg
    assert "task.label_column" in msg
    raises(lambda: finetune(ft_recipe(bert_export, tmp_path / "ft2", {**task, "label_column": "label",
                                                                       "text_column": "text"})),
           r"no text column 'text'.*task.text_column")


def test_single_class_and_unseen_labels(tmp_path, bert_export):
    from nlpssl.finetune import finetune

    one = write_tsv(tmp_path / "one.tsv", [(f"text {i}", "pos") for i in range(10)])
    raises(lambda: finetune(ft_recipe(bert_export, tmp_path / "a", {"source": str(one), "text_column": "sentence"})),
           r"single class \(got only 'pos' in \d+ rows\)")
    train = write_tsv(tmp_path / "train.tsv", [(f"t {i}", ["pos", "neg"][i % 2]) for i in range(10)])
    dev = write_tsv(tmp_path / "dev.tsv", [("x", "pos"), ("y", "neutral"), ("z", "angry")])
    task = {"source": str(train), "validation_source": str(dev), "text_column": "sentence"}
    msg = raises(lambda: finetune(ft_recipe(bert_export, tmp_path / "b", task)),
                 r"validation labels absent from the training split \(got \['angry', 'neutral'\]")
    assert "dev.tsv" in msg
    task = {"source": str(train), "test_source": str(dev), "text_column": "sentence"}
    raises(lambda: finetune(ft_recipe(bert_export, tmp_path / "c", task)), r"test labels absent")


def test_model_folder_errors(tmp_path, bert_export):
    from nlpssl.finetune import finetune

    no_tok = tmp_path / "no-tokenizer"
    no_tok.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(bert_export / name, no_tok / name)
    raises(lambda: finetune(ft_recipe(no_tok, tmp_path / "a")), r"holds no tokenizer .*nlpssl export RUN_DIR OUT_DIR")
    not_export = tmp_path / "not-export"
    not_export.mkdir()
    (not_export / "notes.txt").write_text("hi")
    raises(lambda: finetune(ft_recipe(not_export, tmp_path / "b")),
           r"is not an export or Hub-format model folder: no config.json \(got files \['notes.txt'\]\)")
    raises(lambda: finetune(ft_recipe(tmp_path / "missing", tmp_path / "c")), r"model: folder not found")


def test_other_errors(tmp_path, bert_export):
    from nlpssl.demo import classify
    from nlpssl.finetune import finetune

    raises(lambda: classify(bert_export, "hello"), r"not a text classifier \(got architectures \['\w+ForMaskedLM'\]\)")
    raises(lambda: finetune(ft_recipe(bert_export, tmp_path / "a", {"source": "hub:nobody/nothing"})),
           r"cannot reach the Hugging Face Hub|not found on the Hub")
    raises(lambda: finetune(ft_recipe(bert_export, tmp_path / "b", {"source": str(tmp_path / "x.txt")})),
           r"file not found")
    with pytest.raises(RecipeError, match=r"task.validation_fraction is out of range \(got 0.7\)"):
        finetune(ft_recipe(bert_export, tmp_path / "c", {"validation_fraction": 0.7}))
    with pytest.raises(NlpsslError, match=r"this is a pretrain recipe \(kind: pretrain\), and `nlpssl finetune` runs finetune recipes"):
        finetune(load_recipe("bert-tiny"))


def test_rows_without_text_are_refused_as_rows_without_labels_are(tmp_path):
    from nlpssl.labelled import load_task_data

    rows = [(f"text {i}" if i not in (3, 7) else "", i % 2) for i in range(20)]
    tsv = write_tsv(tmp_path / "t.tsv", rows)
    with pytest.raises(NlpsslError, match=r"t.tsv:5: row 4 and 1 more \(lines 9\) have no text in column 'sentence' "
                                          r"\(got ''\)\. Fill in or drop the rows without text\."):
        load_task_data(FinetuneSection(source=str(tsv), text_column="sentence"))
