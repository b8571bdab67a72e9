"""Causal-LM (GPT-2, Llama): predict each token from the ones before it.

Rows: the token stream cut into blocks, documents separated by ``[EOS]`` (so BOS of the export
is ``[EOS]``). Collator: ``CausalCollator`` (labels = inputs; positions may restart per
document). Loss: next-token cross-entropy, with the vocabulary head and loss in row chunks
(``speed.chunked_lm_loss``) so the full logits never exist. Metrics: perplexity, bits per byte
and the perplexity of a unigram model on the same blocks (the floor a model must beat). Export:
the stock ``*ForCausalLM``, left padding, sampling ``generation_config.json``; pipeline
``text-generation``.
"""

from __future__ import annotations

from typing import Any

import torch

from nlpssl.objectives.base import Objective
from nlpssl.training import PretrainTrainer


class CausalLM(Objective):
    framing = "causal"
    template = "causal"
    collators = ("causal",)
    auto_class = "AutoModelForCausalLM"
    tag = "causal-lm"
    pipeline_tag = "text-generation"
    generative = True
    decoder_only = True
    usage = ('from transformers import pipeline\npipe = pipeline("text-generation", model=model)\n'
             'pipe("Once upon a time")')

    def build_collator(self, tokenizer):
        from nlpssl.collators import CausalCollator

        return CausalCollator.from_tokenizer(tokenizer, reset_positions=self.recipe.collator.reset_positions)

    def trainer_class(self):
        return CausalLMTrainer

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"chunked_lm_loss": self.recipe.speed.chunked_lm_loss}

    def headline(self, eval_metrics: dict[str, Any], stats: dict, trainer) -> dict[str, Any]:
        m = super().headline(eval_metrics, stats, trainer)
        counts = stats.get("train_unigram_counts") or []
        if counts:
            m["eval_unigram_perplexity"] = unigram_perplexity(counts, trainer.eval_dataset, trainer.data_collator.pad_id)
        return m

    def card_notes(self, arch: str) -> str:
        return ("BOS is `[EOS]`: training separated documents with `[EOS]`, so a text's start follows it. "
                "Clients that prepend BOS (`generate()` with no prompt, lm-evaluation-harness) therefore "
                "condition on what training saw. The tokenizer pads on the left, for batched `generate()`.")


def unigram_perplexity(counts, eval_dataset, pad_id: int) -> float:
    """Perplexity of an add-one unigram model fitted on the training tokens, on the held-out blocks."""
    import numpy as np

    counts = np.asarray(counts, dtype=np.float64)
    probs = (counts + 1.0) / (counts.sum() + len(counts))
    ids = np.asarray(eval_dataset.with_format("numpy")["input_ids"])[:, 1:].reshape(-1)
    ids = ids[ids != pad_id]
    return float(np.exp(-np.log(probs[ids]).mean()))


class CausalLMTrainer(PretrainTrainer):
    """Next-token loss; with ``chunked_lm_loss=True`` the head and loss run in row chunks."""

    def __init__(self, *args, chunked_lm_loss: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._chunked = chunked_lm_loss
        self._hidden_only = False
        if chunked_lm_loss:
            self._wrap_lm_head(self.model.get_output_embeddings())

    def _wrap_lm_head(self, head: torch.nn.Module) -> None:
        """Let the causal-LM head pass the final hidden states through, for :func:`chunked_lm_loss`.

        Swapped on the instance, as for the masked-LM head: the call still goes through the
        (possibly DDP-wrapped) model's forward, parameter names and the export stay stock.
        """
        dense_forward = head.forward

        def forward(hidden):
            return hidden if self._hidden_only else dense_forward(hidden)

        head.forward = forward

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._chunked:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = self.model_inputs(inputs)
        labels = inputs.pop("labels")
        self._hidden_only = True
        try:
            hidden = model(**inputs).logits  # [B, L, H]: the head passed the states through
        finally:
            self._hidden_only = False
        weight = self.model.get_output_embeddings().weight
        loss = chunked_lm_loss(hidden[:, :-1].reshape(-1, hidden.shape[-1]), weight, labels[:, 1:].reshape(-1))
        return (loss, {}) if return_outputs else loss


def chunked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int = 512) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (-100 ignored), in row chunks.

    The same loss and gradients as ``F.cross_entropy(hidden @ weight.T, targets)``, with the same
    matmul FLOPs, but the [N, V] logits never exist at once: each chunk of ``rows`` rows computes its
    logits, its loss and its gradients (softmax - one-hot) right away, and the backward pass only
    scales the stored gradients. For a causal-LM the full logits are the largest tensors of a step
    (32 x 128 x 8192 fp32 = 134 MB); allocating and freeing them every step costs page faults and
    memory traffic, which on a 2-core CPU made up most of the gap to the matmul floor.
    """
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, rows, need_grad)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, rows, need_grad):
        valid = targets != -100
        count = valid.sum().clamp(min=1).to(torch.float32)
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for begin in range(0, hidden.shape[0], rows):
            h, t, keep = hidden[begin:begin + rows], targets[begin:begin + rows], valid[begin:begin + rows]
            logits = (h @ weight.t()).float()  # [n, V]
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, t.clamp(min=0).unsqueeze(1)).squeeze(1)
            total += torch.where(keep, lse - picked, 0.0).sum()
            if need_grad:
                grad = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place
                grad[torch.arange(len(t), device=t.device), t.clamp(min=0)] -= 1.0
                # divided by the token count only after the matmuls: entries of 1 / (V N) would
                # flush to zero in fp16 before the loss scaler ever saw them
                grad = grad.mul_(keep.to(grad.dtype).unsqueeze(1)).to(h.dtype)
                grad_hidden[begin:begin + rows] = ((grad @ weight).float() / count).to(grad_hidden.dtype)
                grad_weight += (grad.t() @ h).float() / count
        if need_grad:
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total / count

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, grad_weight * grad_output, None, None, None
