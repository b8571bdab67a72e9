"""`nlpssl probe`: the export against scratch and bag-of-words on the same rows; outputs and errors."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import tiny_overrides
from nlpssl.errors import NlpsslError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from nlpssl.pretrain import pretrain
    from nlpssl.recipe import load_recipe

    tmp = tmp_path_factory.mktemp("probe-model")
    return pretrain(load_recipe("bert-tiny", tiny_overrides(tmp))).export_dir


def write_task(path: Path, n: int, offset: int = 0, header=("sentence", "label")) -> Path:
    words = ["great", "awful"]
    rows = [(f"the film number {i + offset} was {words[i % 2]} {'indeed' if i % 3 else 'truly'}", i % 2)
            for i in range(n)]
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in [header, *rows]))
    return path


def test_probe_writes_table_plot_card_and_gives_every_arm_the_same_rows(tmp_path, export, capfd):
    from transformers.utils import logging as hf_logging

    from nlpssl.cli import main

    train = write_task(tmp_path / "train.tsv", 90)
    dev = write_task(tmp_path / "dev.tsv", 30, offset=1000)
    out = tmp_path / "probe"
    args = ["probe", str(export), "--task", str(train), "--set", f"task.validation_source={dev}",
            "task.text_column=sentence", "training.per_device_train_batch_size=16",
            "--labels", "20", "all", "--seeds", "2", "--learning-rates", "1e-3", "3e-3", "--epochs", "1",
            "--out", str(out), "--card"]
    level = hf_logging.get_verbosity()
    assert main(args) == 0
    captured = capfd.readouterr()
    printed = captured.out
    assert "| labels | pretrained | scratch | bag-of-words |" in printed and "| 90 |" in printed
    # 16 fine-tunes say one line each, not transformers' load report, weight-writing bars and the
    # Trainer's per-epoch figures; what the export gave the classifier is said once.
    both = captured.out + captured.err
    for noise in ("LOAD REPORT", "Writing model shards", "'eval_loss'"):
        assert noise not in both
    assert both.count("loaded into ModernBertForSequenceClassification; new, randomly initialised: classifier") == 1
    assert any("left" in line for line in printed.splitlines() if "labels seed 0" in line)  # time the rest take
    assert hf_logging.get_verbosity() == level and hf_logging.is_progress_bar_enabled()

    report = json.loads((out / "probe.json").read_text())
    assert report["label_budgets"] == [20, 90] and report["scored_on"].startswith("validation")
    runs = report["runs"]
    assert len(runs) == 2 * 2 * 3  # budgets x seeds x arms
    for n in (20, 90):
        for seed in (0, 1):
            group = [r for r in runs if r["labels"] == n and r["seed"] == seed]
            assert {r["arm"] for r in group} == {"pretrained", "scratch", "bag-of-words"}
            # The controls saw exactly the rows the pretrained model saw.
            assert len({json.dumps(r["splits"], sort_keys=True) for r in group}) == 1, group
    train_digests = {(r["labels"], r["seed"]): r["splits"]["train"] for r in runs}
    assert train_digests[(20, 0)] != train_digests[(20, 1)], "each seed draws other rows"
    assert len({r["splits"]["test"] for r in runs}) == 1, "every run is scored on the same rows"
    for r in runs:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["selection_accuracy"] <= 1.0
        if r["arm"] != "bag-of-words":
            assert [t["learning_rate"] for t in r["tried"]] == [1e-3, 3e-3]  # both arms get the same search
            assert r["setting"]["learning_rate"] in (1e-3, 3e-3)
    summary = report["summary"]["20"]["pretrained"]
    scores = [r["accuracy"] for r in runs if r["labels"] == 20 and r["arm"] == "pretrained"]
    assert summary["seeds"] == 2 and summary["mean"] == pytest.approx(sum(scores) / 2)

    assert "| 20 |" in (out / "probe.md").read_text()
    assert (out / "probe.png").stat().st_size > 5000
    assert not (out / "runs").exists(), "fine-tuning checkpoints are cleaned up"

    import yaml

    card = (export / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    [entry] = meta["model-index"]  # the export's own entry (its held-out figure) gains the probe's result
    assert [r["task"]["type"] for r in entry["results"]] == ["fill-mask", "text-classification"]
    values = {m["name"]: m["value"] for m in entry["results"][1]["metrics"]}
    assert values["accuracy, 20 labels, pretrained, mean of 2 seed(s)"] == round(summary["mean"], 4)
    assert "## Downstream probe: train" in card
    # A second probe of the same task replaces its entry and section instead of adding another.
    assert main(args[:-3] + ["--seeds", "1", "--out", str(out), "--card", "--arms", "bag-of-words"]) == 0
    card = (export / "README.md").read_text()
    assert card.count("## Downstream probe: train") == 1
    assert len(yaml.safe_load(card.split("---\n")[1])["model-index"][0]["results"]) == 2


def test_scored_rows_carved_from_train_never_reach_the_pool(tmp_path):
    from nlpssl.probe import probe_splits, task_recipe

    train = write_task(tmp_path / "train.tsv", 100)
    recipe = task_recipe(str(train), tmp_path, ["task.text_column=sentence"])
    pool, scored, _, scored_on = probe_splits(recipe)
    assert (len(pool), len(scored)) == (80, 20) and scored_on.startswith("test: 0.2 of")
    assert not set(pool.texts) & set(scored.texts)


def test_probe_errors_come_before_any_training(tmp_path, export):
    from nlpssl.probe import probe

    train = write_task(tmp_path / "train.tsv", 40)
    args = dict(overrides=["task.text_column=sentence"], out_dir=tmp_path / "p")
    with pytest.raises(NlpsslError, match=r"--labels 500 is more than the 32 labelled training rows .* up to 32"):
        probe(export, str(train), labels=[500], **args)
    with pytest.raises(NlpsslError, match=r"--labels takes row counts or 'all' \(got 'many'\)"):
        probe(export, str(train), labels=["many"], **args)
    unlabelled = write_task(tmp_path / "text.tsv", 40, header=("sentence", "stars"))
    with pytest.raises(NlpsslError, match=r"no label column 'label' \(got columns \['sentence', 'stars'\]\)"):
        probe(export, str(unlabelled), labels=[20], **args)
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(NlpsslError, match="holds files the probe did not write"):
        probe(export, str(train), labels=[20], overrides=args["overrides"], out_dir=foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    other = tmp_path / "hub-model"
    shutil.copytree(export, other)
    (other / "README.md").write_text("---\ntags: [bert]\n---\nsomeone else's card\n")
    with pytest.raises(NlpsslError, match="--card edits only model cards written by nlpssl"):
        probe(other, str(train), labels=[20], card=True, **args)
    with pytest.raises(NlpsslError, match=r"--seeds must be 1 or more \(got 0\)"):
        probe(export, str(train), labels=[20], seeds=0, **args)
    with pytest.raises(NlpsslError, match=r"--self-train must be 0 \(off\) or a number of unlabelled rows \(got -5\)"):
        probe(export, str(train), labels=[20], self_train=-5, **args)
    with pytest.raises(NlpsslError, match=r"--teachers must be 1 or more and needs --self-train \(got --teachers 3, "
                       r"--self-train 0\)"):
        probe(export, str(train), labels=[20], teachers=3, **args)
    with pytest.raises(NlpsslError, match=r"got --teachers 0, --self-train 20\)"):
        probe(export, str(train), labels=[20], self_train=20, teachers=0, **args)
    with pytest.raises(NlpsslError, match=r"override 'training.learnin_rate=1e-3': training.learnin_rate: unknown key"):
        probe(export, str(train), labels=[20], overrides=[*args["overrides"], "training.learnin_rate=1e-3"],
              out_dir=args["out_dir"])
    assert not (tmp_path / "p").exists(), "nothing was written"


def test_self_training_labels_the_same_unread_rows_for_every_arm(tmp_path, export):
    """--self-train: every arm labels the same further rows of the pool, whose own labels are never read."""
    import random

    from nlpssl.probe import probe

    train = write_task(tmp_path / "train.tsv", 120)
    dev = write_task(tmp_path / "dev.tsv", 30, offset=1000)
    args = dict(overrides=["task.text_column=sentence", f"task.validation_source={dev}",
                           "training.per_device_train_batch_size=16"], labels=[20], seeds=1, learning_rates=[1e-3],
                epochs=1, self_train=60)
    report = probe(export, str(train), out_dir=tmp_path / "p", **args)
    assert report.fine_tuning["self_train"] == {"unlabelled": 60, "keep": 0.5, "teachers": 1}
    assert {r.arm for r in report.runs} == {"pretrained", "scratch", "bag-of-words"}
    assert len({r.splits["unlabelled"] for r in report.runs}) == 1, "every arm labels the same rows"
    for r in report.runs:
        first = r.self_train
        assert first["unlabelled"] == 60 and 0 < first["pseudo_labelled"] <= 30, first
        assert sum(first["pseudo_labels"].values()) == first["pseudo_labelled"]
        assert set(first["pseudo_labels"]) <= {"0", "1"}
        assert 0.0 <= first["accuracy"] <= 1.0 and 0.0 <= r.accuracy <= 1.0
    saved = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert saved["runs"][0]["self_train"]["unlabelled"] == 60
    assert "Before self-training" in (tmp_path / "p" / "probe.md").read_text()
    assert "summary_before_self_training" in saved and (tmp_path / "p" / "probe.png").stat().st_size > 5000

    # Flip the labels of every pool row outside the budget: the self-trained result cannot change.
    lines = train.read_text().splitlines()
    order = list(range(120))
    random.Random(1000 * 0 + 0).shuffle(order)  # the probe's draw for task.seed 0, seed 0
    budget = set(order[:20])
    flipped = [lines[0]] + [line if i in budget else line[:-1] + str(1 - int(line[-1]))
                            for i, line in enumerate(lines[1:])]
    other = tmp_path / "flipped.tsv"
    other.write_text("\n".join(flipped) + "\n")
    again = probe(export, str(other), out_dir=tmp_path / "q", arms=["bag-of-words"], **args)
    [before] = [r for r in report.runs if r.arm == "bag-of-words"]
    [after] = again.runs
    assert after.splits == before.splits  # the unlabelled rows' digest covers texts only (labels blanked)
    assert (after.accuracy, after.self_train) == (before.accuracy, before.self_train)


def test_several_teachers_start_from_the_probes_own_run_and_are_recorded(tmp_path, export):
    """--teachers K: the first teacher is the plain run (same seed, same figures), K is in probe.json and
    probe.md, and bag-of-words, whose fit has no seed, keeps one teacher."""
    from nlpssl.probe import probe

    train = write_task(tmp_path / "train.tsv", 120)
    dev = write_task(tmp_path / "dev.tsv", 30, offset=1000)
    args = dict(overrides=["task.text_column=sentence", f"task.validation_source={dev}",
                           "training.per_device_train_batch_size=16"], labels=[20], seeds=1, learning_rates=[1e-3],
                epochs=1, self_train=60, arms=["pretrained", "bag-of-words"])
    one = probe(export, str(train), out_dir=tmp_path / "one", **args)
    two = probe(export, str(train), out_dir=tmp_path / "two", teachers=2, **args)
    assert two.fine_tuning["self_train"]["teachers"] == 2
    by_arm = {r.arm: r for r in two.runs}
    assert by_arm["pretrained"].self_train["teachers"] == 2 and by_arm["bag-of-words"].self_train["teachers"] == 1
    first = {k: v for k, v in by_arm["pretrained"].self_train.items() if k in ("accuracy", "selection_accuracy")}
    assert first == {k: v for k, v in one.runs[0].self_train.items() if k in first}, "teacher 0 is the plain run"
    assert by_arm["pretrained"].splits == one.runs[0].splits
    assert [r.accuracy for r in two.runs if r.arm == "bag-of-words"] == [r.accuracy for r in one.runs
                                                                         if r.arm == "bag-of-words"]
    assert "labelled by 2 fine-tunes of each neural arm" in (tmp_path / "two" / "probe.md").read_text()
    saved = json.loads((tmp_path / "two" / "probe.json").read_text())
    assert saved["runs"][0]["self_train"]["teachers"] == 2
    assert [p.name for p in (tmp_path / "two").iterdir() if p.name.startswith(".probe-runs")] == []


def test_pseudo_labels_follow_the_labelled_class_shares():
    from nlpssl.labelled import Split
    from nlpssl.probe import pseudo_labelled

    rows = Split([f"t{i}" for i in range(10)], [""] * 10)
    # Rows 0-7 predicted "a" (confidence rising with the index), rows 8-9 predicted "b".
    probs = [[0.5 + 0.05 * i, 0.5 - 0.05 * i] for i in range(8)] + [[0.2, 0.8], [0.4, 0.6]]
    labelled = Split(["x"] * 4, ["a", "a", "a", "b"])  # 3:1
    picked = pseudo_labelled(rows, probs, labelled, ["a", "b"], keep=0.8)  # 8 rows: 6 "a", 2 "b"
    assert picked.texts == ["t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"]
    assert picked.labels == ["a"] * 6 + ["b"] * 2
    fewer = pseudo_labelled(rows, probs, Split(["x"] * 2, ["a", "b"]), ["a", "b"], keep=0.8)  # 4 + 4 asked
    assert fewer.labels.count("b") == 2 and fewer.labels.count("a") == 4, "only 2 rows were predicted 'b'"
    assert fewer.texts[:4] == ["t4", "t5", "t6", "t7"]  # the most confident "a" rows


def test_predicted_probabilities_stay_with_their_rows(export):
    """Each row's probabilities are its own, whatever the lengths (a length-grouped sampler would reorder)."""
    import numpy as np
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from nlpssl.finetune import load_classifier_tokenizer
    from nlpssl.labelled import Split
    from nlpssl.probe import predict_proba

    import torch

    # Random weights from a fixed seed: the rows' probabilities differ by about 1e-3 on every run, which a
    # few seconds of tiny pretraining do not promise (its pooled vectors can come out all alike).
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(str(export), num_labels=2))
    tokenizer = load_classifier_tokenizer(export)
    words = "the cat sat on a mat dog ran to park bird sang in tree fish swam and sea".split()
    texts = [" ".join(words[(5 * i + 3 * j) % len(words)] for j in range(1 + (7 * i) % 11)) for i in range(40)]
    rows = Split(texts, [""] * 40)
    probs = predict_proba(model, tokenizer, rows, max_length=64, batch_size=8)
    backwards = predict_proba(model, tokenizer, Split(texts[::-1], [""] * 40), max_length=64, batch_size=8)
    alone = np.concatenate([predict_proba(model, tokenizer, Split([t], [""]), 64) for t in texts[:5]])
    assert probs.shape == (40, 2) and np.allclose(probs.sum(1), 1.0)
    assert np.allclose(probs, backwards[::-1], atol=1e-5) and np.allclose(probs[:5], alone, atol=1e-5)
    assert np.ptp(probs[:, 0]) > 2e-4, "the rows get different probabilities, so the order is tested"


def test_probe_into_a_users_folder_deletes_only_its_own_files(tmp_path, export):
    """--out may be a project folder whose runs/ holds the user's work: the probe's scratch folder is its own."""
    from nlpssl.probe import probe

    train = write_task(tmp_path / "train.tsv", 40)
    project = tmp_path / "project"
    project.mkdir()
    args = dict(overrides=["task.text_column=sentence"], labels=[20], seeds=1, epochs=1, out_dir=project,
                arms=["pretrained"])
    probe(export, str(train), **args)  # an empty folder: allowed, and it now holds probe.json
    (project / "runs" / "my-run").mkdir(parents=True)
    (project / "runs" / "my-run" / "model.safetensors").write_text("the user's weights")
    probe(export, str(train), **args)  # a folder holding an earlier probe.json: allowed again
    assert (project / "runs" / "my-run" / "model.safetensors").read_text() == "the user's weights"
    assert sorted(p.name for p in project.iterdir()) == ["probe.json", "probe.md", "probe.png", "runs"]


def test_an_export_lacking_body_weights_is_named_not_silently_half_random(tmp_path, export, capfd):
    # transformers' load report is no longer printed (a table per fine-tune); what it said of a damaged
    # export, body weights that start random, must still reach the user.
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from nlpssl.finetune import build_classifier
    from nlpssl.probe import task_recipe

    damaged = tmp_path / "export"
    shutil.copytree(export, damaged)
    weights = load_file(damaged / "model.safetensors")
    dropped = next(k for k in sorted(weights) if ".layers.1." in k)
    save_file({k: v for k, v in weights.items() if k != dropped}, damaged / "model.safetensors", metadata={"format": "pt"})
    recipe = task_recipe("builtin", damaged, [])
    build_classifier(damaged, recipe, ["negative", "positive"], AutoTokenizer.from_pretrained(damaged))
    said = capfd.readouterr().out
    assert f"lacks 1 weights of the ModernBertForSequenceClassification's body, which start random (e.g. '{dropped}')" in said, said
    build_classifier(export, recipe, ["negative", "positive"], AutoTokenizer.from_pretrained(export))
    assert "lacks" not in capfd.readouterr().out
