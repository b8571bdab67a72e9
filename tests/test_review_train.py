"""Review of the training, export and fine-tuning side: each test fails on the code before its fix."""

import pytest
import torch

from conftest import tiny_overrides
from nlpssl.recipe import load_recipe


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
