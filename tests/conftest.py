"""Shared fixtures. Every test is offline by construction and uses tiny models and data."""

import os

# Set, not defaulted: a machine with HF_HUB_OFFLINE=0 in its environment must not go online.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["WANDB_DISABLED"] = "true"
# Every test runs the fp32 path of a CPU without bf16 (an AVX2 machine), whatever CPU it lands on;
# the tests of the bf16 path force it with speed.bf16=on.
os.environ["NLPSSL_CPU_BF16"] = "0"

import socket  # noqa: E402

import pytest  # noqa: E402


def free_port() -> int:
    """A TCP port nothing listens on now (for a rendezvous; two suites on one machine cannot collide)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture(scope="session")
def mlm_export(tmp_path_factory):
    """A 4-layer ModernBERT masked-LM export of the tiny shape (a few steps: tests need its files, not its skill)."""
    from nlpssl.pretrain import pretrain

    out = tmp_path_factory.mktemp("mlm-export")
    return pretrain("bert-tiny", tiny_overrides(out, **{
        "model.num_layers": 4, "training.max_steps": 4, "training.eval_strategy": "'no'",
        "training.save_strategy": "'no'", "speed.bf16": "off"})).export_dir


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


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a shared 2-core box two threads are ~15x slower once another job runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
