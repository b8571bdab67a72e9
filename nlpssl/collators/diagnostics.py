"""Puts a MaskingCollator's diagnostics (realised rate, whole-word share, span lengths) in logs."""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback

from nlpssl.collators.masking import MaskingCollator

PREFIX = "mask/"


class MaskingDiagnosticsCallback(TrainerCallback):
    """Adds a MaskingCollator's diagnostics to every training log as ``mask/*`` keys.

    Keys: ``mask/rate``, ``mask/whole_word_share`` and, for spans, ``mask/span_count``,
    ``mask/span_len_mean``, ``mask/span_cut_share`` and ``mask/span_len_1`` ..
    ``mask/span_len_10`` (see :meth:`MaskingCollator.pop_stats`).

    Needs ``dataloader_num_workers=0``: with workers the collator runs in other processes and its
    counters never reach this one, so the callback warns once and adds nothing rather than stale
    numbers. Eval batches do not count: evaluation collates with a copy of the collator (fixed masks,
    :func:`nlpssl.collators.batching.fixed_copy`) that keeps its own counters.

    ``Trainer`` records a log in ``state.log_history`` and runs the reporting callbacks
    (TensorBoard, W&B, the progress bar) before callbacks passed with ``callbacks=[...]``. Use
    :meth:`attach` so the stats reach all of them:

        trainer = Trainer(model=model, args=args, data_collator=collator, ...)
        MaskingDiagnosticsCallback.attach(trainer, collator)
    """

    def __init__(self, collator: MaskingCollator) -> None:
        self.collator = collator
        self._warned = False

    @classmethod
    def attach(cls, trainer: Any, collator: MaskingCollator) -> MaskingDiagnosticsCallback:
        """Creates the callback and puts it first in ``trainer``'s callback list."""
        callback = cls(collator)
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any):
        """Adds the stats gathered since the last training log to ``logs`` (and the history)."""
        if (
            logs is None or "loss" not in logs
        ):  # eval logs: leave the counters to the next train log
            return
        if args.dataloader_num_workers > 0:
            if not self._warned:
                warnings.warn(
                    "MaskingDiagnosticsCallback: the collator runs in dataloader workers, so its "
                    f"stats are invisible here (got dataloader_num_workers="
                    f"{args.dataloader_num_workers}). Set it to 0 to log mask/* diagnostics.",
                    stacklevel=2,
                )
                self._warned = True
            return
        stats = {PREFIX + key: value for key, value in self.collator.pop_stats().items()}
        logs.update(stats)
        # Trainer.log copied `logs` into the history before calling us; keep both in step.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(stats)
