"""A new user's own labelled files: many classes, messy labels, odd files; what finetune and probe make of them.

Each test writes a small file of the shape users bring and checks the tool reads it as they mean it,
or stops before any training with where, what and how to fix it.
"""

import csv
import re
from pathlib import Path

import pytest

from nlpssl.recipe import FinetuneSection
from test_finetune import raises  # errors in the house format: `<where>: <what> (got <value>). <how to fix>.`

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_csv(path: Path, rows, header=("text", "label"), delimiter=",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------------
# Many classes with few rows each


def test_many_small_classes_still_get_a_validation_split(tmp_path):
    """50 classes of 4 rows: 10% of each class rounds to 0, but 10% of 200 rows is 20."""
    from nlpssl.labelled import load_task_data

    rows = [(f"topic {i % 50} text {i}", f"class{i % 50}") for i in range(200)]
    data = load_task_data(FinetuneSection(source=str(write_csv(tmp_path / "many.csv", rows))))
    assert len(data.label_names) == 50
    assert len(data.splits["validation"]) == 20
    assert len(data.splits["train"]) == 180
    assert set(data.splits["validation"].labels) <= set(data.splits["train"].labels)


def test_carve_keeps_its_rows_where_rounding_per_class_works():
    """The top-up only acts where per-class rounding loses most of the share: common splits do not move."""
    from nlpssl.labelled import Split, carve

    split = Split([str(i) for i in range(45)], ["a"] * 20 + ["b"] * 25)
    keep, held = carve(split, 0.1, seed=0)
    assert len(held) == 2 + 3  # 2.0 of a, 2.5 -> 3 of b: the per-class half-up rule, unchanged
    one_each = Split([str(i) for i in range(6)], ["a", "b", "c", "d", "e", "f"])
    assert len(carve(one_each, 0.4, seed=0)[1]) == 0, "a class's last row stays in train"


def test_probe_with_many_classes_selects_on_rows_instead_of_crashing(tmp_path, mlm_export):
    """The selection rows of a budget were empty with 50 classes: an IndexError deep in the tokenizer."""
    from nlpssl.probe import probe

    rows = [(f"topic {i % 50} text {i}", f"class{i % 50}") for i in range(200)]
    task = write_csv(tmp_path / "many.csv", rows)
    report = probe(mlm_export, str(task), labels=["all"], seeds=1, epochs=1, learning_rates=[1e-3],
                   arms=["pretrained"], out_dir=tmp_path / "p")
    (run,) = report.runs
    assert run.labels == 150 and 0.0 <= run.selection_accuracy <= 1.0


# ------------------------------------------------------------------------------------------------
# Labels as users write them


def test_labels_that_differ_only_in_case_are_one_class_and_said_so(tmp_path, capsys):
    """'Positive', 'positive ' and 'POSITIVE' are one class, not three; the note names the spellings."""
    from nlpssl.labelled import load_task_data

    spellings = {0: ["negative", " Negative", "negative"], 1: ["Positive", "positive ", "POSITIVE", "positive"]}
    rows = [(f"text {i}", spellings[i % 2][i // 2 % len(spellings[i % 2])]) for i in range(40)]
    data = load_task_data(FinetuneSection(source=str(write_csv(tmp_path / "case.csv", rows))))
    assert data.label_names == ["negative", "positive"]  # the most common spelling of each
    assert set(data.splits["train"].labels) | set(data.splits["validation"].labels) == {"negative", "positive"}
    said = capsys.readouterr().out
    assert "differ only in case" in said and "'POSITIVE'" in said and "'positive'" in said
    named = load_task_data(FinetuneSection(source=str(tmp_path / "case.csv"), label_names=["NEGATIVE", "Positive"]))
    assert named.label_names == ["NEGATIVE", "Positive"]
    assert set(named.splits["train"].labels) == {"NEGATIVE", "Positive"}


def test_case_folding_reaches_a_separate_validation_file(tmp_path):
    from nlpssl.labelled import load_task_data

    train = write_csv(tmp_path / "train.csv", [(f"t {i}", ["pos", "neg"][i % 2]) for i in range(20)])
    dev = write_csv(tmp_path / "dev.csv", [("x", "Pos"), ("y", "NEG")])
    data = load_task_data(FinetuneSection(source=str(train), validation_source=str(dev)))
    assert data.splits["validation"].labels == ["pos", "neg"]


def test_whole_number_labels_written_as_1_0_are_the_integers_in_every_format(tmp_path):
    """pandas writes an int column with a blank as 1.0/0.0: in a .csv that was class '1.0', in a .jsonl class '1'."""
    import json

    from nlpssl.labelled import load_task_data

    rows = [(f"text {i}", f"{i % 2}.0") for i in range(20)]
    train = write_csv(tmp_path / "train.csv", rows)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": float(y)}) + "\n" for t, y in rows))
    dev = write_csv(tmp_path / "dev.csv", [("x", "1"), ("y", "0")])
    for name in ("train.csv", "train.jsonl"):
        data = load_task_data(FinetuneSection(source=str(tmp_path / name), validation_source=str(dev)))
        assert data.label_names == ["0", "1"], name
        assert data.splits["validation"].labels == ["1", "0"]
    named = load_task_data(FinetuneSection(source=str(train), label_names=["neg", "pos"]))
    assert set(named.splits["train"].labels) == {"neg", "pos"}
    assert load_task_data(FinetuneSection(source=str(write_csv(tmp_path / "words.csv", [
        (f"t {i}", ["1.5 stars", "2.0 stars"][i % 2]) for i in range(20)])))).label_names == ["1.5 stars", "2.0 stars"]
    scores = write_csv(tmp_path / "scores.csv", [(f"t {i}", f"{i % 5}.5") for i in range(20)])
    raises(lambda: load_task_data(FinetuneSection(source=str(scores))),
           r"scores.csv:2: row 1 has a fractional label \(got 0.5\)\. Classification needs class labels")


# ------------------------------------------------------------------------------------------------
# Files that are not what their name says


def test_a_semicolon_separated_csv_is_named_as_such(tmp_path):
    """Excel in many locales saves .csv with ';': the header was one column 'text;label', and the hint
    suggested it as the label column."""
    from nlpssl.labelled import load_task_data

    semi = write_csv(tmp_path / "excel.csv", [(f"t {i}", i % 2) for i in range(20)], delimiter=";")
    msg = raises(lambda: load_task_data(FinetuneSection(source=str(semi))),
                 r"excel.csv: the header is one column 'text;label' \(got columns \['text;label'\]\)")
    assert "separated by ';'" in msg and "Did you mean" not in msg


def test_a_file_without_a_header_row_is_named_as_such(tmp_path):
    from nlpssl.labelled import load_task_data

    bare = write_csv(tmp_path / "bare.csv", [(f"good film {i}", "pos") for i in range(20)], header=None)
    msg = raises(lambda: load_task_data(FinetuneSection(source=str(bare))),
                 r"bare.csv: no text column 'text' and no label column 'label' \(got columns \['good film 0', 'pos'\]\)")
    assert "no header row" in msg and "text,label" in msg
    (tmp_path / "empty.csv").write_text("")
    raises(lambda: load_task_data(FinetuneSection(source=str(tmp_path / "empty.csv"))),
           r"empty.csv: the file is empty \(got 0 bytes, no header line or record\)\. Fill it \(a header line such "
           r"as text,label, then a row per example\)")


# ------------------------------------------------------------------------------------------------
# Legal but suspicious class shares: said before training


def test_a_rare_class_missing_from_validation_and_a_majority_of_98_percent_are_said(tmp_path, capsys):
    """98 'neg' and 2 'pos': the carved validation rows held no 'pos', and accuracy 1.0 hid it."""
    from nlpssl.labelled import load_task_data

    rows = [(f"text {i}", "pos" if i % 50 == 0 else "neg") for i in range(100)]
    data = load_task_data(FinetuneSection(source=str(write_csv(tmp_path / "rare.csv", rows))))
    assert "pos" not in data.splits["validation"].labels
    said = capsys.readouterr().out
    assert re.search(r"the validation split holds no rows of \['pos'\] \(2 training rows\)", said), said
    assert re.search(r"'neg' is 98% of the training rows", said) and "task.metric_for_best_model=macro_f1" in said
    load_task_data(FinetuneSection(source=str(tmp_path / "rare.csv"), metric_for_best_model="macro_f1"))
    assert "98%" not in capsys.readouterr().out, "macro-F1 already weighs the classes alike"


def test_label_names_without_training_rows_are_said(tmp_path, capsys):
    from nlpssl.labelled import load_task_data

    rows = [(f"text {i}", i % 2) for i in range(20)]
    load_task_data(FinetuneSection(source=str(write_csv(tmp_path / "two.csv", rows)),
                                   label_names=["neg", "pos", "neutral"]))
    said = capsys.readouterr().out
    assert re.search(r"task.label_names: \['neutral'\] have no training rows", said), said
    rows = [(f"text {i}", i % 2) for i in range(40)]
    load_task_data(FinetuneSection(source=str(write_csv(tmp_path / "even.csv", rows))))
    assert "[nlpssl]" not in capsys.readouterr().out, "balanced data with every class everywhere: nothing to say"


# ------------------------------------------------------------------------------------------------
# nlpssl probe


def test_probe_card_on_a_read_only_export_stops_before_training(tmp_path, mlm_export, monkeypatch):
    """--card wrote the card after every run had trained, and then failed on the read-only folder."""
    import importlib
    import os
    import shutil

    from nlpssl.probe import probe

    export = tmp_path / "export"
    shutil.copytree(mlm_export, export)
    task = write_csv(tmp_path / "t.csv", [(f"text {i}", i % 2) for i in range(40)])
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # a read-only mount, which root's chmod would not give
        if str(path).startswith(str(export)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    finetune_module = importlib.import_module("nlpssl.finetune")  # `nlpssl.finetune` is also the function
    monkeypatch.setattr(finetune_module, "train_classifier", lambda *a, **k: pytest.fail("trained"))
    raises(lambda: probe(export, str(task), labels=[20], seeds=1, card=True, out_dir=tmp_path / "p"),
           r"probe: --card writes the model card in .*export.*, which cannot be written \(got .*Read-only file system.*\)\. "
           r"Leave out --card")


def test_probe_budget_beyond_a_small_file_says_where_the_rows_went_and_what_to_pass(tmp_path, mlm_export):
    """A 40-row file under the default --labels 500 1000 all: the user never typed 500, and 32 is not 40."""
    from nlpssl.probe import probe

    task = write_csv(tmp_path / "t.csv", [(f"text {i}", i % 2) for i in range(40)])
    msg = raises(lambda: probe(mlm_export, str(task), labels=["500", "1000", "all"], out_dir=tmp_path / "p"),
                 r"--labels 500 is more than the 32 labelled training rows of .*t.csv \(got 500; its 40 rows less "
                 r"the 8 set aside for scoring\)\. Use budgets up to 32")
    assert "--labels 16 32" in msg and "--labels defaults to 500 1000 all" in msg
    assert not (tmp_path / "p").exists()
    tiny = write_csv(tmp_path / "tiny.csv", [(f"text {i}", i % 2) for i in range(8)])
    raises(lambda: probe(mlm_export, str(tiny), labels=["all"], out_dir=tmp_path / "p"),
           r"--labels all is 6 labelled training rows of .*tiny.csv, too few to train on and select with 2 classes "
           r"\(got 6; its 8 rows less the 2 set aside for scoring\)\. Use a task with 10 or more")


# ------------------------------------------------------------------------------------------------
# Where a bad row is


def test_rows_without_a_label_are_all_counted_with_their_lines(tmp_path):
    """The error named the first row only (row 4, which an editor shows as line 5) and stopped there."""
    import json

    from nlpssl.labelled import load_task_data

    rows = [(f"text {i}", "" if i in (3, 7) else ["neg", "pos"][i % 2]) for i in range(20)]
    rows[10] = ("a quoted\nmulti-line text", "  ")
    blank = write_csv(tmp_path / "blank.csv", rows)
    raises(lambda: load_task_data(FinetuneSection(source=str(blank))),
           r"blank.csv:5: row 4 and 2 more \(lines 9, 13\) have no label \(got ''\)\. Fill in or drop the rows "
           r"without a label\.")
    (tmp_path / "nulls.jsonl").write_text("\n".join(
        json.dumps({"text": f"t {i}", **({"label": i % 2} if i != 6 else {})}) for i in range(20)))
    raises(lambda: load_task_data(FinetuneSection(source=str(tmp_path / "nulls.jsonl"))),
           r"nulls.jsonl:7: row 7 has no label \(got None\)")


# ------------------------------------------------------------------------------------------------
# Interrupting nlpssl finetune


def test_ctrl_c_during_finetuning_says_what_is_left_and_how_to_run_again(tmp_path, mlm_export, monkeypatch, capsys):
    """Ctrl-C printed only 'nlpssl: interrupted'; whether the folder could take a rerun was left to find out."""
    import importlib

    from nlpssl.finetune import finetune
    from nlpssl.recipe import recipe_from_dict

    finetune_module = importlib.import_module("nlpssl.finetune")
    task = write_csv(tmp_path / "t.csv", [(f"text {i}", i % 2) for i in range(40)])
    out = tmp_path / "ft"

    def interrupted(recipe, *args, **kwargs):
        (recipe.output_dir / "checkpoint-3").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune_module, "train_classifier", interrupted)
    recipe = recipe_from_dict({"kind": "finetune", "model": str(mlm_export), "task": {"source": str(task)},
                               "training": {"output_dir": str(out)}}, name="t")
    with pytest.raises(KeyboardInterrupt):
        finetune(recipe)
    said = capsys.readouterr().out
    assert re.search(r"fine-tuning interrupted; nothing was exported\. .*ft holds checkpoint-3 and fine-tuning does "
                     r"not resume: delete .*ft, or choose another training.output_dir, and run again\.", said), said
    assert not (out / "export").exists()


# ------------------------------------------------------------------------------------------------
# Starting from a fine-tuned export


def test_finetuning_a_classifier_export_on_other_labels_replaces_its_head(tmp_path, mlm_export, capsys):
    """A classifier export as model= with 3 labels instead of 2: a bare RuntimeError from transformers."""
    from transformers import AutoConfig

    from nlpssl.finetune import finetune
    from nlpssl.recipe import recipe_from_dict

    def run(rows, out, model):
        task = write_csv(tmp_path / f"{out}.csv", rows)
        return finetune(recipe_from_dict(
            {"kind": "finetune", "model": str(model), "speed": {"bf16": "off"}, "task": {"source": str(task)},
             "training": {"output_dir": str(tmp_path / out), "num_train_epochs": 1, "disable_tqdm": True}},
            name="t")).export_dir

    two = run([(f"text {i}", ["neg", "pos"][i % 2]) for i in range(20)], "two", mlm_export)
    capsys.readouterr()
    three = run([(f"text {i}", ["a", "b", "c"][i % 3]) for i in range(30)], "three", two)
    assert AutoConfig.from_pretrained(three).id2label == {0: "a", 1: "b", 2: "c"}
    said = capsys.readouterr().out
    assert re.search(r"already a classifier of \['neg', 'pos'\]; its head is replaced by a new one for \['a', 'b', 'c'\]",
                     said), said
