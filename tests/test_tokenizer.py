"""Tests for nlpssl.tokenizer: fixed special ids, [MASK] handling, offsets, save/reload, templates."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from nlpssl.errors import NlpsslError
from nlpssl.tokenizer import (
    BOS_ID,
    CLS_ID,
    EOS_ID,
    FIRST_SENTINEL_ID,
    MASK_ID,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    load_tokenizer,
    sentinel_ids,
    set_template,
    train_tokenizer,
)

ALGORITHMS = ["bpe", "wordpiece", "unigram"]
VOCAB_SIZE = 500
NUM_SENTINELS = 20
SAMPLES = [
    "The cat sat on the mat.",
    "Once upon a time, a little dog was happy!",
    "The queen looked at the river and smiled.",
]


def tiny_corpus(n: int = 400, seed: int = 0):
    """A generator (not a list) of simple sentences, so training from a one-shot stream is tested."""
    rng = random.Random(seed)
    nouns = [
        "cat",
        "dog",
        "mat",
        "hat",
        "bird",
        "tree",
        "house",
        "girl",
        "boy",
        "king",
        "queen",
        "river",
        "fox",
        "box",
        "sun",
        "moon",
    ]
    verbs = [
        "sat",
        "ran",
        "jumped",
        "looked",
        "walked",
        "slept",
        "sang",
        "smiled",
        "played",
        "went",
    ]
    adjectives = ["little", "big", "happy", "sad", "red", "old", "young", "brave", "tiny", "kind"]
    for _ in range(n):
        noun, other, verb, adj = (
            rng.choice(nouns),
            rng.choice(nouns),
            rng.choice(verbs),
            rng.choice(adjectives),
        )
        yield rng.choice(
            [
                f"The {noun} {verb} on the {other}.",
                f"Once upon a time, a {adj} {noun} was happy!",
                f"The {noun} looked at the {other} and smiled.",
                f"A {adj} {noun} {verb} to the {other}, and the {other} {verb} too.",
            ]
        )


@pytest.fixture(scope="module", params=ALGORITHMS)
def trained(request):
    """(algorithm, tokenizer) trained once per algorithm, with raw-id (causal) post-processing."""
    tokenizer = train_tokenizer(
        tiny_corpus(),
        algorithm=request.param,
        vocab_size=VOCAB_SIZE,
        num_sentinels=NUM_SENTINELS,
        model_max_length=128,
    )
    return request.param, tokenizer


def test_special_tokens_have_fixed_ids(trained):
    _, tok = trained
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(len(SPECIAL_TOKENS)))
    named = (
        tok.pad_token_id,
        tok.unk_token_id,
        tok.cls_token_id,
        tok.sep_token_id,
        tok.mask_token_id,
        tok.bos_token_id,
        tok.eos_token_id,
    )
    assert named == (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID, BOS_ID, EOS_ID) == tuple(range(7))
    assert sentinel_ids(tok) == list(range(FIRST_SENTINEL_ID, FIRST_SENTINEL_ID + NUM_SENTINELS))
    assert tok.extra_special_tokens == [f"<extra_id_{i}>" for i in range(NUM_SENTINELS)]
    assert len(tok) <= VOCAB_SIZE


def test_mask_is_one_token_without_stray_space(trained):
    _, tok = trained
    ids = tok("The cat sat on the [MASK].")["input_ids"]
    assert ids.count(MASK_ID) == 1
    position = ids.index(MASK_ID)
    # Everything before [MASK] is exactly the encoding of the text before it: no 'Ġ' / '▁' token.
    assert ids[:position] == tok("The cat sat on the")["input_ids"]
    assert tok.convert_ids_to_tokens(ids[position - 1]).strip("Ġ▁ ") != ""


def test_default_encoding_is_raw_ids(trained):
    _, tok = trained
    ids = tok("The cat sat on the mat.")["input_ids"]
    assert not set(ids) & set(range(FIRST_SENTINEL_ID))
    assert tok("a", "b")["input_ids"] == tok("a")["input_ids"] + tok("b")["input_ids"]


def test_offsets_and_word_ids_cover_words(trained):
    algorithm, tok = trained
    text = "The cat sat on the mat."
    encoding = tok(text, return_offsets_mapping=True)
    word_ids = encoding.word_ids()
    assert None not in word_ids
    spans: dict[int, list[int]] = {}
    for word, (start, end) in zip(word_ids, encoding["offset_mapping"]):
        assert 0 <= start < end <= len(text)
        span = spans.setdefault(word, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    words = [text[start:end].strip() for start, end in spans.values()]
    # Unigram splits on whitespace only (as SentencePiece/T5 do), so punctuation stays in its word.
    last = ["mat."] if algorithm == "unigram" else ["mat", "."]
    assert words == ["The", "cat", "sat", "on", "the", *last]


def test_decode_gives_readable_text(trained):
    _, tok = trained
    for text in SAMPLES:
        assert tok.decode(tok(text)["input_ids"]) == text


@pytest.mark.parametrize("style", ["mlm", "causal", "t5"])
def test_save_reload_with_stock_autotokenizer(trained, style, tmp_path):
    algorithm, tok = trained
    set_template(tok, style)
    try:
        tok.save_pretrained(tmp_path)
        reloaded = AutoTokenizer.from_pretrained(tmp_path)
        for text in SAMPLES + ["The cat sat on the [MASK]. <extra_id_3>"]:
            assert reloaded(text)["input_ids"] == tok(text)["input_ids"], (algorithm, text)
        assert reloaded("a", "b")["input_ids"] == tok("a", "b")["input_ids"]
    finally:
        set_template(tok, "causal")  # the fixture is shared
    assert reloaded.is_fast
    assert reloaded.model_max_length == 128
    for name in ("pad", "unk", "cls", "sep", "mask", "bos", "eos"):
        assert getattr(reloaded, f"{name}_token") == getattr(tok, f"{name}_token")
        assert getattr(reloaded, f"{name}_token_id") == getattr(tok, f"{name}_token_id")
    assert reloaded.extra_special_tokens == tok.extra_special_tokens
    assert sentinel_ids(reloaded) == sentinel_ids(tok)
    assert reloaded("the mat", return_offsets_mapping=True)["offset_mapping"]


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("mlm", lambda a, b: [CLS_ID, *a, SEP_ID]),
        ("causal", lambda a, b: a),
        ("t5", lambda a, b: [*a, EOS_ID]),
    ],
)
def test_set_template_single(trained, style, expected, tmp_path):
    _, tok = trained
    raw = tok("The cat sat.")["input_ids"]
    set_template(tok, style)
    try:
        assert tok("The cat sat.")["input_ids"] == expected(raw, None)
        tok.save_pretrained(tmp_path)
        assert load_tokenizer(tmp_path)("The cat sat.")["input_ids"] == expected(raw, None)
    finally:
        set_template(tok, "causal")


def test_set_template_pairs(trained):
    _, tok = trained
    a, b = tok("the cat")["input_ids"], tok("the dog")["input_ids"]
    set_template(tok, "mlm")
    try:
        assert tok("the cat", "the dog")["input_ids"] == [CLS_ID, *a, SEP_ID, *b, SEP_ID]
        set_template(tok, "t5")
        assert tok("the cat", "the dog")["input_ids"] == [*a, EOS_ID, *b, EOS_ID]
    finally:
        set_template(tok, "causal")


def test_set_template_rejects_unknown_style(trained):
    _, tok = trained
    with pytest.raises(NlpsslError, match=r"set_template: unknown style \(got 'bert'\)\. Use one"):
        set_template(tok, "bert")


def test_train_saves_to_out_dir_and_lowercases(tmp_path):
    tok = train_tokenizer(
        tiny_corpus(200), tmp_path / "tok", vocab_size=300, num_sentinels=4, lowercase=True
    )
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    assert tok("THE CAT")["input_ids"] == tok("the cat")["input_ids"]
    assert tok("The [MASK].")["input_ids"].count(MASK_ID) == 1  # specials are not lowercased
    reloaded = load_tokenizer(tmp_path / "tok")
    assert reloaded("THE CAT")["input_ids"] == tok("the cat")["input_ids"]


def test_zero_sentinels_and_progress_flag():
    tok = train_tokenizer(
        tiny_corpus(100), algorithm="wordpiece", vocab_size=200, num_sentinels=0, show_progress=True
    )
    assert sentinel_ids(tok) == []
    assert tok.mask_token_id == MASK_ID


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"algorithm": "sentencepiece"},
            r"train_tokenizer: unknown algorithm \(got 'sentencepiece'\)\. Use one of 'bpe'",
        ),
        (
            {"algorithm": "bpe", "vocab_size": 300},
            r"train_tokenizer: vocab_size is smaller .* \(got 300, need at least 363\)\. Raise",
        ),
        (
            {"vocab_size": 50},
            r"train_tokenizer: vocab_size is smaller .* \(got 50, need at least 108\)\. Raise",
        ),
        (
            {"num_sentinels": -1},
            r"train_tokenizer: num_sentinels must be an integer >= 0 \(got -1\)\. Set",
        ),
        (
            {"model_max_length": 0},
            r"train_tokenizer: model_max_length must be an integer >= 1 \(got 0\)\. Set",
        ),
    ],
)
def test_bad_settings_fail_before_reading_text(kwargs, message):
    def never_read():
        raise AssertionError("texts were read before the settings were checked")
        yield ""

    with pytest.raises(NlpsslError, match=message):
        train_tokenizer(never_read(), **kwargs)


def test_vocab_too_small_for_the_corpus_alphabet():
    texts = ["".join(chr(0x4E00 + i) for i in range(k, k + 30)) for k in range(0, 300, 30)]
    with pytest.raises(
        NlpsslError, match=r"\(got 120, the trainer needed \d+\)\. Raise vocab_size"
    ):
        train_tokenizer(texts, algorithm="wordpiece", vocab_size=120, min_frequency=1)


@pytest.mark.parametrize("texts", [[], iter([]), ["", "  ", "\n"]])
def test_no_text_is_an_error(texts):
    with pytest.raises(
        NlpsslError, match=r"train_tokenizer: the texts hold no text \(got an empty"
    ):
        train_tokenizer(texts, vocab_size=300)


def test_bare_string_and_non_string_items_are_errors():
    with pytest.raises(NlpsslError, match=r"not one string \(got str 'The cat sat\.'\)\. Wrap it"):
        train_tokenizer("The cat sat.", vocab_size=300)
    with pytest.raises(NlpsslError, match=r"every text must be a str \(got dict"):
        train_tokenizer(["fine", {"text": "a record"}], vocab_size=300)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(NlpsslError, match=r"load_tokenizer: tokenizer folder '.*missing' does not exist\. Pass the out_dir"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(
        NlpsslError, match=r"no tokenizer\.json in .* \(got files \['notes\.txt'\]\)"
    ):
        load_tokenizer(tmp_path)


# ----------------------------------------------------------------------------- very long texts


def test_text_pieces_cut_before_white_space_and_rejoin():
    from nlpssl.tokenizer import text_pieces

    text = "One cat.  Two cats,\n\nthree  cats! " + "猫" * 20 + " end"
    assert list(text_pieces(text, 16)) == [
        "One cat.  Two", " cats,\n\nthree", "  cats!", " " + "猫" * 15, "猫" * 5 + " end",
    ]  # before a run of spaces between non-spaces; inside 20 unspaced characters only where they reach 16
    assert list(text_pieces(text, 100)) == [text]
    # never before a tab or line break (Unigram would add a '▁'): where there is no run of spaces, at the size
    assert list(text_pieces("One cat.  Two\tcats,\n\nthree", 16)) == ["One cat.", "  Two\tcats,\n\nthr", "ee"]


@pytest.mark.parametrize("size", [16, 23, 40, 97])  # longer than any stretch without a cut
def test_long_documents_encode_in_pieces_to_the_same_tokens(trained, monkeypatch, size):
    # A document longer than PIECE_CHARS is tokenized piece by piece: the same ids and word starts
    # as the whole, for every algorithm, wherever the cuts fall (line breaks, tabs, runs of spaces).
    import nlpssl.tokenizer
    from nlpssl.data import _encode, encode
    from nlpssl.tokenizer import text_pieces

    _, tokenizer = trained
    long = ("the cat sat on the mat.\nthe dog ran off\tand the big red cat sat\n\n  indented  line\tand "
            "tabs ... done " + " ".join(tiny_corpus(30)))
    texts = ["A short one.", long, "Another short one.", long[: len(long) // 2]]
    whole = _encode(texts, tokenizer, words=True)
    monkeypatch.setattr(nlpssl.tokenizer, "PIECE_CHARS", size)
    assert len(list(text_pieces(long))) > len(long) // (2 * size), "the text must really be cut"
    pieces = encode(texts, tokenizer, words=True)
    assert pieces.ids.tolist() == whole.ids.tolist()
    assert pieces.offsets.tolist() == whole.offsets.tolist()
    assert pieces.starts.tolist() == whole.starts.tolist()


def test_a_one_line_file_does_not_take_memory_by_the_hundredfold(tiny_tokenizer, tmp_path):
    # The Rust tokenizer holds ~100 bytes per character of one text: a 20 MB one-line file took
    # 2.7 GB to train on and 3 GB to prepare. In pieces it takes what a piece takes.
    import subprocess
    import sys

    tiny_tokenizer.save_pretrained(str(tmp_path / "tok"))
    script = (
        "import resource, sys\n"
        "from transformers import AutoTokenizer\n"
        "from nlpssl.data import encode\n"
        f"tok = AutoTokenizer.from_pretrained({str(tmp_path / 'tok')!r})\n"
        "encode(['warm up the imports'], tok)\n"
        "text = ' '.join(['the cat sat on the mat'] * 200_000)  # 4.6 MB, one line\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "n = len(encode([text], tok).ids)\n"
        "print(n, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    tokens, grown_mb = int(out[0]), int(out[1])
    assert tokens >= 1_200_000
    assert grown_mb < 300, f"encoding a 4.6 MB line grew the process by {grown_mb} MB"  # whole: ~540 MB


def test_unk_from_overlong_words_is_blamed_on_their_length_not_the_alphabet():
    import random

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    texts = [f"see https://example.com/{''.join(rng.choices(letters, k=120))} for the cat" for _ in range(300)]
    with pytest.warns(UserWarning, match=r"\[UNK\] \(300 of the 300 are 'words' longer than 100 characters, such as "
                                         r"URLs.*clean such strings out of the text"):
        train_tokenizer(texts, algorithm="wordpiece", vocab_size=300, num_sentinels=0)


def test_a_vocabulary_that_turns_much_text_into_unk_says_so():
    import random
    import warnings

    # 1,500 distinct Chinese characters: more than WordPiece's 1,000-character alphabet keeps.
    rng = random.Random(0)
    chars = [chr(0x4E00 + i) for i in range(1500)]
    texts = ["".join(rng.choices(chars, k=40)) + "。" for _ in range(400)]
    with pytest.warns(UserWarning, match=r"train_tokenizer: \d+\.\d% of the tokens .* are \[UNK\] \(WordPiece keeps "
                                         r"at most 1000 distinct characters.*use tokenizer\.algorithm=bpe"):
        train_tokenizer(texts, algorithm="wordpiece", vocab_size=2000, num_sentinels=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # byte-level BPE never gives [UNK]; nor does WordPiece on stories
        train_tokenizer(texts, algorithm="bpe", vocab_size=600, num_sentinels=0)
        train_tokenizer(tiny_corpus(), algorithm="wordpiece", vocab_size=VOCAB_SIZE, num_sentinels=0)
