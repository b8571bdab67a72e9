"""Tokenize, pack into fixed blocks, cache.

Data flow::

    texts (datasets.Dataset, column "text")
      -> token ids (+ word starts) per document, batches straight to the Rust tokenizer
         (datasets.map with data.num_proc > 1), kept as flat numpy arrays
      -> held-out split by *document* (evaluation text is never seen in training)
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


def row_length(recipe: Recipe) -> int:
    """Tokens per packed row (the objective's: T5 rows hold the raw text that corruption shortens)."""
    from nlpssl.objectives import objective_for

    return objective_for(recipe).row_length()


def framing(recipe: Recipe) -> str:
    """How the recipe's objective lays out packed rows (see :func:`pack`)."""
    from nlpssl.objectives import objective_for

    return objective_for(recipe).framing


def needs_words(recipe: Recipe) -> bool:
    """Word starts are computed only for the collators that mask whole words."""
    return recipe.collator.kind in ("word", "span")


def cache_key(recipe: Recipe, tokenizer) -> str:
    """Hash of everything that changes the processed data (not of num_proc or cache_dir)."""
    data = asdict(recipe.data)
    for irrelevant in ("num_proc", "cache_dir"):
        data.pop(irrelevant)
    payload = {
        "version": CACHE_VERSION,
        "data": data,
        "objective": framing(recipe),  # the row layout (named after the first objective that used it)
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


@dataclass(frozen=True)
class Tokens:
    """Documents as flat arrays: document ``d`` is ``ids[offsets[d]:offsets[d + 1]]``."""

    ids: np.ndarray  # int32
    offsets: np.ndarray  # int64, one more than there are documents
    starts: np.ndarray | None = None  # int8, 1 where a token begins a word (word-level collators)

    def take(self, docs: np.ndarray) -> Tokens:
        """The documents ``docs``, in that order (a numpy gather, no Python loop)."""
        lengths = np.diff(self.offsets)[docs]
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(self.offsets[docs] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Tokens(self.ids[gather], offsets, None if self.starts is None else self.starts[gather])


def tokenize(texts, tokenizer, num_proc: int = 1, words: bool = False, batch_size: int = 2000) -> Tokens:
    """Token ids (and word starts if ``words``) of every document, as flat arrays in corpus order.

    With ``num_proc=1`` the batches go straight to the Rust tokenizer, which already uses every
    core; no ``datasets.map`` bookkeeping (fingerprints, Arrow writer) sits in between. With
    ``num_proc > 1`` (useful for word starts, whose per-token Python step is single-threaded) it is
    a batched ``datasets.map`` over ``num_proc`` processes.
    """
    if num_proc > 1:
        return _tokenize_map(texts, tokenizer, num_proc, words, batch_size)
    import pyarrow as pa
    from datasets.utils.logging import is_progress_bar_enabled
    from tqdm.auto import tqdm

    arrow = texts.with_format("arrow")
    ids, lengths, starts = [], [], []  # numpy chunks: Python int lists never outlive their batch
    with tqdm(total=len(texts), desc="Tokenizing", unit=" documents", disable=not is_progress_bar_enabled()) as bar:
        for begin in range(0, len(texts), batch_size):
            batch = {"text": arrow[begin : begin + batch_size].column("text").to_pylist()}
            out = _encode_batch(batch, tokenizer, words)
            column = pa.array(out["ids"], type=pa.list_(pa.int32()))  # list-of-lists -> int32 in C
            ids.append(column.flatten().to_numpy())
            lengths.append(column.value_lengths().to_numpy(zero_copy_only=False))
            if words:
                starts.append(np.concatenate(out["starts"]) if out["starts"] else np.zeros(0, np.int8))
            bar.update(len(batch["text"]))
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(ids) if ids else np.zeros(0, np.int32)
    return Tokens(flat, offsets, np.concatenate(starts) if words and starts else None)


def _tokenize_map(texts, tokenizer, num_proc: int, words: bool, batch_size: int) -> Tokens:
    from datasets import Features, List, Value

    columns = {"ids": List(Value("int32"))}
    if words:
        columns["starts"] = List(Value("int8"))
    table = texts.map(
        _encode_batch,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=texts.column_names,
        features=Features(columns),
        fn_kwargs={"tokenizer": tokenizer, "words": words},
        desc="Tokenizing",
    ).data.table
    ids, offsets = _flat(table.column("ids"))
    return Tokens(ids, offsets, _flat(table.column("starts"))[0] if words else None)


def _flat(column) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of a list column without a Python-level loop."""
    import pyarrow as pa

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False)
    return values[offsets[0] : offsets[-1]], offsets - offsets[0]


def pack(tokens: Tokens, row_len: int, framing: str, special: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pack every document into rows of ``row_len`` tokens; returns (ids, word_starts) 2-D arrays.

    ``framing`` "mlm": documents separated by [SEP], each row framed by [CLS] ... [SEP];
    "sentence": one row per document, ``[CLS] doc [SEP] [PAD] ...`` (cut to fit, empty ones dropped);
    otherwise documents separated by [EOS], rows unframed.
    """
    if framing == "sentence":
        return _sentence_rows(tokens, row_len, special)
    ids, offsets = tokens.ids, tokens.offsets
    n_docs = len(offsets) - 1
    sep = special["sep"] if framing == "mlm" else special["eos"]
    content = row_len - 2 if framing == "mlm" else row_len
    # One separator after each document: token j of document d moves to j + d.
    n_stream = len(ids) + n_docs
    n_rows = -(-n_stream // content)
    padded = np.full(n_rows * content, special["pad"], dtype=np.int32)
    sep_pos = offsets[1:] + np.arange(n_docs)
    moved = np.repeat(np.arange(n_docs), np.diff(offsets))  # document of each token ...
    moved += np.arange(len(ids))  # ... plus its own position (in place: one int64 array)
    padded[moved] = ids
    padded[sep_pos] = sep
    # Without a word-level collator every token counts as its own word (the column stays unused).
    padded_starts = np.ones(n_rows * content, dtype=np.int8)
    if tokens.starts is not None:
        padded_starts[moved] = tokens.starts
    rows, row_starts = padded.reshape(n_rows, content), padded_starts.reshape(n_rows, content)
    if framing == "mlm":
        rows = np.concatenate(
            [np.full((n_rows, 1), special["cls"], np.int32), rows, np.full((n_rows, 1), special["sep"], np.int32)],
            axis=1,
        )
        ones = np.ones((n_rows, 1), np.int8)
        row_starts = np.concatenate([ones, row_starts, ones], axis=1)
    return rows, row_starts


def _sentence_rows(tokens: Tokens, row_len: int, special: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """One ``[CLS] ... [SEP]`` row per non-empty document, padded (or cut) to ``row_len``."""
    lengths = np.minimum(np.diff(tokens.offsets), row_len - 2)
    keep = lengths > 0
    first, lengths = tokens.offsets[:-1][keep], lengths[keep]
    n = len(lengths)
    rows = np.full((n, row_len), special["pad"], dtype=np.int32)
    rows[:, 0] = special["cls"]
    row = np.repeat(np.arange(n), lengths)
    col = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows[row, col + 1] = tokens.ids[np.repeat(first, lengths) + col]
    rows[np.arange(n), lengths + 1] = special["sep"]
    return rows, np.ones_like(rows, dtype=np.int8)


SENTENCE_END = r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\n+"  # after . ! ? (closing quote or bracket kept), or a line break


def split_sentences(texts):
    """Every document cut into sentences (rows of a new ``datasets.Dataset``, column ``text``), in order.

    A rule, not a model: a sentence ends after ``.``, ``!`` or ``?`` (and any closing quotes or
    brackets) before white space, or at a line break; so "Mr. Smith" splits too. Empty pieces are dropped.
    """
    import re

    end = re.compile(SENTENCE_END)

    def cut(batch):
        return {"text": [piece.strip() for text in batch["text"] for piece in end.split(text) if piece.strip()]}

    return texts.map(cut, batched=True, remove_columns=texts.column_names, desc="Splitting sentences")


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


def split_indices(n_docs: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) document indices: a seeded share of documents (at least one) held out.

    The same permutation as ``Dataset.train_test_split(test_size=n_eval, seed=seed)`` (a test
    checks it), so :func:`_split_documents` hands a baseline the very same documents.
    """
    if n_docs < 2:
        raise NlpsslError(
            f"data: the corpus has {n_docs} document(s); at least 2 are needed to hold one out "
            "for evaluation. Add text or point data.source at a larger corpus."
        )
    n_eval = max(1, int(round(n_docs * fraction)))
    permutation = np.random.default_rng(seed).permutation(n_docs)
    return permutation[n_eval:], permutation[:n_eval]


def split_tail(tokens: Tokens, fraction: float) -> tuple[Tokens, Tokens]:
    """(head, tail) of a one-document corpus: the last ``fraction`` of its tokens held out, in order.

    The same cut nanoGPT makes in a character stream; evaluation text still never trains.
    """
    n = len(tokens.ids)
    cut = n - max(1, int(round(n * fraction)))
    if cut < 1:
        raise NlpsslError(
            f"data: the corpus is one document of {n} token(s), too short to hold out its last "
            f"data.eval_fraction={fraction} for evaluation. Add text, or use a smaller data.eval_fraction."
        )
    starts = tokens.starts
    head = Tokens(tokens.ids[:cut], np.array([0, cut], np.int64), None if starts is None else starts[:cut])
    tail = Tokens(tokens.ids[cut:], np.array([0, n - cut], np.int64), None if starts is None else starts[cut:])
    return head, tail


def _split_documents(texts, fraction: float, seed: int):
    """The held-out split as two ``datasets.Dataset`` views (for code that maps over texts)."""
    train, held_out = split_indices(len(texts), fraction, seed)
    return texts.select(train), texts.select(held_out)


def build_packed(recipe: Recipe, tokenizer) -> tuple:
    """Load texts, tokenize, split by document and pack: returns (train_ds, eval_ds, stats)."""
    import pyarrow.compute as pc

    from nlpssl.sources import load_texts

    d = recipe.data
    texts = load_texts(
        d.source, text_column=d.text_column, hub_config=d.hub_config, split=d.split,
        txt_unit=d.txt_unit, max_texts=d.max_texts, builtin_stories=d.builtin_stories, seed=d.seed,
        unwrap=d.unwrap, clean=d.clean,
    )
    layout, row_len = framing(recipe), row_length(recipe)
    if layout == "sentence":
        texts = split_sentences(texts)  # the held-out split below is then by sentence
    special = _special_ids(tokenizer)
    # Tokenized once in corpus order (contiguous reads), then split with a numpy gather.
    tokens = tokenize(texts, tokenizer, d.num_proc, words=needs_words(recipe))
    doc_bytes = pc.binary_length(texts.with_format("arrow")[:].column("text")).to_numpy(zero_copy_only=False)
    if len(texts) == 1:
        # One document (a whole book with txt_unit=file): its last eval_fraction of tokens is held out.
        parts = split_tail(tokens, d.eval_fraction)
        part_bytes = [round(int(doc_bytes[0]) * len(p.ids) / max(1, len(tokens.ids))) for p in parts]
        parts_docs = [np.zeros(1, np.int64)] * 2  # each part counts as one document
    else:
        split = split_indices(len(texts), d.eval_fraction, d.seed)
        parts = [tokens.take(docs) for docs in split]
        part_bytes = [int(doc_bytes[docs].sum()) for docs in split]
        parts_docs = list(split)
    out, stats = [], {}
    for name, part, docs, n_bytes in zip(("train", "eval"), parts, parts_docs, part_bytes):
        n_tokens = int(len(part.ids))
        if layout != "sentence" and n_tokens + len(docs) < row_len:
            raise NlpsslError(
                f"data: the {name} split holds {n_tokens} tokens, fewer than one block of "
                f"data.block_size={row_len} (source {d.source!r}). Use more text, a smaller "
                + ("data.block_size." if name == "train" else "data.block_size or a larger data.eval_fraction.")
            )
        rows, starts = pack(part, row_len, layout, special)
        if name == "eval":
            rows, starts = rows[: d.eval_max_blocks], starts[: d.eval_max_blocks]
        else:
            counts = np.bincount(part.ids, minlength=len(tokenizer)).astype(np.int64)
            stats["train_unigram_counts"] = counts.tolist()
        stats[f"{name}_documents"] = len(docs)
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
    try:
        train.save_to_disk(str(tmp / "train"))
        eval_.save_to_disk(str(tmp / "eval"))
        (tmp / "stats.json").write_text(json.dumps(stats))
        if path.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:  # a full disk, Ctrl-C: leave no half-written cache entry behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load_cached(path, from_cache=False)


def _load_cached(path: Path, from_cache: bool) -> PackedData:
    import datasets

    try:
        stats = json.loads((path / "stats.json").read_text())
        train, eval_ = datasets.load_from_disk(str(path / "train")), datasets.load_from_disk(str(path / "eval"))
        if (len(train), len(eval_)) != (stats["train_blocks"], stats["eval_blocks"]):
            raise ValueError(f"{len(train)}/{len(eval_)} blocks where stats.json says "
                             f"{stats['train_blocks']}/{stats['eval_blocks']}")
        train[len(train) - 1], eval_[len(eval_) - 1]  # the last rows read back: the files are whole
    except Exception as err:  # noqa: BLE001 - any failure here means the entry is damaged
        raise NlpsslError(
            f"data.cache_dir: the cached data {str(path)!r} is damaged and cannot be read "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}). Delete that folder "
            f"(`rm -r {path}`) and rerun: it is rebuilt from the text."
        ) from err
    return PackedData(train, eval_, stats, path, from_cache=from_cache)
