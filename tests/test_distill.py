"""Distillation: the student built from teacher layers, the frozen teacher, the loss, the checks, the export."""

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from nlpssl.errors import NlpsslError
from nlpssl.recipe import RecipeError, load_recipe

FAST = {"model.num_layers": 4, "training.max_steps": 4, "training.eval_strategy": "'no'",
        "training.save_strategy": "'no'", "speed.bf16": "off"}


@pytest.fixture(scope="module")
def mlm_teacher(mlm_export):
    return mlm_export


@pytest.fixture(scope="module")
def gpt_teacher(tmp_path_factory):
    from nlpssl.pretrain import pretrain

    out = tmp_path_factory.mktemp("gpt-teacher")
    return pretrain("gpt-tiny", tiny_overrides(out, **FAST)).export_dir


def _distil(tmp_path, teacher, name="distil-tiny", **extra):
    return tiny_overrides(tmp_path, **{"distill.teacher": str(teacher), "speed.bf16": "off", **extra})


def _moved_from_teacher(student_dir, teacher_dir) -> float:
    """Largest change of the tensors outside the blocks (embeddings, final norm, head), which the student
    starts as copies of. Trained, Adam moves some by about the learning rate (3e-3) a step; weight decay
    alone (0.01 x 3e-3 of the weight a step) moves none by 1e-3 in a few steps."""
    from safetensors.torch import load_file

    student, teacher = (load_file(Path(d) / "model.safetensors") for d in (student_dir, teacher_dir))
    shared = [k for k in student if ".h." not in k and ".layers." not in k and k in teacher]
    assert shared, "the student has tensors copied from the teacher"
    return max(float((student[k] - teacher[k]).abs().max()) for k in shared)


def test_student_from_teacher_layers_copies_exactly_the_chosen_tensors(mlm_teacher):
    from transformers import AutoModelForMaskedLM

    from nlpssl.objectives.distill import student_from_teacher

    teacher = AutoModelForMaskedLM.from_pretrained(mlm_teacher).state_dict()
    student = student_from_teacher(str(mlm_teacher), [1, 3], "AutoModelForMaskedLM")
    assert student.config.num_hidden_layers == 2 and len(student.config.layer_types) == 2
    weights = student.state_dict()
    per_layer = [n for n in weights if ".layers.0." in n]
    assert per_layer, "the student has blocks"
    for name in per_layer:
        assert torch.equal(weights[name], teacher[name.replace(".layers.0.", ".layers.1.")]), name
        second = name.replace(".layers.0.", ".layers.1.")
        assert torch.equal(weights[second], teacher[name.replace(".layers.0.", ".layers.3.")]), second
    for name in weights:
        if ".layers." not in name:  # embeddings, final norm, head
            assert torch.equal(weights[name], teacher[name]), name


def test_kl_is_zero_for_a_student_that_is_the_teacher_at_temperature_one(tmp_path, mlm_teacher):
    from nlpssl.pretrain import setup

    run = setup(load_recipe("distil-tiny", _distil(tmp_path, mlm_teacher, **{
        "distill.layers": "[0, 1, 2, 3]", "distill.temperature": 1.0, "distill.soft_targets": "all"})), use_cpu=True)
    trainer = run.trainer
    batch = run.collator([run.data.train[i] for i in range(8)])
    run.model.train()
    loss = trainer.compute_loss(run.model, dict(batch))  # compute_loss pops the labels
    steps, kl, lm, cosine, agreement = trainer._terms.tolist()
    assert steps == 1
    assert abs(kl) < 1e-5 and abs(cosine) < 1e-5 and agreement == 1.0
    assert loss.item() == pytest.approx(2.0 * lm, rel=1e-5), "only the student's own loss is left"

    # a student that differs from the teacher has a positive KL
    trainer._terms.zero_()
    with torch.no_grad():
        for name, p in run.model.named_parameters():
            if ".layers.0." in name:
                p.add_(torch.randn_like(p))
    trainer.compute_loss(run.model, dict(batch))
    assert trainer._terms[1].item() > 1e-3


def test_teacher_is_frozen_gets_no_gradient_and_is_not_in_the_checkpoint(tmp_path, mlm_teacher):
    from safetensors import safe_open

    from nlpssl.pretrain import setup

    run = setup(load_recipe("distil-tiny", _distil(tmp_path, mlm_teacher, **{
        "training.max_steps": 3, "training.save_strategy": "steps", "training.save_steps": 3})), use_cpu=True)
    teacher = run.trainer.teacher
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    student_before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    run.trainer.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(p, before[n]) for n, p in teacher.named_parameters()), "the teacher never changes"
    # the student learns from its loss: Adam moves a weight by about the learning rate (3e-3) a step, where
    # weight decay alone (0.01 x 3e-3 of the weight a step) would move none by even 1e-3 in 3 steps
    moved = max(float((p.detach() - student_before[n]).abs().max()) for n, p in run.model.named_parameters())
    assert moved > 1e-3, f"the student learns (largest change {moved:.1e})"
    n_opt = sum(p.numel() for g in run.trainer.optimizer.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in run.model.parameters()), "the optimizer holds the student alone"
    with safe_open(str(tmp_path / "run" / "checkpoint-3" / "model.safetensors"), framework="pt") as f:
        layers = {k.split(".layers.")[1].split(".")[0] for k in f.keys() if ".layers." in k}
    assert layers == {"0", "1"}, "the checkpoint holds the 2-layer student only"


def test_masked_lm_student_trains_and_exports_a_stock_model(tmp_path, mlm_teacher):
    from transformers import AutoModelForMaskedLM, ModernBertForMaskedLM, pipeline

    from nlpssl.pretrain import pretrain

    result = pretrain("distil-tiny", _distil(tmp_path, mlm_teacher, **{"training.max_steps": 4,
                                                                       "training.logging_steps": 2}))
    history = json.loads((result.output_dir / "log_history.json").read_text())
    logged = next(h for h in history if "distill/kl" in h)
    assert {"distill/student_loss", "distill/cosine", "distill/agreement"} <= logged.keys()
    assert 0.0 <= result.metrics["eval_teacher_agreement"] <= 1.0
    assert result.metrics["eval_mlm_accuracy"] is not None
    model = AutoModelForMaskedLM.from_pretrained(result.export_dir)
    assert type(model) is ModernBertForMaskedLM and model.config.num_hidden_layers == 2
    assert _moved_from_teacher(result.export_dir, mlm_teacher) > 1e-3, "the student trained"
    assert result.metrics["params"] == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    teacher_vocab = json.loads((mlm_teacher / "tokenizer.json").read_text())["model"]["vocab"]
    assert json.loads((result.export_dir / "tokenizer.json").read_text())["model"]["vocab"] == teacher_vocab
    out = pipeline("fill-mask", model=str(result.export_dir))("The cat sat on the [MASK].")
    assert len(out) == 5
    card = (result.export_dir / "README.md").read_text()
    assert "distilled from the teacher" in card and "2-layer modernbert" in card


def test_causal_student_trains_and_exports_a_stock_gpt2(tmp_path, gpt_teacher):
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    from nlpssl.pretrain import pretrain

    result = pretrain("distil-gpt-tiny", _distil(tmp_path, gpt_teacher))
    model = AutoModelForCausalLM.from_pretrained(result.export_dir)
    assert type(model) is GPT2LMHeadModel and model.config.n_layer == 2
    assert _moved_from_teacher(result.export_dir, gpt_teacher) > 1e-3, "the student trained"
    assert result.metrics["eval_perplexity"] is not None and 0.0 <= result.metrics["eval_teacher_agreement"] <= 1.0


def test_a_different_tokenizer_is_refused_with_the_fix_before_any_data(tmp_path, mlm_teacher, tiny_tokenizer):
    from nlpssl.pretrain import pretrain

    other = tmp_path / "other-tokenizer"
    tiny_tokenizer.save_pretrained(other)
    with pytest.raises(NlpsslError, match=r"differs from the tokenizer of the teacher.*remove tokenizer.path"):
        pretrain("distil-tiny", _distil(tmp_path, mlm_teacher, **{"tokenizer.path": str(other)}))
    assert not (tmp_path / "cache").exists(), "refused before any data was read"


def test_wrong_teacher_family_missing_folder_and_wrong_arch_are_refused(tmp_path, mlm_teacher, gpt_teacher):
    from nlpssl.pretrain import pretrain

    with pytest.raises(NlpsslError, match=r"is a GPT2LMHeadModel, not a masked-LM"):
        pretrain("distil-tiny", _distil(tmp_path / "a", gpt_teacher))
    with pytest.raises(NlpsslError, match=r"not a model folder \(no config.json\)"):
        pretrain("distil-tiny", _distil(tmp_path / "b", tmp_path / "nowhere"))
    with pytest.raises(NlpsslError, match=r"Set model.arch=modernbert"):
        pretrain("distil-tiny", _distil(tmp_path / "c", mlm_teacher, **{"model.arch": "bert"}))
    with pytest.raises(NlpsslError, match=r"the teacher has 4 layers .* \[7\] do not exist"):
        pretrain("distil-tiny", _distil(tmp_path / "d", mlm_teacher, **{"distill.layers": "[0, 7]"}))


def test_recipe_checks_name_the_key_and_the_fix(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe("distil-tiny", [f"training.output_dir={tmp_path}", "distill.temperature=0", "distill.kl_weight=-1",
                                    "distill.init=preset", "distill.layers=[0]", "collator.span_boundary=true",
                                    "collator.kind=span"])
    text = str(err.value)
    assert "distill.temperature is out of range (got 0.0)" in text
    assert "kl_weight, lm_weight, cosine_weight are out of range" in text
    assert "distill.layers picks teacher layers for init=teacher" in text
    assert "collator.span_boundary has no place in distillation" in text
    with pytest.raises(RecipeError, match=r"distill.teacher: a distill section needs it"):
        load_recipe("bert-tiny", [f"training.output_dir={tmp_path}", "distill.temperature=3"])
    recipe = load_recipe("bert-tiny", [f"training.output_dir={tmp_path}"])
    assert "distill" not in recipe.to_dict() and "simcse" not in recipe.to_dict(), "unused sections are not shown"
    assert "distill" in load_recipe("distil-tiny").to_dict()


def test_recipe_validate_notes_a_teacher_still_to_be_trained(capsys, tmp_path, monkeypatch):
    from nlpssl.cli import main

    monkeypatch.chdir(tmp_path)  # no runs/bert-tiny/export here
    assert main(["recipe", "validate", "distil-tiny", "simcse-tiny"]) == 0
    out = capsys.readouterr().out
    assert "ok      distil-tiny\n        note: distill.teacher: 'runs/bert-tiny/export' is not a model folder" in out
    assert "note: simcse.encoder: 'runs/bert-tiny/export' is not a model folder" in out
