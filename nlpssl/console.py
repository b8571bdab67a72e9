"""What nlpssl says while it works: its lines on stdout and stderr, and transformers' kept quiet.

The lowest layer of the package (it imports nothing else of nlpssl), so every module may use it,
objectives included; :mod:`nlpssl.runs` passes these on for the commands.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any


def rank() -> int:
    """This process's global rank under torchrun / accelerate launch (0 for a plain run)."""
    return int(os.environ.get("RANK", "0"))


_SAID: set[str] = set()


def log(message: str, once: bool = False) -> None:
    """A line on stdout from rank 0; ``once``: not again if this process has already said it (a
    probe's tens of fine-tunes share their notes)."""
    if once:
        if message in _SAID:
            return
        _SAID.add(message)
    if rank() == 0:
        print(f"[nlpssl] {message}", flush=True)


def note(message: str) -> None:
    """A remark on stderr, for commands whose stdout is their answer (classify, embed)."""
    if rank() == 0:
        print(f"[nlpssl] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_transformers():
    """transformers' warnings below errors and its own progress bars (loading, writing weights) off,
    for the duration: what nlpssl says instead is shorter (the Trainer's bar is not one of them)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def say_loaded(model_dir: str | Path, model, info: dict[str, Any]) -> None:
    """One line on what a folder's weights gave ``model`` (a classifier, a SimCSE encoder), in place of
    transformers' load-report table: its new weights, the folder's weights left out (a pretraining
    head), and, as a warning, body weights the folder lacked (they start random)."""
    def groups(keys) -> str:  # 'classifier.weight', 'classifier.bias' -> 'classifier'
        return ", ".join(sorted({k.rsplit(".", 1)[0] if "." in k else k for k in keys})) or "none"

    missing, unused = set(info.get("missing_keys") or ()), set(info.get("unexpected_keys") or ())
    mismatched = {k for k, *_ in info.get("mismatched_keys") or ()}
    bare = getattr(model, "base_model", model) is model  # a body alone: its keys have no prefix
    body = sorted(k for k in missing if (bare or k.startswith(f"{model.base_model_prefix}."))
                  and not (k.startswith("pooler.") or ".pooler." in k))
    if body:
        log(f"warning: model: {str(model_dir)!r} lacks {len(body)} weights of the {type(model).__name__}'s body, "
            f"which start random (e.g. {body[0]!r}). Is it an export of this architecture? Check its "
            "model.safetensors and config.json.", once=True)
    log(f"model: {str(model_dir)!r} loaded into {type(model).__name__}; new, randomly initialised: "
        f"{groups(missing | mismatched)}; not used: {groups(unused)}", once=True)
