"""Collators: exact tensors on hand-written ids, seeded statistics, and every error message."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch

from nlpssl.collators import (
    CausalCollator,
    MaskingCollator,
    T5SpanCorruptionCollator,
    sentinel_ids_from_tokenizer,
    t5_input_target_lengths,
)
from nlpssl.collators.batching import fixed_copy, stack_column
from nlpssl.collators.causal import document_positions
from nlpssl.collators.masking import (
    replace_selected,
    sample_span_lengths,
    select_by_budget,
    span_law,
    span_layout,
    word_index,
)
from nlpssl.collators.t5 import span_corrupt
from nlpssl.errors import NlpsslError

# The shared tokenizer's fixed ids.
PAD, UNK, CLS, SEP, MASK, BOS, EOS = range(7)
SENTINELS = list(range(7, 107))
SPECIAL = [PAD, UNK, CLS, SEP, MASK, BOS, EOS, *SENTINELS]
VOCAB = 1000
FIRST_WORD_ID = 107

# Upper 0.1% point of chi-square with 9 degrees of freedom (10 length buckets).
CHI2_9DOF_P001 = 27.877


def masker(**kw) -> MaskingCollator:
    args = dict(pad_id=PAD, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL, seed=0)
    return MaskingCollator(**{**args, **kw})


def packed_rows(n: int, length: int = 256, docs: int = 3, seed: int = 0, ragged: bool = False):
    """Blocks ``[CLS] doc [SEP] doc [SEP] ...`` with random word starts (words of ~1.7 tokens)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_WORD_ID, VOCAB, (n, length), generator=g)
    starts = (torch.rand(n, length, generator=g) < 0.6).long()
    ids[:, 0], ids[:, -1] = CLS, SEP
    cuts = torch.randint(8, length - 8, (n, docs - 1), generator=g)
    ids.scatter_(1, cuts, SEP)
    special = torch.isin(ids, torch.tensor(SPECIAL))
    starts[special] = 1
    starts[:, 1:][special[:, :-1]] = 1
    rows = []
    for i in range(n):
        keep = length - int(torch.randint(0, length // 4, (1,), generator=g)) if ragged else length
        rows.append({"input_ids": ids[i, :keep].tolist(), "word_starts": starts[i, :keep].tolist()})
    return rows


def padded(rows, key):
    return stack_column(rows, key, PAD if key == "input_ids" else 1, "test")[0]


def word_ids_of(rows):
    ids = padded(rows, "input_ids")
    maskable = ~torch.isin(ids, torch.tensor(SPECIAL))
    return word_index(padded(rows, "word_starts"), maskable), maskable


# --- exact tensors on hand-written ids ----------------------------------------------------------


def test_stack_column_right_pads_ragged_rows():
    values, lengths = stack_column(
        [{"input_ids": [2, 9, 3]}, {"input_ids": [2, 3]}], "input_ids", 0, "t"
    )
    assert values.tolist() == [[2, 9, 3], [2, 3, 0]]
    assert lengths.tolist() == [3, 2]


def test_stack_column_accepts_tensors_and_bare_rows():
    values, _ = stack_column([torch.tensor([2, 9]), torch.tensor([2, 8])], "input_ids", 0, "t")
    assert values.tolist() == [[2, 9], [2, 8]]


def test_word_index_makes_special_tokens_their_own_words():
    starts = torch.tensor([[1, 1, 0, 1, 1, 0, 0]])
    maskable = torch.tensor([[0, 1, 1, 1, 0, 1, 1]]).bool()
    # the token after [SEP] starts a word even though its flag says 0
    assert word_index(starts, maskable).tolist() == [[0, 1, 1, 2, 3, 4, 4]]


def test_span_layout_restarts_at_each_document():
    word = torch.arange(8)[None]
    maskable = torch.tensor([[0, 1, 1, 1, 1, 0, 1, 1]]).bool()
    draws = torch.tensor([[1, 3, 9, 9, 9, 9, 2, 9]])
    layout = span_layout(word, maskable, draws)
    assert layout.span_of_word.tolist() == [[0, 1, 1, 1, 2, 5, 6, 6]]


def test_select_by_budget_takes_units_in_key_order():
    unit = torch.tensor([[0, 1, 1, 2]])
    keys = torch.tensor([[0.9, 0.1, 0.5, 0.7]])
    maskable = torch.ones(1, 4, dtype=torch.bool)
    out = select_by_budget(unit, unit, maskable, torch.tensor([2]), keys)
    assert out.tolist() == [[False, True, True, False]]


def test_select_by_budget_cuts_the_last_span_at_the_nearest_word():
    # one span of three words (1, 2 and 1 tokens); budget 2: word 0 (mid 0.5) and word 1 (mid 2)
    unit = torch.tensor([[0, 0, 0, 0]])
    word = torch.tensor([[0, 1, 1, 2]])
    maskable = torch.ones(1, 4, dtype=torch.bool)
    out = select_by_budget(unit, word, maskable, torch.tensor([2]), torch.rand(1, 4))
    assert out.tolist() == [[True, True, True, False]]
    out = select_by_budget(unit, word, maskable, torch.tensor([1]), torch.rand(1, 4))
    assert out.tolist() == [[True, False, False, False]]


def test_replace_selected_applies_80_10_10_by_treatment_draw():
    out = replace_selected(
        ids=torch.tensor([[7, 8, 9]]),
        masked=torch.tensor([[True, True, False]]),
        treatment=torch.tensor([[0.5, 0.85, 0.1]]),
        mask_id=4,
        random_ids=torch.tensor([[30, 31, 32]]),
        mask_frac=0.8,
        random_frac=0.1,
    )
    assert out.tolist() == [[4, 31, 9]]


@pytest.mark.parametrize(
    "unit,row,starts,expected",
    [
        # one maskable token; budget round(0.5 * 1) = 1 token
        ("token", [CLS, 500, SEP, PAD], None, [CLS, MASK, SEP, PAD]),
        # one two-token word; budget round(0.5 * 2) = 1 token -> the word (its midpoint is 1)
        ("word", [CLS, 500, 501, SEP, PAD], [1, 1, 0, 1, 1], [CLS, MASK, MASK, SEP, PAD]),
        ("span", [CLS, 500, 501, SEP, PAD], [1, 1, 0, 1, 1], [CLS, MASK, MASK, SEP, PAD]),
    ],
)
def test_masking_collator_exact_output_when_the_choice_is_forced(unit, row, starts, expected):
    c = masker(unit=unit, rate=0.5, exact_budget=True, mask_frac=1.0, random_frac=0.0)
    batch = c([{"input_ids": row, **({"word_starts": starts} if starts else {})}])
    assert batch["input_ids"].tolist() == [expected]
    assert batch["labels"].tolist() == [
        [t if e == MASK else -100 for t, e in zip(row, expected, strict=True)]
    ]
    assert batch["attention_mask"].tolist() == [[int(t != PAD) for t in row]]


def test_masking_collator_random_replacement_never_draws_a_special_id():
    # vocab of 108 ids: only id 107 is not special, so every random replacement is 107
    c = masker(vocab_size=108, rate=0.5, exact_budget=True, mask_frac=0.0, random_frac=1.0)
    batch = c([{"input_ids": [CLS, 50, SEP]}])  # 50 is a sentinel: nothing to mask
    assert batch["labels"].tolist() == [[-100, -100, -100]]
    batch = c([{"input_ids": [CLS, 107, 107, SEP]}])
    assert batch["input_ids"].tolist() == [[CLS, 107, 107, SEP]]
    assert int((batch["labels"] == 107).sum()) == 1


def test_random_replacement_skips_special_ids_inside_the_vocabulary():
    # special id 9 sits between ordinary ids: draws come from {7, 8, 10, 11}
    c = MaskingCollator(
        pad_id=0,
        mask_id=4,
        vocab_size=12,
        special_ids=[*range(7), 9],
        rate=0.5,
        exact_budget=True,
        mask_frac=0.0,
        random_frac=1.0,
    )
    out = c([{"input_ids": [2] + [7, 8, 10, 11] * 250 + [3]}])["input_ids"]
    changed = out[0, 1:-1]
    assert set(changed.tolist()) == {7, 8, 10, 11}


def test_causal_collator_labels_and_attention_mask():
    out = CausalCollator(pad_id=PAD)([{"input_ids": [5, 11, 6]}, {"input_ids": [5, 12]}])
    assert out["input_ids"].tolist() == [[5, 11, 6], [5, 12, PAD]]
    assert out["labels"].tolist() == [[5, 11, 6], [5, 12, -100]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert "position_ids" not in out


def test_causal_collator_resets_positions_after_eos_and_drops_attention_mask():
    c = CausalCollator(pad_id=PAD, eos_id=EOS, reset_positions=True)
    out = c([{"input_ids": [5, 11, 12, 6, 5, 13]}, {"input_ids": [5, 14, 6]}])
    assert out["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    assert out["labels"].tolist()[1] == [5, 14, 6, -100, -100, -100]
    assert "attention_mask" not in out


def test_document_positions():
    assert document_positions(torch.tensor([[5, 11, 6, 5, 12, 13]]), 6).tolist() == [
        [0, 1, 2, 0, 1, 2]
    ]


def test_span_corrupt_exact():
    inputs, labels = span_corrupt(
        torch.tensor([[11, 12, 13, 14, 15, 16]]),
        torch.tensor([[0, 1, 1, 0, 0, 1]]).bool(),
        torch.tensor([7, 8]),
        eos_id=6,
    )
    assert inputs.tolist() == [[11, 7, 14, 15, 8, 6]]
    assert labels.tolist() == [[7, 12, 13, 8, 16, 6]]


def test_t5_lengths_match_the_t5_paper_setting():
    assert t5_input_target_lengths(512) == (568, 114)


# --- seeded statistics ----------------------------------------------------------------------------


def masking_stats(c: MaskingCollator, rows, repeats: int = 1):
    """Realised counts over ``repeats`` calls: masked, maskable, and the [MASK] / changed shares."""
    masked = maskable = as_mask = changed = 0
    for _ in range(repeats):
        out = c(rows)
        ids = padded(rows, "input_ids")
        selected = out["labels"] != -100
        masked += int(selected.sum())
        maskable += int((~torch.isin(ids, torch.tensor(SPECIAL))).sum())
        as_mask += int((out["input_ids"][selected] == MASK).sum())
        changed += int((out["input_ids"][selected] != ids[selected]).sum())
    return masked, maskable, as_mask, changed


@pytest.mark.parametrize(
    "unit,exact",
    [("token", False), ("token", True), ("word", False), ("word", True), ("span", True)],
)
def test_realised_rate_and_80_10_10_split(unit, exact):
    rows = packed_rows(512, seed=1)
    masked, maskable, as_mask, changed = masking_stats(
        masker(unit=unit, exact_budget=exact), rows, 3
    )
    assert abs(masked / maskable - 0.15) < 0.0015  # within 1% of the target rate
    assert abs(as_mask / masked - 0.8) < 0.01
    # random replacements hit the original id with probability ~1/893
    assert abs((changed - as_mask) / masked - 0.1) < 0.01


def test_exact_budget_masks_exactly_k_tokens_per_row():
    rows = packed_rows(64, seed=2, ragged=True)
    out = masker(unit="token", exact_budget=True)(rows)
    ids = padded(rows, "input_ids")
    n_maskable = (~torch.isin(ids, torch.tensor(SPECIAL))).sum(1)
    expected = torch.floor(0.15 * n_maskable.double() + 0.5).long()
    assert torch.equal((out["labels"] != -100).sum(1), expected)


@pytest.mark.parametrize("unit", ["word", "span"])
def test_word_and_span_budgets_land_within_half_a_word(unit):
    rows = packed_rows(64, seed=3)
    out = masker(unit=unit)(rows) if unit == "span" else masker(unit=unit, exact_budget=True)(rows)
    word, maskable = word_ids_of(rows)
    budget = torch.floor(0.15 * maskable.sum(1).double() + 0.5)
    longest = torch.zeros_like(word).scatter_add_(1, word, torch.ones_like(word)).max(1).values
    assert ((out["labels"] != -100).sum(1) - budget).abs().le(longest / 2).all()


@pytest.mark.parametrize("unit,exact", [("token", False), ("word", False), ("span", True)])
def test_special_and_pad_tokens_are_never_masked_or_changed(unit, exact):
    rows = packed_rows(256, seed=4, ragged=True)
    c = masker(unit=unit, exact_budget=exact, rate=0.6, mask_frac=0.0, random_frac=1.0)
    out = c(rows)
    ids = padded(rows, "input_ids")
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert (out["labels"][special] == -100).all()
    assert torch.equal(out["input_ids"][special], ids[special])
    assert not torch.isin(out["input_ids"][~special], torch.tensor(SPECIAL)).any()
    assert torch.equal(out["attention_mask"].bool(), ids != PAD)


@pytest.mark.parametrize("unit,exact", [("word", False), ("word", True), ("span", True)])
def test_every_word_is_masked_whole_with_one_treatment(unit, exact):
    rows = packed_rows(256, seed=5)
    c = masker(unit=unit, exact_budget=exact)
    out = c(rows)
    word, _ = word_ids_of(rows)
    size = torch.zeros_like(word).scatter_add_(1, word, torch.ones_like(word))
    hits = torch.zeros_like(word).scatter_add_(1, word, (out["labels"] != -100).long())
    assert ((hits == 0) | (hits == size)).all()
    as_mask = torch.zeros_like(word).scatter_add_(1, word, (out["input_ids"] == MASK).long())
    assert ((as_mask == 0) | (as_mask == size)).all()
    assert c.pop_stats()["whole_word_share"] == 1.0


def test_token_masking_reports_a_whole_word_share_below_one():
    c = masker(unit="token")
    c(packed_rows(64, seed=6))
    assert 0 < c.pop_stats()["whole_word_share"] < 1


def test_spans_never_cross_a_document_boundary():
    rows = packed_rows(128, seed=7, docs=6)
    word, maskable = word_ids_of(rows)
    draws = sample_span_lengths(word.shape, 0.2, 10, torch.Generator().manual_seed(0))
    span = span_layout(word, maskable, draws).span_of_word.gather(1, word)
    doc = (~maskable).long().cumsum(1)  # documents are separated by special tokens
    lo = torch.full_like(span, 10**9).scatter_reduce_(1, span, doc, "amin")
    hi = torch.full_like(span, -1).scatter_reduce_(1, span, doc, "amax")
    assert (lo.gather(1, span) == hi.gather(1, span))[maskable].all()
    assert (~maskable | (doc == lo.gather(1, span))).all()


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_span_sampler_follows_spanbert_law():
    law = span_law(0.2, 10)
    assert abs(float((law * torch.arange(1, 11)).sum()) - 3.8) < 0.01  # SpanBERT's mean
    draws = sample_span_lengths((200_000,), 0.2, 10, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=11)[1:].double()
    assert chi_square(counts, law) < CHI2_9DOF_P001


def test_span_length_histogram_in_stats_matches_spanbert_law():
    c = masker(unit="span")
    for seed in range(12):
        c(packed_rows(256, seed=seed, docs=4))
    stats = c.pop_stats()
    shares = torch.tensor([stats[f"span_len_{k}"] for k in range(1, 11)], dtype=torch.float64)
    assert stats["span_count"] > 20_000
    # Filling an exact budget from a tiling whose total is the row favours long spans a little
    # (about +3% relative on lengths 6-8 with 256-token rows; total variation ~0.008), so this
    # asserts closeness; the sampler itself passes a chi-square test above.
    total_variation = float((shares - span_law(0.2, 10)).abs().sum()) / 2
    assert total_variation < 0.025
    assert 0 < stats["span_cut_share"] < 0.3
    assert 1 < stats["span_len_mean"] < 3.8  # cut spans pull the realised mean below the law's


def test_pop_stats_reports_the_rate_and_resets():
    c = masker(unit="token", exact_budget=True)
    rows = packed_rows(8, seed=8)
    out = c(rows)
    maskable = (~torch.isin(padded(rows, "input_ids"), torch.tensor(SPECIAL))).sum()
    assert c.pop_stats()["rate"] == pytest.approx(
        int((out["labels"] != -100).sum()) / int(maskable)
    )
    assert c.pop_stats() == {}


@pytest.mark.parametrize("unit", ["token", "word", "span"])
def test_same_seed_same_masks_other_seed_other_masks(unit):
    rows = packed_rows(16, seed=9)
    first, again, other = (masker(unit=unit, seed=s)(rows) for s in (7, 7, 8))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["labels"], other["labels"])


def test_t5_corruption_decodes_back_to_the_original():
    raw, targets = t5_input_target_lengths(128)
    rows = packed_rows(64, length=raw, seed=10)
    out = T5SpanCorruptionCollator(sentinel_ids=SENTINELS, eos_id=EOS, pad_id=PAD)(rows)
    assert out["input_ids"].shape == (64, 128) and out["labels"].shape == (64, targets)
    assert (out["attention_mask"] == 1).all()
    for row, inputs, labels in zip(
        rows, out["input_ids"].tolist(), out["labels"].tolist(), strict=True
    ):
        assert inputs[-1] == EOS and labels[-1] == EOS
        fill, current = {}, None
        for token in labels[:-1]:
            if token in SENTINELS:
                current = fill.setdefault(token, [])
            else:
                current.append(token)
        decoded = [t for token in inputs[:-1] for t in fill.get(token, [token])]
        assert decoded == row["input_ids"]
        # sentinels appear in order, once each, starting at <extra_id_0>
        used = [t for t in inputs if t in SENTINELS]
        assert used == SENTINELS[: len(used)]


def test_t5_noise_density_and_span_count_are_exact():
    raw, _ = t5_input_target_lengths(512)
    rows = packed_rows(32, length=raw, seed=11)
    out = T5SpanCorruptionCollator(sentinel_ids=SENTINELS, eos_id=EOS, pad_id=PAD, seed=1)(rows)
    spans = torch.isin(out["input_ids"], torch.tensor(SENTINELS)).sum(1)
    noise = out["labels"].shape[1] - 1 - spans
    assert (spans == round(round(raw * 0.15) / 3)).all()
    assert (noise == round(raw * 0.15)).all()


def test_t5_ragged_rows_are_padded():
    c = T5SpanCorruptionCollator(sentinel_ids=SENTINELS, eos_id=EOS, pad_id=PAD)
    out = c([{"input_ids": list(range(200, 220))}, {"input_ids": list(range(200, 240))}])
    assert out["input_ids"].shape[0] == 2
    assert out["attention_mask"][0].sum() < out["attention_mask"][1].sum()
    assert out["labels"][0, -1] == -100 and out["labels"][1, -1] == EOS


def test_t5_is_deterministic_per_seed():
    rows = packed_rows(8, length=141, seed=12)
    a, b = (T5SpanCorruptionCollator(SENTINELS, EOS, PAD, seed=3)(rows) for _ in range(2))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])


def test_dataloader_workers_draw_different_masks_and_main_process_sees_no_stats():
    rows = packed_rows(1, seed=13) * 4
    c = masker(unit="token")
    loader = torch.utils.data.DataLoader(
        rows, batch_size=1, num_workers=2, collate_fn=c, multiprocessing_context="fork"
    )
    labels = [batch["labels"] for batch in loader]
    # workers 0 and 1 each collate their first batch from the same row with their own stream
    assert not torch.equal(labels[0], labels[1])
    assert c.pop_stats() == {}


@pytest.mark.parametrize("unit", ["token", "span"])
def test_fixed_copy_repeats_its_masks_and_leaves_the_training_stream_alone(unit):
    rows = packed_rows(8, seed=21)
    train, untouched = masker(unit=unit, seed=3), masker(unit=unit, seed=3)
    first = fixed_copy(train)(rows)
    second = fixed_copy(train)(rows)  # a new pass: the same questions again
    assert torch.equal(first["labels"], second["labels"])
    assert torch.equal(first["input_ids"], second["input_ids"])
    assert (first["labels"] != -100).any()
    # any batching gives each row the same masks
    halves = [fixed_copy(train)(rows[:3]), fixed_copy(train)(rows[3:])]
    assert torch.equal(torch.cat([h["labels"] for h in halves]), first["labels"])
    # evaluation drew nothing from the training generator
    assert torch.equal(train(rows)["labels"], untouched(rows)["labels"])
    assert not torch.equal(first["labels"], fixed_copy(masker(unit=unit, seed=4))(rows)["labels"])
    t5 = T5SpanCorruptionCollator(sentinel_ids=SENTINELS, eos_id=EOS, pad_id=PAD, seed=1)
    blocks = [r["input_ids"] for r in rows]
    assert torch.equal(fixed_copy(t5)(blocks)["labels"][:5], fixed_copy(t5)(blocks[:5])["labels"])
    causal = CausalCollator(pad_id=PAD)
    assert fixed_copy(causal) is causal


@pytest.mark.parametrize("persistent", [False, True])
def test_fixed_copy_is_the_same_in_dataloader_workers_on_every_pass(persistent):
    rows = packed_rows(8, seed=5)
    expected = fixed_copy(masker(unit="span"))(rows)["labels"]
    loader = torch.utils.data.DataLoader(
        rows, batch_size=3, num_workers=2, collate_fn=fixed_copy(masker(unit="span")),
        multiprocessing_context="fork", persistent_workers=persistent,
    )
    for seed in (0, 1):  # a new epoch gives workers a new base seed; the eval masks must not move
        torch.manual_seed(seed)
        assert torch.equal(torch.cat([b["labels"] for b in loader]), expected)


# --- tokenizer helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"]
    sentinels = [f"<extra_id_{i}>" for i in range(5)]
    vocab = {t: i for i, t in enumerate([*special, *sentinels, "the", "cat", "sat"])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        additional_special_tokens=sentinels,
    )


def test_from_tokenizer_reads_the_shared_ids(tokenizer):
    assert sentinel_ids_from_tokenizer(tokenizer) == [7, 8, 9, 10, 11]
    m = MaskingCollator.from_tokenizer(tokenizer, unit="word")
    assert (m.pad_id, m.mask_id, m.vocab_size, m.unit) == (0, 4, 15, "word")
    assert set(range(7)) <= set(m.special_ids)
    assert m._random_ids.min() >= 7  # never a special id
    t5 = T5SpanCorruptionCollator.from_tokenizer(tokenizer)
    assert (list(t5.sentinel_ids), t5.eos_id, t5.pad_id) == ([7, 8, 9, 10, 11], 6, 0)
    causal = CausalCollator.from_tokenizer(tokenizer, reset_positions=True)
    assert (causal.pad_id, causal.eos_id) == (0, 6)


def test_from_tokenizer_never_masks_sentinels_the_wrapper_did_not_declare(tokenizer):
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
    )
    assert 7 not in bare.all_special_ids
    m = MaskingCollator.from_tokenizer(bare, seed=1)
    assert set(range(7, 12)) <= set(m.special_ids) and m.seed == 1


# --- diagnostics callback ------------------------------------------------------------------------


def test_diagnostics_callback_adds_mask_stats_to_training_logs():
    from nlpssl.collators import MaskingDiagnosticsCallback

    c = masker(unit="span")
    c(packed_rows(8, seed=14))
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=["default"]))
    callback = MaskingDiagnosticsCallback.attach(trainer, c)
    assert trainer.callback_handler.callbacks[0] is callback
    args = SimpleNamespace(dataloader_num_workers=0)
    state = SimpleNamespace(global_step=10, log_history=[{"loss": 1.0, "step": 10}])
    eval_logs = {"eval_loss": 1.0}
    callback.on_log(args, state, None, logs=eval_logs)
    assert eval_logs == {"eval_loss": 1.0}
    logs = {"loss": 1.0}
    callback.on_log(args, state, None, logs=logs)
    assert {"mask/rate", "mask/whole_word_share", "mask/span_len_mean", "mask/span_len_1"} <= set(
        logs
    )
    assert state.log_history[-1]["mask/rate"] == logs["mask/rate"]


def test_diagnostics_callback_adds_nothing_with_dataloader_workers():
    from nlpssl.collators import MaskingDiagnosticsCallback

    c = masker()
    c(packed_rows(2, seed=15))
    callback = MaskingDiagnosticsCallback(c)
    state = SimpleNamespace(global_step=1, log_history=[])
    logs = {"loss": 1.0}
    with pytest.warns(UserWarning, match="dataloader_num_workers"):
        callback.on_log(SimpleNamespace(dataloader_num_workers=2), state, None, logs=logs)
    assert logs == {"loss": 1.0}


# --- every error message -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"rate": 1.5}, r"rate is the share .* \(got 1.5\)"),
        ({"rate": 0.0}, r"rate .* \(got 0.0\)"),
        ({"mask_frac": 0.8, "random_frac": 0.3}, r"must not exceed 1 \(got 0.8 \+ 0.3 = 1.1\)"),
        ({"mask_frac": -0.1}, r"mask_frac must be in \[0, 1\] \(got -0.1\)"),
        ({"unit": "sentence"}, r"unit must be .* \(got 'sentence'\)"),
        ({"unit": "span", "exact_budget": False}, r"always fills an exact token budget"),
        ({"span_p": 0.0}, r"span_p must be in \(0, 1\] \(got 0.0\)"),
        ({"span_max_len": 0}, r"span_max_len must be >= 1 \(got 0\)"),
        ({"mask_id": 5000}, r"mask_id must be a vocabulary id \(got 5000"),
        ({"vocab_size": 107, "mask_id": 4}, r"no non-special id is left"),
    ],
)
def test_masking_config_errors(kw, match):
    with pytest.raises(NlpsslError, match=match):
        masker(**kw)


def test_masking_config_errors_are_reported_together():
    with pytest.raises(NlpsslError) as err:
        masker(rate=2.0, mask_frac=0.9, random_frac=0.2)
    assert "rate" in str(err.value) and "must not exceed 1" in str(err.value)


@pytest.mark.parametrize("unit", ["word", "span"])
def test_word_units_without_word_starts_fail(unit):
    with pytest.raises(NlpsslError, match=f"unit='{unit}' needs a 'word_starts' column"):
        masker(unit=unit)([{"input_ids": [CLS, 500, SEP]}])


def test_word_starts_of_the_wrong_length_fail():
    with pytest.raises(NlpsslError, match=r"differ in shape \(got \(1, 2\) vs \(1, 3\)\)"):
        masker(unit="word")([{"input_ids": [CLS, 500, SEP], "word_starts": [1, 1]}])


def test_batch_errors():
    with pytest.raises(NlpsslError, match=r"the batch is empty \(got 0 rows\)"):
        masker()([])
    with pytest.raises(
        NlpsslError, match=r"row 0 has no 'input_ids' column \(got keys \['text'\]\)"
    ):
        masker()([{"text": "hi"}])


def test_from_tokenizer_without_mask_token_fails(tokenizer):
    bare = SimpleNamespace(pad_token="[PAD]", mask_token=None, all_special_tokens=["[PAD]"])
    with pytest.raises(NlpsslError, match=r"has no mask_token \(got SimpleNamespace"):
        MaskingCollator.from_tokenizer(bare)
    no_pad = SimpleNamespace(pad_token_id=None, eos_token_id=6)
    with pytest.raises(NlpsslError, match=r"no pad token \(got pad_token_id=None\)"):
        CausalCollator.from_tokenizer(no_pad)
    no_sentinels = SimpleNamespace(
        convert_tokens_to_ids=lambda t: 1, unk_token_id=1, eos_token_id=6, pad_token_id=0
    )
    with pytest.raises(NlpsslError, match=r"lacks <extra_id_0>.* \(got 0 sentinels"):
        T5SpanCorruptionCollator.from_tokenizer(no_sentinels)


def test_causal_errors_and_warnings():
    with pytest.raises(NlpsslError, match=r"reset_positions needs .* \(got eos_id=None\)"):
        CausalCollator(pad_id=PAD, reset_positions=True)
    with pytest.warns(UserWarning, match="pad_id equals eos_id"):
        CausalCollator(pad_id=EOS, eos_id=EOS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CausalCollator(pad_id=PAD, eos_id=EOS)


def test_t5_errors():
    with pytest.raises(NlpsslError, match=r"makes 28 noise spans, each .* \(got 5 sentinel ids\)"):
        T5SpanCorruptionCollator(SENTINELS[:5], EOS, PAD)([{"input_ids": list(range(200, 768))}])
    with pytest.raises(NlpsslError, match=r"no sentinel ids \(got \[\]\)"):
        T5SpanCorruptionCollator([], EOS, PAD)
    with pytest.raises(NlpsslError, match=r"noise_density must be in \(0, 1\) \(got 1.5\)"):
        T5SpanCorruptionCollator(SENTINELS, EOS, PAD, noise_density=1.5)
    with pytest.raises(NlpsslError, match=r"mean_noise_span_length must be >= 1 token \(got 0.5\)"):
        t5_input_target_lengths(512, mean_noise_span_length=0.5)
    with pytest.raises(NlpsslError, match=r"inputs_length must be at least 4 \(got 3\)"):
        t5_input_target_lengths(3)
    with pytest.raises(NlpsslError, match=r"a row needs at least 2 tokens \(got 1\)"):
        T5SpanCorruptionCollator(SENTINELS, EOS, PAD)([{"input_ids": [300]}])


def test_t5_lengths_error_when_no_raw_length_fits():
    bad = next(n for n in range(8, 200) if not _fits(n, 0.8, 1.0))
    with pytest.raises(NlpsslError, match=rf"no raw length corrupts to exactly {bad} inputs"):
        t5_input_target_lengths(bad, noise_density=0.8, mean_noise_span_length=1.0)


def _fits(n: int, density: float, mean: float) -> bool:
    try:
        t5_input_target_lengths(n, density, mean)
    except NlpsslError:
        return False
    return True


def test_math_constants():
    assert math.isclose(float(span_law(0.2, 10).sum()), 1.0)
