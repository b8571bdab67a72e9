"""Trainer pieces: the masked-LM loss on masked positions only, accuracy, graceful stop, a
wall-clock budget with a learning-rate schedule that follows elapsed time.

Imported lazily (it imports torch and transformers at the top).
"""

from __future__ import annotations

import math
import os
import signal
import time

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from nlpssl.errors import NlpsslError
from nlpssl.export import SPAN_BOUNDARY_HEAD


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

    def __init__(self, *args, objective: str = "mlm", sparse_mlm_head: bool = True,
                 span_boundary: bool = False, chunked_lm_loss: bool = False, **kwargs):
        if span_boundary:
            model = kwargs.get("model")
            if model is None:
                raise NlpsslError("PretrainTrainer: span_boundary=True needs the model passed as model=...")
            # A submodule, so the optimizer, checkpoints, resume and DDP all see it; the export
            # drops its tensors (nlpssl.export.write_stock_weights).
            std = getattr(model.config, "initializer_range", 0.02)
            model.add_module(SPAN_BOUNDARY_HEAD, SpanBoundaryHead(model.config.hidden_size, init_std=std))
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean
        self._correct = torch.zeros(2, dtype=torch.float64)  # [correct, total] on eval batches
        self._boundary_sum: torch.Tensor | float = 0.0  # boundary loss summed since the last log
        self._boundary_steps = 0
        self._selected: torch.Tensor | None = None
        self._boundary_logits: torch.Tensor | None = None
        self._sparse = objective == "mlm" and sparse_mlm_head
        self._span_boundary = span_boundary
        if objective == "mlm" and (sparse_mlm_head or span_boundary):
            self._wrap_head(mlm_head(self.model))
        self._chunked = objective == "causal" and chunked_lm_loss
        self._hidden_only = False
        if self._chunked:
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

    def _wrap_head(self, head: torch.nn.Module) -> None:
        """Let ``head`` see only the selected positions, and run the span boundary head beside it.

        The forward is swapped on the instance (not the module tree), so parameter names,
        checkpoints, DDP wrapping and the export stay exactly those of the stock model, and the
        call still goes through the (possibly DDP-wrapped) model's own forward. The boundary head
        runs here too, inside that forward, so mixed-precision autocast covers it (under DDP it
        needs ``ddp_find_unused_parameters=False``, which ``training_arguments`` sets).
        """
        dense_forward = head.forward
        model = self.model

        def forward(hidden):
            if self._selected is not None:
                if self._span_boundary and head.training:
                    z = getattr(model, SPAN_BOUNDARY_HEAD)(hidden, self._selected)  # [N, H]
                    self._boundary_logits = model.get_output_embeddings()(z)  # [N, V]
                if self._sparse:
                    hidden = hidden[self._selected]  # [B, L, H] -> [N, H]
            return dense_forward(hidden)

        head.forward = forward

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs.pop("word_starts", None)  # the collator's, for masking only; no model takes it
        mask = inputs.get("attention_mask")
        if self.objective != "t5" and mask is not None and mask.device.type == "cpu" and bool(mask.all()):
            # Packed blocks have no padding: without a mask SDPA takes its fused (flash) CPU kernel
            # instead of building and applying a [B, 1, L, L] mask. The result is the same.
            inputs.pop("attention_mask")
        if self._chunked:
            labels = inputs.pop("labels")
            self._hidden_only = True
            try:
                hidden = model(**inputs).logits  # [B, L, H]: the head passed the states through
            finally:
                self._hidden_only = False
            weight = self.model.get_output_embeddings().weight
            loss = chunked_lm_loss(hidden[:, :-1].reshape(-1, hidden.shape[-1]), weight, labels[:, 1:].reshape(-1))
            return (loss, {}) if return_outputs else loss
        if self.objective != "mlm":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        selected = labels != -100
        target = labels[selected]
        self._selected = selected
        try:
            logits = model(**inputs).logits  # [N, V] with the sparse head, else [B, L, V]
            boundary_logits = self._boundary_logits
        finally:
            self._selected = self._boundary_logits = None
        if logits.dim() == 3:
            logits = logits[selected]
        loss = F.cross_entropy(logits.float(), target)
        if boundary_logits is not None:
            boundary = F.cross_entropy(boundary_logits.float(), target)
            self._boundary_sum = self._boundary_sum + boundary.detach()  # no host sync per step
            self._boundary_steps += 1
            loss = loss + boundary
        if not model.training:
            with torch.no_grad():
                hits = (logits.argmax(-1) == target).sum().item()
            self._correct += torch.tensor([hits, target.numel()], dtype=torch.float64)
        return (loss, {}) if return_outputs else loss

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The stock scheduler, or, with a :class:`TimeBudget` callback, one keyed to elapsed time.

        With a budget the schedule's progress is ``max(step / max_steps, elapsed / budget)``: warm-up
        over the first ``warmup`` share of it, then the decay of ``lr_scheduler_type``, so a slow
        machine runs fewer steps but still ends with a fully decayed learning rate.
        """
        if self.lr_scheduler is not None or self._time_budget() is None:
            return super().create_scheduler(num_training_steps, optimizer)
        kind = getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)
        total = max(1, num_training_steps)
        warmup = self.args.get_warmup_steps(num_training_steps) / total

        def factor(step: int) -> float:
            budget = self._time_budget()  # looked up, not captured: a caller may swap the callback
            progress = max(step / total, budget.progress if budget is not None else 0.0)
            return schedule_factor(kind, min(progress, 1.0), warmup)

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _time_budget(self) -> TimeBudget | None:
        return next((cb for cb in self.callback_handler.callbacks if isinstance(cb, TimeBudget)), None)

    def evaluate(self, *args, **kwargs):
        self._correct.zero_()
        return super().evaluate(*args, **kwargs)

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
        if "loss" in logs and self._boundary_steps:
            # "loss" is masked-LM + boundary loss; this is the boundary part alone (this rank's)
            logs["span_boundary_loss"] = round(float(self._boundary_sum) / self._boundary_steps, 4)
            self._boundary_sum, self._boundary_steps = 0.0, 0
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


class SpanBoundaryHead(torch.nn.Module):
    """SpanBERT's span boundary objective (Joshi et al. 2020, section 3.2), a training-only head.

    Each masked token is predicted again, this time from the encoder states of the two unmasked
    tokens just outside its masked run and from its position inside the run, through a two-layer
    GELU + LayerNorm network and the model's own output embeddings. It pushes span information
    into the boundary states; the exported model is the stock masked-LM without it.

    Boundaries are the nearest unmasked positions (two masked spans that touch share them), found
    from the label mask with cumulative max/min, so any masking unit works. Offsets inside a run
    are clipped at ``max_offset - 1``.
    """

    def __init__(self, hidden_size: int, max_offset: int = 32, eps: float = 1e-12, init_std: float = 0.02):
        super().__init__()
        self.max_offset = max_offset
        self.positions = torch.nn.Embedding(max_offset, hidden_size)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(3 * hidden_size, hidden_size), torch.nn.GELU(), torch.nn.LayerNorm(hidden_size, eps=eps),
            torch.nn.Linear(hidden_size, hidden_size), torch.nn.GELU(), torch.nn.LayerNorm(hidden_size, eps=eps),
        )
        for module in self.modules():  # as the host model initialises its own (BERT-style normal)
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(module.weight, std=init_std)
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.zeros_(module.bias)

    def forward(self, hidden: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """[N, H] states for the N selected positions of ``hidden`` [B, L, H], in row-major order."""
        left, right, offset = span_boundaries(selected, self.max_offset)
        rows = selected.nonzero(as_tuple=True)[0]  # row of each selected position, row-major
        pair = torch.cat([hidden[rows, left], hidden[rows, right], self.positions(offset).to(hidden.dtype)], dim=-1)
        return self.mlp(pair)


def span_boundaries(selected: torch.Tensor, max_offset: int) -> tuple[torch.Tensor, ...]:
    """For each selected position (row-major): its left and right unmasked neighbours and its
    0-based offset from the left one's successor, clipped at ``max_offset - 1``.

    Example: ``selected [[0, 1, 1, 0, 1]]`` -> left ``[0, 0, 3]``, right ``[3, 3, 4]`` (a run that
    reaches the row's end uses the last position), offset ``[0, 1, 0]``.
    """
    length = selected.shape[1]
    positions = torch.arange(length, device=selected.device).expand_as(selected)
    left = torch.where(selected, -1, positions).cummax(dim=1).values
    right = torch.where(selected, length, positions).flip(1).cummin(dim=1).values.flip(1)
    left, right, at = left[selected], right[selected], positions[selected]
    offset = (at - left - 1).clamp(max=max_offset - 1)
    return left.clamp(min=0), right.clamp(max=length - 1), offset


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
