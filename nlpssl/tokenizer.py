"""Train one tokenizer that serves masked-LM, causal-LM and T5-style models.

Every algorithm puts the same special tokens at the same ids, so collators and model configs can rely
on them without looking anything up:

| id        | token                                  | used by                                   |
|-----------|----------------------------------------|-------------------------------------------|
| 0         | `[PAD]`                                | padding (all); never equal to eos         |
| 1         | `[UNK]`                                | unknown pieces (WordPiece, Unigram)       |
| 2         | `[CLS]`                                | start of an MLM / classification input    |
| 3         | `[SEP]`                                | end of an MLM segment                     |
| 4         | `[MASK]`                               | MLM corruption; fill-mask demo            |
| 5         | `[BOS]`                                | start of a causal-LM document             |
| 6         | `[EOS]`                                | end of a causal-LM document / T5 target   |
| 7 .. 7+N-1| `<extra_id_0>` .. `<extra_id_{N-1}>`   | T5 span-corruption sentinels              |

The learned vocabulary starts at `7 + num_sentinels`. T5's own tokenizers put sentinels at the top
of the vocab; here they sit in a fixed low block instead, so that the id of `<extra_id_0>` does not
move when the vocab size changes. Use `sentinel_ids()` rather than arithmetic on `len(tokenizer)`.

The saved folder is a stock Hugging Face tokenizer: `AutoTokenizer.from_pretrained(folder)` loads it
with every special token set and without importing nlpssl.
"""

from __future__ import annotations

import itertools
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from nlpssl.errors import NlpsslError, first_line

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

Algorithm = Literal["bpe", "wordpiece", "unigram"]
TemplateStyle = Literal["mlm", "causal", "t5"]

PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
MASK_TOKEN, BOS_TOKEN, EOS_TOKEN = "[MASK]", "[BOS]", "[EOS]"
# Order matters: the trainers assign ids in this order, so position == id.
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD_TOKEN,
    UNK_TOKEN,
    CLS_TOKEN,
    SEP_TOKEN,
    MASK_TOKEN,
    BOS_TOKEN,
    EOS_TOKEN,
)
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID, BOS_ID, EOS_ID = range(len(SPECIAL_TOKENS))
FIRST_SENTINEL_ID = len(SPECIAL_TOKENS)
DEFAULT_NUM_SENTINELS = 100
# Byte-level BPE always keeps all 256 byte symbols, whatever the corpus.
BYTE_ALPHABET_SIZE = 256
# The largest vocabularies in use hold about 250,000 (Gemma, BLOOM) to 900,000 (XLM-V) tokens. The trainers
# reserve memory for every id asked for (32 bytes each: vocab_size=10**9 aborted the process asking 32 GB).
MAX_VOCAB_SIZE = 1 << 21
# WordPiece keeps at most this many distinct characters (BERT's setting); rarer ones become [UNK].
WORDPIECE_LIMIT_ALPHABET = 1000


def sentinel_token(index: int) -> str:
    """Name of the T5 sentinel number `index` (`<extra_id_0>` is the first span)."""
    return f"<extra_id_{index}>"


def sentinel_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of `<extra_id_0>`, `<extra_id_1>`, ... in order, read from the tokenizer by name.

    Stops at the first missing sentinel, so it works for any `num_sentinels` (and returns `[]` for a
    tokenizer trained with none).
    """
    vocab = tokenizer.get_vocab()
    ids = []
    for index in itertools.count():
        token_id = vocab.get(sentinel_token(index))
        if token_id is None:
            return ids
        ids.append(token_id)
    raise AssertionError("unreachable")


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path | None = None,
    *,
    algorithm: Algorithm = "wordpiece",
    vocab_size: int = 8192,
    min_frequency: int = 2,
    num_sentinels: int = DEFAULT_NUM_SENTINELS,
    lowercase: bool = False,
    model_max_length: int = 512,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a fast tokenizer from an iterable of texts and optionally save it.

    The texts are streamed to the Rust trainer, so a generator over a corpus larger than memory
    works. No post-processing template is set (encodings are raw ids); call `set_template` before
    exporting a model so that pipelines add `[CLS]`/`[SEP]` or `[EOS]` as the architecture expects.

    Args:
        texts: Documents or lines of text. A generator is fine; it is consumed once.
        out_dir: If given, the folder to `save_pretrained` into (created if needed).
        algorithm: "bpe" (byte-level, GPT-2/RoBERTa style, never produces [UNK]), "wordpiece"
            (BERT style, `##` continuation prefix) or "unigram" (SentencePiece/T5 style, `▁` word
            marker).
        vocab_size: Final vocabulary size, special tokens and sentinels included.
        min_frequency: Minimum count for a merge (bpe, wordpiece). Unigram has no such knob and
            ignores it.
        num_sentinels: Number of `<extra_id_i>` tokens reserved for T5 span corruption.
        lowercase: Lowercase the text before tokenizing (special tokens are kept as written); accents
            are kept, for every algorithm.
        model_max_length: Longest input models will accept; saved into the tokenizer config.
        show_progress: Show the trainer's progress bars (on a terminal only).

    Returns:
        The trained tokenizer, with pad/unk/cls/sep/mask/bos/eos set and the sentinels registered
        as extra special tokens.

    Raises:
        NlpsslError: For an unknown algorithm, a vocab too small for the special tokens and
            alphabet, bad numbers, or an iterable that holds no text.
    """
    _check_settings(algorithm, vocab_size, min_frequency, num_sentinels, model_max_length)
    # The trainers draw their bars on stderr but end each with a bare newline on stdout: off a terminal
    # the bars are not drawn, and the newlines padded the command's answer (and a closed pipe, as in
    # `| head -1`, made the trainer panic).
    show_progress = show_progress and sys.stderr.isatty()
    sample: list[str] = []
    stream = _sampled(_checked_texts(texts), sample)
    backend, trainer = _build_backend(
        algorithm, vocab_size, min_frequency, num_sentinels, lowercase, show_progress
    )
    backend.train_from_iterator(stream, trainer=trainer)
    _check_trained(backend, algorithm, vocab_size, num_sentinels)
    _warn_unknown(backend, algorithm, sample)
    tokenizer = _wrap(backend, num_sentinels, model_max_length)
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def check_tokenizer_folder(folder: Path, where: str, fix: str) -> None:
    """Raise ``NlpsslError`` (prefixed ``where``, ending with ``fix``) unless ``folder`` holds a tokenizer.json."""
    folder = Path(folder)
    how = " (`nlpssl tokenizer train RECIPE --out DIR` trains one)."
    if folder.is_file():  # tokenizer.path at the tokenizer.json itself: it exists, so "does not exist" misled
        parent = f" ({str(folder.parent)!r})" if folder.name == "tokenizer.json" else ""
        raise NlpsslError(f"{where}: {str(folder)!r} is a file, not a tokenizer folder. Name the folder that holds "
                          f"tokenizer.json{parent}. {fix}{how}")
    if not folder.is_dir():
        raise NlpsslError(f"{where}: tokenizer folder {str(folder)!r} does not exist. {fix}{how}")
    if not (folder / "tokenizer.json").is_file():
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise NlpsslError(f"{where}: no tokenizer.json in {str(folder)!r} (got files {found}). {fix}{how}")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer folder written by `train_tokenizer` (or any stock HF tokenizer folder).

    Raises:
        NlpsslError: If the folder does not exist or holds no tokenizer files.
    """
    folder = Path(path)
    check_tokenizer_folder(folder, "load_tokenizer", "Pass the out_dir given to train_tokenizer or save_pretrained")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:  # noqa: BLE001 - a damaged file ends in json's, tokenizers' or transformers' own error
        files = ", ".join(sorted(p.name for p in folder.iterdir() if p.suffix == ".json"))
        raise NlpsslError(
            f"load_tokenizer: the tokenizer in {str(folder)!r} cannot be read (got {type(err).__name__}: "
            f"{first_line(err)}; its files: {files}). A file there is damaged or cut "
            "short (a copy or download that did not finish): copy or save the tokenizer again, or train one with "
            "`nlpssl tokenizer train RECIPE --out DIR`."
        ) from err


def set_template(tokenizer: PreTrainedTokenizerFast, style: TemplateStyle) -> None:
    """Set which special tokens `tokenizer(text)` adds, in place; persists through save_pretrained.

    - "mlm": `[CLS] A [SEP]`, pairs `[CLS] A [SEP] B [SEP]` (BERT/RoBERTa, fill-mask pipeline).
    - "causal": nothing added (GPT-2/Llama; the data pipeline adds [BOS]/[EOS] per document).
    - "t5": `A [EOS]`, pairs `A [EOS] B [EOS]` (T5 inputs and targets end with eos).
    """
    from tokenizers import processors

    # The tokenizer's own special tokens and ids: nlpssl's sit at fixed ids (CLS_ID, ...), a reused
    # one's (tokenizer.path, a SimCSE encoder's) may not ([CLS] = 101 in BERT's vocabulary).
    cls, sep, eos = tokenizer.cls_token, tokenizer.sep_token, tokenizer.eos_token
    match style:
        case "mlm":
            template = processors.TemplateProcessing(
                single=f"{cls} $A {sep}",
                pair=f"{cls} $A {sep} $B:1 {sep}:1",
                special_tokens=[(cls, tokenizer.cls_token_id), (sep, tokenizer.sep_token_id)],
            )
        case "causal":
            template = None
        case "t5":
            template = processors.TemplateProcessing(
                single=f"$A {eos}",
                pair=f"$A {eos} $B:1 {eos}:1",
                special_tokens=[(eos, tokenizer.eos_token_id)],
            )
        case _:
            raise NlpsslError(
                f"set_template: unknown style (got {style!r}). Use one of 'mlm', 'causal', 't5'."
            )
    tokenizer.backend_tokenizer.post_processor = _with_offset_trimming(tokenizer, template)


def _with_offset_trimming(tokenizer: PreTrainedTokenizerFast, template):
    """Prepend byte-level offset trimming for BPE, so offsets of 'Ġcat' cover 'cat', not ' cat'.

    The processor adds no tokens, so "no template" stays raw ids. It also means the backend
    post-processor is never None, which matters: transformers v5 replaces a None post-processor
    with its own bos/eos template when it loads the folder.
    """
    from tokenizers import pre_tokenizers, processors

    parts = []
    if isinstance(tokenizer.backend_tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel):
        parts.append(processors.ByteLevel(trim_offsets=True, add_prefix_space=False))
    if template is not None:
        parts.append(template)
    if not parts:
        # An empty template is the explicit "add nothing" processor.
        return processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])
    return parts[0] if len(parts) == 1 else processors.Sequence(parts)


def _check_settings(
    algorithm: str, vocab_size: int, min_frequency: int, num_sentinels: int, model_max_length: int
) -> None:
    """Reject bad settings before any text is read."""
    if algorithm not in get_args(Algorithm):
        raise NlpsslError(
            f"train_tokenizer: unknown algorithm (got {algorithm!r}). "
            f"Use one of {', '.join(repr(a) for a in get_args(Algorithm))}."
        )
    for name, value, low in (
        ("num_sentinels", num_sentinels, 0),
        ("min_frequency", min_frequency, 0),
        ("model_max_length", model_max_length, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise NlpsslError(
                f"train_tokenizer: {name} must be an integer >= {low} (got {value!r}). "
                f"Set {name} to a whole number >= {low}."
            )
    if isinstance(vocab_size, int) and vocab_size > MAX_VOCAB_SIZE:
        raise NlpsslError(
            f"train_tokenizer: vocab_size is larger than any tokenizer needs (got {vocab_size:,}, at most "
            f"{MAX_VOCAB_SIZE:,}; the largest in use hold about 250,000). Use e.g. 8192 to 65536; a corpus "
            "with fewer pieces gives a smaller vocabulary anyway."
        )
    minimum = min_vocab_size(algorithm, num_sentinels)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < minimum:
        raise NlpsslError(
            f"train_tokenizer: vocab_size is smaller than the {len(SPECIAL_TOKENS)} special tokens, "
            f"{num_sentinels} sentinels and the {algorithm} alphabet need (got {vocab_size!r}, "
            f"need at least {minimum}). Raise vocab_size (8192 or more is typical) or lower "
            "num_sentinels."
        )


def min_vocab_size(algorithm: str, num_sentinels: int) -> int:
    """Smallest vocab that fits the reserved ids plus an alphabet known before training."""
    reserved = len(SPECIAL_TOKENS) + num_sentinels
    # Only the byte-level alphabet is known up front; the others are checked after training.
    return reserved + (BYTE_ALPHABET_SIZE if algorithm == "bpe" else 1)


def _checked_texts(texts: Iterable[str]) -> Iterator[str]:
    """Yield the texts, failing early on a bare string, non-strings, or no text at all."""
    if isinstance(texts, (str, bytes)):
        raise NlpsslError(
            f"train_tokenizer: texts must be an iterable of strings, not one string "
            f"(got {type(texts).__name__} {texts[:40]!r}). Wrap it in a list: [text]."
        )
    iterator = iter(texts)
    # Peek for the first non-blank text so an empty corpus fails before the trainer starts.
    for first in iterator:
        _check_text(first)
        if first.strip():
            return _typed(itertools.chain([first], iterator))
    raise NlpsslError(
        "train_tokenizer: the texts hold no text (got an empty iterable or only blank strings). "
        "Check the data source, e.g. the text column or file glob."
    )


# The first this many characters of the training text are encoded again after training, and a share
# of [UNK] above UNK_WARN_SHARE is said: what becomes [UNK] is lost to the model.
_SAMPLE_CHARS = 1 << 20
UNK_WARN_SHARE = 0.01


def _sampled(texts: Iterator[str], sample: list[str]) -> Iterator[str]:
    size = 0
    for text in texts:
        if size < _SAMPLE_CHARS:
            sample.append(text[: _SAMPLE_CHARS - size])
            size += len(sample[-1])
        yield text


@contextmanager
def special_tokens_as_text(backend: Tokenizer):
    """Within the block, ``backend`` reads "[MASK]", "</s>", "<extra_id_0>" in text as those characters, not
    as its special tokens (corpus text is text); the stock behaviour comes back after it."""
    before = backend.encode_special_tokens
    backend.encode_special_tokens = True
    try:
        yield backend
    finally:
        backend.encode_special_tokens = before


def _warn_unknown(backend: Tokenizer, algorithm: str, sample: list[str]) -> None:
    """Warn when the trained vocabulary turns much of the text into [UNK] (never for byte-level BPE)."""
    if algorithm == "bpe" or not sample:
        return
    with special_tokens_as_text(backend):  # as the packer reads text: a literal "[UNK]" is not an unknown word
        encodings = backend.encode_batch(sample, add_special_tokens=False)
    ids = [i for encoding in encodings for i in encoding.ids]
    unknown = ids.count(UNK_ID)
    share = unknown / max(len(ids), 1)
    if share <= UNK_WARN_SHARE:
        return
    longest = getattr(backend.model, "max_input_chars_per_word", None)
    # WordPiece gives a word longer than that one [UNK], whatever its characters.
    long_words = longest and sum(b - a > longest for e in encodings for i, (a, b) in zip(e.ids, e.offsets) if i == UNK_ID)
    if long_words and 2 * long_words >= unknown:
        why, fix = (f"{long_words:,} of the {unknown:,} are 'words' longer than {longest} characters, such as URLs, "
                    "hashes or text without spaces, each of which WordPiece turns into one [UNK]",
                    "clean such strings out of the text, or use tokenizer.algorithm=bpe (byte-level, never [UNK])")
    elif algorithm == "wordpiece":
        why, fix = (f"WordPiece keeps at most {WORDPIECE_LIMIT_ALPHABET} distinct characters; Chinese, Japanese or "
                    "many scripts have more", "use tokenizer.algorithm=bpe (byte-level, never [UNK])")
    else:
        why, fix = ("Unigram keeps the characters its vocabulary has room for",
                    "raise tokenizer.vocab_size, or use tokenizer.algorithm=bpe (byte-level, never [UNK])")
    warnings.warn(
        f"train_tokenizer: {share:.1%} of the tokens of the training text's first {sum(map(len, sample)):,} "
        f"characters are [UNK] ({why}). Text that becomes [UNK] is lost to the model: {fix}.",
        stacklevel=3,
    )


def _typed(iterator: Iterator[str]) -> Iterator[str]:
    """Check every item lazily, so a bad record deep in a stream still gets a clear error."""
    for text in iterator:
        _check_text(text)
        yield from text_pieces(text)  # the trainer counts words: pieces cut between words count alike


# The Rust tokenizer holds ~100 bytes per character of a text it pre-tokenizes or encodes (a 20 MB
# one-line file peaked at 2.7 GB), so longer texts go to it in pieces of this many characters.
PIECE_CHARS = 1 << 20


_CUT = re.compile(r"(?<=\S) +(?=\S)")  # a run of plain spaces between two non-space characters


def text_pieces(text: str, size: int | None = None) -> Iterator[str]:
    """``text`` in consecutive pieces of at most ``size`` (default :data:`PIECE_CHARS`) characters
    that tokenize as the whole does.

    Each cut falls before a run of plain spaces that has a non-space character on either side
    (``"a  b" -> "a", "  b"``): byte-level BPE, WordPiece's and Unigram's Metaspace pre-tokenizers all
    start the next piece's words as the whole text would (a piece starting with a line break or a
    tab would get an extra "▁" from Metaspace, and one cut inside "\\n  " would split byte-level BPE's
    white-space token). A stretch of ``size`` characters without such a run (a base64 blob, unspaced
    CJK) is cut where it reaches ``size``, and only there can the tokens differ from the whole's.
    """
    size = PIECE_CHARS if size is None else size
    start = 0
    while len(text) - start > size:
        end = start + size
        cut = None
        for match in _CUT.finditer(text, start + 1, end):
            cut = match.start()
        if cut is None:
            cut = end
        yield text[start:cut]
        start = cut
    yield text[start:]


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise NlpsslError(
            f"train_tokenizer: every text must be a str (got {type(text).__name__} "
            f"{str(text)[:40]!r}). Pass the text column, not whole records."
        )


def _build_backend(
    algorithm: str,
    vocab_size: int,
    min_frequency: int,
    num_sentinels: int,
    lowercase: bool,
    show_progress: bool,
) -> tuple[Tokenizer, object]:
    """An untrained `tokenizers.Tokenizer` plus its trainer, for one algorithm."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = _special_added_tokens(num_sentinels)
    common = {"vocab_size": vocab_size, "show_progress": show_progress, "special_tokens": specials}
    match algorithm:
        case "bpe":
            backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
            backend.normalizer = normalizers.Lowercase() if lowercase else None
            # GPT-2/RoBERTa convention: no prefix space, so decode(encode(x)) == x exactly.
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            backend.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                **common,
                min_frequency=min_frequency,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            )
        case "wordpiece":
            backend = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN))
            # strip_accents=False: its default follows lowercase (BERT-uncased), which made 'й' 'и' and
            # 'côte' 'cote'; tokenizer.lowercase lowercases, as it does for bpe and unigram. NFC first, so
            # an 'é' written as 'e' + U+0301 (text from macOS, some PDFs) is the same piece as 'é'.
            backend.normalizer = normalizers.Sequence(
                [normalizers.NFC(), normalizers.BertNormalizer(lowercase=lowercase, strip_accents=False)]
            )
            backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            backend.decoder = decoders.WordPiece(prefix="##")
            trainer = trainers.WordPieceTrainer(
                **common, min_frequency=min_frequency, limit_alphabet=WORDPIECE_LIMIT_ALPHABET
            )
        case "unigram":
            backend = Tokenizer(models.Unigram())
            steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
            backend.normalizer = normalizers.Sequence(steps)
            # "first" (as T5/Llama): text after a special token gets no extra "▁", so "[MASK]."
            # encodes "." exactly as it was seen after a word in training.
            backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
            backend.decoder = decoders.Metaspace(prepend_scheme="first")
            trainer = trainers.UnigramTrainer(**common, unk_token=UNK_TOKEN)
    return backend, trainer


def _special_added_tokens(num_sentinels: int) -> list:
    """Special tokens in id order, as `AddedToken`s the trainer registers at training time.

    `[MASK]` and the sentinels get `lstrip=True` so "on the [MASK]." and "The cat <extra_id_0> on"
    encode without a stray space token before them (byte-level BPE would otherwise emit 'Ġ', Unigram
    '▁'): the collators replace whole tokens ('Ġsat'), so training never shows one there. This only
    works when given to the trainer; wrapping the trained tokenizer with another AddedToken changes
    nothing.
    """
    from tokenizers import AddedToken

    tokens = [
        AddedToken(t, lstrip=(t == MASK_TOKEN), special=True, normalized=False)
        for t in SPECIAL_TOKENS
    ]
    tokens += [
        AddedToken(sentinel_token(i), lstrip=True, special=True, normalized=False) for i in range(num_sentinels)
    ]
    return tokens


def _check_trained(backend: Tokenizer, algorithm: str, vocab_size: int, num_sentinels: int) -> None:
    """Verify the fixed ids and that the alphabet fitted into vocab_size."""
    expected = list(SPECIAL_TOKENS) + [sentinel_token(i) for i in range(num_sentinels)]
    actual = [backend.id_to_token(i) for i in range(len(expected))]
    # The trainers place special tokens first, in order; if a tokenizers release ever changes that,
    # fail here rather than train models against shifted ids.
    assert actual == expected, f"special tokens not at fixed ids: {actual[:10]}"
    trained_size = backend.get_vocab_size(with_added_tokens=True)
    if trained_size > vocab_size:
        raise NlpsslError(
            f"train_tokenizer: vocab_size is smaller than the special tokens, sentinels and the "
            f"{algorithm} alphabet of this corpus need (got {vocab_size}, the trainer needed "
            f"{trained_size}). Raise vocab_size to at least {trained_size}."
        )


def _wrap(backend: Tokenizer, num_sentinels: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """Wrap the backend for transformers, naming every special token (else they stay unset)."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        cls_token=CLS_TOKEN,
        sep_token=SEP_TOKEN,
        mask_token=AddedToken(MASK_TOKEN, lstrip=True, special=True, normalized=False),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        extra_special_tokens=[sentinel_token(i) for i in range(num_sentinels)],
        model_max_length=model_max_length,
    )
    set_template(tokenizer, "causal")  # raw ids; see _with_offset_trimming for why not None
    return tokenizer
