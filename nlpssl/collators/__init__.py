"""Collators, one module per corruption family: masked-LM, causal-LM and T5 span corruption.

They read only ids (and the precomputed ``word_starts`` column), never a tokenizer, so they stay
fast and can be tested on hand-written ids.
"""

from __future__ import annotations

from typing import Any

from nlpssl.collators.causal import CausalCollator
from nlpssl.collators.masking import MaskingCollator
from nlpssl.collators.t5 import (
    T5SpanCorruptionCollator,
    sentinel_ids_from_tokenizer,
    t5_input_target_lengths,
)

__all__ = [
    "CausalCollator",
    "MaskingCollator",
    "MaskingDiagnosticsCallback",
    "T5SpanCorruptionCollator",
    "sentinel_ids_from_tokenizer",
    "t5_input_target_lengths",
]


def __getattr__(name: str) -> Any:
    # The callback imports transformers (seconds); load it only when someone asks for it.
    if name == "MaskingDiagnosticsCallback":
        from nlpssl.collators.diagnostics import MaskingDiagnosticsCallback

        return MaskingDiagnosticsCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
