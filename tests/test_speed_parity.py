"""The speed options change how fast a step runs, not what it computes.

- sparse vs dense masked-LM head: the same loss in fp32 (to ~1e-5) and the same gradients;
- chunked vs stock causal-LM loss: the same loss and gradients in fp32 (inside the Trainer the stock
  loss is divided by the unshifted label count, B x L, a (L - 1) / L scale; the chunked loss is the
  mean over the B x (L - 1) predicted tokens, so the on/off comparison keeps it on both sides);
- all speed options on (bf16 autocast, sparse head, the attention kernel picked for the device)
  vs all off (fp32, dense head, SDPA): the losses of the first training steps on the same data
  and initialisation agree within bf16 tolerance, for masked-LM and causal-LM.
"""

import os

import pytest
import torch

from conftest import tiny_overrides
from nlpssl.recipe import load_recipe


def _setup(tmp_path, tokenizer, name: str, callbacks=(), **extra):
    from nlpssl.pretrain import setup

    # The fixture's tokenizer has no folder of its own (name_or_path is ""): save it, so that every
    # setup compared reads the same one. With tokenizer.path="" each run trained its own WordPiece
    # tokenizer, which is not deterministic, and the runs compared were on different token ids.
    folder = tmp_path / "tokenizer"
    tokenizer.save_pretrained(folder)
    overrides = {"model.dropout": 0.0, "training.logging_steps": 1, "training.save_strategy": "'no'",
                 "training.eval_strategy": "'no'", "export.enabled": False, "tokenizer.path": str(folder),
                 **extra}
    recipe = load_recipe(name, tiny_overrides(tmp_path, **overrides))
    torch.manual_seed(0)  # the same initial weights for every setup compared
    run = setup(recipe, callbacks, **({} if torch.cuda.is_available() else {"use_cpu": True}))
    assert run.tokenizer.get_vocab() == tokenizer.get_vocab()
    return run


def _first_losses(tmp_path, tokenizer, name: str, steps: int = 3, **extra):
    """The logged losses of the first ``steps`` training steps, and the run (its args say the precision)."""
    from transformers import TrainerCallback

    class Losses(TrainerCallback):
        losses: list[float] = []

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    cb = Losses()
    cb.losses = []
    run = _setup(tmp_path, tokenizer, name, [cb], **{"training.max_steps": steps, **extra})
    run.trainer.train()
    return cb.losses, run


def _loss_and_grads(run, batch, **trainer_kwargs):
    """One compute_loss + backward on a fresh model of the run's recipe (seed 0).

    Returns (loss, {name: gradient}, shape of the vocabulary head's output), the last so that a test
    can tell the two paths compared apart (a speed option that was ignored would compare a path with itself).
    """
    torch.manual_seed(0)
    m = run.objective.build_model(run.tokenizer, attn=run.model.config._attn_implementation)
    trainer = run.objective.trainer_class()(model=m, args=run.args, data_collator=run.collator, **trainer_kwargs)
    head = m.get_output_embeddings()  # the last layer of the head: [.., H] -> [.., V]
    shapes = []
    hook = head.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    try:
        loss = trainer.compute_loss(m, {k: v.clone() for k, v in batch.items()})
    finally:
        hook.remove()
    loss.backward()
    (shape,) = shapes
    return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}, shape


def _assert_same(reference, other) -> None:
    (ref_loss, ref_grads, _), (loss, grads, _) = reference, other
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6), (loss, ref_loss)
    assert ref_grads.keys() == grads.keys()
    for name in ref_grads:
        assert torch.allclose(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6), name


def test_sparse_and_dense_mlm_head_give_the_same_loss_and_gradients(tmp_path, tiny_tokenizer):
    run = _setup(tmp_path, tiny_tokenizer, "bert-tiny", **{"speed.bf16": "off"})
    batch = run.collator([run.data.train[i] for i in range(8)])
    dense, sparse = (_loss_and_grads(run, batch, sparse_mlm_head=on) for on in (False, True))
    # the paths differ: logits for every position [B, L, V], or for the masked ones only [N, V]
    vocab, masked = run.model.get_output_embeddings().out_features, int((batch["labels"] != -100).sum())
    assert dense[2] == (*batch["input_ids"].shape, vocab) and sparse[2] == (masked, vocab), (dense[2], sparse[2])
    _assert_same(dense, sparse)


def test_chunked_and_stock_causal_loss_give_the_same_loss_and_gradients(tmp_path, tiny_tokenizer):
    run = _setup(tmp_path, tiny_tokenizer, "gpt-tiny", **{"speed.bf16": "off"})
    batch = run.collator([run.data.train[i] for i in range(8)])
    batch["labels"][0, 5:9] = -100  # ignored positions count in neither
    stock, chunked = (_loss_and_grads(run, batch, chunked_lm_loss=on) for on in (False, True))
    # the paths differ: the stock head makes logits [B, L, V]; the chunked one passes the states [B, L, H] through
    shape, (vocab, hidden) = tuple(batch["input_ids"].shape), run.model.get_output_embeddings().weight.shape
    assert stock[2] == (*shape, vocab) and chunked[2] == (*shape, hidden), (stock[2], chunked[2])
    _assert_same(stock, chunked)


@pytest.mark.parametrize("name", ["bert-tiny", "gpt-tiny"])
def test_speed_options_on_and_off_agree_within_bf16_tolerance(tmp_path, tiny_tokenizer, name):
    on, run_on = _first_losses(tmp_path / "on", tiny_tokenizer, name, **{"speed.bf16": "on"})
    off, run_off = _first_losses(tmp_path / "off", tiny_tokenizer, name,
                                 **{"speed.bf16": "off", "speed.sparse_mlm_head": False})
    # the runs compared are the two paths, whatever this CPU would pick: bf16 autocast, or fp32
    assert run_on.args.bf16 and not run_off.args.bf16
    assert len(on) == len(off) == 3
    for a, b in zip(on, off):
        # bf16 keeps 8 bits of mantissa (relative step 2**-8 = 0.4%); measured gaps are 1e-7 to 1.4e-4
        # on AMX and on AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2).
        assert abs(a - b) <= 4e-3 * abs(b), (on, off)


def test_bf16_auto_follows_the_forced_cpu_flag_not_the_cpu(tmp_path, monkeypatch):
    """NLPSSL_CPU_BF16 decides speed.bf16=auto on a CPU (conftest sets 0, so every machine runs the fp32
    path of an AVX2 CPU unless a test forces bf16); speed.bf16=on/off win over it."""
    from nlpssl.pretrain import bf16_supported, training_arguments

    if torch.cuda.is_available():
        pytest.skip("on a GPU, CUDA's bf16 support decides auto")
    assert os.environ["NLPSSL_CPU_BF16"] == "0" and not bf16_supported()
    for value, expected in (("0", False), ("1", True), ("off", False), ("on", True)):
        monkeypatch.setenv("NLPSSL_CPU_BF16", value)
        assert bf16_supported() is expected, value
        auto = load_recipe("bert-tiny", tiny_overrides(tmp_path))
        assert auto.speed.bf16 == "auto" and training_arguments(auto).bf16 is expected, value
        for forced in ("on", "off"):
            recipe = load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"speed.bf16": forced}))
            assert training_arguments(recipe).bf16 is (forced == "on"), (value, forced)
