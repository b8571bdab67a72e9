"""Tokenize, pack into fixed blocks, cache: in chunks, so memory does not grow with the corpus.

Data flow (the cached path, :func:`prepare_data`)::

    texts, read lazily (nlpssl.sources.iter_texts), in chunks of about 4 MB
      -> held-out split by *document*: a document is held out when a hash of (data.seed, its text)
         falls below data.eval_fraction (deterministic, and the same in streaming, which cannot
         know the corpus size in advance; duplicates land on the same side)
      -> token ids (+ word starts) per chunk, straight to the Rust tokenizer (data.num_proc > 1:
         chunks over that many processes, in order)
      -> packed as they come (no remainder dropped per chunk, unlike transformers' ``group_texts``):
         documents separated by [SEP] (masked-LM) or [EOS] (causal-LM, T5), masked-LM blocks framed
         by [CLS] ... [SEP]; a chunk's unfinished row carries over to the next chunk
      -> training rows appended to an Arrow file as they are made (memory-mapped when read), in
         corpus order (the Trainer shuffles them); cached under a hash of the tokenizer and every
         data setting

Streaming (``data.streaming: true``, :mod:`nlpssl.stream`) runs the same chunks, split and
:class:`Packer` on the fly, so its blocks are the cached path's, in the same order.

Packing example (masked-LM, block_size=6, documents [a b c] and [d e])::

    stream  = a b c [SEP] d e [SEP]         (content rows of block_size - 2 = 4 tokens)
    blocks  = [CLS] a b c [SEP] [SEP]
              [CLS] d e [SEP] [PAD] [SEP]   <- the final partial row is padded, not dropped
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nlpssl.errors import NlpsslError, first_line
from nlpssl.recipe import Recipe

# Bump when the packed layout, or the text the readers give, changes. 2: the held-out split became a
# hash of each document (so streaming can make the same split) and training rows keep corpus order
# (written as they are made). 3: Windows line ends read as "\n" in txt_unit=file texts and quoted
# csv/tsv cells (a cache from before holds their "\r" tokens). 4: the text of a special token ("[MASK]",
# "</s>", "<extra_id_0>") written in the corpus is read as text, not as that token (see _encode).
CACHE_VERSION = 4


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
    for irrelevant in ("num_proc", "cache_dir", "streaming"):
        data.pop(irrelevant)
    if not data["mix"]:
        data.pop("mix")  # recipes without a mix keep the keys (and caches) they had before it existed
    payload = {
        "version": CACHE_VERSION,
        "data": data,
        "objective": framing(recipe),  # the row layout (named after the first objective that used it)
        "row_length": row_length(recipe),
        "words": needs_words(recipe),
        "tokenizer": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
    }
    if payload["objective"] in ONE_ROW_PER_DOCUMENT:
        payload["sentence_end"] = SENTENCE_END  # a changed rule cuts other rows: not the old cache
    if payload["objective"] == "pair":
        payload["pairing"] = PAIRING  # nor does a changed pairing
    # A file edited, replaced or added under the same source path is other text: not the old cache.
    payload["files"] = [_files_fingerprint(source) for source in (recipe.data.source, *(m.source for m in recipe.data.mix))]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _files_fingerprint(source: str) -> str | None:
    """A digest of the name, size and modification time of each file a local source reads (None for
    the built-in corpus and Hub datasets, which change only with their settings)."""
    from nlpssl.sources import HUB_PREFIX, text_units

    if source == "builtin" or source.startswith(HUB_PREFIX):
        return None
    digest = hashlib.sha256()
    for unit in text_units(source):
        stat = os.stat(unit)
        digest.update(f"{unit}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


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


def encode(texts: list[str], tokenizer, words: bool = False) -> Tokens:
    """Token ids (and word starts if ``words``) of a list of documents, as flat arrays.

    A document longer than ``PIECE_CHARS`` (a one-line file, a ``txt_unit: file`` book) is encoded
    piece by piece (:func:`~nlpssl.tokenizer.text_pieces`, the same tokens), so the tokenizer's
    memory follows a piece, not the document.
    """
    from nlpssl.tokenizer import PIECE_CHARS, text_pieces

    if all(len(text) <= PIECE_CHARS for text in texts):
        return _encode(texts, tokenizer, words)
    parts, short = [], []
    for text in texts:
        if len(text) <= PIECE_CHARS:
            short.append(text)
            continue
        if short:
            parts.append(_encode(short, tokenizer, words))
            short = []
        pieces = concat([_encode([piece], tokenizer, words) for piece in text_pieces(text)], words)
        parts.append(Tokens(pieces.ids, np.array([0, len(pieces.ids)], np.int64), pieces.starts))  # one document
    if short:
        parts.append(_encode(short, tokenizer, words))
    return concat(parts, words)


def _encode(texts: list[str], tokenizer, words: bool = False) -> Tokens:
    import pyarrow as pa

    from nlpssl.tokenizer import special_tokens_as_text

    # Corpus text is text: a review quoting "[MASK]" or a code file holding "</s>" must not put the mask or
    # end token the collators and models give a meaning to into the rows. Only the packer reads text so;
    # the export's tokenizer keeps the stock behaviour (the fill-mask demo's "[MASK]" is the mask).
    with special_tokens_as_text(tokenizer.backend_tokenizer) as backend:
        # encode_batch_fast skips offsets (~20% faster); word ids need them.
        encodings = (backend.encode_batch if words else backend.encode_batch_fast)(texts, add_special_tokens=False)
    column = pa.array([enc.ids for enc in encodings], type=pa.list_(pa.int32()))  # list-of-lists -> int32 in C
    ids = column.flatten().to_numpy()
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(column.value_lengths().to_numpy(zero_copy_only=False), out=offsets[1:])
    starts = None
    if words:
        starts = np.zeros(0, np.int8)
        if encodings:
            starts = np.concatenate([_word_starts(enc.word_ids) for enc in encodings])
    return Tokens(ids, offsets, starts)


def _word_starts(word_ids: list[int | None]) -> np.ndarray:
    """1 where a token begins a word: its word id differs from the previous token's (None counts as -1)."""
    ids = np.asarray([-1 if w is None else w for w in word_ids], dtype=np.int64)
    start = np.ones(len(ids), dtype=np.int8)
    start[1:] = ids[1:] != ids[:-1]
    return start


def tokenize(texts, tokenizer, num_proc: int = 1, words: bool = False, batch_size: int = 2000) -> Tokens:
    """Token ids (and word starts if ``words``) of every document of a ``datasets.Dataset``, in order.

    Batches of ``batch_size`` documents go to the Rust tokenizer, over ``num_proc`` processes as in
    :func:`prepare_data`. Holds the whole result in memory: :func:`prepare_data` works chunk by chunk.
    """
    arrow = texts.with_format("arrow")
    batches = (arrow[begin : begin + batch_size].column("text").to_pylist() for begin in range(0, len(texts), batch_size))
    return concat([tokens for _, tokens in _encoded(batches, tokenizer, words, num_proc)], words)


def concat(parts: list[Tokens], words: bool) -> Tokens:
    """One :class:`Tokens` of several, documents in order."""
    lengths = [np.diff(p.offsets) for p in parts]
    offsets = np.zeros(sum(len(n) for n in lengths) + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    ids = np.concatenate([p.ids for p in parts]) if parts else np.zeros(0, np.int32)
    starts = (np.concatenate([p.starts for p in parts]) if parts else np.zeros(0, np.int8)) if words else None
    return Tokens(ids, offsets, starts)


class Packer:
    """Packs documents into rows as they arrive, chunk by chunk.

    ``add`` returns the rows a chunk completes and keeps the unfinished one; ``finish`` pads and
    returns it. The rows equal :func:`pack` of all the chunks' documents at once. ``framing``:
    "mlm": documents separated by [SEP], each row framed by [CLS] ... [SEP]; "sentence": one row
    per document, ``[CLS] doc [SEP] [PAD] ...`` (cut to fit, empty ones dropped); "pair": one row
    per two documents (:func:`sentence_pairs`), each half of the row framed as a "sentence" row;
    otherwise documents separated by [EOS], rows unframed.
    """

    def __init__(self, row_len: int, framing: str, special: dict[str, int]) -> None:
        self.row_len, self.framing, self.special = row_len, framing, special
        self.sentence_len = row_len // 2 if framing == "pair" else row_len  # one framed document's share of a row
        self.sep = special["sep"] if framing == "mlm" else special["eos"]
        self.content = row_len - 2 if framing == "mlm" else row_len
        self.carry = np.zeros(0, np.int32)  # the unfinished row's tokens (and their word starts)
        self.carry_starts = np.zeros(0, np.int8)

    def add(self, tokens: Tokens) -> tuple[np.ndarray, np.ndarray]:
        """The rows completed by ``tokens``' documents: (ids, word_starts) 2-D arrays."""
        if self.framing == "sentence":
            return _sentence_rows(tokens, self.row_len, self.special)
        if self.framing == "pair":
            return _pair_rows(tokens, self.sentence_len, self.special)
        ids, offsets = tokens.ids, tokens.offsets
        n_docs, held = len(offsets) - 1, len(self.carry)
        # One separator after each document: token j of document d moves to held + j + d.
        stream = np.empty(held + len(ids) + n_docs, dtype=np.int32)
        stream[:held] = self.carry
        moved = np.repeat(np.arange(n_docs), np.diff(offsets))  # document of each token ...
        moved += np.arange(len(ids)) + held  # ... plus its own position (in place: one int64 array)
        stream[moved] = ids
        stream[offsets[1:] + np.arange(n_docs) + held] = self.sep
        # Without a word-level collator every token counts as its own word (the column stays unused).
        starts = np.ones(len(stream), dtype=np.int8)
        starts[:held] = self.carry_starts
        if tokens.starts is not None:
            starts[moved] = tokens.starts
        n_rows = len(stream) // self.content
        cut = n_rows * self.content
        self.carry, self.carry_starts = stream[cut:].copy(), starts[cut:].copy()
        return self._framed(stream[:cut].reshape(n_rows, self.content), starts[:cut].reshape(n_rows, self.content))

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """The unfinished row, padded (no rows if there is none); the packer starts afresh."""
        if self.framing in ONE_ROW_PER_DOCUMENT or len(self.carry) == 0:
            return np.zeros((0, self.row_len), np.int32), np.zeros((0, self.row_len), np.int8)
        row = np.full((1, self.content), self.special["pad"], dtype=np.int32)
        starts = np.ones((1, self.content), dtype=np.int8)
        row[0, : len(self.carry)], starts[0, : len(self.carry)] = self.carry, self.carry_starts
        self.carry, self.carry_starts = np.zeros(0, np.int32), np.zeros(0, np.int8)
        return self._framed(row, starts)

    def _framed(self, rows: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.framing != "mlm":
            return rows, starts
        n, s = rows.shape[0], self.special
        rows = np.concatenate([np.full((n, 1), s["cls"], np.int32), rows, np.full((n, 1), s["sep"], np.int32)], axis=1)
        ones = np.ones((n, 1), np.int8)
        return rows, np.concatenate([ones, starts, ones], axis=1)

    def state(self) -> dict:
        """The unfinished row as JSON-ready lists (streaming checkpoints)."""
        return {"carry": self.carry.tolist(), "carry_starts": self.carry_starts.tolist()}

    def restore(self, state: dict) -> None:
        self.carry = np.asarray(state["carry"], dtype=np.int32)
        self.carry_starts = np.asarray(state["carry_starts"], dtype=np.int8)


def pack(tokens: Tokens, row_len: int, framing: str, special: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pack every document into rows of ``row_len`` tokens; returns (ids, word_starts) 2-D arrays.

    The final partial row is padded, not dropped; ``framing`` as in :class:`Packer`.
    """
    packer = Packer(row_len, framing, special)
    (rows, starts), (last, last_starts) = packer.add(tokens), packer.finish()
    return np.concatenate([rows, last]), np.concatenate([starts, last_starts])


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


def _pair_rows(tokens: Tokens, half: int, special: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """One row per two documents (0 and 1, 2 and 3, ...): two ``half``-token sentence rows side by side.

    A pair with an empty half is dropped whole, so the halves stay partners.
    """
    lengths = np.diff(tokens.offsets)
    first = 2 * np.flatnonzero((lengths[0::2] > 0) & (lengths[1::2] > 0))
    (a, _), (b, _) = (_sentence_rows(tokens.take(first + i), half, special) for i in (0, 1))
    rows = np.concatenate([a, b], axis=1)
    return rows, np.ones_like(rows, dtype=np.int8)


# After . ! ? (and Arabic ؟, Devanagari ।) before white space, a closing quote or bracket kept; or a
# line break. Chinese and Japanese put no space after 。！？, so there the end itself cuts (after
# its closing 」 or ）): otherwise a whole paragraph of them is one "sentence", cut to data.block_size.
_CJK_END, _CJK_CLOSE = "。！？", "」』）】〕”’"
SENTENCE_END = (
    r"(?<=[.!?؟।])\s+|(?<=[.!?؟।][\"')\]])\s+|\n+"
    rf"|(?<=[{_CJK_END}])(?![{_CJK_END}{_CJK_CLOSE}])\s*|(?<=[{_CJK_END}][{_CJK_CLOSE}])(?![{_CJK_CLOSE}])\s*"
)


def sentences(texts: list[str]) -> list[str]:
    """Every text cut into sentences, in order (see :func:`split_sentences`)."""
    import re

    end = re.compile(SENTENCE_END)
    return [piece.strip() for text in texts for piece in end.split(text) if piece.strip()]


# Sentences of fewer words are not paired ("Wow.", "10/10"): they say little about their document.
PAIR_MIN_WORDS = 3
PAIRING = f"random pairs, min {PAIR_MIN_WORDS} words, v1"  # in the cache key: a change here is other rows


def sentence_pairs(texts: list[str], seed: int) -> list[str]:
    """Pairs of sentences of the same text, flat: ``[a0, b0, a1, b1, ...]`` (the "pair" row layout).

    Each text's sentences of ``PAIR_MIN_WORDS`` or more words (:func:`sentences`) are shuffled and
    paired off, each used once (an odd one out is left); a text with fewer than two gives none. The
    shuffle is seeded by ``seed`` and the text itself, so the pairs do not depend on the order or
    chunking of the corpus (a stream makes the same ones).
    """
    import random

    flat: list[str] = []
    for text in texts:
        kept = [s for s in sentences([text]) if len(s.split()) >= PAIR_MIN_WORDS]
        random.Random(f"nlpssl-pairs/{seed}/{text}").shuffle(kept)
        flat.extend(kept[: len(kept) // 2 * 2])
    return flat


def layout_documents(texts: list[str], layout: str, seed: int) -> list[str]:
    """What a row layout packs of ``texts``: their sentences ("sentence"), sentence pairs of each
    text, flat ("pair"), or the texts themselves."""
    if layout == "sentence":
        return sentences(texts)
    if layout == "pair":
        return sentence_pairs(texts, seed)
    return texts


def split_sentences(texts):
    """Every document cut into sentences (rows of a new ``datasets.Dataset``, column ``text``), in order.

    A rule, not a model (:func:`sentences`): a sentence ends after ``.``, ``!``, ``?``, Arabic ``؟`` or
    Devanagari ``।`` (and any closing quotes or brackets) before white space, after Chinese and Japanese
    ``。！？`` without it, or at a line break; so "Mr. Smith" splits too. Empty pieces are dropped.
    """
    return texts.map(lambda batch: {"text": sentences(batch["text"])}, batched=True,
                     remove_columns=texts.column_names, desc="Splitting sentences")


def _to_dataset(rows: np.ndarray, starts: np.ndarray):
    import datasets

    return datasets.Dataset(_rows_table(rows, starts))


def _rows_table(rows: np.ndarray, starts: np.ndarray):
    import pyarrow as pa

    width = rows.shape[1]
    return pa.table({
        "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.int32()), width),
        "word_starts": pa.FixedSizeListArray.from_arrays(pa.array(starts.reshape(-1), pa.int8()), width),
    })


# The special tokens each row layout writes (and, for masked-LM rows, the collator's [MASK]).
LAYOUT_SPECIALS = {"mlm": ("pad", "cls", "sep", "mask"), "sentence": ("pad", "cls", "sep"), "pair": ("pad", "cls", "sep"),
                   "causal": ("pad", "eos"), "t5": ("pad", "eos")}
ONE_ROW_PER_DOCUMENT = ("sentence", "pair")  # row layouts of one document (or pair) a row, cut to fit


def _special_ids(tokenizer, layout: str) -> dict[str, int]:
    """The ids of the special tokens rows of ``layout`` are built with; a tokenizer that lacks one
    (a foreign tokenizer through tokenizer.path) is refused here, before any text is read."""
    ids = {name: getattr(tokenizer, f"{name}_token_id") for name in ("pad", "cls", "sep", "eos", "mask")}
    missing = [name for name in LAYOUT_SPECIALS[layout] if ids[name] is None]
    if missing:
        raise NlpsslError(
            f"tokenizer: {tokenizer.name_or_path!r} has no {' and no '.join(f'{m}_token' for m in missing)} (got "
            + ", ".join(f"{m}_token={getattr(tokenizer, f'{m}_token')!r}" for m in LAYOUT_SPECIALS[layout])
            + f"), which {layout!r} rows need. Train a tokenizer on your text with `nlpssl tokenizer train RECIPE --out DIR` (it has them all), "
            "or point tokenizer.path at one that defines them."
        )
    return ids


def held_out(texts: list[str], fraction: float, seed: int) -> np.ndarray:
    """Which documents are held out for evaluation: bool per text.

    A document is held out when a hash of (``seed``, its text) falls below ``fraction``: the
    decision needs no count of the corpus (streaming makes the same one), never changes with the
    order or number of files, and puts duplicate documents on the same side.
    """
    prefix = f"nlpssl-held-out/{seed}/".encode()
    threshold = int(fraction * 2**64)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(prefix + t.encode(), digest_size=8).digest(), "little") < threshold
         for t in texts), dtype=bool, count=len(texts))


def held_out_documents(docs: list[str], layout: str, fraction: float, seed: int) -> np.ndarray:
    """:func:`held_out` per document of a row layout; a "pair" row's two documents go together."""
    if layout != "pair":
        return held_out(docs, fraction, seed)
    return np.repeat(held_out([f"{a}\n{b}" for a, b in zip(docs[0::2], docs[1::2])], fraction, seed), 2)


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
    """The held-out split of a ``datasets.Dataset`` of texts as two views (for baselines that map over texts)."""
    mask = held_out(texts["text"], fraction, seed)
    return texts.select(np.flatnonzero(~mask)), texts.select(np.flatnonzero(mask))


# ------------------------------------------------------------------------------------------------
# Chunked preparation


CHUNK_BYTES = 4 << 20  # text per tokenizer call: large enough for the Rust tokenizer's threads


def text_chunks(texts, chunk_bytes: int = CHUNK_BYTES):
    """Lists of consecutive texts of about ``chunk_bytes`` of UTF-8 each (the last may be smaller)."""
    chunk, size = [], 0
    for text in texts:
        chunk.append(text)
        size += len(text)
        if size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def source_texts(recipe: Recipe, max_texts: int | None):
    """``data.source``'s texts, then each ``data.mix`` entry's, ``repeat`` times; at most ``max_texts``.

    Read lazily (a one-document corpus is read whole, as it is one text). A mix entry reads with its
    own text_column, txt_unit and clean where it sets them, else the data section's. Every text of
    every source still passes the hash split of `held_out`, so the copies of a repeated text all land
    on the same side of it.
    """
    from nlpssl.sources import iter_texts

    d = recipe.data

    def read(source: str, text_column: str, txt_unit: str, clean: str):
        return iter_texts(
            source, text_column=text_column, hub_config=d.hub_config, split=d.split, txt_unit=txt_unit,
            builtin_stories=d.builtin_stories, seed=d.seed, unwrap=d.unwrap, clean=clean,
        )

    parts = [read(d.source, d.text_column, d.txt_unit, d.clean)]
    for m in d.mix:
        args = (m.source, m.text_column or d.text_column, m.txt_unit or d.txt_unit, m.clean or d.clean)
        parts += [read(*args) for _ in range(m.repeat)]  # generators: each copy is read when reached
    return itertools.islice(itertools.chain.from_iterable(parts), max_texts)


def _encoded(chunks, tokenizer, words: bool, num_proc: int):
    """(texts, Tokens) per chunk, in order; with ``num_proc > 1`` encoded in that many processes.

    At most ``2 * num_proc`` chunks are in flight, so reading never runs ahead of tokenizing.
    """
    if num_proc <= 1:
        for chunk in chunks:
            yield chunk, encode(chunk, tokenizer, words)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context("fork"),
                             initializer=_worker_init, initargs=(tokenizer,)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append((chunk, pool.submit(_worker_encode, chunk, words)))
            if len(pending) >= 2 * num_proc:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


_WORKER_TOKENIZER = None


def _worker_init(tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _worker_encode(texts: list[str], words: bool) -> Tokens:
    return encode(texts, _WORKER_TOKENIZER, words)


class _RowFile:
    """Rows appended to an Arrow stream file as they are made (what ``Dataset.from_file`` maps)."""

    def __init__(self, path: Path, width: int) -> None:
        import pyarrow as pa

        self.schema = _rows_table(np.zeros((0, width), np.int32), np.zeros((0, width), np.int8)).schema
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_stream(self.sink, self.schema)
        self.rows = 0

    def write(self, rows: np.ndarray, starts: np.ndarray) -> None:
        if len(rows):
            self.writer.write_table(_rows_table(rows, starts))
            self.rows += len(rows)

    def close(self) -> None:
        self.writer.close()
        self.sink.close()


class _Split:
    """One side of the split being packed: its packer, counts and where its rows go."""

    def __init__(self, packer: Packer, out: _RowFile | None = None, max_rows: int | None = None) -> None:
        self.packer, self.out, self.max_rows = packer, out, max_rows
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []  # rows held in memory (out=None)
        self.documents = self.tokens = self.bytes = self.rows = 0
        self.cut = 0  # one-row-per-document framing: documents longer than a row, cut to fit
        self.unscored = 0  # documents that came after the max_rows were full (in none of the rows)

    def add(self, tokens: Tokens, n_bytes: int) -> None:
        n_docs = len(tokens.offsets) - 1
        self.documents += n_docs
        self.tokens += len(tokens.ids)
        framing = self.packer.framing
        if framing in ONE_ROW_PER_DOCUMENT:  # [CLS] ... [SEP]: two tokens of each document's share are framing
            self.cut += int((np.diff(tokens.offsets) > self.packer.sentence_len - 2).sum())
        self.bytes += n_bytes
        if self.max_rows is None:
            self._put(*self.packer.add(tokens))
            return
        step = 2 if framing == "pair" else 1  # a pair's documents make one row
        for i in range(0, n_docs, step):  # one row's worth at a time, so the count of documents left out is exact
            if self.rows >= self.max_rows:
                self.unscored += n_docs - i
                break
            self._put(*self.packer.add(tokens.take(np.arange(i, i + step))))

    def finish(self) -> None:
        if self.max_rows is None or self.rows < self.max_rows:
            self._put(*self.packer.finish())

    def _put(self, rows: np.ndarray, starts: np.ndarray) -> None:
        if self.max_rows is not None:
            rows, starts = rows[: self.max_rows - self.rows], starts[: self.max_rows - self.rows]
        self.rows += len(rows)
        if self.out is not None:
            self.out.write(rows, starts)
        elif len(rows):
            self.kept.append((rows, starts))

    def dataset(self):
        """The rows held in memory as a ``datasets.Dataset``."""
        width = self.packer.row_len
        rows = [r for r, _ in self.kept] or [np.zeros((0, width), np.int32)]
        starts = [s for _, s in self.kept] or [np.zeros((0, width), np.int8)]
        return _to_dataset(np.concatenate(rows), np.concatenate(starts))

    def check(self, name: str, recipe: Recipe) -> None:
        """Refuse a split with too little text for one block (before it is cached or trained on)."""
        d, row_len = recipe.data, self.packer.row_len
        fix = "data.block_size." if name == "train" else "data.block_size or a larger data.eval_fraction."
        if self.documents == 0 or (self.packer.framing not in ONE_ROW_PER_DOCUMENT
                                   and self.tokens + self.documents < row_len):
            raise NlpsslError(
                f"data: the {name} split holds {self.documents} document(s) and {self.tokens} tokens, fewer than "
                f"one block of data.block_size={row_len} (source {d.source!r}, data.eval_fraction={d.eval_fraction}). "
                f"Use more text, a smaller " + fix
                + (" (Identical documents always fall on the same side of the split, a hash of each text.)"
                   if self.documents == 0 else "")
            )

    def stats(self, name: str) -> dict:
        stats = {f"{name}_documents": self.documents, f"{name}_tokens": self.tokens,
                 f"{name}_bytes": self.bytes, f"{name}_blocks": self.rows}
        if self.max_rows is not None:
            stats[f"{name}_unscored_documents"] = self.unscored
        return stats | ({f"{name}_cut_documents": self.cut} if self.packer.framing in ONE_ROW_PER_DOCUMENT else {})


def eval_coverage_note(stats: dict) -> str | None:
    """What to tell the user when the eval blocks filled up before the held-out documents ran out: they
    score the text read first (``data.source``, then ``data.mix``; a folder's files by name), not a sample."""
    unscored = stats.get("eval_unscored_documents", 0)
    if not unscored:
        return None
    return (f"data: the {stats['eval_blocks']} eval blocks (data.eval_max_blocks) were full before the corpus "
            f"ended: they hold the first held-out documents in reading order (data.source, then data.mix; a "
            f"folder's files by name); at least {unscored:,} held-out documents read later are not scored (nor "
            "trained on). With sources of different kinds the evaluation figures are of those read first: raise "
            "data.eval_max_blocks, or mix the sources into one file.")


def _byte_lengths(texts: list[str]) -> np.ndarray:
    return np.fromiter((len(t.encode()) for t in texts), dtype=np.int64, count=len(texts))


def _write_packed(recipe: Recipe, tokenizer, folder: Path) -> dict:
    """Read, split, tokenize and pack the recipe's corpus chunk by chunk into ``folder``; returns the stats.

    ``folder/train.arrow`` gets the training rows as they are made; the held-out rows (at most
    ``data.eval_max_blocks``) go to ``folder/eval.arrow``. Memory holds a chunk, not the corpus.
    """
    from datasets.utils.logging import is_progress_bar_enabled
    from tqdm.auto import tqdm

    d = recipe.data
    layout, row_len, words = framing(recipe), row_length(recipe), needs_words(recipe)
    special = _special_ids(tokenizer, layout)
    chunks = text_chunks(source_texts(recipe, recipe.data.max_texts))
    if layout in ONE_ROW_PER_DOCUMENT:  # the held-out split is then by sentence (or pair)
        chunks = (layout_documents(chunk, layout, d.seed) for chunk in chunks)
    out = _RowFile(folder / "train.arrow", row_len)
    train = _Split(Packer(row_len, layout, special), out)
    held = _Split(Packer(row_len, layout, special), max_rows=d.eval_max_blocks)
    counts = np.zeros(len(tokenizer), np.int64)
    bar = tqdm(desc="Preparing data", unit="B", unit_scale=True, disable=not is_progress_bar_enabled())
    pending = None  # a first chunk of one document: perhaps the whole corpus (a book, txt_unit=file)
    try:
        for i, (texts, tokens) in enumerate(_encoded(chunks, tokenizer, words, d.num_proc)):
            chunk = (texts, tokens, _byte_lengths(texts))
            if i == 0 and len(texts) == 1 and layout not in ONE_ROW_PER_DOCUMENT:
                pending = chunk
                continue
            if pending is not None:
                _add_split(pending, train, held, counts, d)
                pending = None
            _add_split(chunk, train, held, counts, d)
            bar.update(int(chunk[2].sum()))
            bar.set_postfix(documents=train.documents + held.documents, refresh=False)
        if pending is not None:  # the corpus is that one document: its last eval_fraction is held out
            texts, tokens, n_bytes = pending
            parts = split_tail(tokens, d.eval_fraction)
            for side, part in zip((train, held), parts):
                side.add(part, round(int(n_bytes[0]) * len(part.ids) / max(1, len(tokens.ids))))
            counts += np.bincount(parts[0].ids, minlength=len(counts))[: len(counts)]
            bar.update(int(n_bytes.sum()))
        train.finish()
        held.finish()
    finally:
        out.close()
        bar.close()
    train.check("train", recipe)
    held.check("eval", recipe)
    eval_file = _RowFile(folder / "eval.arrow", row_len)
    for rows, starts in held.kept:
        eval_file.write(rows, starts)
    eval_file.close()
    return {"train_unigram_counts": counts.tolist()} | train.stats("train") | held.stats("eval")


def _add_split(chunk, train: _Split, held: _Split, counts: np.ndarray, d) -> None:
    """Send a chunk's documents to the training or held-out side, in corpus order."""
    texts, tokens, n_bytes = chunk
    mask = held_out_documents(texts, train.packer.framing, d.eval_fraction, d.seed)
    for side, docs in ((train, np.flatnonzero(~mask)), (held, np.flatnonzero(mask))):
        if len(docs):
            part = tokens.take(docs)
            side.add(part, int(n_bytes[docs].sum()))
            if side is train:
                counts += np.bincount(part.ids, minlength=len(counts))[: len(counts)]


def prepare_data(recipe: Recipe, tokenizer) -> PackedData:
    """Packed train/eval blocks for ``recipe``, from the cache when the settings match.

    The cache folder is ``data.cache_dir/<hash>``; it is written to a temporary folder and
    renamed, so an interrupted run never leaves a half-written cache behind (a build killed outright
    leaves its hidden temporary folder, which the next build on the machine removes). Preparation reads and
    packs the corpus in chunks (:func:`_write_packed`), so its memory does not grow with the corpus.
    """
    key = cache_key(recipe, tokenizer)
    path = Path(recipe.data.cache_dir).expanduser() / key
    if (path / "stats.json").is_file():
        return _load_cached(path, from_cache=True)
    from nlpssl.runs import owner_tag

    sweep_stale_builds(path.parent)
    tmp = path.with_name(f".{key}.tmp-{owner_tag()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        stats = _write_packed(recipe, tokenizer, tmp)
        (tmp / "stats.json").write_text(json.dumps(stats))
        if path.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:  # a full disk, Ctrl-C, bad input: leave no half-written cache entry behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load_cached(path, from_cache=False)


def sweep_stale_builds(cache_dir: Path) -> None:
    """Remove the temporary folders of cache builds on this machine whose process is gone.

    A build killed outright (``kill -9``, out of memory, a power cut) cannot remove its own
    ``.KEY.tmp-HOST-PID`` folder, which may hold gigabytes of half-written rows; nothing reads it,
    but nothing else would ever delete it. Only nlpssl's own names are touched.
    """
    if not cache_dir.is_dir():
        return
    from nlpssl.runs import left_by_gone_process

    for leftover in cache_dir.glob(".*.tmp-*"):
        match = re.fullmatch(r"\.[0-9a-f]{16}\.tmp-(.+)", leftover.name)
        if match and leftover.is_dir() and left_by_gone_process(match.group(1)):
            shutil.rmtree(leftover, ignore_errors=True)


def _load_cached(path: Path, from_cache: bool) -> PackedData:
    import datasets

    try:
        stats = json.loads((path / "stats.json").read_text())
        train, eval_ = (datasets.Dataset.from_file(str(path / f"{name}.arrow")) for name in ("train", "eval"))
        if (len(train), len(eval_)) != (stats["train_blocks"], stats["eval_blocks"]):
            raise ValueError(f"{len(train)}/{len(eval_)} blocks where stats.json says "
                             f"{stats['train_blocks']}/{stats['eval_blocks']}")
        train[len(train) - 1], eval_[len(eval_) - 1]  # the last rows read back: the files are whole
    except Exception as err:  # noqa: BLE001 - any failure here means the entry is damaged
        raise NlpsslError(
            f"data.cache_dir: the cached data {str(path)!r} is damaged and cannot be read "
            f"({type(err).__name__}: {first_line(err)}). Delete that folder "
            f"(`rm -r {path}`) and rerun: it is rebuilt from the text."
        ) from err
    return PackedData(train, eval_, stats, path, from_cache=from_cache)
