"""Review of the training, export and fine-tuning side: each test fails on the code before its fix."""

import pytest
import torch

from conftest import tiny_overrides
from nlpssl.recipe import RecipeError, load_recipe


def _setup(tmp_path, tokenizer, name: str, callbacks=(), **extra):
    """A tiny run of a shipped recipe on the session tokenizer, seeded, wired but untrained."""
    from nlpssl.pretrain import setup

    folder = tmp_path / "tokenizer"
    tokenizer.save_pretrained(folder)
    overrides = {"training.logging_steps": 1, "training.save_strategy": "'no'", "training.eval_strategy": "'no'",
                 "export.enabled": False, "tokenizer.path": str(folder), "speed.bf16": "off", **extra}
    recipe = load_recipe(name, tiny_overrides(tmp_path, **overrides))
    torch.manual_seed(0)
    return setup(recipe, callbacks, use_cpu=True)


def _first_loss(tmp_path, tokenizer, name: str, **extra) -> tuple[float, float]:
    run = _setup(tmp_path, tokenizer, name, **{"training.max_steps": 1, **extra})
    run.trainer.train()
    logged = next(h for h in run.trainer.state.log_history if "loss" in h)
    return logged["loss"], logged["grad_norm"]


def test_gradient_accumulation_does_not_scale_the_stock_causal_loss(tmp_path, tiny_tokenizer, one_torch_thread):
    # One step of 8 rows, as one batch or as two accumulated batches of 4: the same rows, the same loss.
    # The stock loss path got num_items_in_batch, so GPT-2 divided by the accumulated tokens and the
    # Trainer divided by the accumulation steps again: half the loss and half the gradient at 2 steps.
    stock = {"speed.chunked_lm_loss": False}
    whole = _first_loss(tmp_path / "whole", tiny_tokenizer, "gpt-tiny", **stock)
    split = _first_loss(tmp_path / "split", tiny_tokenizer, "gpt-tiny", **{
        **stock, "training.per_device_train_batch_size": 4, "training.gradient_accumulation_steps": 2})
    assert split == pytest.approx(whole, rel=2e-3), (whole, split)


def _tiny_export(tmp_path, tokenizer, name: str):
    from nlpssl.pretrain import pretrain

    folder = tmp_path / "tokenizer"
    tokenizer.save_pretrained(folder)
    return pretrain(load_recipe(name, tiny_overrides(tmp_path, **{
        "training.max_steps": 2, "training.eval_strategy": "'no'", "training.save_strategy": "'no'",
        "speed.bf16": "off", "tokenizer.path": str(folder)}))).export_dir


def test_a_gpt2_classifier_scores_a_text_the_same_alone_and_in_a_batch(tmp_path, tiny_tokenizer, one_torch_thread):
    # The export pads on the left (generate); fine-tuning used that, so a text's positions moved with the
    # padding its batch needed and its logits depended on the other texts (GPT-2 has learned positions).
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    from nlpssl.finetune import load_classifier_tokenizer

    export = _tiny_export(tmp_path, tiny_tokenizer, "gpt-tiny")
    tokenizer = load_classifier_tokenizer(export)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(export), num_labels=2, pad_token_id=tokenizer.pad_token_id).eval()
    collate = DataCollatorWithPadding(tokenizer)
    short, long = tokenizer("Mia was glad."), tokenizer("Mia was not glad at all, because the dog ran far away.")
    with torch.no_grad():
        alone = model(**collate([short])).logits[0]
        batched = model(**collate([short, long])).logits[0]
    assert torch.allclose(alone, batched, atol=1e-5), (alone, batched)


def test_a_final_model_cut_short_is_not_taken_for_a_finished_run(tmp_path, tiny_tokenizer, one_torch_thread):
    # A kill -9 while the Trainer wrote final/model.safetensors (after the last checkpoint): resuming said
    # "already finished; nothing to train" and `nlpssl export` stopped in a bare SafetensorError.
    from safetensors import safe_open

    from nlpssl.export import export_run
    from nlpssl.pretrain import pretrain

    folder = tmp_path / "tokenizer"
    tiny_tokenizer.save_pretrained(folder)
    overrides = tiny_overrides(tmp_path, **{"training.eval_strategy": "'no'", "training.max_steps": 4,
                                            "training.save_steps": 4, "speed.bf16": "off",
                                            "tokenizer.path": str(folder)})
    run = pretrain(load_recipe("bert-tiny", overrides)).output_dir
    weights = run / "final" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for name in ("metrics.json", "log_history.json"):
        (run / name).unlink()

    exported = export_run(run, tmp_path / "copy")
    assert "checkpoint-4" in (exported / "README.md").read_text()  # the complete checkpoint, said on the card

    again = pretrain(load_recipe("bert-tiny", [*overrides, "training.resume=true"]))
    assert not again.already_finished and again.export_dir is not None
    with safe_open(str(weights), framework="pt") as f:  # saved again, whole
        assert len(list(f.keys())) > 0


@pytest.mark.parametrize("end", [{"training.max_steps": 4, "training.save_steps": 4},
                                 {"training.max_steps": 50, "training.save_steps": 1, "training.budget_minutes": 0.001}])
def test_resuming_from_the_last_step_trains_no_step_more(tmp_path, tiny_tokenizer, one_torch_thread, end):
    # Killed after the checkpoint of its last step (max_steps, or the step that spent the time budget),
    # during the final evaluation, save or export: the resumed Trainer took one step past the end.
    import json
    import shutil

    from safetensors.torch import load_file

    from nlpssl.pretrain import pretrain

    folder = tmp_path / "tokenizer"
    tiny_tokenizer.save_pretrained(folder)
    overrides = tiny_overrides(tmp_path, **{"training.eval_strategy": "'no'", "speed.bf16": "off",
                                            "tokenizer.path": str(folder), "export.enabled": False, **end})
    first = pretrain(load_recipe("bert-tiny", overrides))
    run, steps = first.output_dir, first.metrics["steps"]
    assert (run / f"checkpoint-{steps}").is_dir()
    shutil.rmtree(run / "final")
    (run / "metrics.json").unlink()

    again = pretrain(load_recipe("bert-tiny", [*overrides, "training.resume=true"]))
    assert again.metrics["steps"] == steps
    # No training figures of this process: null, not NaN (which strict JSON readers refuse)
    metrics = json.loads((run / "metrics.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert metrics["train_runtime_s"] is None and metrics["train_tokens_per_second"] is None
    saved, final = load_file(run / f"checkpoint-{steps}" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    assert saved.keys() == final.keys() and all(torch.equal(saved[k], final[k]) for k in saved)


def test_a_resumed_run_reports_the_speed_of_the_steps_it_trained(tmp_path, tiny_tokenizer, one_torch_thread):
    # metrics.json (and the card) divided every step's tokens, those before the resume included, by the
    # resumed process's runtime: after a Ctrl-C at 90% of a run, 10x the real speed.
    # Resumed from checkpoint-4 of 6 steps: 2 steps of 8 rows of 32 tokens in this process.
    import shutil

    from nlpssl.pretrain import pretrain

    folder = tmp_path / "tokenizer"
    tiny_tokenizer.save_pretrained(folder)
    overrides = tiny_overrides(tmp_path, **{"training.eval_strategy": "'no'", "speed.bf16": "off", "export.enabled": False,
                                            "tokenizer.path": str(folder), "training.max_steps": 6,
                                            "training.save_steps": 2, "training.budget_minutes": "null"})
    run = pretrain(load_recipe("bert-tiny", overrides)).output_dir
    assert (run / "checkpoint-4").is_dir()
    for name in ("final", "checkpoint-6"):
        shutil.rmtree(run / name)
    (run / "metrics.json").unlink()
    m = pretrain(load_recipe("bert-tiny", [*overrides, "training.resume=true"])).metrics
    assert m["steps"] == 6 and m["train_tokens"] == 6 * 8 * 32
    assert m["train_tokens_per_second"] == pytest.approx(2 * 8 * 32 / m["train_runtime_s"], rel=1e-6)


def test_a_metrics_file_cut_short_does_not_stop_the_export(tmp_path, tiny_tokenizer, one_torch_thread, capsys):
    # metrics.json was written in place: a kill while writing it left half a file, and `nlpssl export`
    # then ended in a bare JSONDecodeError although the weights were whole.
    import json

    from nlpssl.export import export_run
    from nlpssl.pretrain import pretrain
    from nlpssl.runs import write_metrics

    folder = tmp_path / "tokenizer"
    tiny_tokenizer.save_pretrained(folder)
    run = pretrain(load_recipe("bert-tiny", tiny_overrides(tmp_path, **{
        "training.eval_strategy": "'no'", "training.save_strategy": "'no'", "training.max_steps": 2,
        "speed.bf16": "off", "tokenizer.path": str(folder), "export.enabled": False}))).output_dir
    text = (run / "metrics.json").read_text()
    (run / "metrics.json").write_text(text[: len(text) // 2])
    out = export_run(run, tmp_path / "export")
    assert (out / "model.safetensors").is_file() and "is not readable JSON" in capsys.readouterr().out

    write_metrics(run, {"steps": 2}, [{"step": 2, "loss": 1.0}])  # whole or not at all: no half file is ever in its place
    assert json.loads((run / "metrics.json").read_text()) == {"steps": 2}
    assert sorted(p.name for p in run.iterdir() if ".tmp" in p.name) == []


def test_a_gpt2_export_embeds_a_text_the_same_alone_and_in_a_batch(tmp_path, tiny_tokenizer, one_torch_thread):
    # `nlpssl embed` takes any export; a causal one padded on the left, so a text's vector moved with
    # the longest text of its batch (GPT-2's positions count the pads).
    import numpy as np

    from nlpssl.embeddings import Encoder

    encoder = Encoder(_tiny_export(tmp_path, tiny_tokenizer, "gpt-tiny"))
    alone = encoder.encode(["Mia was glad."], progress=False)
    batched = encoder.encode(["Mia was glad.", "Mia was not glad at all, because the dog ran far away."], progress=False)
    assert np.abs(alone[0] - batched[0]).max() < 1e-5


def test_training_gives_back_the_signal_handlers_it_took(tmp_path, tiny_tokenizer, one_torch_thread):
    # GracefulStop's SIGINT/SIGTERM handlers stayed after training: the next Ctrl-C of the process (a
    # notebook's interrupt, a probe after a pretrain) only printed "saving a checkpoint after this step".
    import signal

    from nlpssl.pretrain import pretrain

    def mine(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        interrupt = signal.getsignal(signal.SIGINT)
        run = _setup(tmp_path / "setup", tiny_tokenizer, "bert-tiny", **{"training.max_steps": 1})
        run.trainer.train()
        assert signal.getsignal(signal.SIGINT) is interrupt and signal.getsignal(signal.SIGTERM) is mine

        folder = tmp_path / "tokenizer"
        tiny_tokenizer.save_pretrained(folder)
        pretrain(load_recipe("gpt-tiny", tiny_overrides(tmp_path / "pretrain", **{
            "training.max_steps": 1, "training.eval_strategy": "'no'", "training.save_strategy": "'no'",
            "speed.bf16": "off", "tokenizer.path": str(folder), "export.enabled": False})))
        assert signal.getsignal(signal.SIGINT) is interrupt and signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


FAKE_CONVERTER = '''
import sys
class TextModel:
    def get_vocab_base_pre(self, tokenizer):
        raise NotImplementedError
def main():
    out = sys.argv[sys.argv.index("--outfile") + 1]
    with open(out, "wb") as f:
        f.write(b"GGUF" + bytes(64))  # the first bytes of a file the converter had not finished
'''


def test_an_interrupted_gguf_conversion_leaves_no_file(tmp_path, one_torch_thread, monkeypatch):
    # The converter wrote straight into --out: Ctrl-C part way left a truncated .gguf under the name the
    # user asked for, which looks like a model and which the next `nlpssl gguf` refused to overwrite.
    import subprocess
    import sys

    from nlpssl import gguf
    from nlpssl.pretrain import pretrain

    export = pretrain(load_recipe("gpt-tiny", tiny_overrides(tmp_path, **{
        "training.max_steps": 1, "training.eval_strategy": "'no'", "training.save_strategy": "'no'",
        "speed.bf16": "off"}))).export_dir
    converter = tmp_path / "llama.cpp" / "convert_hf_to_gguf.py"
    converter.parent.mkdir()
    converter.write_text(FAKE_CONVERTER)
    real_run = subprocess.run

    def interrupted(args, **kwargs):
        done = real_run(args, **kwargs)
        if "--outfile" in args:
            raise KeyboardInterrupt  # as Ctrl-C reaches the parent while the converter writes
        return done

    # An interpreter that answers the requirements check (sentencepiece, ...) with "all there".
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\ncase "$2" in *find_spec*) exit 0;; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    monkeypatch.setattr(gguf.subprocess, "run", interrupted)
    out = tmp_path / "model.gguf"
    with pytest.raises(KeyboardInterrupt):
        gguf.convert(export, out, converter, python=python)
    assert sorted(p.name for p in tmp_path.iterdir() if "gguf" in p.name) == []

    monkeypatch.setattr(gguf.subprocess, "run", real_run)
    assert gguf.convert(export, out, converter, python=python) == out and out.read_bytes().startswith(b"GGUF")
    assert sorted(p.name for p in tmp_path.iterdir() if "gguf" in p.name) == ["model.gguf"]


def test_the_card_shows_the_loss_curve_exactly_when_the_export_holds_it(tmp_path, tiny_tokenizer, one_torch_thread):
    # The card looked for loss_curve.png in the run folder, not in the export: the export of a checkpoint
    # of a run that had not finished held the curve and the card did not show it.
    import shutil

    from nlpssl.export import export_run
    from nlpssl.pretrain import pretrain

    folder = tmp_path / "tokenizer"
    tiny_tokenizer.save_pretrained(folder)
    run = pretrain(load_recipe("bert-tiny", tiny_overrides(tmp_path, **{
        "training.eval_strategy": "'no'", "training.max_steps": 4, "training.save_steps": 4, "speed.bf16": "off",
        "tokenizer.path": str(folder), "export.enabled": False}))).output_dir
    for name in ("final", "metrics.json", "log_history.json", "loss_curve.png"):  # as a run killed before its end
        shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink()
    out = export_run(run / "checkpoint-4", tmp_path / "early")
    assert (out / "loss_curve.png").is_file() and "![loss curve](loss_curve.png)" in (out / "README.md").read_text()


def test_export_names_the_folder_kind_it_was_given(tmp_path, tiny_tokenizer, one_torch_thread):
    # A fine-tuning run folder ended in "load_tokenizer: tokenizer folder ... does not exist" (after
    # reading its classifier checkpoint as a pretrained model), an export in "holds no trained weights".
    from nlpssl.errors import NlpsslError
    from nlpssl.export import export_run
    from nlpssl.finetune import finetune
    from nlpssl.recipe import recipe_from_dict

    export = _tiny_export(tmp_path / "pre", tiny_tokenizer, "bert-tiny")
    with pytest.raises(NlpsslError, match="is an export already, not a run folder"):
        export_run(export, tmp_path / "again")
    ft = recipe_from_dict({"kind": "finetune", "model": str(export), "speed": {"bf16": "off"},
                           "task": {"builtin_train_size": 20, "builtin_eval_size": 10},
                           "training": {"output_dir": str(tmp_path / "ft"), "num_train_epochs": 1,
                                        "disable_tqdm": True}}, name="ft")
    run = finetune(ft).output_dir
    with pytest.raises(NlpsslError, match=r"is a finetune run \(got kind: finetune.*use '.*ft/export'"):
        export_run(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_run_is_refused_an_export_folder_as_its_output_dir(tmp_path, tiny_tokenizer, one_torch_thread):
    # An export holds recipe.yaml and none of a finished run's files, so it passed for a run that had not
    # trained yet: a pretrain or finetune into it rewrote its recipe.yaml and loss curve and left the
    # export a folder of both.
    from nlpssl.errors import NlpsslError
    from nlpssl.recipe import recipe_from_dict
    from nlpssl.runs import check_output_dir

    export = _tiny_export(tmp_path / "pre", tiny_tokenizer, "bert-tiny")
    before = {p.name: p.read_bytes() for p in export.iterdir()}
    pre = load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"training.output_dir": str(export)}))
    ft = recipe_from_dict({"kind": "finetune", "model": str(export), "training": {"output_dir": str(export)}}, name="ft")
    for recipe in (pre, ft):
        with pytest.raises(NlpsslError, match="is a model export, not a run folder"):
            check_output_dir(recipe)
    assert {p.name: p.read_bytes() for p in export.iterdir()} == before


def test_gguf_from_inside_the_export_folder_is_checked_not_a_traceback(tmp_path, monkeypatch, capsys):
    # `nlpssl gguf .` (run inside the export) ended in "ValueError: PosixPath('.') has an empty name" while
    # the command worked out its default output file, before any of its checks.
    from nlpssl.cli import main

    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text('{"model_type": "bert", "architectures": ["BertForMaskedLM"]}')
    monkeypatch.chdir(export)
    assert main(["gguf", ".", "--converter", str(tmp_path / "convert_hf_to_gguf.py")]) == 2
    assert "only causal-LM exports convert" in capsys.readouterr().err


def test_a_budgeted_run_warms_up_over_the_steps_asked(tmp_path, tiny_tokenizer, one_torch_thread):
    # With a time budget a whole warmup_steps was read as a share of max_steps, a cap the budget seldom
    # reaches: warmup_steps=10 of a 1000-step cap ended once 1% of the budget had passed, at any step.
    run = _setup(tmp_path, tiny_tokenizer, "bert-tiny", **{
        "training.max_steps": 1000, "training.warmup_steps": 10, "training.budget_minutes": 1,
        "training.lr_scheduler_type": "linear"})
    trainer = run.trainer
    trainer.create_optimizer()
    factor = trainer.create_scheduler(1000).lr_lambdas[0]
    budget = trainer._time_budget()
    budget.elapsed_s = 0.02 * 60  # a slow machine: 2% of the budget gone by step 2
    assert factor(0) == 0.0
    assert factor(2) == pytest.approx(2 / 10 * (1 - 0.02), rel=1e-6)  # still warming up, the decay begun
    assert factor(10) == pytest.approx(1 - 0.02, rel=1e-6)
    budget.elapsed_s = 0.5 * 60
    assert factor(40) == pytest.approx(0.5, rel=1e-6)  # then the budget's decay alone


def test_a_probe_clears_what_a_killed_probe_left_in_its_folder(tmp_path, tiny_tokenizer, one_torch_thread):
    # Each neural arm fine-tunes into a hidden .probe-runs-* folder removed at the end; a probe killed
    # part way left it (model checkpoints) in --out for good, and the next probe into --out added its own.
    import subprocess
    import sys

    from nlpssl.probe import probe
    from nlpssl.runs import owner_tag

    export = _tiny_export(tmp_path / "pre", tiny_tokenizer, "bert-tiny")
    rows = [(f"the film number {i} was {['great', 'awful'][i % 2]}", i % 2) for i in range(40)]
    task = tmp_path / "train.tsv"
    task.write_text("".join("\t".join(map(str, r)) + "\n" for r in [("sentence", "label"), *rows]))
    out = tmp_path / "probe"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = owner_tag().rpartition("-")[0]
    killed, running, users = (out / f".probe-runs-{host}-{gone}-x1", out / f".probe-runs-{host}-1-x2",
                              out / ".probe-runs-notes")
    elsewhere = out / f".probe-runs-otherhost-{gone}-x3"  # a probe on another machine (a shared disk): pids say nothing
    for folder in (killed, running, users, elsewhere):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_text("weights")
    (out / "probe.json").write_text("{}")  # an earlier probe's folder
    probe(export, str(task), overrides=["task.text_column=sentence"], labels=[20], seeds=1, out_dir=out,
          arms=["bag-of-words"])
    assert not killed.exists() and running.is_dir() and users.is_dir()  # pid 1 runs; no pid: not the probe's
    assert elsewhere.is_dir()


def test_a_failed_classifier_export_leaves_no_half_export(tmp_path, tiny_tokenizer, one_torch_thread, monkeypatch):
    # export_classifier built the export in .export.tmp-PID and left it there when a step failed (a full
    # disk, Ctrl-C): a half-written model folder in the run folder that nothing removed.
    from nlpssl import export as export_module
    from nlpssl.finetune import finetune
    from nlpssl.recipe import recipe_from_dict

    model = _tiny_export(tmp_path / "pre", tiny_tokenizer, "bert-tiny")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "save_stock_tokenizer", full_disk)
    ft = recipe_from_dict({"kind": "finetune", "model": str(model), "speed": {"bf16": "off"},
                           "task": {"builtin_train_size": 20, "builtin_eval_size": 10},
                           "training": {"output_dir": str(tmp_path / "ft"), "num_train_epochs": 1,
                                        "disable_tqdm": True}}, name="ft")
    with pytest.raises(OSError):
        finetune(ft)
    assert [p.name for p in (tmp_path / "ft").iterdir() if p.name.startswith(".export")] == []


def test_a_missing_label_written_as_nan_is_a_missing_label(tmp_path):
    # pandas writes a blank in a numeric label column as NaN (.parquet, .jsonl): the rows were refused
    # as "a fractional label (got nan)", which sends the user to look for fractions.
    import dataclasses

    from nlpssl.errors import NlpsslError
    from nlpssl.labelled import load_task_data
    from nlpssl.recipe import recipe_from_dict

    path = tmp_path / "train.jsonl"
    path.write_text("".join(f'{{"text": "row {i}", "label": {"NaN" if i in (3, 7) else i % 2}}}\n' for i in range(10)))
    task = recipe_from_dict({"kind": "finetune", "model": "m", "task": {"source": str(path)}}, name="t").task
    with pytest.raises(NlpsslError, match=r"train.jsonl:4: row 4 and 1 more \(lines 8\) have no label \(got nan\)"):
        load_task_data(dataclasses.replace(task, validation_fraction=0.2))


def test_a_reused_tokenizer_replaced_after_training_does_not_reach_the_export(tmp_path, tiny_tokenizer, story_texts,
                                                                             one_torch_thread):
    # tokenizer.path (and a distillation teacher's or SimCSE encoder's folder) was read again at export and
    # resume: a folder replaced since (a teacher run trained again; WordPiece gives other ids each time)
    # gave the export another vocabulary than its weights', silently, and a resume trained on other ids.
    import shutil

    from nlpssl.errors import NlpsslError
    from nlpssl.export import export_run
    from nlpssl.pretrain import pretrain
    from nlpssl.tokenizer import load_tokenizer, train_tokenizer

    folder = tmp_path / "shared-tokenizer"
    tiny_tokenizer.save_pretrained(folder)
    overrides = tiny_overrides(tmp_path, **{"training.eval_strategy": "'no'", "training.max_steps": 4,
                                            "training.save_steps": 4, "speed.bf16": "off",
                                            "tokenizer.path": str(folder), "export.enabled": False})
    run = pretrain(load_recipe("bert-tiny", overrides)).output_dir
    shutil.rmtree(folder)
    other = train_tokenizer(["zebra quartz jumps"] * 20 + story_texts[:40], folder, algorithm="wordpiece",
                            vocab_size=300, num_sentinels=16)
    assert other.get_vocab() != tiny_tokenizer.get_vocab()

    for weights in (run, run / "checkpoint-4"):
        out = export_run(weights, tmp_path / f"export-{weights.name}")
        assert load_tokenizer(out).get_vocab() == tiny_tokenizer.get_vocab(), weights

    shutil.rmtree(run / "final")
    with pytest.raises(NlpsslError, match="is not the one .*checkpoint-4.* was trained with"):
        pretrain(load_recipe("bert-tiny", [*overrides, "training.resume=true"]))


def test_embed_reads_a_t5_export_with_its_encoder(tmp_path, tiny_tokenizer, one_torch_thread):
    # AutoModel of a T5 export is the encoder-decoder, which wants decoder inputs: `nlpssl embed` ended in
    # "ValueError: You must specify exactly one of input_ids or inputs_embeds".
    from nlpssl.demo import embed

    export = _tiny_export(tmp_path, tiny_tokenizer, "t5-tiny")
    vectors = embed(export, ["The cat sat on the mat.", "Mia was glad."])
    assert len(vectors) == 2 and len(vectors[0]) == 32 and abs(sum(x * x for x in vectors[0]) - 1) < 1e-4


def test_every_cli_command_has_a_docstring_and_help():
    # Only `gguf`'s function said what it does; the others had --help text and no docstring.
    from nlpssl import cli

    commands = [getattr(cli, name) for name in dir(cli) if name.startswith("cmd_")]
    assert len(commands) == 13
    assert [c.__name__ for c in commands if not (c.__doc__ or "").strip()] == []
    for action in cli.build_parser()._subparsers._group_actions:
        assert all(choice.help for choice in action._choices_actions), action.choices


@pytest.mark.parametrize("sparse", ["true", "false"])
def test_a_masked_lm_batch_with_nothing_masked_gives_a_zero_loss_not_nan(tmp_path, tiny_tokenizer, sparse):
    # A batch whose rows hold no masked token (a short padded last row alone) made cross_entropy of an
    # empty target NaN: eval_loss NaN, and in training NaN gradients in every weight.
    run = _setup(tmp_path, tiny_tokenizer, "bert-tiny", **{"speed.sparse_mlm_head": sparse})
    ids = torch.tensor([[tiny_tokenizer.cls_token_id, 10, 11, 12, tiny_tokenizer.sep_token_id]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.full_like(ids, -100)}
    run.model.train()
    loss = run.trainer.compute_loss(run.model, dict(batch))
    assert torch.isfinite(loss) and float(loss.detach()) == 0.0
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in run.model.parameters())


@pytest.mark.parametrize("override, said", [
    ("tokenizer.path=/no/such/tokenizer", "tokenizer folder '/no/such/tokenizer' does not exist"),
    ("data.source=/no/such/corpus.txt", "/no/such/corpus.txt: file or folder not found"),
])
def test_recipe_validate_refuses_what_pretrain_refuses_before_the_data(override, said, capsys):
    # `recipe validate bert-tiny tokenizer.path=/missing` printed "ok" while pretrain refused it at once.
    from nlpssl.cli import main

    with pytest.raises(SystemExit) as failed:
        main(["recipe", "validate", "bert-tiny", override])
    assert failed.value.code == 1
    out = capsys.readouterr().out
    assert out.startswith("invalid bert-tiny") and said in out


@pytest.mark.parametrize("key", ["task.source", "task.validation_source", "task.test_source"])
def test_an_empty_task_path_is_refused_before_any_data(key):
    # task.source= passed validate and later failed with a "file not found" at the current folder; an
    # empty validation/test source was read as "carve it off train" without a word.
    from nlpssl.finetune import check_recipe

    with pytest.raises(RecipeError, match=rf"{key} is empty \(got ''\)"):
        check_recipe(load_recipe("finetune-tiny", ["model=x", f"{key}="]))


def test_simcse_says_in_one_line_what_it_took_from_the_encoder(tmp_path, mlm_export, capsys):
    # The SimCSE encoder load printed transformers' load-report table (the masked-LM head's weights as
    # UNEXPECTED) in every run; now nlpssl's one line, as fine-tuning says it.
    import re

    from nlpssl.objectives import objective_for
    from nlpssl.tokenizer import load_tokenizer

    recipe = load_recipe("simcse-tiny", tiny_overrides(tmp_path, **{"simcse.encoder": str(mlm_export)}))
    model = objective_for(recipe).build_model(load_tokenizer(mlm_export))
    said = capsys.readouterr()
    text = said.out + said.err
    assert "UNEXPECTED" not in text and "lacks" not in text
    assert re.search(rf"model: '{re.escape(str(mlm_export))}' loaded into {type(model).__name__}; new, randomly "
                     r"initialised: none; not used: \S", text), text[-2000:]


def test_an_encoder_or_teacher_changed_after_the_run_began_does_not_reach_its_export(tmp_path, mlm_export,
                                                                                      one_torch_thread):
    # The export read the SimCSE encoder's folder for the dropout rates it restores in config.json, and the
    # teacher's for the card's "N-layer ... initialised from its layers [...]": a folder trained again since
    # gave wrong ones silently, a deleted one an export that failed. The run records them when it begins.
    import json
    import shutil

    from nlpssl.export import export_run
    from nlpssl.objectives.base import OUTSIDE_FILE
    from nlpssl.pretrain import pretrain

    fast = {"training.max_steps": 2, "training.eval_strategy": "'no'", "training.save_strategy": "'no'",
            "export.enabled": False, "speed.bf16": "off"}
    encoder = tmp_path / "encoder"
    shutil.copytree(mlm_export, encoder)
    simcse = pretrain(load_recipe("simcse-tiny", tiny_overrides(tmp_path / "s", **{
        "simcse.encoder": str(encoder), **fast}))).output_dir
    distil = pretrain(load_recipe("distil-tiny", tiny_overrides(tmp_path / "d", **{
        "distill.teacher": str(encoder), **fast}))).output_dir
    assert json.loads((simcse / OUTSIDE_FILE).read_text())["simcse.encoder"]["num_hidden_layers"] == 4

    config = json.loads((encoder / "config.json").read_text())  # trained again: more layers, other dropout
    (encoder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 8, "mlp_dropout": 0.3}))
    out = export_run(simcse, tmp_path / "simcse-export")
    assert json.loads((out / "config.json").read_text())["mlp_dropout"] == config["mlp_dropout"] == 0.0
    card = (export_run(distil, tmp_path / "distil-export") / "README.md").read_text()
    assert "2-layer modernbert" in card and "initialised from its layers [0, 2]" in card

    shutil.rmtree(encoder)  # deleted: the exports are still written, from the record
    assert (export_run(simcse, tmp_path / "simcse-again") / "1_Pooling" / "config.json").is_file()
    assert "from its layers [0, 2]" in (export_run(distil, tmp_path / "distil-again") / "README.md").read_text()


def test_a_reused_tokenizer_goes_into_a_checkpoint_whole_tokenizer_json_last(tmp_path, tiny_tokenizer, monkeypatch):
    # The checkpoint reads as complete before callbacks run (trainer_state.json is written first), and the
    # tokenizer copy was written in place: a kill during it left a cut-short tokenizer.json that the export
    # and a resume took for the run's. Now each file goes in whole (os.replace), tokenizer.json last.
    import os
    from pathlib import Path
    from types import SimpleNamespace

    from nlpssl.tokenizer import load_tokenizer
    from nlpssl.training import KeepTokenizer

    folder = tmp_path / "checkpoint-7"
    folder.mkdir()
    moved, replace = [], os.replace

    def recorded(src, dst):
        moved.append(Path(dst).name)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", recorded)
    KeepTokenizer(tiny_tokenizer).on_save(SimpleNamespace(output_dir=str(tmp_path)),
                                          SimpleNamespace(global_step=7, is_world_process_zero=True), None)
    assert moved[-1] == "tokenizer.json" and "tokenizer_config.json" in moved
    assert sorted(p.name for p in folder.iterdir()) == sorted(moved), "whole files only, no temporary folder left"
    assert load_tokenizer(folder).get_vocab() == tiny_tokenizer.get_vocab()
