"""Text sources: the built-in corpus, local files, or a Hugging Face Hub dataset, as plain strings.

`iter_texts` streams strings (for tokenizer training on corpora larger than memory); `load_texts`
collects the same strings into a one-column `datasets.Dataset` ("text") for tokenization with
`Dataset.map`. Both drop blank texts and fail with an `NlpsslError` that names the file and the fix.

Source strings:
    "builtin"            the generated stories of `nlpssl.corpus` (works offline)
    "hub:NAME"           `datasets.load_dataset(NAME, hub_config, split=split)`
    "data/books.txt"     one file; "data/*.jsonl" a glob; "data/" every supported file inside

Files may be compressed: ``reviews.tsv.xz``, ``books.txt.gz``, ``dump.jsonl.zst`` (and ``.bz2``) are
read as the format before the compression suffix, streamed without unpacking to disk.
``clean="html"`` turns markup left in scraped text (``<br />``, ``&amp;``) into plain text.

The readers of each format (`delimited_rows`, `jsonl_records`, `open_parquet`) also read labelled
data for fine-tuning (`nlpssl.labelled`), so both read a file alike and fail alike.
"""

from __future__ import annotations

import bz2
import collections
import csv
import difflib
import glob as globlib
import gzip
import html
import io
import itertools
import json
import lzma
import re
import shlex
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from nlpssl.errors import NlpsslError, first_line

if TYPE_CHECKING:
    import datasets

TxtUnit = Literal["line", "paragraph", "file"]
Clean = Literal["none", "html"]
SUPPORTED_EXTENSIONS = (".txt", ".jsonl", ".csv", ".tsv", ".parquet")
# Compression suffixes read transparently (the format is the suffix before): stdlib codecs, and
# zstandard (a dependency: Python 3.11 has no zstd module); each with its command-line tool, for advice.
COMPRESSIONS = {".gz": "gzip", ".xz": "xz", ".bz2": "bzip2", ".zst": "zstd"}
HUB_PREFIX = "hub:"
# Texts go to Arrow in chunks of this many, so load_texts never holds a Python list of everything.
_ARROW_CHUNK = 50_000


def iter_texts(
    source: str | Path,
    *,
    text_column: str = "text",
    hub_config: str | None = None,
    split: str = "train",
    txt_unit: TxtUnit = "paragraph",
    max_texts: int | None = None,
    builtin_stories: int | None = None,
    seed: int = 0,
    unwrap: bool = False,
    clean: Clean = "none",
) -> Iterator[str]:
    """Yield the non-blank texts of a source one by one, reading lazily.

    Args:
        source: "builtin", "hub:NAME", a file, a glob, or a folder (see the module docstring).
        text_column: Column or JSON key holding the text (.jsonl, .csv, .tsv, .parquet, Hub).
        hub_config: Configuration name of a Hub dataset (e.g. "wikitext-2-raw-v1").
        split: Split of a Hub dataset.
        txt_unit: What one text of a .txt file is: each non-empty "line", each blank-line-separated
            "paragraph" (its line breaks kept), or the whole "file".
        max_texts: Stop after this many texts (None: all).
        builtin_stories: Number of built-in stories (None: the corpus default).
        seed: Seed of the built-in corpus.
        unwrap: Join the lines of a paragraph with spaces (hard-wrapped prose such as Gutenberg
            books); by default a paragraph keeps its own line breaks (verse, dialogue, code).
        clean: "html" replaces line-break tags (``<br />``, ``<p>``) with newlines, drops other
            tags and decodes entities (``&amp;`` -> ``&``); "none" leaves the text as it is.

    Yields:
        Texts, never empty or whitespace-only.

    Raises:
        NlpsslError: Bad arguments, missing files, unsupported formats, wrong column, bytes that
            are not UTF-8, malformed JSON lines, a Hub dataset that cannot be reached, or a source
            with no text at all (raised when the stream ends).
    """
    _check_args(txt_unit, max_texts, clean)
    source = str(source)
    texts = _raw_texts(source, text_column, hub_config, split, txt_unit, builtin_stories, seed, unwrap)
    nonblank = _cleaned(texts, clean)
    count = 0
    for text in itertools.islice(nonblank, max_texts):
        count += 1
        yield text
    if count == 0:
        raise NlpsslError(
            f"{source}: the source holds no text (got 0 non-empty texts). "
            "Check that the files are not empty and that data.text_column names the text."
        )


def _cleaned(texts: Iterator[str], clean: str) -> Iterator[str]:
    if clean == "html":
        texts = map(clean_html, texts)
    return (text for text in texts if text.strip())


def text_units(source: str | Path) -> list[str]:
    """The parts a source is read in, in order: its files (sorted), or the source itself.

    Streaming hands whole units to ranks when there are enough of them, and a resumed stream
    reopens the unit it was in (see `nlpssl.stream`). The built-in corpus and a Hub dataset are
    one unit each.
    """
    source = str(source)
    if source == "builtin" or source.startswith(HUB_PREFIX):
        return [source]
    return [str(path) for path in resolve_files(source)]


def unit_texts(
    unit: str,
    *,
    text_column: str = "text",
    hub_config: str | None = None,
    split: str = "train",
    txt_unit: TxtUnit = "paragraph",
    builtin_stories: int | None = None,
    seed: int = 0,
    unwrap: bool = False,
    clean: Clean = "none",
) -> Iterator[str]:
    """The non-blank texts of one unit of `text_units`, read lazily, as `iter_texts` reads them.

    Unlike `iter_texts`, an empty unit is no error (one empty file among many holds nothing).
    """
    _check_args(txt_unit, None, clean)
    if unit == "builtin" or unit.startswith(HUB_PREFIX):
        texts = _raw_texts(unit, text_column, hub_config, split, txt_unit, builtin_stories, seed, unwrap)
    else:
        texts = _iter_files([Path(unit)], text_column, txt_unit, unwrap)
    return _cleaned(texts, clean)


def load_texts(
    source: str | Path,
    *,
    text_column: str = "text",
    hub_config: str | None = None,
    split: str = "train",
    txt_unit: TxtUnit = "paragraph",
    max_texts: int | None = None,
    builtin_stories: int | None = None,
    seed: int = 0,
    unwrap: bool = False,
    clean: Clean = "none",
) -> datasets.Dataset:
    """Load a source into an in-memory `datasets.Dataset` with one column, "text".

    Arguments and errors are those of `iter_texts`. The texts are held as Arrow strings (about the
    size of the UTF-8 text); for a corpus larger than memory, stream with `iter_texts` instead.
    """
    _check_args(txt_unit, max_texts, clean)
    source = str(source)
    if source.startswith(HUB_PREFIX):
        # The Hub path stays a memory-mapped Arrow dataset instead of being copied into memory.
        return _load_hub(source, text_column, hub_config, split, max_texts, clean)
    stream = iter_texts(
        source,
        text_column=text_column,
        txt_unit=txt_unit,
        max_texts=max_texts,
        builtin_stories=builtin_stories,
        seed=seed,
        unwrap=unwrap,
        clean=clean,
    )
    return _to_dataset(stream)


def _check_args(txt_unit: str, max_texts: int | None, clean: str = "none") -> None:
    if clean not in get_args(Clean):
        raise NlpsslError(
            f"load_texts: unknown clean (got {clean!r}). "
            f"Use one of {', '.join(repr(c) for c in get_args(Clean))}."
        )
    if txt_unit not in get_args(TxtUnit):
        raise NlpsslError(
            f"load_texts: unknown txt_unit (got {txt_unit!r}). "
            f"Use one of {', '.join(repr(u) for u in get_args(TxtUnit))}."
        )
    if max_texts is not None and (
        isinstance(max_texts, bool) or not isinstance(max_texts, int) or max_texts < 1
    ):
        raise NlpsslError(
            f"load_texts: max_texts must be a positive integer or None (got {max_texts!r}). "
            "Set it to the number of texts to keep, or leave it unset for all."
        )


_BREAK_TAG = re.compile(r"<\s*(?:br|/?p|/?div|/?li)\b[^<>]*>", re.IGNORECASE)
_OTHER_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")
_SPACES = re.compile(r"[ \t]+")


def clean_html(text: str) -> str:
    """Plain text from text with HTML markup left in (IMDB reviews' ``<br /><br />``).

    Line-break tags become newlines, other tags are dropped, entities are decoded, and runs of
    spaces collapse to one. A ``<`` that does not open a tag (``a < b``, ``<3``) is kept.
    """
    text = _BREAK_TAG.sub("\n", text)
    text = html.unescape(_OTHER_TAG.sub("", text))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    # At most one blank line in a row: "<br /><br />" is a paragraph break, not two.
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _to_dataset(texts: Iterator[str]) -> datasets.Dataset:
    """Collect strings into a one-column Dataset, chunk by chunk."""
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    chunks = []
    while chunk := list(itertools.islice(texts, _ARROW_CHUNK)):
        chunks.append(pa.array(chunk, type=pa.string()))
    table = pa.table({"text": pa.chunked_array(chunks, type=pa.string())})
    return datasets.Dataset(InMemoryTable(table))


def _raw_texts(
    source: str,
    text_column: str,
    hub_config: str | None,
    split: str,
    txt_unit: str,
    builtin_stories: int | None,
    seed: int,
    unwrap: bool = False,
) -> Iterator[str]:
    """Texts of any source, blanks included (the caller drops them)."""
    if source == "builtin":
        from nlpssl.corpus import generate_stories

        if builtin_stories is None:
            return generate_stories(seed=seed)
        return generate_stories(builtin_stories, seed)
    if source.startswith(HUB_PREFIX):
        return _iter_hub(source, text_column, hub_config, split)
    return _iter_files(resolve_files(source), text_column, txt_unit, unwrap)


def format_suffix(path: Path) -> str:
    """The data format of a file name: ``.tsv`` for ``reviews.tsv.xz``, ``.txt`` for ``a.txt``."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSIONS:
        return suffixes[-2]
    return path.suffix.lower()


def open_binary(path: Path) -> io.BufferedIOBase:
    """``path`` opened for reading bytes, decompressing .gz/.xz/.bz2/.zst on the fly."""
    match path.suffix.lower():
        case ".gz":
            return gzip.open(path, "rb")
        case ".xz":
            return lzma.open(path, "rb")
        case ".bz2":
            return bz2.open(path, "rb")
        case ".zst":
            try:
                import zstandard
            except ImportError as err:
                raise NlpsslError(
                    f"{path}: reading .zst files needs the zstandard package (not installed). "
                    "Install it with `pip install zstandard`, or decompress with `zstd -d`."
                ) from err
            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True))
    return path.open("rb")


# What each codec raises on a damaged or truncated file (EOFError: cut short; OSError: gzip's
# BadGzipFile; zstd's ZstdError derives from Exception, caught by name below).
_CODEC_ERRORS = (EOFError, OSError, lzma.LZMAError)


def _iter_files(files: list[Path], text_column: str, txt_unit: str, unwrap: bool = False) -> Iterator[str]:
    for path in files:
        match format_suffix(path):
            case ".txt":
                yield from _read_txt(path, txt_unit, unwrap)
            case ".jsonl":
                yield from _read_jsonl(path, text_column)
            case ".csv" | ".tsv":
                yield from _read_delimited(path, text_column)
            case ".parquet":
                yield from _read_parquet(path, text_column)


# ----------------------------------------------------------------------------- resolving paths


def resolve_files(source: str) -> list[Path]:
    """The data files a local source names, sorted; a single file, a glob, or a folder.

    Raises:
        NlpsslError: Nothing found, or a named file with an unsupported extension.
    """
    if globlib.has_magic(source):
        matches = sorted(Path(p) for p in globlib.glob(source, recursive=True) if Path(p).is_file())
        if not matches:
            raise NlpsslError(
                f"{source}: no files match this glob (looked for {str(Path(source).absolute())!r}). "
                "Check the pattern and the current directory, or pass a folder."
            )
        return _supported(matches, source, warn=True)
    path = Path(source)
    if path.is_dir():
        files = sorted(_folder_files(path))
        if not files:  # else "unsupported file type (got [])": nothing there is the problem, not a type
            raise NlpsslError(
                f"{source}: the folder holds no files to read (looked in {str(path.absolute())!r}; hidden files and "
                "folders, editor backups and nlpssl's run and export folders are skipped). Put the text files there, "
                "or point the setting at the folder that holds them."
            )
        return _supported(files, source, warn=True)
    if path.is_file():
        return _supported([path], source, warn=False)
    hint = f" For a Hub dataset write 'hub:{source}'." if source.count("/") == 1 else ""
    raise NlpsslError(
        f"{source}: file or folder not found (looked for {str(path.absolute())!r}). "
        f"Check the path, or use 'builtin' for the built-in corpus.{hint}"
    )


# Files no one means as text: editor backups (foo.txt~, #foo.txt#) would read a file's text twice, and
# Windows' and macOS's folder files are not text. Skipped as hidden files are, without a warning.
_JUNK_NAMES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"}


def _junk(name: str) -> bool:
    return name.endswith("~") or (name.startswith("#") and name.endswith("#")) or name.lower() in _JUNK_NAMES


def _nlpssl_output(folder: Path, names: list[str]) -> bool:
    """A run folder (its lock file stays) or an export (recipe.yaml beside config.json) inside a data folder:
    a run whose training.output_dir lies in its own data.source must not read its outputs as text."""
    return ".nlpssl.lock" in names or ("recipe.yaml" in names and "config.json" in names)


def _folder_files(root: Path) -> Iterator[Path]:
    """The files under ``root``, symlinked folders followed (once each: a link loop ends), hidden files,
    junk files and nlpssl's own run and export folders left out."""
    import os

    seen = {os.path.realpath(root)}
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        keep = []
        for d in sorted(dirs):
            real = os.path.realpath(here / d)
            if d.startswith(".") or real in seen:
                continue
            seen.add(real)
            try:
                names = os.listdir(here / d)
            except OSError:
                names = []
            if not _nlpssl_output(here / d, names):
                keep.append(d)
        dirs[:] = keep
        for name in files:
            p = here / name
            if not name.startswith(".") and not _junk(name) and p.is_file():
                yield p


def readable(path: Path, formats: tuple[str, ...] = SUPPORTED_EXTENSIONS) -> bool:
    """One of ``formats`` by name, compressed or not (Parquet compresses itself: no .parquet.gz)."""
    if path.suffix.lower() in COMPRESSIONS:
        return format_suffix(path) in formats and format_suffix(path) != ".parquet"
    return path.suffix.lower() in formats


_WARNED: set[tuple[str, tuple[Path, ...]]] = set()


def _supported(files: list[Path], source: str, warn: bool) -> list[Path]:
    """Keep files with a supported extension; a lone file or an all-unsupported set is an error."""
    kept = [p for p in files if readable(p)]
    skipped = [p for p in files if p not in kept]
    if not kept:
        names = sorted({p.suffix or p.name for p in skipped})
        raise NlpsslError(
            f"{source}: unsupported file type (got {names}). "
            f"Use {', '.join(SUPPORTED_EXTENSIONS)} files (all but .parquet may also be compressed as "
            f"{', '.join(COMPRESSIONS)}), or convert the data to one of them."
        )
    if skipped and warn and (source, tuple(skipped)) not in _WARNED:
        _WARNED.add((source, tuple(skipped)))  # once: the run lists a source's files more than once
        # Said, not silent: a data.json of JSON lines or a notes.text would otherwise just be missing.
        kinds = collections.Counter(p.suffix.lower() or "no extension" for p in skipped)
        summary = ", ".join(f"{kind}: {count}" for kind, count in sorted(kinds.items()))
        warnings.warn(
            f"{source}: skipping {len(skipped)} file{'s' if len(skipped) != 1 else ''} of unsupported types "
            f"({summary}; e.g. {str(skipped[0])!r}). Only {', '.join(SUPPORTED_EXTENSIONS)} files, compressed "
            "or not, are read: rename or convert any that hold text (JSON lines named .json: rename to .jsonl).",
            stacklevel=4,
        )
    return kept


# ----------------------------------------------------------------------------- file formats


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line with its newline), decoding strictly as UTF-8 and streaming.

    Raises:
        NlpsslError: With the byte offset of the first invalid byte.
    """
    offset, lineno = 0, 0
    with open_binary(path) as handle:
        lines = iter(handle)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except Exception as err:  # noqa: BLE001 - codec errors differ per compression
                if not isinstance(err, _CODEC_ERRORS) and type(err).__name__ != "ZstdError":
                    raise
                raise NlpsslError(
                    f"{path}: the {path.suffix} data is damaged or cut short after line {lineno} "
                    f"(got {type(err).__name__}: {err}). Download or compress the file again, or "
                    "check it with the codec's own test (e.g. `xz -t`, `gzip -t`)."
                ) from err
            lineno += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _encoding_error(
                    path, offset + err.start, raw[err.start : err.start + 4]
                ) from err
            if "\x00" in line and len(raw) >= 8 and 4 * raw.count(b"\x00") >= len(raw):
                # Valid UTF-8, but a NUL byte in every other one is UTF-16 without a byte-order mark, which
                # would be trained on as letters and NUL characters (a stray NUL is left alone).
                at = raw.index(b"\x00")
                raise _encoding_error(path, offset + at, raw[at : at + 4], nul=True)
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 BOM (Gutenberg files have one)
            offset += len(raw)
            yield lineno, line


# Bytes that cp1252 leaves undefined (iconv stops on them): such a file is ISO-8859-1.
_CP1252_UNDEFINED = b"\x81\x8d\x8f\x90\x9d"


def _encoding_error(path: Path, offset: int, bad: bytes, nul: bool = False) -> NlpsslError:
    # The likely encoding: UTF-16 by its byte-order mark (Windows "Unicode"), else Windows-1252,
    # which reads Latin-1's letters alike and also its own quotes and dashes in 0x80-0x9F, where
    # `-f latin1` would turn “ and — into invisible control characters. A NUL byte (``nul``) in valid
    # UTF-8 is UTF-16 without a byte-order mark: ASCII's zero byte follows each letter (LE) or precedes it.
    if nul:
        encoding = "utf-16le" if offset % 2 else "utf-16be"
    elif offset == 0 and bad[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encoding = "utf-16"
    elif bad[:1] and bad[:1] in _CP1252_UNDEFINED:
        encoding = "latin1"
    else:
        encoding = "cp1252"
    # The copy keeps the format's suffixes (a .csv stays a .csv): books.txt.gz -> books.utf8.txt.gz.
    suffixes = "".join(path.suffixes[-2:] if path.suffix.lower() in COMPRESSIONS else path.suffixes[-1:])
    name, copy = shlex.quote(path.name), shlex.quote(f"{path.name[: len(path.name) - len(suffixes)]}.utf8{suffixes}")
    tool = COMPRESSIONS.get(path.suffix.lower())  # decompress to stdout
    if tool:
        command = f"{tool} -dc {name} | iconv -f {encoding} -t utf-8 | {tool} > {copy}"
    else:
        command = f"iconv -f {encoding} -t utf-8 {name} > {copy}"
    what = "NUL bytes between the letters, as UTF-16 has them," if nul else "not valid UTF-8"
    return NlpsslError(
        f"{path}: {what} at byte offset {offset} (got bytes {bad!r}). "
        f"Re-encode the file to UTF-8, e.g. `{command}` ({encoding} is a guess from those bytes; check the "
        "copy's accents and quotes), then read the copy instead: in a folder source, move the original out of it."
    )


def _read_txt(path: Path, txt_unit: str, unwrap: bool = False) -> Iterator[str]:
    # Trailing whitespace goes; leading whitespace (indentation of verse and code) stays.
    lines = (line.rstrip() for _, line in _decoded_lines(path))
    match txt_unit:
        case "line":
            yield from lines
        case "paragraph":
            # groupby on "is blank" yields alternating runs of text lines and blank lines.
            for is_text, run in itertools.groupby(lines, key=lambda line: bool(line.strip())):
                if is_text:
                    yield " ".join(line.strip() for line in run) if unwrap else "\n".join(run)
        case "file":
            # Windows line ends become "\n", as the other units' rstrip makes them: a "\r" left in
            # would be learned as a token and generated.
            yield "".join(_lf(line) for _, line in _decoded_lines(path)).strip()


def _lf(line: str) -> str:
    return line[:-2] + "\n" if line.endswith("\r\n") else line


def jsonl_records(path: Path, example: str = '{"text": "..."}') -> Iterator[tuple[str, dict]]:
    """(``path:line``, object) for each non-blank line of a .jsonl file, decoded strictly as UTF-8.

    Raises:
        NlpsslError: A line that is not JSON or not an object (``example`` shows the fix), or bytes
            that are not UTF-8.
    """
    for lineno, line in _decoded_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise NlpsslError(
                f"{path}:{lineno}: line is not valid JSON ({err.msg}; got {line.strip()[:60]!r}). "
                "Fix or delete that line: each line of a .jsonl file must be one JSON object."
            ) from err
        if not isinstance(record, dict):
            raise NlpsslError(
                f"{path}:{lineno}: line is not a JSON object (got {type(record).__name__}). "
                f"Write one object per line, e.g. {example}."
            )
        yield f"{path}:{lineno}", record


def _read_jsonl(path: Path, text_column: str) -> Iterator[str]:
    # A record without the key, once earlier records of the file had it, is a record without text
    # (as a null is), not a wrong data.text_column: skipped and counted, not the end of the run.
    seen, missing, first, whole = False, 0, None, False
    try:
        for where, record in jsonl_records(path, f'{{"{text_column}": "..."}}'):
            if text_column not in record:
                if not seen:
                    raise _column_error(where, text_column, list(record))
                missing, first = missing + 1, first or (where, sorted(record)[:10])
                continue
            seen = True
            yield _as_text(record[text_column], where, text_column)
        whole = True
    finally:  # also when a reader stops early (a tokenizer sample, max_texts): what it read is said
        if missing:
            warnings.warn(
                f"{path}: skipped {missing} record{'s' if missing != 1 else ''} without a {text_column!r} key "
                f"{'' if whole else 'in the part read '}(first at {first[0]}, got keys {first[1]}). If they hold "
                "text under another key, add the file again as a data.mix entry with that text_column.",
                stacklevel=2,
            )


def _read_delimited(path: Path, text_column: str) -> Iterator[str]:
    header, rows = delimited_rows(path)
    if not header:
        return
    if text_column not in header:
        raise _column_error(str(path), text_column, header)
    index = header.index(text_column)
    for _, row in rows:
        yield row[index]


def delimited_rows(path: Path) -> tuple[list[str], Iterator[tuple[str, list[str]]]]:
    """The header and the rows (``path:line``, fields) of a .csv or .tsv file, compressed or not.

    Blank lines are skipped. A .tsv is read with csv quoting, as csv.writer and pandas write it
    (``"a<TAB>b"`` is one field), unless a quote in it does not parse as quoting, such as GLUE's and
    IMDB's bare quotes (``"Wow" it was``): then, as those files mean it, every character is text and
    only tabs and line ends separate. Telling the two apart reads a .tsv once more beforehand.

    Raises:
        NlpsslError: A row with another number of fields than the header (naming its line), or
            bytes that are not UTF-8.
    """
    # Long documents in one cell exceed csv's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    tsv = format_suffix(path) == ".tsv"
    quoting = csv.QUOTE_NONE if tsv and not _quoted_tsv(path) else csv.QUOTE_MINIMAL
    reader = csv.reader((line for _, line in _decoded_lines(path)), delimiter="\t" if tsv else ",", quoting=quoting)
    # Blank lines before the header are skipped as the rows' are: taken as an empty header, they made the
    # file hold no column (in a folder source it was left out without a word).
    header = next((row for row in reader if row), [])
    return header, _checked_rows(reader, header, path)


def _quoted_tsv(path: Path) -> bool:
    """Whether every quote of a .tsv parses as csv quoting (strictly: a closing quote ends its field)."""
    reader = csv.reader((line for _, line in _decoded_lines(path)), delimiter="\t", strict=True)
    try:
        for _ in reader:
            pass
    except csv.Error:
        return False
    return True


def _checked_rows(reader, header: list[str], path: Path) -> Iterator[tuple[str, list[str]]]:
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise NlpsslError(
                f"{path}:{reader.line_num}: expected {len(header)} fields like the header {header} (got {len(row)}). "
                "Fix that line; in a .csv, quote fields that hold commas."
            )
        # A quoted cell's line breaks are the file's: CRLF in a file from Windows (Excel, pandas there).
        yield f"{path}:{reader.line_num}", [field.replace("\r\n", "\n") for field in row]


def open_parquet(path: Path):
    """``pyarrow.parquet.ParquetFile`` of ``path``, with an error that names the file when it is not one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except pa.ArrowException as err:
        raise NlpsslError(
            f"{path}: not a readable Parquet file (got {err}). Rewrite it, e.g. with "
            "pandas.DataFrame.to_parquet, or check that the download completed."
        ) from err


def _read_parquet(path: Path, text_column: str) -> Iterator[str]:
    import pyarrow as pa

    parquet = open_parquet(path)
    names = parquet.schema_arrow.names
    if text_column not in names:
        raise _column_error(str(path), text_column, names)
    column_type = parquet.schema_arrow.field(text_column).type
    if not _is_text_type(column_type):
        raise NlpsslError(
            f"{path}: column {text_column!r} does not hold text (got type {column_type}). "
            "Set data.text_column=NAME to a string column."
        )
    batches, rows = parquet.iter_batches(columns=[text_column], batch_size=10_000), 0
    while True:
        try:  # a damaged page is met only when read: pyarrow's error names neither the file nor the row
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as err:
            raise NlpsslError(
                f"{path}: the Parquet data is damaged after row {rows} (got {type(err).__name__}: "
                f"{first_line(err)}). Download or write the file again "
                "(e.g. with pandas.DataFrame.to_parquet)."
            ) from err
        if batch is None:
            return
        rows += batch.num_rows
        yield from (text for text in batch.column(0).to_pylist() if text is not None)


def _is_text_type(column_type) -> bool:
    """A string column, dictionary-encoded too (what pandas writes for a ``category`` column)."""
    import pyarrow as pa

    if pa.types.is_dictionary(column_type):
        column_type = column_type.value_type
    return pa.types.is_string(column_type) or pa.types.is_large_string(column_type) or pa.types.is_string_view(column_type)


def _as_text(value: object, where: str, text_column: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise NlpsslError(
            f"{where}: {text_column!r} does not hold text (got {type(value).__name__} "
            f"{str(value)[:40]!r}). Set data.text_column=NAME to a field whose values are strings."
        )
    return value


def _column_error(where: str, text_column: str, available: list[str]) -> NlpsslError:
    close = difflib.get_close_matches(text_column, available, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return NlpsslError(
        f"{where}: no column {text_column!r} (got columns {available}).{hint} "
        "Set data.text_column=NAME to the column that holds the text (in a data.mix entry: its text_column)."
    )


# ----------------------------------------------------------------------------- Hub datasets


def hub_dataset(source: str, hub_config: str | None, split: str, streaming: bool):
    """Call `datasets.load_dataset`, turning its errors into ones that say what to do."""
    import datasets

    name = source.removeprefix(HUB_PREFIX)
    if not name:
        raise NlpsslError(
            f"{source}: no dataset name after 'hub:' (got {source!r}). "
            "Write e.g. 'hub:roneneldan/TinyStories'."
        )
    try:
        return datasets.load_dataset(name, hub_config, split=split, streaming=streaming)
    except ConnectionError as err:
        raise NlpsslError(
            f"{source}: cannot reach the Hugging Face Hub and the dataset is not cached "
            f"(got {err}). This machine appears offline: connect and make sure HF_HUB_OFFLINE "
            "and HF_DATASETS_OFFLINE are unset or 0, or use local files or 'builtin'."
        ) from err
    except FileNotFoundError as err:  # includes datasets' DatasetNotFoundError
        raise NlpsslError(
            f"{source}: dataset not found on the Hub (got {err}). "
            "Check the name on huggingface.co/datasets, and log in for private datasets."
        ) from err
    except ValueError as err:  # unknown config or split
        raise NlpsslError(
            f"{source}: cannot load config {hub_config!r} split {split!r} (got {err}). "
            "Set hub_config and split to ones the dataset card lists."
        ) from err


def _iter_hub(source: str, text_column: str, hub_config: str | None, split: str) -> Iterator[str]:
    dataset = hub_dataset(source, hub_config, split, streaming=True)
    columns = list(dataset.column_names or [])
    if columns and text_column not in columns:
        raise _column_error(source, text_column, columns)
    for record in dataset:
        yield _as_text(record.get(text_column), source, text_column)


def _load_hub(
    source: str, text_column: str, hub_config: str | None, split: str, max_texts: int | None,
    clean: str = "none",
) -> datasets.Dataset:
    dataset = hub_dataset(source, hub_config, split, streaming=False)
    if text_column not in dataset.column_names:
        raise _column_error(source, text_column, dataset.column_names)
    feature = dataset.features[text_column]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise NlpsslError(
            f"{source}: column {text_column!r} does not hold text (got {feature}). "
            "Set data.text_column=NAME to a string column."
        )
    dataset = dataset.select_columns([text_column])
    if text_column != "text":
        dataset = dataset.rename_column(text_column, "text")
    if clean == "html":
        dataset = dataset.map(lambda batch: {"text": [clean_html(t or "") for t in batch["text"]]}, batched=True)
    dataset = dataset.filter(
        lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True
    )
    if max_texts is not None:
        dataset = dataset.select(range(min(max_texts, len(dataset))))
    if len(dataset) == 0:
        raise NlpsslError(
            f"{source}: the source holds no text (got 0 non-empty texts in split {split!r}). "
            "Check data.text_column, data.hub_config and data.split."
        )
    return dataset
