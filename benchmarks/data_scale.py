"""Memory and speed of data preparation at two corpus sizes, and streaming against the cached path.

Run: python benchmarks/data_scale.py [--sizes 100 1000] [--workdir /tmp/nlpssl-data-scale] [--steps 60]

1. Writes generated text (the built-in story generator, 64 MB files, one story per paragraph) of
   each size in MB into the work folder, and trains one WordPiece tokenizer on its first 10 MB.
2. Cached preparation (``prepare_data``, the bert-tiny recipe's data settings) of each corpus in
   a fresh process: wall time, MB of text per second, and the process's peak resident memory
   (``ru_maxrss``), also above the peak of a process that only imports and loads the tokenizer.
3. Streaming read speed: a ``BlockStream`` over the smallest corpus, rows per second without training.
4. Training tokens/s of the tiny preset (bert-tiny recipe) on the smallest corpus, cached vs
   streaming, alternated twice side by side in one run (ratios are what to compare: a shared
   2-core box is noisy).
The work folder is created and removed by this script (pass --keep to keep it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from nlpssl.recipe import load_recipe
from nlpssl.tokenizer import load_tokenizer
tokenizer = load_tokenizer(sys.argv[2])
over = json.loads(sys.argv[3])
t0 = time.perf_counter()
out = {}
if sys.argv[1] == "prepare":
    from nlpssl.data import prepare_data
    data = prepare_data(load_recipe("bert-tiny", over), tokenizer)
    out = {k: data.stats[k] for k in ("train_blocks", "eval_blocks", "train_documents", "train_bytes", "eval_bytes")}
elif sys.argv[1] == "stream":
    import itertools
    from nlpssl.stream import BlockStream
    rows = sum(1 for _ in itertools.islice(iter(BlockStream(load_recipe("bert-tiny", over), tokenizer)), int(sys.argv[4])))
    out = {"rows": rows}
out["seconds"] = time.perf_counter() - t0
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-4000:])
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def write_corpus(folder: Path, megabytes: int, file_mb: int = 64) -> int:
    from nlpssl.corpus import generate_stories

    folder.mkdir(parents=True)
    target, written, part = megabytes * 1_000_000, 0, 0
    stories = generate_stories(10**9, seed=megabytes)
    while written < target:
        size, chunk = 0, []
        while size < file_mb * 1_000_000 and written + size < target:
            story = next(stories)
            chunk.append(story)
            size += len(story) + 2
        (folder / f"part-{part:04d}.txt").write_text("\n\n".join(chunk) + "\n", encoding="utf-8")
        written += size
        part += 1
    return written


def main() -> None:
    from nlpssl.pretrain import cpu_description

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="corpus sizes in MB")
    parser.add_argument("--workdir", type=Path, default=None, help="a new folder (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per tokens/s measurement")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.workdir is not None and args.workdir.exists():
        raise SystemExit(f"--workdir {args.workdir} exists; name a new folder (this script deletes it afterwards)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="nlpssl-data-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_description()}")
    try:
        run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    from nlpssl.sources import iter_texts
    from nlpssl.tokenizer import train_tokenizer

    corpora = {}
    for mb in sorted(args.sizes):
        t0 = time.perf_counter()
        written = write_corpus(work / f"corpus-{mb}mb", mb)
        corpora[mb] = work / f"corpus-{mb}mb"
        print(f"wrote {written / 1e6:.0f} MB of generated text in {time.perf_counter() - t0:.0f} s")
    smallest = corpora[min(corpora)]
    texts, size = [], 0
    for text in iter_texts(str(smallest)):
        texts.append(text)
        size += len(text)
        if size > 10_000_000:
            break
    tok_dir = work / "tokenizer"
    train_tokenizer(texts, tok_dir, algorithm="wordpiece", vocab_size=4096)

    def over(source: Path, **extra) -> str:
        return json.dumps([f"data.source={source}", "data.builtin_stories=null", f"data.cache_dir={work / 'cache'}",
                           f"tokenizer.path={tok_dir}", *(f"{k}={v}" for k, v in extra.items())])

    idle = child("none", str(tok_dir), over(smallest))
    print(f"\nbaseline process (imports + tokenizer, no data): peak RSS {idle['peak_rss_mb']:.0f} MB")
    print("\ncached preparation (bert-tiny data settings: WordPiece 4096, block 128), a fresh process each:")
    print(f"{'corpus':>8} {'seconds':>8} {'MB/s':>6} {'train blocks':>13} {'peak RSS MB':>12} {'above baseline':>15}")
    peaks = {}
    for mb, folder in corpora.items():
        r = child("prepare", str(tok_dir), over(folder))
        text_mb = (r["train_bytes"] + r["eval_bytes"]) / 1e6
        peaks[mb] = r["peak_rss_mb"]
        print(f"{mb:>6}MB {r['seconds']:>8.1f} {text_mb / r['seconds']:>6.1f} {r['train_blocks']:>13,} "
              f"{r['peak_rss_mb']:>12.0f} {r['peak_rss_mb'] - idle['peak_rss_mb']:>15.0f}")
    if len(peaks) > 1:
        lo, hi = min(peaks), max(peaks)
        print(f"peak RSS {hi} MB / {lo} MB corpus: {peaks[hi] / peaks[lo]:.2f}x "
              f"(above baseline: {(peaks[hi] - idle['peak_rss_mb']) / max(1.0, peaks[lo] - idle['peak_rss_mb']):.2f}x); "
              "goal <= 1.3x")
        shutil.rmtree(work / "cache", ignore_errors=True)

    rows = 40_000
    r = child("stream", str(tok_dir), over(smallest, **{"data.streaming": "true", "training.max_steps": 10}), str(rows))
    print(f"\nstreaming read alone ({min(corpora)} MB corpus): {r['rows']:,} rows of 128 in {r['seconds']:.1f} s = "
          f"{r['rows'] * 128 / r['seconds']:,.0f} tokens/s, peak RSS {r['peak_rss_mb']:.0f} MB")

    print(f"\ntraining tokens/s, tiny preset (bert-tiny recipe, batch 32 x 128), {args.steps} steps, side by side:")
    figures: dict[str, list[float]] = {"cached": [], "streaming": []}
    for attempt in range(2):
        for mode in ("cached", "streaming"):
            out = work / f"run-{mode}-{attempt}"
            cmd = [sys.executable, "-m", "nlpssl", "pretrain", "bert-tiny", *json.loads(over(smallest)),
                   f"training.output_dir={out}", f"training.max_steps={args.steps}", "training.budget_minutes=null",
                   f"training.eval_steps={args.steps}", f"training.save_steps={args.steps}", "export.enabled=false",
                   "training.disable_tqdm=true", f"data.streaming={'true' if mode == 'streaming' else 'false'}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stdout[-2000:] + proc.stderr[-4000:])
            metrics = json.loads((out / "metrics.json").read_text())
            figures[mode].append(metrics["train_tokens_per_second"])
            print(f"  {mode:>9} run {attempt + 1}: {metrics['train_tokens_per_second']:,.0f} tokens/s "
                  f"({metrics['precision']})")
    ratio = sum(figures["streaming"]) / sum(figures["cached"])
    print(f"streaming / cached training tokens/s: {ratio:.3f} (goal: within 10%, >= 0.90)")


if __name__ == "__main__":
    main()
