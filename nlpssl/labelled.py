"""Labelled data for fine-tuning and probes: splits of texts with their labels, and the label names.

`load_task_data` turns a recipe's ``task`` section into train/validation(/test) splits; every label
check happens there. Files are read by the readers of `nlpssl.sources`, so a labelled file is read
(compression, UTF-8, quoting) and fails exactly as the same file does as pretraining text.

Sources (``task.source``):
    "builtin"            the labelled companion set of `nlpssl.corpus` (train/validation/test built in)
    "data/train.tsv"     a .csv, .tsv, .jsonl or .parquet file with text and label columns; all but
                         .parquet may be compressed (``train.tsv.xz``, ``.gz``, ``.bz2``, ``.zst``)
    "hub:NAME"           `datasets.load_dataset(NAME, task.hub_config, split=task.train_split)`
"""

from __future__ import annotations

import difflib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from nlpssl.errors import NlpsslError
from nlpssl.sources import (
    COMPRESSIONS, HUB_PREFIX, delimited_rows, format_suffix, hub_dataset, jsonl_records, open_parquet, readable,
)

if TYPE_CHECKING:
    from nlpssl.recipe import FinetuneSection

LABELLED_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".parquet")
HELD_OUT = ("validation", "test")


@dataclass
class Split:
    """Rows of one split: texts (and optional second texts) with their labels as found."""

    texts: list[str]
    labels: list[str]
    pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> Split:
        pick = lambda xs: [xs[i] for i in indices]  # noqa: E731
        return Split(pick(self.texts), pick(self.labels), pick(self.pairs) if self.pairs else None)


@dataclass
class TaskData:
    """The splits of a task with its label names (index = class id)."""

    splits: dict[str, Split]
    label_names: list[str]
    sources: dict[str, str] = field(default_factory=dict)  # split -> where it came from


def load_task_data(task: FinetuneSection) -> TaskData:
    """Train/validation(/test) splits and label names; every label check happens here."""
    if task.source == "builtin":
        splits, known, sources = _builtin_splits(task)
    else:
        splits, known, sources = _source_splits(task)
    train = splits["train"]
    if task.max_train_examples and len(train) > task.max_train_examples:
        rng = random.Random(task.seed)
        splits["train"] = train.subset(sorted(rng.sample(range(len(train)), task.max_train_examples)))
    names = resolve_labels(splits, known, task, sources)
    return TaskData(splits, names, sources)


def _builtin_splits(task: FinetuneSection) -> tuple[dict[str, Split], list[str], dict[str, str]]:
    """The labelled companion set: its own train/validation/test, disjoint by construction."""
    from nlpssl.corpus import LABELS, labelled_examples

    sizes = {"train": task.builtin_train_size, "validation": task.builtin_eval_size, "test": task.builtin_eval_size}
    splits = {}
    for name, size in sizes.items():
        rows = labelled_examples(size, task.seed, name)
        splits[name] = Split([r["text"] for r in rows], [r["label"] for r in rows])
    return splits, list(LABELS), {name: f"builtin ({name})" for name in sizes}


def _source_splits(task: FinetuneSection) -> tuple[dict[str, Split], list[str] | None, dict[str, str]]:
    """Splits read from files or the Hub; missing validation/test splits carved off train by seed."""
    train, known = read_split(task.source, "task.source", task, task.train_split)
    splits, sources = {"train": train}, {"train": task.source}
    held_out = (("validation", task.validation_source, task.validation_fraction),
                ("test", task.test_source, task.test_fraction))
    for offset, (name, given, fraction) in enumerate(held_out, start=1):
        if given:
            splits[name], _ = read_split(given, f"task.{name}_source", task, given)
            sources[name] = given
        elif fraction > 0:
            # A share of all the rows, not of what carving the validation split left.
            share = min(1.0, fraction * len(train) / max(len(splits["train"]), 1))
            splits["train"], splits[name] = carve(splits["train"], share, task.seed + offset)
            sources[name] = f"{fraction:g} of {task.source}"
            if not len(splits[name]):
                raise NlpsslError(
                    f"{task.source}: too few rows to hold out a {name} split (got {len(train)} rows, "
                    f"task.{name}_fraction={fraction}). Raise task.{name}_fraction or set task.{name}_source."
                )
    return splits, known, sources


def carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Hold out ``fraction`` of each class (stratified, seeded); a class's last row stays in train.

    Each class gives its share rounded half up. Where that loses most of the whole share (50 classes
    of 4 rows at 0.1 would give none of 20), the classes with the largest remainders give one row
    more each, in a seeded order, until the split holds ``fraction`` of all rows.

    >>> keep, held = carve(Split(list("abcdefghij"), ["x"] * 5 + ["y"] * 5), 0.2, seed=0)
    >>> len(keep), sorted(held.labels)
    (8, ['x', 'y'])
    """
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(split.labels):
        by_label.setdefault(label, []).append(i)
    counts: dict[str, int] = {}
    for label in sorted(by_label):  # sorted: the same rows for the same seed, whatever the file order
        rng.shuffle(by_label[label])
        counts[label] = int(fraction * len(by_label[label]) + 0.5)  # half up: 5 rows at 0.1 hold out 1
    target = int(fraction * len(split) + 0.5)
    if sum(counts.values()) < target / 2:
        order = sorted(by_label, key=lambda label: rng.random())  # ties between equal remainders: seeded
        order.sort(key=lambda label: fraction * len(by_label[label]) - counts[label], reverse=True)
        for label in order:
            if sum(counts.values()) >= target:
                break
            if counts[label] < len(by_label[label]) - 1:  # never a class's last row
                counts[label] += 1
    held = {i for label, rows in by_label.items() for i in rows[: counts[label]]}
    keep = [i for i in range(len(split)) if i not in held]
    return split.subset(keep), split.subset(sorted(held))


# ------------------------------------------------------------------------------------------------
# Files and Hub splits


def is_labelled_file(path: Path) -> bool:
    """Whether the name is that of a labelled data file (``train.tsv``, ``train.tsv.xz``)."""
    return readable(path, LABELLED_EXTENSIONS)


def _hub_split(spec: str, task: FinetuneSection) -> bool:
    """``spec`` names a split of the task's Hub dataset, not a file (``validation_source: validation``)."""
    path = Path(spec)
    return task.source.startswith(HUB_PREFIX) and not path.exists() and not is_labelled_file(path)


def task_files(task: FinetuneSection) -> dict[str, Path]:
    """The files the task reads, by the recipe key that names them (Hub datasets and splits are not files)."""
    if task.source == "builtin":
        return {}
    keys = {"task.source": task.source, "task.validation_source": task.validation_source,
            "task.test_source": task.test_source}
    return {key: Path(spec) for key, spec in keys.items()
            if spec and not spec.startswith(HUB_PREFIX) and not _hub_split(spec, task)}


# What to do instead of naming a file, per recipe key.
_INSTEAD = {
    "task.source": "or use 'builtin' for the built-in labelled set",
    "task.validation_source": "or leave it unset to hold out task.validation_fraction of the training data",
    "task.test_source": "or leave it unset (task.test_fraction holds a test split out of the training data)",
}


def file_problem(path: Path, key: str) -> str | None:
    """Why the labelled file that ``key`` names cannot be read, judged without reading it (None: it can)."""
    if not path.is_file():
        return f"{path}: file not found (got {str(path.absolute())!r}). Check {key}, {_INSTEAD[key]}."
    if not is_labelled_file(path):
        return (
            f"{path}: unsupported file type for labelled data (got {format_suffix(path) or path.name!r}). "
            f"Use one of {', '.join(LABELLED_EXTENSIONS)} (all but .parquet may also be compressed as "
            f"{', '.join(COMPRESSIONS)}), or set {key} to such a file."
        )
    return None


def file_problems(task: FinetuneSection) -> list[str]:
    """What reading the task's files would stop at before reading a row: missing files, unknown types."""
    return [problem for key, path in task_files(task).items() if (problem := file_problem(path, key))]


def read_split(spec: str, key: str, task: FinetuneSection, hub_split: str) -> tuple[Split, list[str] | None]:
    """One split from the file or Hub dataset ``spec`` (the value of recipe key ``key``), or from a
    split of the task's Hub dataset when ``spec`` names one; returns it with the Hub's label names."""
    if spec.startswith(HUB_PREFIX):
        return _read_hub(spec, task, hub_split)
    if _hub_split(spec, task):
        return _read_hub(task.source, task, spec)
    path = Path(spec)
    if problem := file_problem(path, key):
        raise NlpsslError(problem)
    available, columns, places = read_columns(path, task)
    if not available:
        raise NlpsslError(
            f"{path}: the file is empty (got {path.stat().st_size} bytes, no header line or record). Fill it "
            f"({_example(path, task)}{', then a row per example' if format_suffix(path) != '.jsonl' else ''}), or set "
            f"{key} to the file you meant."
        )
    if problem := _separator_problem(path, available, key):
        raise NlpsslError(problem)
    try:
        return _split_from_columns(columns, available, str(path), task, places), None
    except ColumnError as err:
        if format_suffix(path) in (".csv", ".tsv") and len(err.missing) == len(_wanted(task)) and not err.close():
            err.note = (f"If the file has no header row (its first row was read as the column names), add "
                        f"{_example(path, task)} as its first line.")
            err.args = (err.message(),)
        raise


def _example(path: Path, task: FinetuneSection) -> str:
    """What a record of the task's columns looks like in the file's format (a header line or a JSON object)."""
    match format_suffix(path):
        case ".csv":
            return "a header line such as " + ",".join(_wanted(task))
        case ".tsv":
            return "a header line such as " + "<TAB>".join(_wanted(task))
        case ".jsonl":
            return "one JSON object per line, such as " + "{" + ", ".join(f'"{c}": "..."' for c in _wanted(task)) + "}"
    return f"the columns {_wanted(task)}"


def _separator_problem(path: Path, header: list[str], key: str) -> str | None:
    """A .csv separated by ';' (as Excel writes it in many locales) or a .tsv by commas: a header of one column."""
    fmt = format_suffix(path)
    own = {".csv": ",", ".tsv": "\t"}.get(fmt)
    found = [sep for sep in (";", "\t", ",", "|") if sep != own and own and len(header) == 1 and sep in header[0]]
    if not found:
        return None
    sep = found[0]
    if (sep, fmt) in (("\t", ".csv"), (",", ".tsv")):
        fix = f"Rename it to {'.tsv' if fmt == '.csv' else '.csv'} (the suffix says how it is read) and set {key} to it."
    else:
        tsv = "sep='\\t', " if fmt == ".tsv" else ""
        fix = (f"Save it again separated by {own!r} (pandas: pd.read_csv(PATH, sep={sep!r}).to_csv(NEW, {tsv}"
               f"index=False)) and set {key} to it.")
    return (f"{path}: the header is one column {header[0]!r} (got columns {header}). The file looks separated "
            f"by {sep!r}, and a {fmt} file is read with {own!r}. {fix}")


def _wanted(task: FinetuneSection) -> list[str]:
    return [c for c in (task.text_column, task.text_pair_column, task.label_column) if c]


def read_columns(path: Path, task: FinetuneSection) -> tuple[list[str], dict[str, list], list[str] | None]:
    """(every column name of a labelled file, the task's columns it has as lists, each row's ``path:line``
    where the format has lines), by the sources readers."""
    wanted = _wanted(task)
    match format_suffix(path):
        case ".parquet":
            parquet = open_parquet(path)
            names = parquet.schema_arrow.names
            return names, parquet.read(columns=[c for c in wanted if c in names]).to_pydict(), None
        case ".jsonl":
            example = f'{{"{task.text_column}": "...", "{task.label_column}": "positive"}}'
            found = list(jsonl_records(path, example))
            records = [record for _, record in found]
            names = list(dict.fromkeys(key for record in records for key in record))
            return names, {c: [record.get(c) for record in records] for c in wanted if c in names}, [p for p, _ in found]
        case _:
            header, rows = delimited_rows(path)
            index = {c: header.index(c) for c in wanted if c in header}
            values: dict[str, list] = {c: [] for c in index}
            places = []
            for place, row in rows:
                places.append(place)
                for c, i in index.items():
                    values[c].append(row[i])
            return header, values, places


def _read_hub(source: str, task: FinetuneSection, split: str) -> tuple[Split, list[str] | None]:
    """A Hub split; ClassLabel ids become their names, which also fix the label order."""
    dataset = hub_dataset(source, task.hub_config, split, streaming=False)  # offline, not found: translated
    feature = dataset.features.get(task.label_column)
    names = list(feature.names) if hasattr(feature, "names") else None
    columns = {c: list(dataset[c]) for c in _wanted(task) if c in dataset.column_names}
    if names and task.label_column in columns:
        columns[task.label_column] = [names[i] if i is not None and i >= 0 else None for i in columns[task.label_column]]
    where = f"{source} ({split})"
    return _split_from_columns(columns, list(dataset.column_names), where, task), names


# ------------------------------------------------------------------------------------------------
# Columns and labels


def _split_from_columns(columns: dict[str, list], available: list[str], where: str, task: FinetuneSection,
                        places: list[str] | None = None) -> Split:
    """The split of the task's columns; ``places``: each row's ``path:line``, for the errors."""
    wanted = ("text_column", "label_column") + (("text_pair_column",) if task.text_pair_column else ())
    missing = [(key, getattr(task, key)) for key in wanted if getattr(task, key) not in columns]
    if missing:  # every missing column at once, not one per run
        raise ColumnError(where, available, missing)
    texts, labels = columns[task.text_column], columns[task.label_column]
    pairs = columns[task.text_pair_column] if task.text_pair_column else None
    if not texts:
        raise NlpsslError(f"{where}: the data holds no rows (got 0). Check the file, split and columns.")
    # NaN is how pandas (a .parquet, a .jsonl's NaN) writes a missing number: no label, not a fractional one.
    blank = lambda x: x is None or (isinstance(x, str) and not x.strip()) or (isinstance(x, float) and x != x)  # noqa: E731
    # As a row without a label: a classifier would learn (and be scored on) the empty string.
    for values, what, fill in ((labels, "no label", "a label"), (texts, f"no text in column {task.text_column!r}", "text")):
        if rows := [row for row, value in enumerate(values, start=1) if blank(value)]:
            raise NlpsslError(f"{_rows_at(rows, where, places)} {'has' if len(rows) == 1 else 'have'} {what} (got "
                              f"{values[rows[0] - 1]!r}). Fill in or drop the rows without {fill}.")
    keys = [_label_key(value, places[row - 1] if places else where, row) for row, value in enumerate(labels, start=1)]
    as_text = lambda xs: ["" if x is None else str(x) for x in xs]  # noqa: E731
    return Split(as_text(texts), keys, as_text(pairs) if pairs is not None else None)


def _rows_at(rows: list[int], where: str, places: list[str] | None, shown: int = 5) -> str:
    """Where rows are, for an error: ``t.csv:5: row 4`` or ``t.csv:5: row 4 and 2 more (lines 9, 12)``."""
    first = f"{places[rows[0] - 1]}: row {rows[0]}" if places else f"{where}: row {rows[0]}"
    if len(rows) == 1:
        return first
    rest = rows[1:shown]
    at = (f"lines {', '.join(places[r - 1].rsplit(':', 1)[1] for r in rest)}" if places
          else f"rows {', '.join(map(str, rest))}")
    return f"{first} and {len(rows) - 1} more ({at}{', ...' if len(rows) > shown else ''})"


class ColumnError(NlpsslError):
    """Task columns a labelled file or Hub split lacks, all of them in one message.

    `message` words the fix for where the settings are given: "Set task.text_column=NAME" (a recipe
    or `nlpssl finetune` overrides), or "Pass --set task.text_column=NAME" (`nlpssl probe`).
    """

    _WHAT = {"text_column": "text", "label_column": "labels", "text_pair_column": "second texts"}

    def __init__(self, where: str, available: list[str], missing: list[tuple[str, str]]):
        self.where, self.available, self.missing = where, available, missing
        self.note = ""  # a further hint, after the fix (a file without a header row)
        super().__init__(self.message())

    def close(self) -> list[tuple[str, str]]:
        """(recipe key, the available column closest to the name it gives) for each missing column with one."""
        return [(key, found[0]) for key, name in self.missing
                if (found := difflib.get_close_matches(name, self.available, n=1))]

    def message(self, flag: str | None = None) -> str:
        """The error; ``flag``: the option that takes the settings (``--set``), None for a recipe."""
        absent = _and([f"no {key.replace('_column', '')} column {name!r}" for key, name in self.missing])
        close = self.close()
        if len(self.missing) == 1:
            hint = f" Did you mean {close[0][1]!r}?" if close else ""
        else:
            hint = f" Did you mean {_and([f'{c!r} for task.{key}' for key, c in close])}?" if close else ""
        settings = [f"task.{key}=NAME" for key, _ in self.missing]
        held = _and([f"the {self._WHAT[key]}" for key, _ in self.missing])
        column = "column that holds" if len(self.missing) == 1 else "columns that hold"
        fix = (f"Set {_and(settings)} to the {column} {held}." if flag is None
               else f"Pass {flag} {' '.join(settings)}, naming the {column} {held}.")
        return f"{self.where}: {absent} (got columns {self.available}).{hint} {fix}" + (f" {self.note}" if self.note else "")


def _and(items: list[str]) -> str:
    return " and ".join(items) if len(items) < 3 else f"{', '.join(items[:-1])} and {items[-1]}"


_NUMBER = re.compile(r"[+-]?(\d+\.\d*|\.\d+)")  # a decimal written as text ("1.0", "0.5"); integers stay as written


def _label_key(value: Any, where: str, row: int) -> str:
    """A label as a string key: "positive", 1 and 1.0 (and "1", "1.0") all become a stable string.

    Text files spell numbers as text: pandas writes an integer column with a blank in it as 1.0/0.0,
    which must be the class 1 of a .jsonl or of a dev file that writes 1.
    """
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool):
        value = int(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise NlpsslError(
            f"{where}: row {row} has no label (got {value!r}). Fill in or drop the rows without a label."
        )
    if isinstance(value, float):
        raise NlpsslError(
            f"{where}: row {row} has a fractional label (got {value!r}). Classification needs class labels "
            "(strings or integers); check task.label_column."
        )
    return str(value).strip()


def resolve_labels(splits: dict[str, Split], known: list[str] | None, task: FinetuneSection,
                   sources: dict[str, str]) -> list[str]:
    """Label names in class-id order; checks for one class and for labels the training split lacks."""
    names = [str(n) for n in task.label_names] if task.label_names else known
    if names:
        for split_name, split in splits.items():
            split.labels = [_named(key, names, sources[split_name]) for key in split.labels]
    else:
        fold_case(splits, sources)
    train = splits["train"].labels
    seen = set(train)
    if len(seen) < 2:
        raise NlpsslError(
            f"{sources['train']}: the training data holds a single class (got only {train[0]!r} in "
            f"{len(train)} rows). A classifier needs two or more classes: check task.label_column and the data."
        )
    for split_name in HELD_OUT:
        unseen = sorted(set(splits[split_name].labels) - seen) if split_name in splits else []
        if unseen:
            raise NlpsslError(
                f"{sources[split_name]}: {split_name} labels absent from the training split (got {unseen}; "
                f"train has {sorted(seen)}). Add training examples of those classes, or drop them from the "
                f"{split_name} data."
            )
    if not names:
        numeric = all(key.lstrip("-").isdigit() for key in seen)
        names = sorted(seen, key=int if numeric else str)
    say_class_shares(splits, list(names), task, sources)
    return list(names)


MAJORITY_SHARE = 0.9  # a class this common makes accuracy read high for a model that learnt nothing


def say_class_shares(splits: dict[str, Split], names: list[str], task: FinetuneSection,
                     sources: dict[str, str]) -> None:
    """Log what is legal but makes the figures mislead: classes without training rows, classes a held-out
    split lacks (its scores say nothing of them), and a majority class with accuracy picking the checkpoint."""
    from collections import Counter

    from nlpssl.runs import log

    train = Counter(splits["train"].labels)
    if unused := [name for name in names if not train[name]]:
        log(f"task.label_names: {unused} have no training rows in {sources['train']}; the model will "
            "hardly ever predict them. Add rows of those classes, or leave them out of task.label_names.")
    for split_name in HELD_OUT:
        if split_name not in splits:
            continue
        held = set(splits[split_name].labels)
        lacking = [name for name in names if train[name] and name not in held]
        if lacking:
            shown = lacking[:10]  # 50 classes of 4 rows lack many: the first ten and a count
            counts = _and([str(train[name]) for name in shown]) + " training rows"
            if len(lacking) > len(shown):
                counts += f"; and {len(lacking) - len(shown)} more classes"
            lacking = shown
            fix = (f"raise task.{split_name}_fraction" if sources[split_name].endswith(f"of {task.source}")
                   else f"add rows of them to {sources[split_name]}")
            log(f"{sources[split_name]}: the {split_name} split holds no rows of {lacking} ({counts}); its "
                f"accuracy and macro-F1 say nothing about them. To score them, {fix}.")
    label, count = train.most_common(1)[0]
    share = count / len(splits["train"])
    if share >= MAJORITY_SHARE and task.metric_for_best_model == "accuracy":
        log(f"{sources['train']}: {label!r} is {share:.0%} of the training rows, so a model that always "
            f"answers {label!r} scores {share:.0%} accuracy. Set task.metric_for_best_model=macro_f1 to keep "
            "the checkpoint by macro-F1, and read the per-class report in metrics.json.")


def fold_case(splits: dict[str, Split], sources: dict[str, str]) -> None:
    """Make labels that differ only in case one class, spelled as most rows of the training split spell it.

    Hand-labelled files mix "Positive", "positive" and "POSITIVE"; as three classes each would be
    learnt (and scored) apart. The merge is said, with the row counts of each spelling.
    """
    from collections import Counter

    from nlpssl.runs import log

    counts = Counter(label for split in splits.values() for label in split.labels)
    in_train = Counter(splits["train"].labels)
    groups: dict[str, list[str]] = {}
    for label in sorted(counts):
        groups.setdefault(label.casefold(), []).append(label)
    files = _and(sorted({where.split(" of ", 1)[-1] for where in sources.values()}))  # "0.1 of x.csv": x.csv
    spelled = {}
    for spellings in groups.values():
        if len(spellings) > 1:
            chosen = max(spellings, key=lambda s: (in_train[s], counts[s]))  # ties: the first in sorted order
            spelled.update({s: chosen for s in spellings if s != chosen})
            found = ", ".join(f"{s!r} ({counts[s]} rows)" for s in spellings)
            log(f"labels that differ only in case are taken as one class {chosen!r}: {found} in {files}. "
                "To keep them apart, rename them in the data.")
    if spelled:
        for split in splits.values():
            split.labels = [spelled.get(label, label) for label in split.labels]


def _named(key: str, names: list[str], where: str) -> str:
    """Map an integer label to its name (``1`` -> names[1]); names stay names, in any case if unambiguous."""
    if key in names:
        return key
    same = [name for name in names if name.casefold() == key.casefold()]
    if len(same) == 1:
        return same[0]
    if key.isdigit() and int(key) < len(names):
        return names[int(key)]
    raise NlpsslError(
        f"{where}: label {key!r} is neither one of the label names nor an index into them (got names {names}). "
        "Fix task.label_names, or leave it unset to use the labels as found."
    )
