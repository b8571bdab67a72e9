"""A new user's trial of the shared tokenizer: scripts beyond English, sentinels, sizes, export fidelity."""

from __future__ import annotations

import pytest
from conftest import tiny_overrides
from transformers import AutoTokenizer

from nlpssl.tokenizer import sentinel_ids, train_tokenizer

ALGORITHMS = ["bpe", "wordpiece", "unigram"]
WORDS = "the cat sat on mat and a dog ran to red big tree".split()


def sentences(n: int = 300):
    """Simple sentences over a small word list, deterministic."""
    for i in range(n):
        a, b, c = WORDS[i % len(WORDS)], WORDS[(i * 7) % len(WORDS)], WORDS[(i * 5 + 3) % len(WORDS)]
        yield f"The {a} sat on the {b} and the {c}."


@pytest.fixture(scope="module", params=ALGORITHMS)
def saved(request, tmp_path_factory):
    """(algorithm, folder) of a tokenizer trained on ``sentences`` and saved, loaded back by plain transformers."""
    out = tmp_path_factory.mktemp(request.param)
    train_tokenizer(sentences(), out, algorithm=request.param, vocab_size=400, num_sentinels=4)
    return request.param, out


def test_a_sentinel_written_after_a_space_gets_no_stray_space_token(saved):
    # The T5 collator replaces whole tokens ('Ġsat', '▁sat') with a sentinel, so in training a sentinel
    # never follows a lone 'Ġ' / '▁'; a user's "The cat <extra_id_0> on the mat." must encode the same way.
    _, folder = saved
    tok = AutoTokenizer.from_pretrained(str(folder))
    s0, s1 = sentinel_ids(tok)[:2]
    ids = tok("The cat <extra_id_0> on the <extra_id_1>.")["input_ids"]
    assert ids.count(s0) == 1 and ids.count(s1) == 1
    before = tok("The cat")["input_ids"]
    assert ids[: len(before)] == before and ids[len(before)] == s0
    assert tok.convert_ids_to_tokens(ids[ids.index(s1) - 1]).strip("Ġ▁ ") != ""


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_lowercase_keeps_accents_and_letters_of_other_scripts(algorithm, tmp_path):
    # tokenizer.lowercase lowercases; WordPiece's BERT normaliser also stripped accents, which made 'й'
    # (its own letter in Russian) 'и', 'côte' 'cote' and Greek lose its tonos, unlike bpe and unigram.
    text = "Café côte Йогурт ёж Καλημέρα"
    train_tokenizer([text] * 50 + list(sentences(50)), tmp_path, algorithm=algorithm, vocab_size=400,
                    num_sentinels=0, lowercase=True)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert tok.decode(tok(text)["input_ids"]) == text.lower()


@pytest.fixture(scope="module")
def lowercase_bpe_mlm(tmp_path_factory):
    """A masked-LM export whose tokenizer lowercases (byte-level BPE): a few steps, for its files."""
    from nlpssl.pretrain import pretrain

    out = tmp_path_factory.mktemp("mlm-bpe-lower")
    return pretrain("bert-tiny", tiny_overrides(out, **{
        "tokenizer.algorithm": "bpe", "tokenizer.lowercase": "true", "training.max_steps": 2,
        "training.eval_strategy": "'no'", "training.save_strategy": "'no'", "speed.bf16": "off"})).export_dir


@pytest.mark.parametrize("export", ["mlm_export", "lowercase_bpe_mlm"])
def test_fill_mask_gives_back_the_users_text_with_the_filler(export, request, one_torch_thread):
    # The pipeline's sequence decoded the input again: WordPiece joined the lines and wrote "don ' t",
    # a lowercasing tokenizer lowercased the user's capitals.
    from nlpssl.demo import fill_mask

    text = "Don't stop,\tMia!\nThe Cat sat on the [MASK]."
    preds = fill_mask(request.getfixturevalue(export), text, top_k=30)
    head = "Don't stop,\tMia!\nThe Cat sat on the"
    for p in preds:
        assert p.sequence.startswith(head) and p.sequence.endswith("."), p
        filler = p.sequence[len(head):-1]
        assert filler.strip() == p.token.strip().removeprefix("##"), p
    assert any(p.sequence == f"{head} {p.token}." for p in preds)  # a word: the user's space kept, no other
    alone = fill_mask(request.getfixturevalue(export), "[MASK]", top_k=30)
    words = [p for p in alone if p.token.strip()]
    assert words and all(p.sequence == p.token.removeprefix("##") for p in words)  # no space before a first word


def test_fill_mask_table_keeps_one_row_per_filler(mlm_export, capsys, one_torch_thread):
    from nlpssl.cli import main

    main(["fill-mask", str(mlm_export), "Mia!\nThe cat sat on the [MASK].", "--top-k", "3"])
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 3 and all("Mia!\\nThe cat sat on the" in row for row in rows)


@pytest.fixture(scope="module", params=["wordpiece", "unigram"])
def causal_export(request, tmp_path_factory):
    """A GPT export whose tokenizer is not byte-level BPE (tokenizer.algorithm is the user's choice)."""
    from nlpssl.pretrain import pretrain

    out = tmp_path_factory.mktemp(f"gpt-{request.param}")
    return pretrain("gpt-tiny", tiny_overrides(out, **{
        "tokenizer.algorithm": request.param, "training.max_steps": 2, "training.eval_strategy": "'no'",
        "training.save_strategy": "'no'", "speed.bf16": "off"})).export_dir


def test_generate_joins_the_continuation_as_the_tokens_read_after_the_prompt(causal_export, one_torch_thread):
    # The pipeline decoded the new tokens alone: WordPiece printed "two##o" and "ok" + "word" without the
    # space, Unigram dropped the first new word's "▁". Whatever the model writes, the printed text must
    # read as the whole sequence of tokens does.
    from transformers import pipeline

    from nlpssl.demo import generate

    pipe = pipeline("text-generation", model=str(causal_export))
    tok = pipe.tokenizer
    for prompt in ("Once upon a time", "The cat sat on the", "Mia said", "The dog"):
        out = generate(causal_export, prompt, max_new_tokens=4, greedy=True)
        ids = pipe(prompt, return_tensors=True, max_new_tokens=4, do_sample=False)[0]["generated_token_ids"]
        assert out.startswith(prompt) and "##" not in out
        assert tok.decode(tok(out)["input_ids"], skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)


def test_generate_leaves_out_a_character_cut_short_by_max_new_tokens(tmp_path):
    from nlpssl.demo import _continuation

    tok = train_tokenizer(["café crème"] * 20, tmp_path, algorithm="bpe", vocab_size=300, num_sentinels=0)
    cut = tok("caf")["input_ids"] + [tok.convert_tokens_to_ids("Ã")]  # the first of the two bytes of "é"
    assert _continuation(tok, cut, 1) == tok.decode(cut[1:-1])
    assert "\ufffd" in tok.decode(cut)


@pytest.mark.parametrize(("text", "message"), [
    ("The cat <extra_id_4> on the mat.", r"names <extra_id_4> not among its 4 sentinels <extra_id_0>..<extra_id_3>"),
    ("The <extra_id_0> sat on the <extra_id_0>.", r"names <extra_id_0> more than once"),
])
def test_t5_demo_refuses_sentinels_the_model_cannot_fill(text, message, tmp_path):
    # Before, an unknown sentinel was read as plain text and a repeated one filled once: both printed "[?]".
    from nlpssl.demo import fill_sentinels
    from nlpssl.errors import NlpsslError

    train_tokenizer(sentences(50), tmp_path, algorithm="wordpiece", vocab_size=200, num_sentinels=4)
    with pytest.raises(NlpsslError, match=message + r".*Number the gaps <extra_id_0>, <extra_id_1>, \.\.\. in order"):
        fill_sentinels(tmp_path, text)


def test_tokenizer_train_says_when_the_text_cannot_fill_the_vocab_size(tmp_path, capsys):
    # tokenizer.vocab_size=1000000 on two lines gave a 125-token tokenizer without a word about it.
    from nlpssl.cli import main

    corpus = tmp_path / "small.txt"
    corpus.write_text("hello world\n\nhello there\n", encoding="utf-8")
    main(["tokenizer", "train", "bert-tiny", f"data.source={corpus}", "tokenizer.vocab_size=1000000",
          "--out", str(tmp_path / "tok")])
    out = capsys.readouterr().out
    size = len(AutoTokenizer.from_pretrained(str(tmp_path / "tok")))
    assert "fewer than tokenizer.vocab_size=1,000,000" in out and f"a vocabulary of {size}." in out


def test_tokenizer_train_refuses_a_recipe_that_reuses_a_tokenizer(tmp_path, capsys):
    # It trained a tokenizer into the run folder, which pretrain then ignored for tokenizer.path.
    from nlpssl.cli import main

    folder = tmp_path / "shared"
    train_tokenizer(sentences(50), folder, vocab_size=200, num_sentinels=4)
    assert main(["tokenizer", "train", "bert-tiny", f"tokenizer.path={folder}", "data.builtin_stories=50",
                 f"training.output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert f"(got tokenizer.path={str(folder)!r})" in err and "set tokenizer.path=null" in err
    assert not (tmp_path / "run").exists()


def test_an_export_with_a_shared_tokenizer_declares_its_models_length(tmp_path, one_torch_thread):
    # The tokenizer was trained for 512 positions and shared (tokenizer.path) with a 64-position model:
    # the export said model_max_length=512, and a stock pipeline's truncation=True crashed on a long text.
    from transformers import pipeline

    from nlpssl.pretrain import pretrain

    shared = tmp_path / "shared"
    train_tokenizer(sentences(), shared, algorithm="wordpiece", vocab_size=300, num_sentinels=4, model_max_length=512)
    export = pretrain("bert-tiny", tiny_overrides(tmp_path, **{
        "tokenizer.path": str(shared), "model.arch": "bert", "model.max_positions": 64, "training.max_steps": 2,
        "training.eval_strategy": "'no'", "training.save_strategy": "'no'", "speed.bf16": "off"})).export_dir
    assert AutoTokenizer.from_pretrained(str(export)).model_max_length == 64
    vectors = pipeline("feature-extraction", model=str(export))("the cat sat on the mat. " * 40, truncation=True)
    assert len(vectors[0]) == 64


def test_fill_mask_refuses_a_text_longer_than_the_model_reads(mlm_export):
    # A classic BERT crashed inside its position embeddings ("The size of tensor a (285) must match ...").
    import json

    from nlpssl.demo import fill_mask
    from nlpssl.errors import NlpsslError

    limit = json.loads((mlm_export / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(NlpsslError, match=rf"fill-mask: the text is \d+ tokens, .* at most {limit} .*Shorten it"):
        fill_mask(mlm_export, "the cat sat on the mat. " * limit + "the [MASK].")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_training_off_a_terminal_writes_nothing_to_stdout(algorithm, capfd):
    # The trainers' progress bars end with bare newlines on stdout: `nlpssl tokenizer train ... | head -1`
    # read an empty line, and the next write panicked the Rust trainer ("failed printing to stdout").
    train_tokenizer(sentences(20), algorithm=algorithm, vocab_size=300, num_sentinels=0, show_progress=True)
    assert capfd.readouterr().out == ""


def test_fill_mask_adds_no_space_that_wordpiece_invents(mlm_export):
    # WordPiece's decoder puts a space before every word piece, so "我喜欢[MASK]中文" came back as
    # "我喜欢 X中文" and "the[MASK]" as "the X": spaces the user did not write and the tokenizer never saw.
    from nlpssl.demo import fill_mask

    preds = fill_mask(mlm_export, "我喜欢[MASK]中文", top_k=20)
    assert all(p.sequence == f"我喜欢{p.token.removeprefix('##')}中文" for p in preds)


@pytest.mark.parametrize("lowercase", [False, True])
def test_wordpiece_reads_decomposed_accents_as_the_composed_ones(lowercase, tmp_path):
    # 'é' as 'e' + U+0301 (NFD: macOS, some PDF extracts) gave other pieces than 'é', so one word split
    # into two vocabularies; Unigram's NFKC already joined them, WordPiece did not.
    import unicodedata

    text = "Crème brûlée au café, très naïve."
    train_tokenizer([text] * 30 + list(sentences(30)), tmp_path, algorithm="wordpiece", vocab_size=300,
                    num_sentinels=0, lowercase=lowercase)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert tok(unicodedata.normalize("NFD", text))["input_ids"] == tok(text)["input_ids"]


@pytest.mark.parametrize(("recipe", "key"), [("distil-tiny", "distill.teacher"), ("simcse-tiny", "simcse.encoder")])
def test_tokenizer_train_refuses_a_recipe_that_trains_with_another_models_tokenizer(recipe, key, tmp_path, capsys):
    # It trained one and said "models trained with it have a vocabulary of N": the run uses the teacher's.
    from nlpssl.cli import main

    assert main(["tokenizer", "train", recipe, "data.builtin_stories=50", "--out", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err
    assert f"the tokenizer of its {key} (got {key}=" in err and f"run `nlpssl pretrain {recipe}`" in err
    assert not (tmp_path / "tok").exists()


def test_pretrain_refuses_the_run_tokenizer_that_tokenizer_train_made_with_other_settings(tmp_path):
    # `nlpssl tokenizer train bert-tiny tokenizer.algorithm=bpe` then `nlpssl pretrain bert-tiny` trained on
    # the BPE tokenizer and exported a recipe.yaml that said wordpiece.
    from nlpssl.cli import main
    from nlpssl.errors import NlpsslError
    from nlpssl.pretrain import pretrain

    run = tiny_overrides(tmp_path, **{"data.builtin_stories": 50, "training.max_steps": 2})  # tiny, should it train
    assert main(["tokenizer", "train", "bert-tiny", *run, "tokenizer.algorithm=bpe"]) == 0
    with pytest.raises(NlpsslError, match=r"holds a tokenizer in .* \(from `nlpssl tokenizer train` or a run that stopped before "
                                          r"training\), trained with other settings than now \(tokenizer\.algorithm\)"):
        pretrain("bert-tiny", run)


@pytest.mark.parametrize("value", [None, ["Once", "Twice"], b"Once"])
def test_demos_refuse_what_is_not_one_string(value, tmp_path):
    # From Python, None ended in "You need to specify either `text` or `text_target`" and a list in a TypeError.
    from nlpssl.demo import fill_mask, generate
    from nlpssl.errors import NlpsslError

    with pytest.raises(NlpsslError, match=rf"fill-mask: text must be one string \(got {type(value).__name__} "):
        fill_mask(tmp_path, value)
    with pytest.raises(NlpsslError, match=rf"generate: prompt must be one string \(got {type(value).__name__} "):
        generate(tmp_path, value)


@pytest.mark.parametrize("vocab_size", [10**7, 10**9, 10**30])
def test_an_absurd_vocab_size_is_refused_before_the_trainer_runs(vocab_size):
    # 10**9 aborted the process in the Rust trainer ("memory allocation of 32000000000 bytes failed"),
    # 10**30 raised a bare OverflowError from it.
    from nlpssl.errors import NlpsslError

    with pytest.raises(NlpsslError, match=rf"vocab_size is larger than any tokenizer needs \(got {vocab_size:,}, at most"):
        train_tokenizer(iter(()), algorithm="unigram", vocab_size=vocab_size)


def test_fill_mask_shows_a_white_space_filler_as_itself(lowercase_bpe_mlm, capsys, one_torch_thread):
    # A line-break filler ('Ċ') was stripped to "": an empty token column, in Python and in the table.
    import json

    from nlpssl.cli import main
    from nlpssl.demo import fill_mask

    vocab = json.loads((lowercase_bpe_mlm / "config.json").read_text())["vocab_size"]
    preds = fill_mask(lowercase_bpe_mlm, "Mia sat.[MASK]Tom ran.", top_k=vocab)
    assert "" not in [p.token for p in preds]
    newline = next(p for p in preds if p.token == "\n")
    assert newline.sequence == "Mia sat.\nTom ran."
    main(["fill-mask", str(lowercase_bpe_mlm), "Mia sat.[MASK]Tom ran.", "--top-k", str(vocab)])
    assert any(row.split()[1:] == ["\\n", "Mia", "sat.\\nTom", "ran."] for row in capsys.readouterr().out.splitlines())


def bert_style_tokenizer(folder):
    """A stock WordPiece tokenizer laid out as Google's BERT vocabularies are ([CLS] = 101), without [EOS]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, **{f"[unused{i}]": i for i in range(1, 100)}, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102,
             "[MASK]": 103}
    for piece in [*WORDS, *"abcdefghijklmnopqrstuvwxyz.,", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]:
        vocab.setdefault(piece, len(vocab))
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                            pad_token="[PAD]", mask_token="[MASK]").save_pretrained(str(folder))
    return folder


def test_a_reused_tokenizer_keeps_its_own_special_ids_or_is_refused(tmp_path, one_torch_thread):
    # The export's template wrote nlpssl's fixed ids (2 and 3) around every text: with BERT's layout
    # the model read '[unused2] ... [unused3]' where it trained on [CLS] ... [SEP]. A causal run with
    # a tokenizer without [EOS] ended in a bare TypeError inside the row packer.
    from nlpssl.errors import NlpsslError
    from nlpssl.pretrain import pretrain
    from nlpssl.recipe import load_recipe

    tok = bert_style_tokenizer(tmp_path / "bert-vocab")
    run = pretrain(load_recipe("bert-tiny", tiny_overrides(tmp_path / "mlm", **{"tokenizer.path": tok})))
    export = AutoTokenizer.from_pretrained(str(run.export_dir))
    ids = export("the cat")["input_ids"]
    assert (ids[0], ids[-1]) == (101, 102) and export.convert_ids_to_tokens(ids[0]) == "[CLS]"
    assert ids == AutoTokenizer.from_pretrained(str(tok))("the cat")["input_ids"]
    with pytest.raises(NlpsslError, match=r"has no eos_token \(got pad_token='\[PAD\]', eos_token=None\), which "
                                          r"'causal' rows need\. Train a tokenizer"):
        pretrain(load_recipe("gpt-tiny", tiny_overrides(tmp_path / "clm", **{"tokenizer.path": tok})))
    assert not list((tmp_path / "clm").rglob("*.arrow")), "refused before any text was packed"
