"""Trainer pieces every objective shares: the base Trainer, graceful stop, a wall-clock budget
with a learning-rate schedule that follows elapsed time.

Imported lazily (it imports torch and transformers at the top).
"""

from __future__ import annotations

import math
import os
import signal
import time

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState



class PretrainTrainer(Trainer):
    """``transformers.Trainer`` with what every objective shares: a learning-rate schedule that can
    follow a wall-clock budget, a fixed evaluation collator, and no attention mask on packed rows.

    Each objective's module (``nlpssl.objectives``) subclasses it for its own loss and metrics;
    the plain one computes the model's own loss (T5) and reports perplexity at evaluation.
    """

    keep_attention_mask = False  # packed rows: dropping an all-ones mask lets SDPA take its fused kernel

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean
        if self._stream() is not None:
            self.add_callback(_StepRows(self._stream()))

    def model_inputs(self, inputs: dict) -> dict:
        """The collated batch as the model takes it."""
        inputs.pop("word_starts", None)  # the collator's, for masking only; no model takes it
        mask = inputs.get("attention_mask")
        if not self.keep_attention_mask and mask is not None and mask.device.type == "cpu" and bool(mask.all()):
            # Packed blocks have no padding: without a mask SDPA takes its fused (flash) CPU kernel
            # instead of building and applying a [B, 1, L, L] mask. The result is the same.
            inputs.pop("attention_mask")
        return inputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # The model's own loss as a per-batch mean, as every objective's loss is (loss_is_scaled_for_ga
        # is False, so the Trainer divides it by the accumulation steps). Given num_items_in_batch, a
        # model that takes it (GPT-2, Llama) would divide by the accumulated batch's tokens itself,
        # the Trainer again: loss and gradients 1/gradient_accumulation_steps of the true ones.
        return super().compute_loss(model, self.model_inputs(inputs), return_outputs)

    def eval_logs(self, logs: dict) -> None:
        """Add this objective's evaluation figures to ``logs`` (which holds ``eval_loss``)."""
        if logs["eval_loss"] < 50:
            logs["eval_perplexity"] = round(math.exp(logs["eval_loss"]), 3)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The stock scheduler, or, with a :class:`TimeBudget` callback, one keyed to elapsed time.

        With a budget the schedule's progress is ``max(step / max_steps, elapsed / budget)``: warm-up
        over the first ``warmup`` share of it, then the decay of ``lr_scheduler_type``, so a slow
        machine runs fewer steps but still ends with a fully decayed learning rate. A whole number of
        ``warmup_steps`` is that many steps, whatever the budget: the rate rises with ``step / warmup``
        times the decay (as a share of max_steps, a cap the budget seldom reaches, it ended far sooner).
        """
        if self.lr_scheduler is not None or self._time_budget() is None:
            return super().create_scheduler(num_training_steps, optimizer)
        kind = getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)
        total = max(1, num_training_steps)
        warmup_steps = int(self.args.warmup_steps) if self.args.warmup_steps >= 1 else 0
        warmup = 0.0 if warmup_steps else self.args.get_warmup_steps(num_training_steps) / total

        def factor(step: int) -> float:
            budget = self._time_budget()  # looked up, not captured: a caller may swap the callback
            progress = max(step / total, budget.progress if budget is not None else 0.0)
            decay = schedule_factor(kind, min(progress, 1.0), warmup)
            return decay * min(1.0, step / warmup_steps) if warmup_steps else decay

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _issue_warnings_after_load(self, load_result) -> None:
        """Resuming: a tied weight (ModernBERT's ``decoder.weight`` is the token embedding) is not in the
        checkpoint because safetensors stores a shared tensor once; loading its twin loaded it, so it is
        not reported as missing. Any other missing or unexpected key still is."""
        params = dict(self.model.named_parameters(remove_duplicate=False))
        missing = set(load_result.missing_keys)
        loaded = {params[n].data_ptr() for n in params if n not in missing}
        tied = {k for k in missing if k in params and params[k].data_ptr() in loaded}
        super()._issue_warnings_after_load(
            load_result._replace(missing_keys=[k for k in load_result.missing_keys if k not in tied]))

    def _time_budget(self) -> TimeBudget | None:
        return next((cb for cb in self.callback_handler.callbacks if isinstance(cb, TimeBudget)), None)

    def get_eval_dataloader(self, eval_dataset=None):
        """The stock eval loader, collated by :func:`~nlpssl.collators.batching.fixed_copy`.

        Every evaluation pass (and every run with the same seed and data) then scores the model on
        the same masked positions, and evaluating never advances the training masks.
        """
        from nlpssl.collators.batching import fixed_copy

        train_collator = self.data_collator
        self.data_collator = fixed_copy(train_collator)
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def log(self, logs, *args, **kwargs):
        if "eval_loss" in logs:
            self.eval_logs(logs)
        elif "loss" in logs:
            if self._stream() is not None:
                logs.update(self._stream().throughput())
            budget = self._time_budget()
            if budget is not None:
                # the share of the budget used by this step's end: the next step's rate follows it
                logs["budget/progress"] = round(budget.progress, 6)
        super().log(logs, *args, **kwargs)

    # -- streaming (data.streaming: true; nlpssl.stream) -------------------------------------------
    def _stream(self):
        """The training set if it is a :class:`nlpssl.stream.BlockStream` (duck-typed: the stream
        module imports the data layer, which must not depend on this one)."""
        return self.train_dataset if hasattr(self.train_dataset, "state_at") else None

    def get_train_dataloader(self):
        """The stock loader, or for a stream a plain one in this process: each rank reads its own part.

        (``accelerator.prepare`` would have every rank read the whole stream and keep a slice of it,
        or rank 0 read it all and send batches; the Trainer moves batches to the device itself.)
        """
        stream = self._stream()
        if stream is None:
            return super().get_train_dataloader()
        from torch.utils.data import DataLoader

        return DataLoader(stream, batch_size=self._train_batch_size, collate_fn=stream.collator(self.data_collator),
                          num_workers=0, pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available())

    def save_after_stream_error(self, err: BaseException, complete=lambda folder: False) -> str | None:
        """After the stream stopped training with ``err`` (a file it could not read): checkpoint the
        steps taken and return the checkpoint's folder. None if ``err`` did not come from the stream,
        before the first step, or under several processes (the others wait in a collective and
        cannot join a save; the launcher stops them).

        The model and optimizer are at the end of the last step: the error came while the batches
        of the next one were read, before any of them was trained on. The stream's position is set
        back to the rows of the steps taken, not of the batches read since. A complete checkpoint of
        this step (``save_steps`` saved it, or this run resumed from it and failed before a step)
        holds that state already and is not written again: ``complete(folder)`` says whether it is
        (pretrain passes ``nlpssl.runs.checkpoint_problem``, which runs -> recipe -> objectives ->
        this module keeps from being imported here).
        """
        stream = self._stream()
        if stream is None or stream.failed is not err or self.state.global_step == 0 or self.args.world_size > 1:
            return None
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.join(self._get_output_dir(trial=None), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if complete(folder):
            return folder
        stream.consumed = stream.step_rows
        self._save_checkpoint(self.model, trial=None)
        return folder

    def _save_checkpoint(self, model, trial):
        stream = self._stream()
        if stream is not None:
            # Written before the Trainer's files: trainer_state.json (written last) marks the
            # checkpoint complete (nlpssl.runs), so a complete checkpoint always has its data state.
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            stream.save_state(folder)
        return super()._save_checkpoint(model, trial)


class KeepTokenizer(TrainerCallback):
    """Saves a reused tokenizer (``tokenizer.path``, a teacher's, an encoder's) into every checkpoint.

    The run's weights are then exported (and resumed) with the tokenizer they were trained on, even
    after the folder it came from was deleted or replaced (a teacher run trained again: WordPiece gives
    other ids each time). Rank 0 writes; a checkpoint saved without it falls back to that folder.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def on_save(self, args, state, control, **kwargs):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            keep_tokenizer(self.tokenizer, folder)


def keep_tokenizer(tokenizer, folder: str) -> None:
    """Save ``tokenizer`` into a saved model folder file by file, each whole, ``tokenizer.json`` last.

    The folder already reads as complete (a checkpoint's trainer_state.json is written before callbacks
    run; ``final/`` is complete with its weights), so a kill must leave no tokenizer.json (the export and a
    resume then use the folder the tokenizer came from) rather than a cut-short one that neither can read.
    """
    import shutil

    tmp = os.path.join(folder, ".tokenizer.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    for name in sorted(os.listdir(tmp), key=lambda name: name == "tokenizer.json"):
        os.replace(os.path.join(tmp, name), os.path.join(folder, name))
    os.rmdir(tmp)


class _StepRows(TrainerCallback):
    """Records the stream's rows at the end of each optimizer step (see ``save_after_stream_error``)."""

    def __init__(self, stream):
        self.stream = stream

    def on_step_end(self, args, state, control, **kwargs):
        self.stream.step_rows = self.stream.consumed


class GracefulStop(TrainerCallback):
    """On SIGINT/SIGTERM: finish the current step, save a checkpoint, stop (nothing lost).

    A second signal stops at once. Rerunning with ``training.resume=true`` continues from the
    saved checkpoint to the same final step.
    """

    def __init__(self):
        self.stopped = False
        self._before: dict[int, object] = {}  # the handlers training replaced, put back after it

    def on_train_begin(self, args, state, control, **kwargs):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._before.setdefault(sig, signal.getsignal(sig))
            signal.signal(sig, self._handle)

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def restore(self) -> None:
        """Put back the handlers training replaced (idempotent). Left in place, a process that trained
        once, a notebook's kernel above all, ignored its next Ctrl-C or SIGTERM with a note about a
        checkpoint that no run would save."""
        for sig, handler in self._before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._before.clear()

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


def schedule_factor(kind: str, progress: float, warmup: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1] of the run (warm-up share ``warmup``).

    ``linear`` and ``cosine`` decay to 0 at progress 1, ``constant_with_warmup`` stays at 1; the
    same shapes as transformers' step-keyed schedulers.
    """
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if kind == "constant_with_warmup":
        return 1.0
    rest = (progress - warmup) / max(1.0 - warmup, 1e-12)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(rest, 1.0)))
    return max(0.0, 1.0 - rest)


class TimeBudget(TrainerCallback, ExportableState):
    """Stops training once ``minutes`` of wall time have passed; the scheduler reads its progress.

    The clock starts at the first step and counts evaluations and checkpoints made during training.
    Under DDP rank 0's clock is broadcast at every step, so every rank uses the same learning rate
    and stops at the same step (a rank that stopped alone would hang the others). The time used is
    saved in each checkpoint's ``trainer_state.json`` (``stateful_callbacks``), so a resumed run
    continues the same budget: time between the last checkpoint and a kill is not counted.
    """

    def __init__(self, minutes: float, used_s: float = 0.0):
        self.minutes = float(minutes)
        self.used_s = float(used_s)  # seconds of training before this process started
        self.elapsed_s = float(used_s)
        self.stopped = False
        self._started: float | None = None
        self.progress_bars = None  # the Trainer's ProgressCallback: its bar's total follows the budget

    @property
    def progress(self) -> float:
        return self.elapsed_s / (60.0 * self.minutes)

    def state(self) -> dict:
        return {"args": {"minutes": self.minutes, "used_s": self.elapsed_s}, "attributes": {}}

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._started is None:
            self._started = time.perf_counter()
        self.elapsed_s = _rank0_value(self.used_s + time.perf_counter() - self._started, args.device)
        if self.elapsed_s >= 60.0 * self.minutes:
            self.stopped = True
            control.should_training_stop = True
        bar = getattr(self.progress_bars, "training_bar", None)
        if bar is not None and self.progress > 0 and state.global_step > 0:
            # max_steps is only a cap: show the step the budget will end near, not the cap
            bar.total = max(state.global_step, min(state.max_steps, round(state.global_step / min(self.progress, 1.0))))
        return control


def _rank0_value(value: float, device) -> float:
    """``value`` as rank 0 has it (itself outside a multi-process run)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    shared = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(shared, src=0)
    return float(shared.item())
