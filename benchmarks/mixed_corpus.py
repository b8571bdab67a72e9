"""Build the IMDB + SST-2 pretraining folder: the IMDB review files and the SST-2 training sentences, no labels.

Run: python benchmarks/mixed_corpus.py ../shared/data OUT_FOLDER [--copies 4]

OUT_FOLDER (new) gets links to ``imdb/train.tsv.xz`` and ``imdb/test.tsv.xz`` (column ``text``) and
``sst2-train-sentences.txt``: the 67,349 SST-2 training sentences, one per line, written
``--copies`` times (a short corpus next to 15.6M IMDB tokens; the copies raise its share). Pretrain on it
with ``data.source=OUT_FOLDER data.txt_unit=line`` (each .txt line is a document; the .tsv files are
read by column as before). Labels are never written. Nothing of ``../shared/data`` is copied into
the repository: OUT_FOLDER is yours to place (e.g. under runs/).
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the shared data folder (holds imdb/ and sst2/)")
    parser.add_argument("out", type=Path, help="a new folder")
    parser.add_argument("--copies", type=int, default=4, help="times the SST-2 sentences are written")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; name a new folder")
    if args.copies < 1:
        raise SystemExit(f"--copies must be 1 or more (got {args.copies})")
    imdb, sst2 = args.data / "imdb", args.data / "sst2" / "train.tsv"
    for needed in (imdb / "train.tsv.xz", imdb / "test.tsv.xz", sst2):
        if not needed.is_file():
            raise SystemExit(f"{needed} not found: pass the folder that holds imdb/ and sst2/")
    args.out.mkdir(parents=True)
    for name in ("train.tsv.xz", "test.tsv.xz"):
        os.symlink((imdb / name).resolve(), args.out / f"imdb-{name}")
    with open(sst2, encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        sentences = [row["sentence"].strip() for row in rows if row["sentence"].strip()]
    with open(args.out / "sst2-train-sentences.txt", "w", encoding="utf-8") as f:
        for _ in range(args.copies):
            f.writelines(s + "\n" for s in sentences)
    print(f"{args.out}: IMDB train + test linked, {len(sentences):,} SST-2 sentences x {args.copies}")


if __name__ == "__main__":
    main()
