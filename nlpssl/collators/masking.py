"""Masked-LM corruption: token, whole-word and SpanBERT span masking with 80/10/10 replacement.

All three units share one pipeline over a (B, L) batch, with no per-token Python loop:

1. ``unit`` ids: every token gets the id of the unit it is masked with (itself, its word, its span).
2. selection: units are picked by independent coin flips, or in a random order until a per-row
   token budget is spent (``exact_budget``; always for spans).
3. replacement: one 80/10/10 draw per unit, so a whole word or span gets one treatment.

Words come from a precomputed ``word_starts`` column (1 where a token begins a word), as the data
pipeline writes it; the collator stays dumb and never calls a tokenizer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from nlpssl.collators.batching import WorkerGenerator, beyond_length, stack_column
from nlpssl.collators.t5 import sentinel_ids_from_tokenizer
from nlpssl.errors import NlpsslError

IGNORE_INDEX = -100  # label value that torch's cross-entropy (and every HF model) skips

Unit = Literal["token", "word", "span"]


@dataclass
class MaskingCollator:
    """Masks tokens, whole words or SpanBERT spans for masked-LM pretraining.

    Special and pad tokens are never masked; random replacements never draw a special id. Feed it
    rows with ``input_ids`` (and ``word_starts`` for ``unit="word"`` or ``"span"``); it returns
    ``input_ids`` (corrupted), ``labels`` (original id where masked, -100 elsewhere) and
    ``attention_mask`` (1 where not pad).

    Args:
        pad_id: Padding id; never masked, attention 0, also pads ragged rows.
        mask_id: The ``[MASK]`` id.
        vocab_size: Ids ``0..vocab_size-1`` minus ``special_ids`` are the random replacements.
        special_ids: Ids never masked ([CLS], [SEP], [EOS], ...). They also end documents: spans
            never cross or touch them.
        unit: ``"token"`` (BERT), ``"word"`` (whole-word masking) or ``"span"`` (SpanBERT).
        rate: Share of maskable tokens (not words) to select. 0.15 is BERT's.
        exact_budget: Select exactly ``round(rate * maskable tokens)`` per row, as ELECTRA and
            Cramming do, instead of independent coin flips. Words and spans are never split, so
            there the count lands on the nearest word boundary (within half a word). Default: off
            for tokens and words, always on for spans (SpanBERT fills a budget).
        mask_frac: Share of selected units replaced by ``[MASK]`` (BERT: 0.8).
        random_frac: Share replaced by a random token (BERT: 0.1); the rest stay unchanged.
        span_p: Geometric parameter of span lengths in words (SpanBERT: 0.2).
        span_max_len: Longest span in words (SpanBERT: 10).
        seed: Seeds the generator, mixed with the DataLoader worker and the distributed rank.

    Example:
        >>> c = MaskingCollator(pad_id=0, mask_id=4, vocab_size=100, special_ids=[2, 3],
        ...                     unit="word", rate=0.4, exact_budget=True, mask_frac=1.0,
        ...                     random_frac=0.0)
        >>> b = c([{"input_ids": [2, 10, 11, 12, 3, 0], "word_starts": [1, 1, 0, 1, 1, 1]}])
        >>> b["input_ids"], b["labels"]  # the budget is 0.4 * 3 maskable = 1.2 -> about 1 token
        # e.g. [[2, 10, 11, 4, 3, 0]], [[-100, -100, -100, 12, -100, -100]]
        # or   [[2, 4, 4, 12, 3, 0]],  [[-100, 10, 11, -100, -100, -100]]  (seed decides)
        >>> b["attention_mask"]
        tensor([[1, 1, 1, 1, 1, 0]])

    Diagnostics (realised rate, whole-word share, span lengths) accumulate in this process; read
    them with :meth:`pop_stats`. They are only visible with ``dataloader_num_workers=0``.
    """

    pad_id: int
    mask_id: int
    vocab_size: int
    special_ids: Collection[int] = ()
    unit: Unit = "token"
    rate: float = 0.15
    exact_budget: bool | None = None
    mask_frac: float = 0.8
    random_frac: float = 0.1
    span_p: float = 0.2
    span_max_len: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        errors = _config_errors(self)
        if errors:
            raise NlpsslError("\n".join(errors))
        if self.exact_budget is None:
            self.exact_budget = self.unit == "span"
        never = sorted({int(i) for i in self.special_ids} | {self.pad_id})
        # A lookup table beats torch.isin (a sort) by ~10x; its last slot catches every larger id.
        self._never_mask = torch.zeros(max(never) + 2, dtype=torch.bool)
        self._never_mask[never] = True
        allowed = torch.ones(self.vocab_size, dtype=torch.bool)
        allowed[[i for i in never if 0 <= i < self.vocab_size]] = False
        self._random_ids = allowed.nonzero().squeeze(1)
        # Special ids usually form a prefix of the vocabulary: then draw from a range, no lookup.
        first, count = int(self._random_ids[0]), len(self._random_ids)
        self._random_range = (
            (first, first + count) if int(self._random_ids[-1]) == first + count - 1 else None
        )
        self._rng = WorkerGenerator(self.seed)
        self._stats = MaskStats(self.span_max_len)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kw: Any) -> MaskingCollator:
        """Builds the collator with ids read from a ``PreTrainedTokenizerFast``.

        Args:
            tokenizer: Supplies ``pad_token_id``, ``mask_token_id``, ``len(tokenizer)`` as the
                vocabulary size, and as never-masked ids ``all_special_ids`` plus the
                ``<extra_id_i>`` sentinels (a wrapper that does not declare them as special
                would otherwise let them be masked and drawn as random replacements).
            **kw: Any other constructor argument (``unit``, ``rate``, ``seed``, ...); explicit
                ids here win over the tokenizer's.
        """
        missing = [n for n in ("pad_token", "mask_token") if getattr(tokenizer, n, None) is None]
        if missing:
            raise NlpsslError(
                f"MaskingCollator.from_tokenizer: the tokenizer has no {' or '.join(missing)} "
                f"(got {type(tokenizer).__name__} with special tokens "
                f"{getattr(tokenizer, 'all_special_tokens', '?')}). "
                "Train or wrap the tokenizer naming [PAD] and [MASK] as its special tokens."
            )
        special = set(tokenizer.all_special_ids) | set(sentinel_ids_from_tokenizer(tokenizer))
        ids = {
            "pad_id": tokenizer.pad_token_id,
            "mask_id": tokenizer.mask_token_id,
            "vocab_size": len(tokenizer),
            "special_ids": sorted(special),
        }
        return cls(**{**ids, **kw})

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Collates rows into a corrupted batch (see the class docstring)."""
        ids, lengths = stack_column(features, "input_ids", self.pad_id, "MaskingCollator")
        never = self._never_mask[ids.clamp(0, len(self._never_mask) - 1)]
        maskable = ~never & ~beyond_length(lengths, ids.shape[1])
        word = self._word_index(features, ids, maskable)
        generator = self._rng.get()
        unit_ids, spans = self._unit_ids(word, maskable, generator)
        if self.exact_budget:
            budget = torch.floor(self.rate * maskable.sum(1, dtype=torch.float64) + 0.5).long()
            keys = torch.rand(ids.shape, generator=generator)
            if self.unit == "token":  # every unit is one token: no word ever straddles the budget
                masked = select_by_budget(unit_ids, unit_ids, maskable, budget, keys)
            else:
                ties = torch.rand(ids.shape, generator=generator) < 0.5
                masked = select_by_budget(unit_ids, word, maskable, budget, keys, ties)
        else:
            coin = torch.rand(ids.shape, generator=generator) < self.rate
            masked = maskable & coin.gather(1, unit_ids)
        treatment = torch.rand(ids.shape, generator=generator).gather(1, unit_ids)
        random_ids = None
        if self.random_frac > 0 and self._random_range is not None:
            random_ids = torch.randint(*self._random_range, ids.shape, generator=generator)
        elif self.random_frac > 0:
            pick = torch.randint(len(self._random_ids), ids.shape, generator=generator)
            random_ids = self._random_ids[pick]
        corrupted = replace_selected(
            ids, masked, treatment, self.mask_id, random_ids, self.mask_frac, self.random_frac
        )
        self._stats.update(masked, maskable, word, spans)
        return {
            "input_ids": corrupted,
            "labels": torch.where(masked, ids, IGNORE_INDEX),
            "attention_mask": (ids != self.pad_id).long(),
        }

    def pop_stats(self) -> dict[str, float]:
        """Returns the diagnostics gathered since the last call and resets them.

        Keys: ``rate`` (masked / maskable tokens), ``whole_word_share`` (share of masked tokens
        whose whole word is masked; needs ``word_starts``), and for spans ``span_count``,
        ``span_len_mean`` (words actually masked per span), ``span_cut_share`` (spans cut short
        by the budget or a document end; high when documents are short) and ``span_len_1`` ..
        ``span_len_<max>`` (share of placed spans by *drawn* length, close to SpanBERT's law
        :func:`span_law`). Empty when this process collated nothing, as in the main process when
        DataLoader workers do the collating.
        """
        return self._stats.pop()

    def _word_index(
        self, features: Sequence[Any], ids: torch.Tensor, maskable: torch.Tensor
    ) -> torch.Tensor | None:
        has_words = isinstance(features[0], Mapping) and "word_starts" in features[0]
        if not has_words:
            if self.unit != "token":
                got = sorted(features[0]) if isinstance(features[0], Mapping) else type(features[0])
                raise NlpsslError(
                    f"MaskingCollator: unit={self.unit!r} needs a 'word_starts' column in each row "
                    f"(got {got}). Tokenize with word starts, and with transformers.Trainer set "
                    "remove_unused_columns=False (it drops columns the model does not take); "
                    "or use unit='token'."
                )
            return None
        starts, _ = stack_column(features, "word_starts", 1, "MaskingCollator")
        if starts.shape != ids.shape:
            raise NlpsslError(
                "MaskingCollator: 'word_starts' and 'input_ids' differ in shape "
                f"(got {tuple(starts.shape)} vs {tuple(ids.shape)}). "
                "Write one word-start flag per token."
            )
        return word_index(starts, maskable)

    def _unit_ids(
        self, word: torch.Tensor | None, maskable: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, SpanLayout | None]:
        if self.unit == "token":
            return torch.arange(maskable.shape[1]).expand_as(maskable), None
        assert word is not None  # _word_index raised otherwise
        if self.unit == "word":
            return word, None
        draws = sample_span_lengths(maskable.shape, self.span_p, self.span_max_len, generator)
        layout = span_layout(word, maskable, draws)
        return layout.span_of_word.gather(1, word), layout


def _config_errors(c: MaskingCollator) -> list[str]:
    """All configuration errors at once, in the house format."""
    w = "MaskingCollator"
    errors = []
    if c.unit not in ("token", "word", "span"):
        errors.append(f"{w}: unit must be 'token', 'word' or 'span' (got {c.unit!r}). Pick one.")
    if not 0 < c.rate < 1:
        errors.append(
            f"{w}: rate is the share of maskable tokens to mask and must be in (0, 1) "
            f"(got {c.rate}). Use 0.15 as BERT does."
        )
    for name in ("mask_frac", "random_frac"):
        if not 0 <= getattr(c, name) <= 1:
            errors.append(
                f"{w}: {name} must be in [0, 1] (got {getattr(c, name)}). "
                "BERT uses mask_frac=0.8, random_frac=0.1."
            )
    if c.mask_frac + c.random_frac > 1 + 1e-9:
        errors.append(
            f"{w}: mask_frac + random_frac must not exceed 1 (got {c.mask_frac} + "
            f"{c.random_frac} = {c.mask_frac + c.random_frac:g}). The rest is left unchanged; "
            "lower one of them (BERT: 0.8 and 0.1)."
        )
    if c.unit == "span" and c.exact_budget is False:
        errors.append(
            f"{w}: unit='span' always fills an exact token budget (got exact_budget=False). "
            "Drop exact_budget, or use unit='word' for coin-flip masking."
        )
    if not 0 < c.span_p <= 1:
        errors.append(f"{w}: span_p must be in (0, 1] (got {c.span_p}). SpanBERT uses 0.2.")
    if c.span_max_len < 1:
        errors.append(f"{w}: span_max_len must be >= 1 (got {c.span_max_len}). SpanBERT uses 10.")
    if not 0 <= c.mask_id < c.vocab_size:
        errors.append(
            f"{w}: mask_id must be a vocabulary id (got {c.mask_id} with vocab_size "
            f"{c.vocab_size}). Pass the tokenizer's mask_token_id and len(tokenizer)."
        )
    elif c.random_frac > 0 and c.vocab_size <= len(set(c.special_ids) | {c.pad_id}):
        errors.append(
            f"{w}: no non-special id is left to draw random replacements from (got vocab_size "
            f"{c.vocab_size}). Pass len(tokenizer) as vocab_size or set random_frac=0."
        )
    return errors


def word_index(word_starts: torch.Tensor, maskable: torch.Tensor) -> torch.Tensor:
    """Word index of each token: ``cumsum(word_starts) - 1``, with every special token its own word.

    A special or pad token, and the token after it, always start a word, so a word never spans a
    document boundary even if the column says otherwise.

    Example:
        word_starts ``[[1, 1, 0, 1, 1]]``, maskable ``[[0, 1, 1, 1, 0]]`` -> ``[[0, 1, 1, 2, 3]]``.
    """
    fixed = ~maskable
    starts = word_starts.bool() | fixed | F.pad(fixed[:, :-1], (1, 0), value=True)
    return starts.long().cumsum(1) - 1


def sample_span_lengths(
    shape: torch.Size | tuple[int, ...], p: float, max_len: int, generator: torch.Generator
) -> torch.Tensor:
    """Span lengths in words from a geometric law truncated to 1..max_len and renormalised.

    SpanBERT (Joshi et al. 2020, sec. 3.1) draws l ~ Geo(p=0.2) "clipped" at 10; their code
    renormalises the probabilities over 1..10 (that is what gives the paper's mean of 3.8 words).
    Sampled by inverting the CDF: a uniform draw is bucketed by the CDF's ``max_len - 1`` steps.
    """
    cdf = span_law(p, max_len).cumsum(0)[:-1].float()
    u = torch.rand(shape, generator=generator)
    return torch.bucketize(u, cdf, right=True) + 1


def span_law(p: float, max_len: int) -> torch.Tensor:
    """P(length = k) for k = 1..max_len under :func:`sample_span_lengths`' law."""
    k = torch.arange(1, max_len + 1, dtype=torch.float64)
    probs = p * (1.0 - p) ** (k - 1)
    return probs / probs.sum()


@dataclass
class SpanLayout:
    """Spans tiled over the words of each row: span id per word, and the length drawn per id."""

    span_of_word: torch.Tensor  # (B, L) span id of each word index; a special word is its own id
    drawn: torch.Tensor  # (B, L) length in words drawn for span id i
    word_maskable: torch.Tensor  # (B, L) word index i exists and may be masked


def span_layout(word: torch.Tensor, maskable: torch.Tensor, draws: torch.Tensor) -> SpanLayout:
    """Tiles each document (a run of maskable words) with spans of the drawn lengths.

    Document d starting at word s uses draws ``draws[s], draws[s+1], ...`` in turn, so documents
    never share a span, and the span containing word w is the number of cumulative draw ends
    ``<= ends[s-1] + (w - s)``: one ``searchsorted`` for the whole batch. Span ids are word indices
    (``s`` for a document's first span), so they are unique in the row. The last span of a document
    is cut at its end.

    Example:
        words ``[CLS] a b c d [SEP] e f`` (word indices 0..7), draws ``[1, 3, 9, 9, 9, 9, 2, 9]``
        -> span ids ``[0, 1, 1, 1, 2, 5, 6, 6]``: spans ``a b c`` (draw 3), ``d`` (draw 9, cut by
        [SEP]) and ``e f`` (draw 2).
    """
    batch, width = word.shape
    positions = torch.arange(width)
    word_maskable = torch.zeros(batch, width, dtype=torch.bool).scatter_(1, word, maskable)
    doc_start = word_maskable & ~F.pad(word_maskable[:, :-1], (1, 0), value=False)
    start = torch.cummax(torch.where(doc_start, positions, 0), 1).values
    ends = draws.cumsum(1)
    target = (ends - draws).gather(1, start) + (positions - start)
    span = torch.searchsorted(ends, target, right=True)
    span = torch.where(word_maskable, span, positions)
    return SpanLayout(span_of_word=span, drawn=draws, word_maskable=word_maskable)


def select_by_budget(
    unit: torch.Tensor,
    word: torch.Tensor,
    maskable: torch.Tensor,
    budget: torch.Tensor,
    keys: torch.Tensor,
    ties: torch.Tensor | None = None,
) -> torch.Tensor:
    """Masks whole units in the order of ``keys`` until each row's token budget is spent.

    The unit that crosses the budget is cut at the word boundary nearest the budget (a word is
    kept when its midpoint falls inside it), so single-token units give exactly ``budget`` tokens
    and words or spans come within half a word of it. A word whose midpoint sits exactly on the
    budget is kept when its ``ties`` flag is set: always keeping it would overshoot by a quarter
    token per row on average (1% too many masks with 2-token words at rate 0.15), a fair coin is
    unbiased. Units must be contiguous runs of tokens.

    Args:
        unit: (B, L) unit id per token, in ``[0, L)``.
        word: (B, L) word id per token (equal to ``unit`` for token masking).
        maskable: (B, L) bool; units made of other tokens are never picked.
        budget: (B,) tokens to mask per row.
        keys: (B, L) sort key per unit id: lowest first.
        ties: (B, L) bool per word id, a fair coin; None keeps every word on the budget.

    Example:
        unit ``[[0, 1, 1, 2]]`` (word = unit), all maskable, budget ``[2]``, keys
        ``[[0.9, 0.1, 0.5, 0.7]]`` -> ``[[False, True, True, False]]``.
    """
    positions = torch.arange(unit.shape[1])
    size = torch.zeros_like(unit).scatter_add_(1, unit, maskable.long())
    order = keys.masked_fill(size == 0, 2.0).argsort(1)
    size_in_order = size.gather(1, order)
    before_in_order = size_in_order.cumsum(1) - size_in_order
    before = torch.empty_like(before_in_order).scatter_(1, order, before_in_order)
    word_len = torch.zeros_like(word).scatter_add_(1, word, torch.ones_like(word)).gather(1, word)
    offset = _run_start(word, positions) - _run_start(unit, positions)
    # Counted twice so that a word's midpoint (start + len / 2) stays an integer.
    twice_mid = 2 * (before.gather(1, unit) + offset) + word_len
    twice_budget = 2 * budget[:, None]
    keep = twice_mid < twice_budget
    tie = twice_mid == twice_budget
    keep |= tie if ties is None else tie & ties.gather(1, word)
    return maskable & keep


def _run_start(ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Position where each token's run of equal ids begins: ``[[5, 5, 7]] -> [[0, 0, 2]]``."""
    starts = F.pad(ids[:, 1:] != ids[:, :-1], (1, 0), value=True)
    return torch.cummax(torch.where(starts, positions, 0), 1).values


def replace_selected(
    ids: torch.Tensor,
    masked: torch.Tensor,
    treatment: torch.Tensor,
    mask_id: int,
    random_ids: torch.Tensor | None,
    mask_frac: float,
    random_frac: float,
) -> torch.Tensor:
    """Applies BERT's 80/10/10 to the selected positions.

    BERT (Devlin et al. 2019, sec. 3.1): of the selected tokens 80% become [MASK], 10% a random
    token and 10% stay, so the model cannot rely on [MASK] marking every target. ``treatment`` is
    one uniform draw per unit spread over its tokens, so a word or span gets a single treatment
    (SpanBERT sec. 3.1 does the same per span).

    Example:
        ids ``[[7, 8, 9]]``, masked ``[[1, 1, 0]]``, treatment ``[[0.5, 0.85, 0.1]]``, mask 4,
        random ``[[30, 31, 32]]`` -> ``[[4, 31, 9]]``.
    """
    to_mask = masked & (treatment < mask_frac)
    out = torch.where(to_mask, mask_id, ids)
    if random_ids is not None:
        to_random = masked & (treatment >= mask_frac) & (treatment < mask_frac + random_frac)
        out = torch.where(to_random, random_ids, out)
    return out


class MaskStats:
    """Running diagnostics of a :class:`MaskingCollator` in the process that runs it."""

    def __init__(self, span_max_len: int) -> None:
        self.span_max_len = span_max_len
        self.reset()

    def reset(self) -> None:
        """Zeroes every counter."""
        self.masked = self.maskable = self.word_tokens = self.whole_word_tokens = 0
        self.spans = self.span_words = self.spans_cut = 0
        self.span_hist = torch.zeros(self.span_max_len + 1, dtype=torch.long)

    def update(
        self,
        masked: torch.Tensor,
        maskable: torch.Tensor,
        word: torch.Tensor | None,
        spans: SpanLayout | None,
    ) -> None:
        """Adds one batch."""
        self.masked += int(masked.sum())
        self.maskable += int(maskable.sum())
        if word is None:
            return
        hits = torch.zeros_like(word).scatter_add_(1, word, masked.long())
        size = torch.zeros_like(word).scatter_add_(1, word, torch.ones_like(word))
        whole = masked & (hits == size).gather(1, word)
        self.word_tokens += int(masked.sum())
        self.whole_word_tokens += int(whole.sum())
        if spans is not None:
            self._add_spans(spans, (hits > 0) & spans.word_maskable)

    def _add_spans(self, spans: SpanLayout, word_masked: torch.Tensor) -> None:
        span = spans.span_of_word
        masked_words = torch.zeros_like(span).scatter_add_(1, span, word_masked.long())
        placed = masked_words > 0
        cut = placed & (masked_words < spans.drawn)
        self.spans += int(placed.sum())
        self.span_words += int(masked_words.sum())
        self.spans_cut += int(cut.sum())
        # Drawn lengths of every placed span, cut or not: the draws that tile a document are a
        # stopping-time sequence, so by Wald's identity they follow the law exactly; lengths after
        # cuts would not. Filling a budget from a tiling of fixed total favours long spans a little
        # (~3% relative on lengths 6-8 for 256-token rows), which this histogram shows.
        self.span_hist += torch.bincount(spans.drawn[placed], minlength=self.span_max_len + 1)

    def pop(self) -> dict[str, float]:
        """Returns the diagnostics as floats and resets; empty when nothing was collated."""
        out: dict[str, float] = {}
        if self.maskable:
            out["rate"] = self.masked / self.maskable
        if self.word_tokens:
            out["whole_word_share"] = self.whole_word_tokens / self.word_tokens
        if self.spans:
            out["span_count"] = float(self.spans)
            out["span_len_mean"] = self.span_words / self.spans
            out["span_cut_share"] = self.spans_cut / self.spans
            whole = int(self.span_hist.sum())
            for k in range(1, self.span_max_len + 1):
                out[f"span_len_{k}"] = int(self.span_hist[k]) / whole if whole else 0.0
        self.reset()
        return out
