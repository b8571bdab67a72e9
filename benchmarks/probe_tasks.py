"""`nlpssl probe` on more labelled sets: TREC question types, SMS spam, AG News topics.

These sets come in their own formats (TREC ``COARSE:fine question``, Latin-1; SMS ``label<TAB>text``
without a header; AG News headerless CSV of class, title, description). This script rewrites each
into a two-column TSV (``text``, ``label``) in a temporary folder, then runs the same probe a user
would run on such a file: the export, the same architecture from scratch, and bag-of-words, on the
same rows. TREC is scored on its own 500-question test file; SMS spam and AG News (test file only)
on a seeded 20% of their rows that never reaches the label pool.

Run:
    python benchmarks/probe_tasks.py runs/bert-imdb/export --data ../shared/data --tasks trec sms_spam
    (add --self-train 4000 to self-train every arm on further rows of each set, their labels unread)
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path


def _clean(text: str) -> str:
    return " ".join(text.split())  # no tabs or newlines inside a TSV field


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write("text\tlabel\n")
        out.writelines(f"{_clean(text)}\t{label}\n" for text, label in rows)
    return path


def trec(data: Path, work: Path) -> tuple[Path, list[str]]:
    def read(name: str) -> list[tuple[str, str]]:
        lines = (data / "trec" / name).read_text(encoding="latin-1").splitlines()  # PROVENANCE: Latin-1
        return [(line.split(" ", 1)[1], line.split(":", 1)[0]) for line in lines if line.strip()]

    train = write_tsv(work / "trec-train.tsv", read("train_5500.label"))
    test = write_tsv(work / "trec-test.tsv", read("TREC_10.label"))
    return train, [f"task.test_source={test}"]


def sms_spam(data: Path, work: Path) -> tuple[Path, list[str]]:
    lines = (data / "sms_spam" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()
    rows = [(text, label) for label, text in (line.split("\t", 1) for line in lines if line.strip())]
    return write_tsv(work / "sms_spam.tsv", rows), ["task.test_fraction=0.2"]


def ag_news(data: Path, work: Path) -> tuple[Path, list[str]]:
    names = (data / "ag_news" / "classes.txt").read_text().split("\n")
    with (data / "ag_news" / "test.csv").open(encoding="utf-8", newline="") as handle:
        rows = [(f"{title}. {body}", names[int(cls) - 1]) for cls, title, body in csv.reader(handle)]
    return write_tsv(work / "ag_news.tsv", rows), ["task.test_fraction=0.2"]


TASKS = {"trec": trec, "sms_spam": sms_spam, "ag_news": ag_news}
DEFAULT_LABELS = {"trec": ["500", "1000"], "sms_spam": ["200", "1000"], "ag_news": ["500", "2000"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--data", default="../shared/data", help="folder holding trec/, sms_spam/, ag_news/")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--labels", nargs="+", help="label budgets for every task (default: two per task)")
    p.add_argument("--learning-rates", nargs="+", type=float, default=None)
    p.add_argument("--out", default="runs/probe-tasks", help="one probe folder per task inside")
    p.add_argument("--self-train", type=int, default=0, metavar="N", help="as `nlpssl probe --self-train N`")
    p.add_argument("--arms", nargs="+", default=None, help="as `nlpssl probe --arms` (default: all three)")
    args = p.parse_args()

    from nlpssl.pretrain import cpu_description
    from nlpssl.probe import ARMS, DEFAULT_LEARNING_RATES, probe, tables

    print(f"CPU: {cpu_description()}")
    with tempfile.TemporaryDirectory(prefix="probe-tasks-") as tmp:
        for name in args.tasks:
            train, overrides = TASKS[name](Path(args.data), Path(tmp))
            report = probe(
                args.model_dir, str(train), overrides + ["task.max_length=64"], labels=args.labels or DEFAULT_LABELS[name],
                seeds=args.seeds, out_dir=Path(args.out) / name,
                learning_rates=args.learning_rates or DEFAULT_LEARNING_RATES, arms=args.arms or ARMS,
                self_train=args.self_train,
            )
            print(f"\n{name}: accuracy on {report.scored_on}\n\n{tables(report)}\n", flush=True)


if __name__ == "__main__":
    main()
