"""Causal-LM batches: labels are the inputs (the model shifts them); optional document positions."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nlpssl.collators.batching import beyond_length, stack_column
from nlpssl.errors import NlpsslError

IGNORE_INDEX = -100


@dataclass
class CausalCollator:
    """Stacks packed blocks for next-token prediction.

    Returns ``input_ids``, ``labels`` (the inputs with padding set to -100; HF causal models shift
    labels themselves) and ``attention_mask``. With ``reset_positions=True`` it returns
    ``position_ids`` that restart at 0 after every ``eos_id`` and *no* ``attention_mask``:
    transformers v5 builds a block-diagonal causal mask from position resets only when
    ``attention_mask`` is None and no cache is used, so set ``model.config.use_cache = False``
    for training. Otherwise documents packed in one block attend to each other.

    Args:
        pad_id: Padding id, for ragged rows and pad already in the data. Keep it distinct from
            ``eos_id``: labels ignore every pad, so pad == eos would hide every [EOS] from the loss
            and the model would never learn to stop (transformers#23530).
        eos_id: The [EOS] id that ends each packed document; needed for ``reset_positions``.
        reset_positions: Emit per-document ``position_ids`` instead of ``attention_mask``.

    Example:
        >>> c = CausalCollator(pad_id=0, eos_id=6, reset_positions=True)
        >>> c([{"input_ids": [5, 11, 12, 6, 5, 13]}, {"input_ids": [5, 14, 6]}])
        {'input_ids': tensor([[ 5, 11, 12,  6,  5, 13], [ 5, 14,  6,  0,  0,  0]]),
         'labels': tensor([[ 5, 11, 12,  6,  5, 13], [ 5, 14,  6, -100, -100, -100]]),
         'position_ids': tensor([[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]])}
    """

    pad_id: int
    eos_id: int | None = None
    reset_positions: bool = False

    def __post_init__(self) -> None:
        if self.reset_positions and self.eos_id is None:
            raise NlpsslError(
                "CausalCollator: reset_positions needs the id that ends documents "
                "(got eos_id=None). Pass eos_id=tokenizer.eos_token_id."
            )
        if self.eos_id is not None and self.eos_id == self.pad_id:
            warnings.warn(
                f"CausalCollator: pad_id equals eos_id ({self.pad_id}), so every [EOS] is dropped "
                "from the loss and the model never learns to stop. Use a distinct [PAD].",
                stacklevel=2,
            )

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kw: Any) -> CausalCollator:
        """Builds the collator from a tokenizer's ``pad_token_id`` and ``eos_token_id``."""
        if tokenizer.pad_token_id is None:
            raise NlpsslError(
                "CausalCollator.from_tokenizer: the tokenizer has no pad token (got "
                "pad_token_id=None). Train or wrap it with [PAD] among its special tokens."
            )
        return cls(pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id, **kw)

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Collates rows into a causal-LM batch (see the class docstring)."""
        ids, lengths = stack_column(features, "input_ids", self.pad_id, "CausalCollator")
        pad = (ids == self.pad_id) | beyond_length(lengths, ids.shape[1])
        batch = {"input_ids": ids, "labels": ids.masked_fill(pad, IGNORE_INDEX)}
        if self.reset_positions:
            batch["position_ids"] = document_positions(ids, self.eos_id)
        else:
            batch["attention_mask"] = (~pad).long()
        return batch


def document_positions(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Positions counting from 0 at the block start and after every ``eos_id``.

    Right padding just forms one more run; it has no labels, and no real token attends to it.

    Example:
        ``[[5, 11, 6, 5, 12, 13]]``, eos 6 -> ``[[0, 1, 2, 0, 1, 2]]``.
    """
    positions = torch.arange(ids.shape[1])
    starts = F.pad(ids[:, :-1] == eos_id, (1, 0), value=True)
    return positions - torch.cummax(torch.where(starts, positions, 0), 1).values
