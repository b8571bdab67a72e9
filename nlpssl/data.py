"""Tokenize, pack into fixed blocks, cache.

Data flow::

    texts (datasets.Dataset, column "text")
      -> held-out split by *document* (evaluation text is never seen in training)
      -> datasets.map: token ids (+ word starts) per document, in parallel
      -> pack the whole token stream at once (no remainder dropped per map batch, unlike
         transformers' ``group_texts``), documents separated by [SEP] (masked-LM) or [EOS]
         (causal-LM, T5), masked-LM blocks framed by [CLS] ... [SEP]
      -> cached with ``save_to_disk`` under a hash of the tokenizer and every data setting

Packing example (masked-LM, block_size=6, documents [a b c] and [d e])::

    stream  = a b c [SEP] d e [SEP]         (content rows of block_size - 2 = 4 tokens)
    blocks  = [CLS] a b c [SEP] [SEP]
              [CLS] d e [SEP] [PAD] [SEP]   <- the final partial row is padded, not dropped
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nlpssl.errors import NlpsslError
from nlpssl.recipe import Recipe

CACHE_VERSION = 1  # bump when the packed layout changes


@dataclass(frozen=True)
class PackedData:
    """Training and held-out blocks plus what is known about them."""

    train: "datasets.Dataset"  # noqa: F821 - columns: input_ids (int32[block]), word_starts (int8[block])
    eval: "datasets.Dataset"  # noqa: F821
    stats: dict
    cache_path: Path
    from_cache: bool


def objective_of(recipe: Recipe) -> str:
    from nlpssl.models import OBJECTIVE

    return OBJECTIVE[recipe.model.arch]


def row_length(recipe: Recipe) -> int:
    """Tokens per packed row: T5 rows hold the raw text that corruption shortens to block_size."""
    if objective_of(recipe) == "t5":
        from nlpssl.collators.t5 import t5_input_target_lengths

        raw, _ = t5_input_target_lengths(
            recipe.data.block_size, recipe.collator.noise_density, recipe.collator.mean_span_length
        )
        return raw
    return recipe.data.block_size


def needs_words(recipe: Recipe) -> bool:
    """Word starts are computed only for the collators that mask whole words."""
    return recipe.collator.kind in ("word", "span")


def utf8_bytes(texts) -> int:
    """UTF-8 size of a text column, computed by Arrow (a Python loop costs seconds on 15 MB)."""
    import pyarrow.compute as pc

    table = texts.with_format("arrow")[:]  # respects an indices mapping (after a split)
    return int(pc.sum(pc.binary_length(table.column("text"))).as_py() or 0)


def cache_key(recipe: Recipe, tokenizer) -> str:
    """Hash of everything that changes the processed data (not of num_proc or cache_dir)."""
    data = asdict(recipe.data)
    for irrelevant in ("num_proc", "cache_dir"):
        data.pop(irrelevant)
    payload = {
        "version": CACHE_VERSION,
        "data": data,
        "objective": objective_of(recipe),
        "row_length": row_length(recipe),
        "words": needs_words(recipe),
        "tokenizer": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _encode_batch(batch: dict, tokenizer, words: bool) -> dict:
    """ids (and word starts, when a collator needs words) through the Rust tokenizer directly."""
    backend = tokenizer.backend_tokenizer
    # encode_batch_fast skips offsets (~20% faster); word ids need them.
    encode = backend.encode_batch if words else backend.encode_batch_fast
    encodings = encode(batch["text"], add_special_tokens=False)
    out = {"ids": [enc.ids for enc in encodings]}  # Arrow converts the lists to int32 in C
    if words:
        starts = []
        for enc in encodings:
            ids = np.asarray([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)
            start = np.ones(len(ids), dtype=np.int8)
            start[1:] = ids[1:] != ids[:-1]
            starts.append(start)
        out["starts"] = starts
    return out


def tokenize(texts, tokenizer, num_proc: int = 1, words: bool = False):
    """Token ids (int32), and word starts (int8) if ``words``, per document via batched ``datasets.map``."""
    from datasets import Features, List, Value

    columns = {"ids": List(Value("int32"))}
    if words:
        columns["starts"] = List(Value("int8"))
    return texts.map(
        _encode_batch,
        batched=True,
        batch_size=2000,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=texts.column_names,
        features=Features(columns),
        fn_kwargs={"tokenizer": tokenizer, "words": words},
        desc="Tokenizing",
    )


def _flat(column) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of a list column without a Python-level loop."""
    import pyarrow as pa

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False)
    return values[offsets[0] : offsets[-1]], offsets - offsets[0]


def pack(
    tokenized, row_len: int, objective: str, special: dict[str, int], flat: tuple | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pack every document into rows of ``row_len`` tokens; returns (ids, word_starts) 2-D arrays.

    ``flat`` is ``_flat`` of the ids column when the caller already has it.
    """
    table = tokenized.data.table
    ids, offsets = flat or _flat(table.column("ids"))
    # Without a word-level collator every token counts as its own word (the column stays unused).
    starts = _flat(table.column("starts"))[0] if "starts" in table.column_names else np.ones(len(ids), np.int8)
    n_docs = len(offsets) - 1
    sep = special["sep"] if objective == "mlm" else special["eos"]
    # Insert one separator after each document: token j of document d moves to j + d.
    stream = np.empty(len(ids) + n_docs, dtype=np.int32)
    stream_starts = np.ones(len(stream), dtype=np.int8)
    sep_pos = offsets[1:] + np.arange(n_docs)
    keep = np.ones(len(stream), dtype=bool)
    keep[sep_pos] = False
    stream[keep], stream_starts[keep] = ids, starts
    stream[sep_pos] = sep
    content = row_len - 2 if objective == "mlm" else row_len
    n_rows = -(-len(stream) // content)
    padded = np.full(n_rows * content, special["pad"], dtype=np.int32)
    padded[: len(stream)] = stream
    padded_starts = np.ones(n_rows * content, dtype=np.int8)
    padded_starts[: len(stream)] = stream_starts
    rows, row_starts = padded.reshape(n_rows, content), padded_starts.reshape(n_rows, content)
    if objective == "mlm":
        rows = np.concatenate(
            [np.full((n_rows, 1), special["cls"], np.int32), rows, np.full((n_rows, 1), special["sep"], np.int32)],
            axis=1,
        )
        ones = np.ones((n_rows, 1), np.int8)
        row_starts = np.concatenate([ones, row_starts, ones], axis=1)
    return rows, row_starts


def _to_dataset(rows: np.ndarray, starts: np.ndarray):
    import datasets
    import pyarrow as pa

    width = rows.shape[1]
    table = pa.table({
        "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), width),
        "word_starts": pa.FixedSizeListArray.from_arrays(pa.array(starts.reshape(-1)), width),
    })
    return datasets.Dataset(table)


def _special_ids(tokenizer) -> dict[str, int]:
    return {
        "pad": tokenizer.pad_token_id, "cls": tokenizer.cls_token_id,
        "sep": tokenizer.sep_token_id, "eos": tokenizer.eos_token_id,
    }


def _split_documents(texts, fraction: float, seed: int):
    """Hold out a seeded share of documents (at least one) for evaluation."""
    n_eval = max(1, int(round(len(texts) * fraction)))
    if len(texts) < 2:
        raise NlpsslError(
            f"data: the corpus has {len(texts)} document(s); at least 2 are needed to hold one out "
            "for evaluation. Add text or point data.source at a larger corpus."
        )
    split = texts.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return split["train"], split["test"]


def build_packed(recipe: Recipe, tokenizer) -> tuple:
    """Load texts, split, tokenize and pack: returns (train_ds, eval_ds, stats)."""
    from nlpssl.sources import load_texts

    d = recipe.data
    texts = load_texts(
        d.source, text_column=d.text_column, hub_config=d.hub_config, split=d.split,
        txt_unit=d.txt_unit, max_texts=d.max_texts, builtin_stories=d.builtin_stories, seed=d.seed,
    )
    train_texts, eval_texts = _split_documents(texts, d.eval_fraction, d.seed)
    objective, row_len = objective_of(recipe), row_length(recipe)
    special = _special_ids(tokenizer)
    out, stats = [], {}
    for name, part in (("train", train_texts), ("eval", eval_texts)):
        n_bytes = utf8_bytes(part)
        tok = tokenize(part, tokenizer, d.num_proc, words=needs_words(recipe))
        flat = _flat(tok.data.table.column("ids"))
        rows, starts = pack(tok, row_len, objective, special, flat)
        ids_flat = flat[0]
        n_tokens = int(len(ids_flat))
        if n_tokens + len(part) < row_len:
            raise NlpsslError(
                f"data: the {name} split holds {n_tokens} tokens, fewer than one block of "
                f"data.block_size={row_len} (source {d.source!r}). Use more text, a smaller "
                + ("data.block_size." if name == "train" else "data.block_size or a larger data.eval_fraction.")
            )
        if name == "eval":
            rows, starts = rows[: d.eval_max_blocks], starts[: d.eval_max_blocks]
        else:
            counts = np.bincount(ids_flat, minlength=len(tokenizer)).astype(np.int64)
            stats["train_unigram_counts"] = counts.tolist()
        stats[f"{name}_documents"] = len(part)
        stats[f"{name}_tokens"] = n_tokens
        stats[f"{name}_bytes"] = n_bytes
        stats[f"{name}_blocks"] = int(rows.shape[0])
        out.append(_to_dataset(rows, starts))
    return out[0], out[1], stats


def prepare_data(recipe: Recipe, tokenizer) -> PackedData:
    """Packed train/eval blocks for ``recipe``, from the cache when the settings match.

    The cache folder is ``data.cache_dir/<hash>``; it is written to a temporary folder and
    renamed, so an interrupted run never leaves a half-written cache behind.
    """
    key = cache_key(recipe, tokenizer)
    path = Path(recipe.data.cache_dir).expanduser() / key
    if (path / "stats.json").is_file():
        return _load_cached(path, from_cache=True)
    train, eval_, stats = build_packed(recipe, tokenizer)
    tmp = path.with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    train.save_to_disk(str(tmp / "train"))
    eval_.save_to_disk(str(tmp / "eval"))
    (tmp / "stats.json").write_text(json.dumps(stats))
    if path.exists():  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return _load_cached(path, from_cache=False)


def _load_cached(path: Path, from_cache: bool) -> PackedData:
    import datasets

    stats = json.loads((path / "stats.json").read_text())
    return PackedData(
        datasets.load_from_disk(str(path / "train")), datasets.load_from_disk(str(path / "eval")),
        stats, path, from_cache=from_cache,
    )
