"""Masked-LM (BERT, RoBERTa, ModernBERT): predict masked tokens from both sides.

Rows: ``[CLS] ... [SEP]`` blocks, documents separated by ``[SEP]``. Collator: token, whole-word
or span masking (``MaskingCollator``). Loss: cross-entropy on the masked positions only, with the
vocabulary head run on those positions alone (``speed.sparse_mlm_head``), plus SpanBERT's span
boundary loss when ``collator.span_boundary`` is on. Metric: masked-token accuracy. Export: the
stock ``*ForMaskedLM`` without the boundary head; pipeline ``fill-mask``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from nlpssl.errors import NlpsslError
from nlpssl.objectives.base import Objective
from nlpssl.training import PretrainTrainer

SPAN_BOUNDARY_HEAD = "span_boundary_head"  # training-only submodule, never exported


class MaskedLM(Objective):
    framing = "mlm"
    template = "mlm"
    collators = ("token", "word", "span")
    auto_class = "AutoModelForMaskedLM"
    tag = "masked-lm"
    pipeline_tag = "fill-mask"
    metric = ("accuracy", "eval_mlm_accuracy")
    training_only = (f"{SPAN_BOUNDARY_HEAD}.",)
    usage = ('from transformers import pipeline\npipe = pipeline("fill-mask", model=model)\n'
             'pipe("The cat sat on the [MASK].")')

    def build_collator(self, tokenizer):
        return masking_collator(self.recipe, tokenizer)

    def trainer_class(self):
        return MaskedLMTrainer

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"sparse_mlm_head": self.recipe.speed.sparse_mlm_head, "span_boundary": self.recipe.collator.span_boundary}

    def make_trainer(self, args, model, data, collator, callbacks: list):
        from nlpssl.collators.diagnostics import MaskingDiagnosticsCallback

        trainer = super().make_trainer(args, model, data, collator, callbacks)
        if args.dataloader_num_workers == 0:
            # First in the list, so the stats reach log_history and the progress bar.
            MaskingDiagnosticsCallback.attach(trainer, collator)
        return trainer

    def headline(self, eval_metrics: dict[str, Any], stats: dict, trainer) -> dict[str, Any]:
        return {"eval_mlm_accuracy": eval_metrics.get("eval_mlm_accuracy")}

    def card_notes(self, arch: str) -> str:
        return ("Loading it as an encoder (`AutoModel`, sentence-transformers, a classifier) prints a load "
                "report listing the masked-LM head's weights as unused"
                + (" and a newly initialised pooler" if arch in ("bert", "roberta") else "")
                + ": that is expected, the head is only for fill-mask.")


def masking_collator(recipe, tokenizer):
    """The recipe's token / word / span masking collator, with ids read from the shared tokenizer."""
    from nlpssl.collators import MaskingCollator

    c = recipe.collator
    return MaskingCollator.from_tokenizer(
        tokenizer, unit=c.kind, rate=c.rate, mask_frac=c.mask_frac, random_frac=c.random_frac,
        exact_budget=c.exact_budget, span_p=c.span_p, span_max_len=c.span_max,
        seed=int(recipe.training.get("seed", 42)),
    )


def mlm_head(model) -> torch.nn.Module:
    """The first module of a stock masked-LM's head (BERT ``cls``, RoBERTa ``lm_head``, ModernBERT ``head``).

    Selecting positions at its input is enough: whatever follows (ModernBERT's ``decoder``) acts
    on the last dimension only.
    """
    for name in ("cls", "lm_head", "head"):
        if hasattr(model, name):
            return getattr(model, name)
    raise TypeError(f"{type(model).__name__} has no masked-LM head named cls or lm_head")


class MaskedLMTrainer(PretrainTrainer):
    """A masked-LM loss that can skip unmasked positions, and masked-token accuracy.

    With ``sparse_mlm_head=True`` the encoder runs as usual but the vocabulary head (dense +
    layer norm + a hidden x vocab projection, the largest matmul of a small model) runs only on
    the ~15% of positions that carry a label: hidden[B, L, H] -> hidden[labels != -100] [N, H]
    -> logits [N, V]. The loss is the same cross-entropy the stock model computes; the exported
    model is untouched. Evaluation counts masked-token accuracy, reported as ``eval_mlm_accuracy``.
    """

    keep_hidden = False  # a subclass that needs the final token states (distillation) reads self._hidden

    def __init__(self, *args, sparse_mlm_head: bool = True, span_boundary: bool = False, **kwargs):
        if span_boundary:
            model = kwargs.get("model")
            if model is None:
                raise NlpsslError("MaskedLMTrainer: span_boundary=True needs the model passed as model=...")
            # A submodule, so the optimizer, checkpoints, resume and DDP all see it; the export
            # drops its tensors (MaskedLM.training_only).
            std = getattr(model.config, "initializer_range", 0.02)
            model.add_module(SPAN_BOUNDARY_HEAD, SpanBoundaryHead(model.config.hidden_size, init_std=std))
        super().__init__(*args, **kwargs)
        self._correct = torch.zeros(2, dtype=torch.float64)  # [correct, total] on eval batches
        self._boundary_sum: torch.Tensor | float = 0.0  # boundary loss summed since the last log
        self._boundary_steps = 0
        self._selected: torch.Tensor | None = None
        self._boundary_logits: torch.Tensor | None = None
        self._hidden: torch.Tensor | None = None
        self._sparse = sparse_mlm_head
        self._span_boundary = span_boundary
        if sparse_mlm_head or span_boundary or self.keep_hidden:
            self._wrap_head(mlm_head(self.model))

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
            if self.keep_hidden:
                self._hidden = hidden  # [B, L, H]
            if self._selected is not None:
                if self._span_boundary and head.training:
                    z = getattr(model, SPAN_BOUNDARY_HEAD)(hidden, self._selected)  # [N, H]
                    self._boundary_logits = model.get_output_embeddings()(z)  # [N, V]
                if self._sparse:
                    hidden = hidden[self._selected]  # [B, L, H] -> [N, H]
            return dense_forward(hidden)

        head.forward = forward

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = self.model_inputs(inputs)
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
        if target.numel() == 0:
            # A batch with no masked token (a short last row alone): cross_entropy of nothing is NaN,
            # which would poison eval_loss and the weights; this batch has nothing to learn from.
            loss = logits.float().sum() * 0.0
        else:
            loss = F.cross_entropy(logits.float(), target)
        if boundary_logits is not None and target.numel():
            boundary = F.cross_entropy(boundary_logits.float(), target)
            self._boundary_sum = self._boundary_sum + boundary.detach()  # no host sync per step
            self._boundary_steps += 1
            loss = loss + boundary
        if not model.training:
            with torch.no_grad():
                hits = (logits.argmax(-1) == target).sum().item()
            self._correct += torch.tensor([hits, target.numel()], dtype=torch.float64)
        return (loss, {}) if return_outputs else loss

    def evaluate(self, *args, **kwargs):
        self._correct.zero_()
        return super().evaluate(*args, **kwargs)

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self._boundary_steps:
            # "loss" is masked-LM + boundary loss; this is the boundary part alone (this rank's)
            logs["span_boundary_loss"] = round(float(self._boundary_sum) / self._boundary_steps, 4)
            self._boundary_sum, self._boundary_steps = 0.0, 0
        super().log(logs, *args, **kwargs)

    def eval_logs(self, logs: dict) -> None:
        if self._correct[1] > 0:
            counts = all_ranks_sum(self._correct, self.args.device)
            logs["eval_mlm_accuracy"] = round(float(counts[0] / counts[1]), 4)


def all_ranks_sum(counts: torch.Tensor, device) -> torch.Tensor:
    """``counts`` summed over the ranks of a multi-process run (itself otherwise)."""
    counts = counts.clone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        counts = counts.to(device)
        torch.distributed.all_reduce(counts)
    return counts.cpu()


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
