"""Measure tokenizer training speed (MB/s of UTF-8 text) for each algorithm.

Usage:
    python benchmarks/tokenizer_speed.py /work/shared/data/gutenberg_books [--vocab-size 8192]

The corpus is read into memory first with `iter_texts(..., txt_unit="line")`, so the number is the
trainer's throughput, not the disk's. Training time includes the Python-side
iteration that `train_tokenizer` does, because that is what a user pays.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nlpssl.sources import iter_texts
from nlpssl.tokenizer import train_tokenizer

ALGORITHMS = ("bpe", "wordpiece", "unigram")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a file, glob or folder of text files")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    args = parser.parse_args()

    lines = list(iter_texts(args.data, txt_unit="line"))
    megabytes = sum(len(line.encode("utf-8")) for line in lines) / 1e6
    print(f"{args.data}: {len(lines)} lines, {megabytes:.1f} MB, vocab_size={args.vocab_size}")
    for algorithm in args.algorithms:
        start = time.perf_counter()
        tokenizer = train_tokenizer(lines, algorithm=algorithm, vocab_size=args.vocab_size)
        seconds = time.perf_counter() - start
        print(
            f"{algorithm:>9}: {megabytes / seconds:6.2f} MB/s  ({seconds:.1f} s, "
            f"vocab {len(tokenizer)})",
            flush=True,
        )


if __name__ == "__main__":
    main()
