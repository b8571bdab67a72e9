"""Trainer pieces: the masked-LM loss on masked positions only, accuracy, graceful stop.

Imported lazily (it imports torch and transformers at the top).
"""

from __future__ import annotations

import math
import os
import signal

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback


def mlm_head(model) -> torch.nn.Module:
    """The first module of a stock masked-LM's head (BERT ``cls``, RoBERTa ``lm_head``, ModernBERT ``head``).

    Selecting positions at its input is enough: whatever follows (ModernBERT's ``decoder``) acts
    on the last dimension only.
    """
    for name in ("cls", "lm_head", "head"):
        if hasattr(model, name):
            return getattr(model, name)
    raise TypeError(f"{type(model).__name__} has no masked-LM head named cls or lm_head")


class PretrainTrainer(Trainer):
    """``transformers.Trainer`` with a masked-LM loss that can skip unmasked positions.

    With ``sparse_mlm_head=True`` the encoder runs as usual but the vocabulary head (dense +
    layer norm + a hidden x vocab projection, the largest matmul of a small model) runs only on
    the ~15% of positions that carry a label: hidden[B, L, H] -> hidden[labels != -100] [N, H]
    -> logits [N, V]. The loss is the same cross-entropy the stock model computes; the exported
    model is untouched.

    Evaluation also counts masked-token accuracy, reported as ``eval_mlm_accuracy``.
    """

    def __init__(self, *args, objective: str = "mlm", sparse_mlm_head: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean
        self._correct = torch.zeros(2, dtype=torch.float64)  # [correct, total] on eval batches
        self._selected: torch.Tensor | None = None
        if objective == "mlm" and sparse_mlm_head:
            self._make_head_sparse(mlm_head(self.model))

    def _make_head_sparse(self, head: torch.nn.Module) -> None:
        """Run ``head`` only on the selected positions while ``self._selected`` is set.

        The forward is swapped on the instance (not the module tree), so parameter names,
        checkpoints, DDP wrapping and the export stay exactly those of the stock model, and the
        call still goes through the (possibly DDP-wrapped) model's own forward.
        """
        dense_forward = head.forward

        def forward(hidden):
            if self._selected is not None:
                hidden = hidden[self._selected]  # [B, L, H] -> [N, H]
            return dense_forward(hidden)

        head.forward = forward

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.objective != "mlm":
            inputs.pop("word_starts", None)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        inputs.pop("word_starts", None)
        selected = labels != -100
        target = labels[selected]
        self._selected = selected
        try:
            logits = model(**inputs).logits  # [N, V] with the sparse head, else [B, L, V]
        finally:
            self._selected = None
        if logits.dim() == 3:
            logits = logits[selected]
        loss = F.cross_entropy(logits.float(), target)
        if not model.training:
            with torch.no_grad():
                hits = (logits.argmax(-1) == target).sum().item()
            self._correct += torch.tensor([hits, target.numel()], dtype=torch.float64)
        return (loss, {}) if return_outputs else loss

    def evaluate(self, *args, **kwargs):
        self._correct.zero_()
        return super().evaluate(*args, **kwargs)

    def log(self, logs, *args, **kwargs):
        if "eval_loss" in logs:
            if self.objective == "mlm" and self._correct[1] > 0:
                counts = self._correct.clone()
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    counts = counts.to(self.args.device)
                    torch.distributed.all_reduce(counts)
                logs["eval_mlm_accuracy"] = round(float(counts[0] / counts[1]), 4)
            elif self.objective != "mlm" and logs["eval_loss"] < 50:
                logs["eval_perplexity"] = round(math.exp(logs["eval_loss"]), 3)
        super().log(logs, *args, **kwargs)


class GracefulStop(TrainerCallback):
    """On SIGINT/SIGTERM: finish the current step, save a checkpoint, stop (nothing lost).

    A second signal stops at once. Rerunning with ``training.resume=true`` continues from the
    saved checkpoint to the same final step.
    """

    def __init__(self):
        self.stopped = False

    def on_train_begin(self, args, state, control, **kwargs):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped:
            control.should_save = True
            control.should_training_stop = True
        return control

    def _handle(self, signum, frame):
        if self.stopped:
            raise KeyboardInterrupt
        self.stopped = True
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"[nlpssl] signal {signum}: saving a checkpoint after this step "
                  "(send it again to stop at once)", flush=True)
