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
    from transformers import AutoConfig, pipeline, set_seed

    path = check_model_dir(model_dir, "generate")
    if temperature <= 0 and not greedy:
        raise NlpsslError(
            f"generate: --temperature must be above 0 (got {temperature}). Use --greedy for argmax decoding."
        )
    set_seed(seed)
    kwargs = dict(max_new_tokens=max_new_tokens)
    if greedy:
        kwargs["do_sample"] = False
    else:
        kwargs.update(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    if AutoConfig.from_pretrained(str(path)).is_encoder_decoder:
        return fill_sentinels(path, prompt, **kwargs)
    pipe = pipeline("text-generation", model=str(path), tokenizer=str(path))
    return pipe(prompt, return_full_text=True, **kwargs)[0]["generated_text"]


def fill_sentinels(model_dir: str | Path, text: str, **generate_kwargs) -> str:
    """T5 demo: the model's guesses for each ``<extra_id_i>`` in ``text``, written back in place.

    transformers v5 has no text2text pipeline, so this calls ``generate`` on the stock
    ``AutoModelForSeq2SeqLM`` directly. The target reads ``<extra_id_0> guess0 <extra_id_1> ...``.
    """
    import re

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir)).eval()
    sentinels = re.findall(r"<extra_id_\d+>", text)
    if not sentinels:
        raise NlpsslError(
            f"generate: a T5 model fills <extra_id_N> sentinels, and the text has none (got {text!r}). "
            'Write it like "The cat <extra_id_0> on the mat."'
        )
    ids = tok(text, return_tensors="pt")
    out = model.generate(**ids, **generate_kwargs)[0]
    target = tok.decode(out, skip_special_tokens=False)
    for tag in (tok.pad_token, tok.eos_token):
        target = target.replace(tag, "")
    pieces = re.split(r"(<extra_id_\d+>)", target)
    guesses = {pieces[i]: pieces[i + 1].strip() for i in range(1, len(pieces) - 1, 2)}
    for s in sentinels:
        text = text.replace(s, f"[{guesses.get(s, '?')}]", 1)
    return text
