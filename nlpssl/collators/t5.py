"""T5 span corruption (Raffel et al. 2020, sec. 3.1.4): noise spans become sentinels in the input
and the target lists each sentinel followed by the tokens it hides.

The data pipeline packs raw blocks of ``raw_tokens_length`` tokens (from
:func:`t5_input_target_lengths`); the collator turns each into exactly ``inputs_length`` input ids
(final [EOS] included) and ``targets_length`` label ids, so no padding is ever needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nlpssl.collators.batching import WorkerGenerator, stack_column
from nlpssl.errors import NlpsslError

IGNORE_INDEX = -100

# T5 (Raffel et al. 2020, sec. 3.3.4 and table 7): corrupt 15% of tokens in spans of mean length 3.
NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0


def noise_counts(length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) in a raw block, rounded as T5's ``random_spans_noise_mask``.

    At least one noise token, one clean token and one span, so every block is a real example.
    """
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(min(num_noise, length - num_noise) / mean_span), 1)
    return num_noise, num_spans


def _corrupted_lengths(raw: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    num_noise, num_spans = noise_counts(raw, noise_density, mean_span)
    # inputs: clean tokens + one sentinel per span + [EOS]; targets: noise + sentinels + [EOS]
    return raw - num_noise + num_spans + 1, num_noise + num_spans + 1


def t5_input_target_lengths(
    inputs_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tuple[int, int]:
    """Raw block length and target length that give exactly ``inputs_length`` input ids.

    Pack raw text into blocks of ``raw_tokens_length`` tokens; after corruption each row has
    exactly ``inputs_length`` input ids (final [EOS] included) and ``targets_length`` labels.

    Example:
        >>> t5_input_target_lengths(512)  # the T5 paper's setting
        (568, 114)
    """
    _check_noise(noise_density, mean_noise_span_length, "t5_input_target_lengths")
    if inputs_length < 4:
        raise NlpsslError(
            f"t5_input_target_lengths: inputs_length must be at least 4 (got {inputs_length}). "
            "Use a block length such as 512."
        )
    raw = inputs_length
    while (
        raw > 2
        and _corrupted_lengths(raw, noise_density, mean_noise_span_length)[0] > inputs_length
    ):
        raw -= 1
    while _corrupted_lengths(raw + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        raw += 1
    got, targets = _corrupted_lengths(raw, noise_density, mean_noise_span_length)
    if got != inputs_length:
        raise NlpsslError(
            f"t5_input_target_lengths: no raw length corrupts to exactly {inputs_length} inputs "
            f"(got {got} from {raw} raw tokens). Use noise_density <= 0.5 or another inputs_length."
        )
    return raw, targets


def _check_noise(noise_density: float, mean_span: float, where: str) -> None:
    errors = []
    if not 0 < noise_density < 1:
        errors.append(
            f"{where}: noise_density must be in (0, 1) (got {noise_density}). T5 uses 0.15."
        )
    if mean_span < 1:
        errors.append(
            f"{where}: mean_noise_span_length must be >= 1 token (got {mean_span}). T5 uses 3."
        )
    if errors:
        raise NlpsslError("\n".join(errors))


def sentinel_ids_from_tokenizer(tokenizer: Any) -> list[int]:
    """Ids of ``<extra_id_0>``, ``<extra_id_1>``, ... up to the first token the tokenizer lacks."""
    ids: list[int] = []
    unknown = {None, tokenizer.unk_token_id}
    while (token_id := tokenizer.convert_tokens_to_ids(f"<extra_id_{len(ids)}>")) not in unknown:
        ids.append(token_id)
    return ids


@dataclass
class T5SpanCorruptionCollator:
    """Replaces random noise spans by sentinels; labels hold each sentinel and its hidden tokens.

    Noise is ``round(noise_density * n)`` tokens in ``round(noise / mean_noise_span_length)``
    spans; span and gap lengths are random compositions, each row starting with clean tokens, as
    in T5's ``random_spans_noise_mask``. The T5 model builds ``decoder_input_ids`` from ``labels``.

    Args:
        sentinel_ids: The tokenizer's reserved ``<extra_id_i>`` ids, in order (use
            :func:`sentinel_ids_from_tokenizer`); never derived from ``len(tokenizer)``.
        eos_id: Appended to inputs and labels.
        pad_id: Pads ragged rows (packed blocks of ``raw_tokens_length`` never need it).
        noise_density: Share of raw tokens corrupted (T5: 0.15).
        mean_noise_span_length: Mean noise span length in tokens (T5: 3).
        seed: Seeds the generator, mixed with the DataLoader worker and the distributed rank.

    Example (noise chosen as tokens 12, 13 and 16; sentinels 7, 8; [EOS] 6):
        ``input_ids [[11, 12, 13, 14, 15, 16]]`` ->
        ``input_ids [[11, 7, 14, 15, 8, 6]]``, ``labels [[7, 12, 13, 8, 16, 6]]``.
    """

    sentinel_ids: Sequence[int]
    eos_id: int
    pad_id: int
    noise_density: float = NOISE_DENSITY
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
    seed: int = 0

    def __post_init__(self) -> None:
        _check_noise(self.noise_density, self.mean_noise_span_length, "T5SpanCorruptionCollator")
        if len(self.sentinel_ids) == 0:
            raise NlpsslError(
                "T5SpanCorruptionCollator: no sentinel ids (got []). Pass the tokenizer's "
                "<extra_id_i> ids, e.g. sentinel_ids_from_tokenizer(tokenizer)."
            )
        self._sentinels = torch.tensor(list(self.sentinel_ids), dtype=torch.long)
        self._rng = WorkerGenerator(self.seed)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kw: Any) -> T5SpanCorruptionCollator:
        """Builds the collator from a tokenizer's ``<extra_id_i>``, [EOS] and [PAD] tokens."""
        sentinels = sentinel_ids_from_tokenizer(tokenizer)
        if not sentinels or tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise NlpsslError(
                "T5SpanCorruptionCollator.from_tokenizer: the tokenizer lacks <extra_id_0>, [EOS] "
                f"or [PAD] (got {len(sentinels)} sentinels, eos {tokenizer.eos_token_id}, pad "
                f"{tokenizer.pad_token_id}). Train it with the T5 sentinels and both tokens."
            )
        return cls(
            sentinel_ids=sentinels,
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
            **kw,
        )

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Collates raw blocks into a span-corrupted batch (see the class docstring)."""
        ids, lengths = stack_column(features, "input_ids", self.pad_id, "T5SpanCorruptionCollator")
        generator = self._rng.get()
        if bool((lengths == ids.shape[1]).all()):
            inputs, labels = self._corrupt(ids, generator)
            return {
                "input_ids": inputs,
                "labels": labels,
                "attention_mask": torch.ones_like(inputs),
            }
        # Ragged rows (a dataset's last partial block) get their own lengths: one row at a time.
        rows = [
            self._corrupt(ids[i : i + 1, :n], generator) for i, n in enumerate(lengths.tolist())
        ]
        inputs = _pad_rows([r[0][0] for r in rows], self.pad_id)
        return {
            "input_ids": inputs,
            "labels": _pad_rows([r[1][0] for r in rows], IGNORE_INDEX),
            "attention_mask": _pad_rows([torch.ones_like(r[0][0]) for r in rows], 0),
        }

    def _corrupt(
        self, ids: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        length = ids.shape[1]
        if length < 2:
            raise NlpsslError(
                f"T5SpanCorruptionCollator: a row needs at least 2 tokens (got {length}). "
                "Drop empty or one-token rows when packing."
            )
        num_noise, num_spans = noise_counts(length, self.noise_density, self.mean_noise_span_length)
        if num_spans > len(self._sentinels):
            raise NlpsslError(
                f"T5SpanCorruptionCollator: a {length}-token row makes {num_spans} noise spans, "
                f"each needing its own sentinel (got {len(self._sentinels)} sentinel ids). "
                "Reserve more <extra_id_i> tokens in the tokenizer or use shorter blocks."
            )
        noise = random_spans_noise_mask(ids.shape[0], length, num_noise, num_spans, generator)
        return span_corrupt(ids, noise, self._sentinels, self.eos_id)


def _pad_rows(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value)


def _random_segmentation(
    batch: int, num_items: int, num_segments: int, generator: torch.Generator
) -> torch.Tensor:
    """(B, num_segments) lengths >= 1 summing to num_items, uniform over compositions (T5)."""
    keys = torch.rand(batch, num_items - 1, generator=generator)
    cut_after = keys.argsort(1)[:, : num_segments - 1]
    first = torch.zeros(batch, num_items, dtype=torch.long)
    first[:, 1:].scatter_(1, cut_after, 1)
    segment = first.cumsum(1)
    lengths = torch.zeros(batch, num_segments, dtype=torch.long)
    return lengths.scatter_add_(1, segment, torch.ones_like(segment))


def random_spans_noise_mask(
    batch: int, length: int, num_noise: int, num_spans: int, generator: torch.Generator
) -> torch.Tensor:
    """(B, length) bool noise mask: ``num_spans`` clean runs interleaved with as many noise runs.

    Each row starts with a clean run and ends with a noise run, as T5's ``random_spans_noise_mask``.
    """
    noise_len = _random_segmentation(batch, num_noise, num_spans, generator)
    clean_len = _random_segmentation(batch, length - num_noise, num_spans, generator)
    runs = torch.stack([clean_len, noise_len], dim=2).view(batch, 2 * num_spans)
    run_starts = runs.cumsum(1)[:, :-1]
    flips = torch.zeros(batch, length, dtype=torch.long).scatter_(1, run_starts, 1)
    return flips.cumsum(1) % 2 == 1


def span_corrupt(
    ids: torch.Tensor, noise: torch.Tensor, sentinels: torch.Tensor, eos_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs: noise span k -> ``sentinels[k]``; labels: clean span k -> ``sentinels[k]``; + EOS.

    Every row must start with a clean token and have the same number of noise tokens and spans
    (true of :func:`random_spans_noise_mask`), so the results stay rectangular.

    Example:
        ids ``[[11, 12, 13, 14, 15, 16]]``, noise ``[[0, 1, 1, 0, 0, 1]]``, sentinels ``[7, 8]``,
        eos 6 -> inputs ``[[11, 7, 14, 15, 8, 6]]``, labels ``[[7, 12, 13, 8, 16, 6]]``.
    """
    batch = ids.shape[0]
    noise_start = noise & ~F.pad(noise[:, :-1], (1, 0), value=False)
    clean_start = ~noise & F.pad(noise[:, :-1], (1, 0), value=True)
    last = len(sentinels) - 1
    noise_span = (noise_start.cumsum(1) - 1).clamp_(0, last)
    clean_span = (clean_start.cumsum(1) - 1).clamp_(0, last)
    inputs = torch.where(noise_start, sentinels[noise_span], ids)[~noise | noise_start]
    labels = torch.where(clean_start, sentinels[clean_span], ids)[noise | clean_start]
    eos = torch.full((batch, 1), eos_id, dtype=torch.long)
    return (
        torch.cat([inputs.view(batch, -1), eos], dim=1),
        torch.cat([labels.view(batch, -1), eos], dim=1),
    )
