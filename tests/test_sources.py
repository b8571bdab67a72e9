"""Tests for nlpssl.sources: every local format, the built-in corpus, the Hub path, every error."""

from __future__ import annotations

import csv
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpssl import sources
from nlpssl.errors import NlpsslError
from nlpssl.sources import iter_texts, load_texts

TXT = "\ufeffFirst line of one.\nstill paragraph one.\n\n\n  Paragraph two.  \n\nThree.\n"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        # Leading whitespace (verse and code indentation) is kept; trailing whitespace goes.
        ("line", ["First line of one.", "still paragraph one.", "  Paragraph two.", "Three."]),
        # A paragraph keeps its own line breaks: verse, dialogue and code keep their shape.
        ("paragraph", ["First line of one.\nstill paragraph one.", "  Paragraph two.", "Three."]),
        ("file", ["First line of one.\nstill paragraph one.\n\n\n  Paragraph two.  \n\nThree."]),
    ],
)
def test_txt_units(tmp_path, unit, expected):
    path = tmp_path / "a.txt"
    path.write_text(TXT, encoding="utf-8")
    dataset = load_texts(str(path), txt_unit=unit)
    assert isinstance(dataset, datasets.Dataset)
    assert dataset.column_names == ["text"]
    assert dataset["text"] == expected
    assert list(iter_texts(path, txt_unit=unit)) == expected


@pytest.mark.parametrize("unit", ["line", "paragraph", "file"])
def test_windows_line_ends_read_as_unix_ones(tmp_path, unit):
    # A file saved on Windows (CRLF, BOM) gives the same texts as the same file saved on Linux:
    # no "\r" is left for the tokenizer to learn and a causal model to generate.
    unix, windows = tmp_path / "unix.txt", tmp_path / "windows.txt"
    unix.write_bytes(TXT.encode("utf-8"))
    windows.write_bytes(TXT.replace("\n", "\r\n").encode("utf-8"))
    expected = list(iter_texts(unix, txt_unit=unit))
    assert list(iter_texts(windows, txt_unit=unit)) == expected
    assert not any("\r" in text for text in expected)


def test_windows_csv_cells_keep_their_line_breaks_as_newlines(tmp_path):
    # pandas' and Excel's CSV on Windows: CRLF row ends, and CRLF inside a quoted multi-line cell.
    (tmp_path / "a.csv").write_bytes(b'\xef\xbb\xbfid,text\r\n1,"two\r\nlines"\r\n2,one\r\n')
    (tmp_path / "a.tsv").write_bytes(b'id\ttext\r\n1\t"two\r\nlines"\r\n2\tone\r\n')
    for name in ("a.csv", "a.tsv"):
        assert list(iter_texts(tmp_path / name)) == ["two\nlines", "one"], name
    # fine-tuning files are read by the same reader: their texts too
    from nlpssl.labelled import load_task_data
    from nlpssl.recipe import FinetuneSection

    (tmp_path / "l.csv").write_bytes(b'text,label\r\n"good\r\nfilm",pos\r\nbad,neg\r\n')
    data = load_task_data(FinetuneSection(source=str(tmp_path / "l.csv"), validation_fraction=0.0))
    assert sorted(data.splits["train"].texts) == ["bad", "good\nfilm"]


def test_unwrap_joins_hard_wrapped_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(TXT, encoding="utf-8")
    assert load_texts(path, unwrap=True)["text"] == ["First line of one. still paragraph one.", "Paragraph two.", "Three."]


@pytest.mark.parametrize("suffix", [".gz", ".xz", ".bz2", ".zst"])
def test_compressed_files_read_as_the_inner_format(tmp_path, suffix):
    import bz2
    import gzip
    import lzma

    import zstandard

    pack = {".gz": gzip.compress, ".xz": lzma.compress, ".bz2": bz2.compress,
            ".zst": zstandard.ZstdCompressor().compress}[suffix]
    (tmp_path / f"a.txt{suffix}").write_bytes(pack(TXT.encode()))
    (tmp_path / f"b.tsv{suffix}").write_bytes(pack("id\tbody\n1\tone review\n2\ttwo\n".encode()))
    (tmp_path / f"c.jsonl{suffix}").write_bytes(pack(b'{"body": "json one"}\n'))
    assert load_texts(tmp_path / f"a.txt{suffix}")["text"] == ["First line of one.\nstill paragraph one.",
                                                              "  Paragraph two.", "Three."]
    assert load_texts(tmp_path / f"b.tsv{suffix}", text_column="body")["text"] == ["one review", "two"]
    # A folder and a glob pick the compressed files up too.
    assert load_texts(f"{tmp_path}/*.tsv{suffix}", text_column="body")["text"] == ["one review", "two"]
    assert load_texts(tmp_path / f"c.jsonl{suffix}", text_column="body")["text"] == ["json one"]


def test_damaged_compressed_file_names_the_file(tmp_path):
    import lzma

    data = lzma.compress(("line of text\n" * 5000).encode())
    path = tmp_path / "cut.txt.xz"
    path.write_bytes(data[: len(data) // 2])  # a download cut short
    with pytest.raises(NlpsslError, match=r"cut\.txt\.xz: the \.xz data is damaged or cut short .*xz -t"):
        load_texts(path, txt_unit="line")
    (tmp_path / "x.parquet.gz").write_bytes(b"")
    with pytest.raises(NlpsslError, match="unsupported file type"):
        load_texts(tmp_path / "x.parquet.gz")


def test_clean_html_turns_markup_into_plain_text(tmp_path):
    review = "Great film.<br /><br />The cast &amp; crew <i>shine</i>. I &lt;3 it, 2 < 3.<BR>End"
    assert sources.clean_html(review) == "Great film.\n\nThe cast & crew shine. I <3 it, 2 < 3.\nEnd"
    path = tmp_path / "r.tsv"
    path.write_text(f"text\n{review}\n<br />\n", encoding="utf-8")
    # Off by default; on, a text that was only markup is dropped like any blank text.
    assert load_texts(path)["text"] == [review, "<br />"]
    assert load_texts(path, clean="html")["text"] == [sources.clean_html(review)]
    with pytest.raises(NlpsslError, match=r"unknown clean \(got 'xml'\)"):
        load_texts(path, clean="xml")


def test_jsonl_csv_tsv_parquet_with_custom_column(tmp_path):
    rows = [
        {"body": "Hello there.", "label": 1},
        {"body": "", "label": 0},
        {"body": 'Line one,\n"quoted" line two.', "label": 2},
    ]
    write_jsonl(tmp_path / "a.jsonl", rows + [{"body": None, "label": 3}])
    for name, delimiter in (("b.csv", ","), ("c.tsv", "\t")):
        with (tmp_path / name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["label", "body"], delimiter=delimiter)
            writer.writeheader()
            writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    expected = ["Hello there.", 'Line one,\n"quoted" line two.']
    for name in ("a.jsonl", "b.csv", "c.tsv", "d.parquet"):
        assert load_texts(tmp_path / name, text_column="body")["text"] == expected, name
    # A folder reads every supported file, sorted by name.
    assert load_texts(tmp_path, text_column="body")["text"] == expected * 4


def test_tsv_bare_quotes_are_text(tmp_path):
    # GLUE and IMDB write quotes unescaped: a field that opens with one is text, not csv quoting.
    path = tmp_path / "glue.tsv"
    path.write_text('sentence\tlabel\n"Wow" it was great\t1\nit said "no\t0\n', encoding="utf-8")
    assert load_texts(path, text_column="sentence")["text"] == ['"Wow" it was great', 'it said "no']


def test_folder_and_glob_skip_other_files_and_sort(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("bee", encoding="utf-8")
    (tmp_path / "a.txt").write_text("ay", encoding="utf-8")
    (tmp_path / "README.md").write_text("not data", encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.txt").write_text("hidden", encoding="utf-8")
    (tmp_path / "more.json").write_text('{"text": "jsonl named .json"}\n', encoding="utf-8")
    # A folder reads every supported file and says which it skipped (a .json of JSON lines is
    # easily missed): the kinds with their counts.
    with pytest.warns(UserWarning, match=r"skipping 2 files of unsupported types \(\.json: 1, \.md: 1; e\.g\."):
        assert load_texts(tmp_path)["text"] == ["ay", "bee"]
    assert load_texts(f"{tmp_path}/**/*.txt")["text"] == ["ay", "bee"]
    with pytest.warns(UserWarning, match=r"skipping 2 files of unsupported types .*rename to \.jsonl"):
        assert load_texts(f"{tmp_path}/*")["text"] == ["ay"]
    (tmp_path / "more.json").unlink()
    with pytest.warns(UserWarning, match=r"skipping 1 file of unsupported types \(\.md: 1;"):
        assert load_texts(tmp_path)["text"] == ["ay", "bee"]


def test_parquet_text_in_any_string_encoding(tmp_path):
    # pandas writes a `category` column dictionary-encoded; Arrow may write string_view.
    texts = ["one", None, "two", "one"]
    columns = {
        "plain": pa.array(texts, pa.string()),
        "large": pa.array(texts, pa.large_string()),
        "category": pa.array(texts, pa.string()).dictionary_encode(),
        "view": pa.array(texts, pa.string_view()),
    }
    pq.write_table(pa.table(columns), tmp_path / "a.parquet")
    for column in columns:
        assert list(iter_texts(tmp_path / "a.parquet", text_column=column)) == ["one", "two", "one"], column


def test_max_texts_stops_early(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"text {i}" for i in range(1000)), encoding="utf-8")
    assert load_texts(path, txt_unit="line", max_texts=3)["text"] == ["text 0", "text 1", "text 2"]


def test_builtin_corpus():
    dataset = load_texts("builtin", builtin_stories=5, seed=1)
    assert len(dataset) == 5 and all(text.strip() for text in dataset["text"])
    assert list(iter_texts("builtin", builtin_stories=5, seed=1)) == dataset["text"]
    assert load_texts("builtin", builtin_stories=5, seed=2)["text"] != dataset["text"]


# ----------------------------------------------------------------------------- errors


def test_missing_file_and_empty_glob(tmp_path):
    with pytest.raises(
        NlpsslError, match=r"nope\.txt: file or folder not found \(looked for .*nope"
    ):
        load_texts(str(tmp_path / "nope.txt"))
    with pytest.raises(NlpsslError, match=r"\*\.jsonl: no files match this glob \(looked for"):
        load_texts(f"{tmp_path}/*.jsonl")
    with pytest.raises(NlpsslError, match=r"For a Hub dataset write 'hub:someone/stories'"):
        load_texts("someone/stories")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(
        NlpsslError, match=r"data\.xlsx: unsupported file type \(got \['\.xlsx'\]\)"
    ):
        load_texts(path)


def test_empty_corpus(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n   \n\n", encoding="utf-8")
    with pytest.raises(NlpsslError, match=r"blank\.txt: the source holds no text \(got 0"):
        load_texts(path)
    with pytest.raises(NlpsslError, match=r"the source holds no text"):
        list(iter_texts(path))


def test_wrong_column_suggests_close_match(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "hi", "label": 1}])
    pq.write_table(pa.table({"text": ["hi"], "label": [1]}), tmp_path / "b.parquet")
    (tmp_path / "c.csv").write_text("text,label\nhi,1\n", encoding="utf-8")
    for name in ("a.jsonl", "b.parquet", "c.csv"):
        with pytest.raises(
            NlpsslError,
            match=r"no column 'txt' \(got columns \['text', 'label'\]\)\. Did you mean 'text'\?",
        ):
            load_texts(tmp_path / name, text_column="txt")


def test_ragged_row_names_its_line(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("id\ttext\n1\tfine\n\n2\n", encoding="utf-8")
    with pytest.raises(NlpsslError, match=r"r\.tsv:4: expected 2 fields like the header \['id', 'text'\] \(got 1\)"):
        load_texts(path)


def test_jsonl_records_without_the_key_are_skipped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"text": "one"}, {"id": 2}, {"text": None}, {"text": "two"}, {"id": 5, "body": "x"},
    ])
    with pytest.warns(UserWarning, match=r"a\.jsonl: skipped 2 records without a 'text' key \(first at .*a\.jsonl:2, got keys \['id'\]\)"):
        assert list(iter_texts(path)) == ["one", "two"]
    # A reader that stops early (a tokenizer's sample) is told of what it skipped too.
    with pytest.warns(UserWarning, match=r"a\.jsonl: skipped 1 record without a 'text' key in the part read \(first at "):
        texts = iter_texts(path)
        assert [next(texts), next(texts)] == ["one", "two"]
        texts.close()
    # A key no record starts with is a wrong data.text_column, said at once.
    with pytest.raises(NlpsslError, match=r"a\.jsonl:1: no column 'body' \(got columns \['text'\]\)"):
        list(iter_texts(path, text_column="body"))


def test_non_text_column(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "fine"}, {"text": 42}])
    with pytest.raises(
        NlpsslError, match=r"a\.jsonl:2: 'text' does not hold text \(got int '42'\)"
    ):
        load_texts(tmp_path / "a.jsonl")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "b.parquet")
    with pytest.raises(NlpsslError, match=r"column 'text' does not hold text \(got type int64\)"):
        load_texts(tmp_path / "b.parquet")


def test_undecodable_bytes_name_the_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9\nna\u00efve".encode("utf-8") + b"\nbad \xe9 byte\n")
    with pytest.raises(
        NlpsslError,
        match=r"latin1\.txt: not valid UTF-8 at byte offset 17 \(got bytes .*\)\. Re-encode",
    ):
        load_texts(path)
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes(b"text\nok\n\xff\n")
    with pytest.raises(NlpsslError, match=r"latin1\.csv: not valid UTF-8 at byte offset 8"):
        load_texts(csv_path)


@pytest.mark.parametrize(
    ("name", "data", "command"),
    [
        # Windows-1252 quotes and dashes: `-f latin1` would turn them into C1 control characters.
        ("notes.txt", "He said \u201chi\u201d \u2014 ok".encode("cp1252"), "iconv -f cp1252 -t utf-8 notes.txt > notes.utf8.txt"),
        # Notepad's "Unicode": UTF-16 with a byte-order mark.
        ("rows.csv", "text\nhi\n".encode("utf-16"), "iconv -f utf-16 -t utf-8 rows.csv > rows.utf8.csv"),
        # A compressed file is decompressed first and keeps its format: a .tsv copy, not fixed.txt.
        ("r.tsv.gz", None, "gzip -dc r.tsv.gz | iconv -f cp1252 -t utf-8 | gzip > r.utf8.tsv.gz"),
    ],
)
def test_undecodable_file_gets_a_command_that_fixes_it(tmp_path, name, data, command):
    import gzip

    path = tmp_path / name
    if data is None:
        path.write_bytes(gzip.compress("text\tlabel\ncaf\u00e9\t1\n".encode("latin-1")))
    else:
        path.write_bytes(data)
    with pytest.raises(NlpsslError, match="not valid UTF-8") as caught:
        load_texts(path)
    assert f"`{command}`" in str(caught.value)


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "broken"\n', encoding="utf-8")
    with pytest.raises(NlpsslError, match=r"a\.jsonl:3: line is not valid JSON \(.*\)\. Fix or"):
        load_texts(path)
    path.write_text('["a list"]\n', encoding="utf-8")
    with pytest.raises(NlpsslError, match=r"a\.jsonl:1: line is not a JSON object \(got list\)"):
        load_texts(path)


def test_bad_arguments():
    with pytest.raises(NlpsslError, match=r"load_texts: unknown txt_unit \(got 'sentence'\)\. Use"):
        load_texts("builtin", txt_unit="sentence")
    with pytest.raises(NlpsslError, match=r"max_texts must be a positive integer .* \(got 0\)"):
        load_texts("builtin", max_texts=0)
    with pytest.raises(NlpsslError, match=r"hub:: no dataset name after 'hub:'"):
        load_texts("hub:")


# ----------------------------------------------------------------------------- Hub


def test_hub_call_args_column_and_filtering(monkeypatch):
    calls = []

    def fake_load_dataset(name, config, *, split, streaming):
        calls.append((name, config, split, streaming))
        data = {"story": ["One.", "", "Two.", "  "], "id": [1, 2, 3, 4]}
        dataset = datasets.Dataset.from_dict(data)
        return dataset.to_iterable_dataset() if streaming else dataset

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset = load_texts(
        "hub:someone/stories", hub_config="en", split="validation", text_column="story"
    )
    assert dataset.column_names == ["text"] and dataset["text"] == ["One.", "Two."]
    assert list(iter_texts("hub:someone/stories", text_column="story", max_texts=1)) == ["One."]
    assert calls == [
        ("someone/stories", "en", "validation", False),
        ("someone/stories", None, "train", True),
    ]
    with pytest.raises(NlpsslError, match=r"hub:x/y: no column 'stroy' .* Did you mean 'story'\?"):
        load_texts("hub:x/y", text_column="stroy")
    with pytest.raises(NlpsslError, match=r"hub:x/y: no column 'stroy' .* Did you mean 'story'\?"):
        list(iter_texts("hub:x/y", text_column="stroy"))


@pytest.mark.parametrize(
    ("raised", "message"),
    [
        (
            ConnectionError("Couldn't reach 'x/y' on the Hub (OfflineModeIsEnabled)"),
            r"hub:x/y: cannot reach the Hugging Face Hub .* appears offline.* HF_HUB_OFFLINE",
        ),
        (
            datasets.exceptions.DatasetNotFoundError("Dataset 'x/y' doesn't exist on the Hub"),
            r"hub:x/y: dataset not found on the Hub \(got .*\)\. Check the name",
        ),
        (
            ValueError("BuilderConfig 'zz' not found."),
            r"hub:x/y: cannot load config 'zz' split 'train' \(got BuilderConfig",
        ),
    ],
)
def test_hub_errors_are_translated(monkeypatch, raised, message):
    def failing_load_dataset(*args, **kwargs):
        raise raised

    monkeypatch.setattr(datasets, "load_dataset", failing_load_dataset)
    with pytest.raises(NlpsslError, match=message) as info:
        load_texts("hub:x/y", hub_config="zz")
    assert info.value.__cause__ is raised


def test_real_offline_hub_call_is_translated(monkeypatch):
    # The real datasets/huggingface_hub code path, forced offline so it fails fast instead of
    # retrying DNS lookups for half a minute on a machine without network.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(NlpsslError, match=r"hub:nlpssl-test/does-not-exist: cannot reach"):
        load_texts("hub:nlpssl-test/does-not-exist")


def test_sources_module_has_no_heavy_imports_at_top():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(sources))
    top = {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    top |= {
        node.module.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not top & {"datasets", "transformers", "tokenizers", "pyarrow", "torch"}
