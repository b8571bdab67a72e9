"""Demos on stock pipelines: fill-mask and next-token generation.

Both take an export folder (or any Hub-format folder) and use ``transformers.pipeline`` exactly as
a user without nlpssl would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nlpssl.errors import NlpsslError


@dataclass(frozen=True)
class Prediction:
    token: str
    score: float
    sequence: str


def check_model_dir(model_dir: str | Path, where: str) -> Path:
    """A folder with a config.json (an export), with an error that says what to pass otherwise."""
    path = Path(model_dir)
    if (path / "export" / "config.json").is_file() and not (path / "config.json").is_file():
        return path / "export"  # a run folder: use its export
    if not (path / "config.json").is_file():
        raise NlpsslError(
            f"{where}: {str(model_dir)!r} is not a model folder (no config.json). Pass an export folder, "
            "e.g. runs/bert-tiny/export, or a run folder that holds one."
        )
    return path


def fill_mask(model_dir: str | Path, text: str, top_k: int = 5) -> list[Prediction]:
    """Top-k fillers for the mask token in ``text``, from ``pipeline("fill-mask")``."""
    from transformers import pipeline

    path = check_model_dir(model_dir, "fill-mask")
    pipe = pipeline("fill-mask", model=str(path), tokenizer=str(path))
    mask = pipe.tokenizer.mask_token
    if text.count(mask) != 1:
        raise NlpsslError(
            f"fill-mask: the text must hold exactly one {mask} (got {text.count(mask)} in {text!r}). "
            f'Write it like "The cat sat on the {mask}."'
        )
    return [
        Prediction(token=p["token_str"].strip(), score=float(p["score"]), sequence=p["sequence"])
        for p in pipe(text, top_k=top_k)
    ]


def generate(
    model_dir: str | Path,
    prompt: str,
    max_new_tokens: int = 40,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 0.95,
    seed: int = 0,
    greedy: bool = False,
) -> str:
    """A continuation of ``prompt`` from ``pipeline("text-generation")`` (seeded sampling)."""
    from transformers import pipeline, set_seed

    path = check_model_dir(model_dir, "generate")
    if temperature <= 0 and not greedy:
        raise NlpsslError(f"generate: --temperature must be above 0 (got {temperature}). Use --greedy for argmax decoding.")
    set_seed(seed)
    pipe = pipeline("text-generation", model=str(path), tokenizer=str(path))
    kwargs = dict(max_new_tokens=max_new_tokens, return_full_text=True)
    if greedy:
        kwargs["do_sample"] = False
    else:
        kwargs.update(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    return pipe(prompt, **kwargs)[0]["generated_text"]
