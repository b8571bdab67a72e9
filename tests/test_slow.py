"""Long or GPU-only checks: skipped by default, selected with `-m slow` / `-m gpu`."""

import json

import pytest

from conftest import tiny_overrides
from nlpssl.recipe import load_recipe


@pytest.mark.slow
def test_readme_main_job_learns_the_cat_and_the_mat(tmp_path):
    """The README main job as shipped (about 8 minutes on 2 cores, fp32 as on an AVX2 CPU): under 10
    minutes, accuracy >= 0.5 and "mat"."""
    from nlpssl.demo import fill_mask
    from nlpssl.pretrain import pretrain

    import time

    start = time.perf_counter()
    recipe = load_recipe("bert-tiny", [f"training.output_dir={tmp_path / 'run'}",
                                       f"data.cache_dir={tmp_path / 'cache'}"])
    result = pretrain(recipe)
    assert time.perf_counter() - start < 600, "the main job fits 10 minutes, tokenizer and data included"
    assert result.metrics["eval_mlm_accuracy"] >= 0.5
    assert fill_mask(result.export_dir, "The cat sat on the [MASK].")[0].token == "mat"


@pytest.mark.gpu
def test_cuda_training_steps_use_bf16_and_tf32(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from nlpssl.pretrain import pretrain, training_arguments

    recipe = load_recipe("gpt-tiny", tiny_overrides(tmp_path, **{"training.max_steps": 6}))
    args = training_arguments(recipe)
    assert args.bf16 and args.tf32 and args.device.type == "cuda"
    result = pretrain(recipe)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["eval_loss"] < 20
