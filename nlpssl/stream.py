"""Streaming (``data.streaming: true``): text read, tokenized and packed on the fly, resumable exactly.

No preparation pass and no cache: :class:`BlockStream` reads the source lazily (files in order,
or the built-in corpus, or a Hub dataset in streaming mode), in chunks of about
``STREAM_CHUNK_BYTES`` of text, and packs them with the cached path's :class:`~nlpssl.data.Packer`
and held-out rule (:func:`~nlpssl.data.held_out`), so one pass of a one-process stream gives the
cached path's training blocks in the same order (the cached path's Trainer then shuffles them;
the stream does not, so shuffle the files or documents beforehand if they are sorted by topic).

Ranks: with at least as many files as processes, rank ``r`` reads files ``r, r + W, ...``;
otherwise every rank reads every file and keeps documents ``r, r + W, ...`` of each (parsing all,
tokenizing its own). The parts are disjoint and together cover the corpus. Each rank loops over
its part for as long as ``max_steps`` asks, so uneven parts never leave a rank waiting.

Resume: every checkpoint gets ``data_state-rank<R>.json``: the position of the chunk the next
training row comes from (epoch, file, record), the packer's unfinished row, the row number and
how many of that chunk's rows were already trained on. Resuming reopens that file, skips its
first ``record`` records (parsed, not tokenized; files before it are not opened), re-packs the one
chunk and skips its trained rows: the Trainer's own batch skipping is turned off
(``ignore_data_skip``). Masks do not depend on an RNG state that could drift: each batch is masked
with a generator seeded by (collator seed, rank, the batch's first row number). A resume with a
different number of processes is refused (the parts would change); DataLoader workers are refused
in streaming altogether (the stream tokenizes in the training process; the Rust tokenizer is fast
enough for the small models this runs on CPU, see BENCHMARKS.md).

A file the stream cannot read (not UTF-8, malformed) is met only when the stream reaches it, maybe
hours in: a one-process run then saves a checkpoint of the steps trained before it stops with the
reader's error, so fixing the file under the same name and resuming loses nothing. The checkpoint's
state names the files by a digest of their sorted list, so a resume after a rename is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from nlpssl.data import (
    Packer, _byte_lengths, _special_ids, _Split, encode, framing, held_out_documents, layout_documents, needs_words,
    row_length,
)
from nlpssl.errors import NlpsslError
from nlpssl.recipe import Recipe, local_path

STREAM_CHUNK_BYTES = 256 << 10  # text per tokenizer call: small, so a start or resume re-reads little
STATE_VERSION = 1


def state_file(rank: int) -> str:
    return f"data_state-rank{rank}.json"


class BlockStream(torch.utils.data.IterableDataset):
    """This rank's training rows, packed on the fly, forever (epoch after epoch of its part).

    Rows are ``{"input_ids": [...], "word_starts": [...], "row": n}``; ``row`` numbers them from 0
    and is removed by :class:`StreamCollator`. ``state`` is a saved ``data_state`` to resume from.
    """

    def __init__(self, recipe: Recipe, tokenizer, rank: int = 0, world: int = 1, state: dict | None = None,
                 chunk_bytes: int = STREAM_CHUNK_BYTES) -> None:
        from nlpssl.sources import text_units

        d = recipe.data
        self.recipe, self.tokenizer, self.rank, self.world = recipe, tokenizer, rank, world
        self.layout, self.row_len, self.words = framing(recipe), row_length(recipe), needs_words(recipe)
        self.special = _special_ids(tokenizer, self.layout)
        self.chunk_bytes = chunk_bytes
        self.all_units = text_units(d.source)
        if len(self.all_units) >= world:
            self.units, self.stride = self.all_units[rank::world], 1
        else:
            self.units, self.stride = self.all_units, world
        self.columns = ["input_ids", "word_starts"]
        self.start = state
        self._snapshots: deque[dict] = deque(maxlen=4096)  # chunk starts, newest last (see state_at)
        if state is not None:
            self._snapshots.append({k: state[k] for k in ("epoch", "unit", "record", "row", "carry", "carry_starts")})
        self.consumed = 0 if state is None else state["row"] + state["skip"]  # rows handed to training
        self.step_rows = self.consumed  # rows of the optimizer steps taken (the Trainer sets it each step)
        self.failed: Exception | None = None  # the error that stopped reading (a bad file), if one did
        self.documents = 0 if state is None else state.get("documents", 0)
        self.tokens, self._t0 = 0, None

    def select_columns(self, columns: list[str]) -> BlockStream:
        """Keep only ``columns`` (plus ``row``) in each row, as ``datasets.Dataset.select_columns``."""
        self.columns = list(columns)
        return self

    # -- reading ----------------------------------------------------------------------------------
    def _records(self, unit: int, record: int) -> Iterator[tuple[int, int, str]]:
        """(unit, record, text) of every text from that position to the end of this rank's part."""
        for u in range(unit, len(self.units)):
            texts = _unit_texts(self.recipe, self.units[u])
            skip = record if u == unit else 0
            for r, text in enumerate(texts):
                if r >= skip and (self.stride == 1 or r % self.stride == self.rank):
                    yield u, r, text

    def _documents(self, texts: list[str]) -> list[str]:
        """The training documents among ``texts`` (sentences or sentence pairs for SimCSE), the held-out ones dropped."""
        d = self.recipe.data
        docs = layout_documents(texts, self.layout, d.seed)
        mask = held_out_documents(docs, self.layout, d.eval_fraction, d.seed)
        return [doc for doc, out in zip(docs, mask) if not out]

    def _chunks(self, unit: int, record: int) -> Iterator[tuple[tuple[int, int], list[str]]]:
        """(position at its start, training documents) per chunk, from a position to the part's end.

        The last item is the end of the part: position ``(len(units), 0)`` and no documents.
        """
        chunk, size, at = [], 0, (unit, record)
        for u, r, text in self._records(unit, record):
            chunk.append(text)
            size += len(text)
            if size >= self.chunk_bytes:
                yield at, self._documents(chunk)
                chunk, size, at = [], 0, (u, r + 1)
        if chunk:
            yield at, self._documents(chunk)
        yield (len(self.units), 0), []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if torch.utils.data.get_worker_info() is not None:
            raise NlpsslError("data.streaming: the stream runs in the training process; set "
                              "training.dataloader_num_workers=0 (the Rust tokenizer uses every core already).")
        try:
            yield from self._rows()
        except Exception as err:
            self.failed = err  # pretrain checkpoints the steps taken before re-raising it
            raise

    def _rows(self) -> Iterator[dict[str, Any]]:
        s = self.start or {"epoch": 0, "unit": 0, "record": 0, "row": 0, "skip": 0, "carry": [], "carry_starts": []}
        epoch, unit, record, row, skip = s["epoch"], s["unit"], s["record"], s["row"], s["skip"]
        packer = Packer(self.row_len, self.layout, self.special)
        packer.restore(s)
        self._t0 = time.perf_counter()
        while True:
            epoch_rows = 0
            for (unit, record), docs in self._chunks(unit, record):
                self._snapshots.append({"epoch": epoch, "unit": unit, "record": record, "row": row} | packer.state())
                if docs:
                    tokens = encode(docs, self.tokenizer, self.words)
                    rows, starts = packer.add(tokens)
                    self.documents += len(docs)
                    self.tokens += len(tokens.ids)
                else:  # the end of the part: the unfinished row, padded
                    rows, starts = packer.finish()
                for i in range(skip, len(rows)):
                    item = {"row": row + i, "input_ids": rows[i].tolist()}
                    if "word_starts" in self.columns:
                        item["word_starts"] = starts[i].tolist()
                    yield item
                row += len(rows)
                epoch_rows += len(rows) - skip
                skip = 0
            if epoch_rows == 0 and row == 0:
                raise NlpsslError(
                    f"data.streaming: rank {self.rank} of {self.world} got no training text from "
                    f"{self.recipe.data.source!r} ({len(self.units)} file(s) in its part). Use more text or fewer processes."
                )
            epoch, unit, record = epoch + 1, 0, 0

    def collator(self, collator) -> StreamCollator:
        """``collator`` over this stream's rows (what the Trainer's DataLoader collates with)."""
        return StreamCollator(collator, self)

    # -- state ------------------------------------------------------------------------------------
    def save_state(self, checkpoint: str | Path) -> Path:
        """Write the position after the rows handed to training so far into ``checkpoint``."""
        path = Path(checkpoint) / state_file(self.rank)
        path.write_text(json.dumps(self.state_at(self.consumed)))
        return path

    def state_at(self, row: int) -> dict:
        """The position from which the stream yields row ``row`` next (JSON-ready)."""
        snap = next((s for s in reversed(self._snapshots) if s["row"] <= row), None)
        if snap is None:  # only before the first row is read: the start of the stream
            snap = {"epoch": 0, "unit": 0, "record": 0, "row": 0, "carry": [], "carry_starts": []}
        return {"version": STATE_VERSION, **self.fingerprint(), **snap, "skip": row - snap["row"],
                "documents": self.documents}

    def fingerprint(self) -> dict:
        """What must not change between a run and its resume."""
        d = self.recipe.data
        names = hashlib.blake2b("\n".join(map(str, self.all_units)).encode(), digest_size=8).hexdigest()
        return {"world_size": self.world, "rank": self.rank, "files": len(self.all_units), "file_names": names,
                "source": d.source, "block_size": self.row_len, "framing": self.layout,
                "eval_fraction": d.eval_fraction, "seed": d.seed}

    def throughput(self) -> dict:
        """Documents read so far, and tokens per second of this run's reading (for the logs)."""
        elapsed = time.perf_counter() - self._t0 if self._t0 else 0.0
        return {"stream_documents": self.documents,
                "stream_tokens_per_s": round(self.tokens / elapsed) if elapsed > 0 else 0}


def load_state(checkpoint: str | Path, rank: int, world: int) -> dict:
    """The saved stream position of this rank in ``checkpoint``, checked against this run's process count."""
    path = Path(checkpoint) / state_file(rank)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        others = sorted(p.name for p in Path(checkpoint).glob("data_state-rank*.json"))
        raise NlpsslError(
            f"training.resume: {path} cannot be read ({type(err).__name__}); a streaming run saves one per process"
            + (f" and this checkpoint has {len(others)} ({', '.join(others)}): it was run with "
               f"{len(others)} process(es), this one has {world}. Resume with the same number of processes"
               if others else "") + ", or start a new run in another training.output_dir."
        ) from err
    if state.get("world_size") != world:
        raise NlpsslError(
            f"training.resume: the interrupted run streamed with {state.get('world_size')} process(es), this one has "
            f"{world} ({path}). Each process reads its own part of the corpus, so the parts would change: resume "
            f"with {state.get('world_size')} process(es), or start a new run in another training.output_dir."
        )
    return state


class StreamCollator:
    """The objective's collator over stream rows: drops ``row`` and seeds the masks by it.

    A collator with a random generator gets one seeded by (its seed, rank, the batch's first row),
    so a resumed run masks every batch exactly as the uninterrupted run did. Records the rows handed
    to training (``stream.consumed``) for the checkpoint's data state.
    """

    def __init__(self, collator, stream: BlockStream) -> None:
        self.collator, self.stream = collator, stream

    def __call__(self, features: list[dict]) -> dict:
        from nlpssl.collators.batching import WorkerGenerator, _Fixed

        first = features[0]["row"]
        self.stream.consumed = features[-1]["row"] + 1
        rows = [{k: v for k, v in f.items() if k != "row"} for f in features]
        own = getattr(self.collator, "_rng", None)
        if not isinstance(own, WorkerGenerator):
            return self.collator(rows)
        digest = hashlib.blake2b(f"{own.seed}/stream/{self.stream.rank}/{first}".encode(), digest_size=8).digest()
        self.collator._rng = _Fixed(torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1))
        try:
            return self.collator(rows)
        finally:
            self.collator._rng = own


def _unit_texts(recipe: Recipe, unit: str) -> Iterator[str]:
    """The texts of one file (or of the built-in corpus, or a Hub dataset) as the recipe reads them."""
    from nlpssl.sources import unit_texts

    d = recipe.data
    return unit_texts(unit, text_column=d.text_column, hub_config=d.hub_config, split=d.split, txt_unit=d.txt_unit,
                      builtin_stories=d.builtin_stories, seed=d.seed, unwrap=d.unwrap, clean=d.clean)


def held_out_blocks(recipe: Recipe, tokenizer, chunk_bytes: int = STREAM_CHUNK_BYTES):
    """The evaluation blocks of a streaming run: (``datasets.Dataset``, stats).

    Reads the whole source in order (every rank the same) until it has ``data.eval_max_blocks``
    held-out blocks, or to the end: the same blocks the cached path holds out.
    """
    from nlpssl.data import text_chunks
    from nlpssl.sources import text_units

    d = recipe.data
    layout, row_len, words = framing(recipe), row_length(recipe), needs_words(recipe)
    held = _Split(Packer(row_len, layout, _special_ids(tokenizer, layout)), max_rows=d.eval_max_blocks)
    texts = (text for unit in text_units(d.source) for text in _unit_texts(recipe, unit))
    seen = 0
    for chunk in text_chunks(texts, chunk_bytes):
        docs = layout_documents(chunk, layout, d.seed)
        seen += len(docs)
        keep = np.flatnonzero(held_out_documents(docs, layout, d.eval_fraction, d.seed))
        if len(keep):
            picked = [docs[i] for i in keep]
            held.add(encode(picked, tokenizer, words), int(_byte_lengths(picked).sum()))
        if held.rows >= d.eval_max_blocks:
            break
    if seen == 1:
        # The cached path holds out the last eval_fraction of a lone document; a stream, which
        # splits by document without knowing where the corpus ends, cannot.
        raise NlpsslError(
            f"data.streaming: the source {d.source!r} is a single document (data.txt_unit={d.txt_unit!r}), and a "
            "stream holds out whole documents, so none is left to evaluate on (got 1 document). Train without "
            "data.streaming (the cached path holds out the last data.eval_fraction of a one-document corpus), "
            "or, for .txt text of several lines, cut it into documents with data.txt_unit=line."
        )
    held.finish()
    held.check("eval", recipe)
    return held.dataset(), held.stats("eval")


def streaming_data(recipe: Recipe, tokenizer, rank: int, world: int, resume_from: str | None):
    """A :class:`~nlpssl.data.PackedData` whose ``train`` is this rank's :class:`BlockStream`."""
    from nlpssl.data import PackedData

    state = load_state(resume_from, rank, world) if resume_from else None
    stream = BlockStream(recipe, tokenizer, rank, world, state)
    if state is not None:
        if isinstance(state.get("source"), str):
            # An older nlpssl saved a local source as written; recipes now hold it absolute.
            state = {**state, "source": local_path(state["source"], always=True)}
        # A key the checkpoint lacks (saved by an older nlpssl) is not compared.
        changed = {k: (state[k], v) for k, v in stream.fingerprint().items() if k in state and state[k] != v}
        # Renamed files alone get their own message; with other changes, those are listed instead.
        renamed = changed.pop("file_names", None) is not None and not changed
        if renamed:
            raise NlpsslError(
                f"training.resume: the file names of data.source {recipe.data.source!r} changed since the checkpoint "
                f"{resume_from} was saved (as many files, {len(stream.all_units)}, but renamed or replaced), and a "
                "stream resumes by the position of its file in the sorted list. Give the files their old names "
                "(a fixed file goes back under the name of the one it replaces), or start a new run in another "
                "training.output_dir."
            )
        if changed:
            raise NlpsslError(
                f"training.resume: the data settings changed since the checkpoint {resume_from} was saved ("
                + ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
                + "), so its stream position means nothing here. Restore the settings, or start a new run "
                "in another training.output_dir."
            )
    eval_, stats = held_out_blocks(recipe, tokenizer)
    return PackedData(stream, eval_, stats, cache_path=None, from_cache=False)
