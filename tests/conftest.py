"""Shared fixtures. Every test is offline by construction and uses tiny models and data."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def story_texts():
    from nlpssl.corpus import generate_stories

    return list(generate_stories(400, seed=1))


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory, story_texts):
    """A WordPiece tokenizer of ~600 tokens trained on built-in stories (well under a second)."""
    from nlpssl.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    return train_tokenizer(story_texts, out, algorithm="wordpiece", vocab_size=600, num_sentinels=16)


def tiny_overrides(tmp_path, **extra) -> list[str]:
    """Overrides that shrink a shipped recipe to a seconds-long run in ``tmp_path``."""
    base = {
        "training.output_dir": str(tmp_path / "run"),
        "data.cache_dir": str(tmp_path / "cache"),
        "data.builtin_stories": 300,
        "data.block_size": 32,
        "data.eval_fraction": 0.05,
        "tokenizer.vocab_size": 400,
        "tokenizer.num_sentinels": 16,
        "model.hidden_size": 32,
        "model.num_layers": 2,
        "model.num_heads": 2,
        "model.intermediate_size": 64,
        "training.max_steps": 12,
        "training.per_device_train_batch_size": 8,
        "training.per_device_eval_batch_size": 16,
        "training.learning_rate": 3e-3,
        "training.warmup_steps": 0,
        "training.eval_steps": 6,
        "training.save_steps": 6,
        "training.logging_steps": 2,
        "training.disable_tqdm": True,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
