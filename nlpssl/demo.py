"""Demos on stock pipelines: fill-mask, next-token generation and text classification.

Each takes an export folder (or any Hub-format folder) and uses ``transformers.pipeline`` exactly as
a user without nlpssl would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nlpssl.errors import NlpsslError


@dataclass(frozen=True)
class Prediction:
    """One filler of the mask, from :func:`fill_mask`."""

    token: str
    score: float
    sequence: str


@dataclass(frozen=True)
class LabelScore:
    """One label and its probability, from :func:`classify`."""

    label: str
    score: float


def check_model_dir(model_dir: str | Path, where: str) -> Path:
    """A folder with a config.json and weights (an export), with an error that says what to pass otherwise."""
    from nlpssl.runs import export_folder

    path = export_folder(Path(model_dir))  # a run folder: its export
    if not (path / "config.json").is_file():
        raise NlpsslError(
            f"{where}: {str(model_dir)!r} is not a model folder (no config.json). Pass an export folder, "
            "e.g. runs/bert-tiny/export, or a run folder that holds one."
        )
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise NlpsslError(
            f"{where}: {str(path)!r} has a config.json but no weights (no {' or '.join(WEIGHT_FILES)}): the export is "
            "incomplete. Write it again with `nlpssl export RUN_DIR OUT_DIR`."
        )
    return path


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def model_family(path: Path, where: str) -> tuple[str, dict]:
    """("mlm" | "causal" | "t5" | "other", config) from ``config.json`` alone (nothing heavy loaded)."""
    import json

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise NlpsslError(
            f"{where}: {str(path / 'config.json')!r} is not readable JSON ({err}). Write the export again with "
            "`nlpssl export RUN_DIR OUT_DIR`."
        ) from None
    names = " ".join(config.get("architectures") or [])
    if config.get("is_encoder_decoder") or "ConditionalGeneration" in names:
        return "t5", config
    if "MaskedLM" in names:
        return "mlm", config
    if "CausalLM" in names or "LMHeadModel" in names:
        return "causal", config
    return "other", config


def _wrong_family(where: str, path: Path, family: str, config: dict, wanted: str) -> NlpsslError:
    arch = ", ".join(config.get("architectures") or [config.get("model_type", "?")])
    other = {"mlm": "`nlpssl fill-mask`", "causal": "`nlpssl generate`", "t5": "`nlpssl generate` (fills <extra_id_N>)"}
    if family in other:
        fix = f"Use {other[family]} for this model"
    elif "SequenceClassification" in arch:
        fix = "Use `nlpssl classify` for this model"
    else:
        # An encoder without a language-model head (an ELECTRA discriminator, a SimCSE encoder) is
        # pretrained all right: it has no vocabulary head to fill or continue with.
        run, example = ("masked-LM", "bert-tiny") if where == "fill-mask" else ("causal-LM", "gpt-tiny")
        fix = (f"It has no language-model head: pass the export of a {run} run (e.g. runs/{example}/export), "
               "or use this model with `nlpssl embed` or `nlpssl finetune`")
    return NlpsslError(f"{where}: {str(path)!r} holds {arch}, and {where} needs {wanted}. {fix}.")


def _check_one_text(value: object, where: str, name: str) -> None:
    # None reached the tokenizer as "specify either `text` or `text_target`", a list as a TypeError.
    if not isinstance(value, str):
        raise NlpsslError(f"{where}: {name} must be one string (got {type(value).__name__} {value!r:.60}). "
                          "Pass one text per call.")


def fill_mask(model_dir: str | Path, text: str, top_k: int = 5) -> list[Prediction]:
    """Top-k fillers for the mask token in ``text``, from ``pipeline("fill-mask")``."""
    _check_one_text(text, "fill-mask", "text")
    path = check_model_dir(model_dir, "fill-mask")
    family, config = model_family(path, "fill-mask")
    if family != "mlm":
        raise _wrong_family("fill-mask", path, family, config, "a masked-LM (BERT, RoBERTa, ModernBERT)")
    vocab = int(config.get("vocab_size") or 0)
    if top_k < 1 or (vocab and top_k > vocab):
        raise NlpsslError(
            f"fill-mask: --top-k must be between 1 and the vocabulary size {vocab} (got {top_k}). Use e.g. --top-k 5."
        )
    from transformers import pipeline

    pipe = pipeline("fill-mask", model=str(path), tokenizer=str(path))
    mask = pipe.tokenizer.mask_token
    if text.count(mask) != 1:
        raise NlpsslError(
            f"fill-mask: the text must hold exactly one {mask} (got {text.count(mask)} in {text!r}). "
            f'Write it like "The cat sat on the {mask}."'
        )
    from nlpssl.models import config_positions

    limit, n_tokens = config_positions(config), len(pipe.tokenizer(text)["input_ids"])
    if limit and n_tokens > limit:
        raise NlpsslError(
            f"fill-mask: the text is {n_tokens} tokens, special tokens included, and the model reads at most {limit} "
            f"(got {len(text)} characters). Shorten it to the sentences around the {mask}."
        )
    before, _, after = text.partition(mask)
    return [
        # A filler of white space only (a line break, a lone 'Ġ' or '▁') stays itself, not "".
        Prediction(token=p["token_str"].strip() or p["token_str"], score=float(p["score"]),
                   sequence=_filled(pipe.tokenizer, before, p["token"], after, p["sequence"]))
        for p in pipe(text, top_k=top_k)
    ]


def _filled(tokenizer, before: str, token_id: int, after: str, decoded: str) -> str:
    """The user's text with the filler in place of the mask.

    The pipeline's ``sequence`` decodes the whole input again, which drops what the tokenizer does not
    keep: a lowercasing model's capitals, WordPiece's line breaks and tabs, the spacing of CJK and
    "don't" ("我 喜 欢", "don ' t"). Only the filler comes from the model here: what it adds after a
    plain token (" mat" starts a word, "##s" / "s" / "." continues the one before the mask).
    """
    backend = tokenizer.backend_tokenizer
    anchor = tokenizer.unk_token_id
    if token_id in tokenizer.all_special_ids:  # "[UNK]" shown where the mask was (decoded drops it)
        return f"{before}{tokenizer.convert_ids_to_tokens(token_id)}{after}"
    if anchor is None:
        return decoded  # another model's tokenizer without an unknown token
    alone = backend.decode([anchor], skip_special_tokens=False)
    added = backend.decode([anchor, token_id], skip_special_tokens=False)
    if not added.startswith(alone):
        return decoded
    piece = added[len(alone):]
    if piece[:1].isspace():  # a new word: the user's own spacing before the mask stays
        from tokenizers import decoders

        # WordPiece keeps no spaces, and its decoder puts one before every word ("喜欢 学"): the user's
        # spacing alone counts. Byte-level BPE's 'Ġ' and Unigram's '▁' are the model's own: kept where the
        # user wrote none, not doubled where they did.
        invented = isinstance(backend.decoder, decoders.WordPiece)
        keep = piece[0] != " " or (before and not before[-1].isspace() and not invented)
        return before + (piece if keep else piece[1:]) + after
    return before.rstrip() + piece + after  # joined to the word before, as the model sees it


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
    _check_one_text(prompt, "generate", "prompt")
    path = check_model_dir(model_dir, "generate")
    family, config = model_family(path, "generate")
    if family not in ("causal", "t5"):
        raise _wrong_family("generate", path, family, config, "a causal-LM (GPT-2, Llama) or a T5 model")
    positions = config.get("n_positions") or config.get("max_position_embeddings")
    vocab = int(config.get("vocab_size") or 0)
    problems = []
    limit = int(positions) - 1 if family == "causal" and positions else None
    if max_new_tokens < 1 or (limit and max_new_tokens > limit):
        within = f" and at most {limit} (the model has {positions} positions)" if limit else ""
        problems.append(f"--max-new-tokens must be 1 or more{within} (got {max_new_tokens})")
    if not greedy:
        if not temperature > 0:
            problems.append(f"--temperature must be above 0 (got {temperature}); use --greedy for argmax decoding")
        if top_k < 0 or (vocab and top_k > vocab):
            problems.append(f"--top-k must be between 0 (off) and the vocabulary size {vocab} (got {top_k})")
        if not 0 < top_p <= 1:
            problems.append(f"--top-p must be in (0, 1] (got {top_p}); 1 turns it off")
    if problems:
        raise NlpsslError("generate: " + "; ".join(problems) + ".")
    from transformers import pipeline, set_seed

    set_seed(seed)
    kwargs = dict(max_new_tokens=max_new_tokens)
    if greedy:
        kwargs["do_sample"] = False
    else:
        kwargs.update(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    if family == "t5":
        return fill_sentinels(path, prompt, **kwargs)
    pipe = pipeline("text-generation", model=str(path), tokenizer=str(path))
    n_prompt = len(pipe.tokenizer(prompt).input_ids)
    if positions and n_prompt + max_new_tokens > positions:
        raise NlpsslError(
            f"generate: the prompt ({n_prompt} tokens) plus --max-new-tokens {max_new_tokens} exceed the model's "
            f"{positions} positions. Shorten the prompt or lower --max-new-tokens to {max(1, positions - n_prompt)}."
        )
    ids = pipe(prompt, return_tensors=True, **kwargs)[0]["generated_token_ids"]
    return prompt + _continuation(pipe.tokenizer, list(ids), n_prompt)


def _continuation(tokenizer, ids: list[int], n_prompt: int) -> str:
    """The text the tokens after the first ``n_prompt`` add to the prompt's.

    The pipeline decodes the new tokens alone, so the first of them reads as the start of a text:
    WordPiece left its "##" ("two" + "##o" gave "two##o") and dropped the space before a word, and
    Unigram dropped its "▁" ("the" + "▁the" gave "thethe"). Decoded after the prompt's tokens, each
    token joins the prompt as it does in training. A character whose bytes the last tokens cut short
    (byte-level BPE stopped by --max-new-tokens) decodes to U+FFFD and is left out.
    """
    head = tokenizer.decode(ids[:n_prompt], skip_special_tokens=True)
    full = tokenizer.decode(ids, skip_special_tokens=True)
    new = full[len(head):] if full.startswith(head) else tokenizer.decode(ids[n_prompt:], skip_special_tokens=True)
    return new.rstrip("\ufffd")


def fill_sentinels(model_dir: str | Path, text: str, **generate_kwargs) -> str:
    """T5 demo: the model's guesses for each ``<extra_id_i>`` in ``text``, written back in place.

    transformers v5 has no text2text pipeline, so this calls ``generate`` on the stock
    ``AutoModelForSeq2SeqLM`` directly. The target reads ``<extra_id_0> guess0 <extra_id_1> ...``.
    """
    import re

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from nlpssl.tokenizer import sentinel_ids

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    sentinels = re.findall(r"<extra_id_\d+>", text)
    if not sentinels:
        raise NlpsslError(
            f"generate: a T5 model fills <extra_id_N> sentinels, and the text has none (got {text!r}). "
            'Write it like "The cat <extra_id_0> on the mat."'
        )
    known = len(sentinel_ids(tok))
    unknown = [s for s in dict.fromkeys(sentinels) if int(s[len("<extra_id_"):-1]) >= known]
    twice = [s for s in dict.fromkeys(sentinels) if sentinels.count(s) > 1]
    if unknown or twice:
        # Unknown ones were read as plain text ('<', 'extra', ...), and a repeated one filled only once.
        what = (f"{', '.join(unknown)} not among its {known} sentinels <extra_id_0>..<extra_id_{known - 1}>"
                if unknown else f"{', '.join(twice)} more than once")
        raise NlpsslError(
            f"generate: the text names {what} (got {text!r}). Number the gaps <extra_id_0>, <extra_id_1>, ... "
            "in order, each once, as in training."
        )
    model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir)).eval()
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


def classify(model_dir: str | Path, text: str, top_k: int | None = None, pair: str | None = None) -> list[LabelScore]:
    """Label probabilities for ``text`` from ``pipeline("text-classification")``, best first.

    Args:
        model_dir: a fine-tuned export (or a fine-tuning run folder that holds one).
        text: the text to classify.
        top_k: how many labels to return (None: all).
        pair: the second text, for a classifier fine-tuned on text pairs (``task.text_pair_column``);
            required for such a classifier and refused for one fine-tuned on single texts.
    """
    given = {"text": text} if pair is None else {"text": text, "pair": pair}
    for name, value in given.items():
        if not isinstance(value, str):
            raise NlpsslError(f"classify: {name} must be one string (got {type(value).__name__} {value!r:.60}). "
                              "Classify one text per call.")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool)):
        raise NlpsslError(f"classify: top_k must be a whole number or None (got {top_k!r}).")
    path = check_model_dir(model_dir, "classify")
    _, config = model_family(path, "classify")
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise NlpsslError(
            f"classify: {str(path)!r} is not a text classifier (got architectures {architectures}). "
            f"Fine-tune it first (`nlpssl finetune finetune-tiny model={path}`) and pass that "
            "run's export folder."
        )
    empty = next((name for name, value in given.items() if not value.strip()), None)
    if empty:
        what = "text" if empty == "text" else "second text (--pair)"
        raise NlpsslError(f"classify: the {what} is empty (got {given[empty]!r}). Pass the text to classify.")
    if top_k is not None and top_k < 1:
        raise NlpsslError(f"classify: --top-k must be 1 or more (got {top_k}). Leave it out for all labels.")
    pair_column = _pair_column(path)
    if pair_column and pair is None:
        raise NlpsslError(
            f"classify: {str(path)!r} was fine-tuned on text pairs (task.text_pair_column={pair_column!r}), and "
            f"one text alone would be scored as a pair with nothing. Pass the second text: "
            f'`nlpssl classify {path} "first text" --pair "second text"` (Python: pair="...").'
        )
    if pair is not None and not pair_column:
        raise NlpsslError(f"classify: {str(path)!r} was fine-tuned on single texts (no task.text_pair_column in its "
                          "recipe.yaml), so it takes no --pair. Leave --pair out.")
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(path), tokenizer=str(path))
    _note_truncation(pipe.tokenizer, text, pair)
    preds = pipe({"text": text, "text_pair": pair} if pair is not None else text, top_k=top_k, truncation=True)
    if preds and isinstance(preds[0], list):
        preds = preds[0]
    return [LabelScore(label=p["label"], score=float(p["score"])) for p in preds]


def _note_truncation(tokenizer, text: str, pair: str | None) -> None:
    from nlpssl.finetune import token_counts
    from nlpssl.runs import note

    counts = token_counts(tokenizer, [text], None if pair is None else [pair])
    limit = tokenizer.model_max_length
    if counts and counts[0] > limit:
        note(f"classify: the input has {counts[0]} tokens and the classifier reads its first {limit}; "
             "the rest does not count.")


def _pair_column(export: Path) -> str | None:
    """The text-pair column the export's recipe.yaml fine-tuned on, if any (exports without one: None)."""
    import yaml

    try:
        raw = yaml.safe_load((export / "recipe.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    task = raw.get("task") if isinstance(raw, dict) else None
    return task.get("text_pair_column") if isinstance(task, dict) else None


@dataclass(frozen=True)
class Neighbour:
    """A text and its cosine similarity to the query, from :func:`embed`."""

    text: str
    score: float


def embed(model_dir: str | Path, texts: list[str], nearest: int | None = None):
    """Sentence vectors of ``texts`` from an encoder export (pooling as the export declares, else mean).

    Returns the L2-normalised vectors as lists of floats, or with ``nearest=k`` each text's ``k``
    nearest other texts (cosine similarity) as :class:`Neighbour` lists.
    """
    from nlpssl.embeddings import Encoder, nearest as nearest_rows

    path = check_model_dir(model_dir, "embed")
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise NlpsslError(f"embed: give one or more non-empty texts (got {texts!r}).")
    if nearest is not None and len(texts) < 2:
        raise NlpsslError(f"embed: --nearest needs two texts or more, to find each one's nearest among the others "
                          f"(got {len(texts)} text and --nearest {nearest}). Pass more texts, or leave --nearest out.")
    if nearest is not None and not 1 <= nearest < len(texts):
        raise NlpsslError(f"embed: --nearest must be between 1 and the number of other texts, {len(texts) - 1} "
                          f"(got {nearest}). Pass more texts or a smaller --nearest.")
    vectors = Encoder(path).encode(list(texts), normalize=True)
    if nearest is None:
        return [v.tolist() for v in vectors]
    found = nearest_rows(vectors, vectors, nearest + 1)
    return [[Neighbour(texts[j], round(float(s), 4)) for j, s in row if j != i][:nearest] for i, row in enumerate(found)]
