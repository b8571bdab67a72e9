"""Score encoder exports as frozen sentence embedders, offline, beside a random encoder and TF-IDF.

For each ``--model NAME=PATH`` (pooling read from the folder's ``1_Pooling/config.json``, "mean"
without one; ``NAME=PATH:cls`` or ``:mean`` overrides it), and on the same rows:

- ``<task> probe``: logistic regression (C=1, standardised features) on frozen vectors, test accuracy;
- ``<task> kNN``: cosine 10-nearest-neighbour majority vote, test accuracy;
- ``align`` / ``uniform``: alignment and uniformity (Wang & Isola 2020) on held-out text, lower is
  better. There is no STS data here, so a "positive pair" is two adjacent sentences of one WikiText-2
  paragraph (non-overlapping pairs, seeded sample); uniformity is over the first sentences of the pairs.

Baselines: ``scratch`` is the first model's architecture randomly initialised (seeded, mean pooling);
``tf-idf`` is word 1-2-gram TF-IDF (sublinear tf, as ``nlpssl probe``'s bag-of-words) fit on each
task's training rows, fed sparse and L2-normalised to the probe and the kNN (cosine); for align /
uniform it is fit on the held-out sentences and its L2-normalised sparse rows are scored as they are.

Tasks (read-only under --data): SST-2 (train pool from train.tsv, test = GLUE dev, 872 rows); TREC
coarse labels (train_5500 / TREC_10); AG News and SMS spam (one file each: a seeded test split,
the training pool drawn from the other rows). Training pools are subsampled to --train-size, tests to
--test-size, both seeded. TREC, AG News and SMS are parsed by benchmarks/probe_tasks.py's readers.

Run:
    python benchmarks/embeddings.py --model mlm-mean=runs/bert-imdb/export --data ../shared/data \\
        --tasks sst2 trec ag_news sms_spam --train-size 2000 --test-size 1000 --seed 0 --json emb.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # probe_tasks sits beside this script

import probe_tasks  # noqa: E402

Rows = list[tuple[str, str]]  # (text, label)
TASKS = ("sst2", "trec", "ag_news", "sms_spam")


# ------------------------------------------------------------------------------------------------
# Data


def _read_tsv(path: Path) -> Rows:
    """Rows of a ``text<TAB>label`` file with a header (the layout probe_tasks.write_tsv writes)."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(line.rsplit("\t", 1)) for line in lines if line.strip()]


def load_task(name: str, data: Path, seed: int, train_size: int, test_size: int) -> tuple[Rows, Rows]:
    """(training rows, test rows) of one task, disjoint, subsampled with ``seed``."""
    rng = random.Random(seed)
    if name == "sst2":
        train, test = _read_tsv(data / "sst2" / "train.tsv"), _read_tsv(data / "sst2" / "dev.tsv")
    else:
        with tempfile.TemporaryDirectory(prefix="emb-bench-") as tmp:
            pool_file, overrides = getattr(probe_tasks, name)(data, Path(tmp))
            rows = _read_tsv(pool_file)
            test_file = next((o.split("=", 1)[1] for o in overrides if o.startswith("task.test_source=")), None)
            if test_file is not None:  # TREC: its own test file
                train, test = rows, _read_tsv(Path(test_file))
            else:  # one file: a seeded test split first, the training pool from the rest
                rng.shuffle(rows)
                n_test = min(test_size, len(rows) // 2)
                train, test = rows[n_test:], rows[:n_test]
    return _sample(train, train_size, rng), _sample(test, test_size, rng)


def _sample(rows: Rows, n: int, rng: random.Random) -> Rows:
    return rng.sample(rows, n) if n < len(rows) else list(rows)


def heldout_pairs(path: Path, n_pairs: int, seed: int) -> list[tuple[str, str]]:
    """Adjacent sentences of one paragraph of a WikiText file, as non-overlapping pairs, seeded sample."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("="):  # blank separators and ` = Heading = ` lines
            continue
        text = line.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
        # WikiText is tokenised: a sentence ends with a spaced " . ", " ? " or " ! " before a capital.
        sentences = [s for s in re.split(r"(?<= [.!?]) (?=[A-Z\"])", text) if len(s.split()) >= 5]
        pairs += [(sentences[i], sentences[i + 1]) for i in range(0, len(sentences) - 1, 2)]
    return random.Random(seed).sample(pairs, min(n_pairs, len(pairs)))


# ------------------------------------------------------------------------------------------------
# Scoring


def score_vectors(encode, tasks: dict[str, tuple[Rows, Rows]], pairs, seed: int, k: int) -> dict[str, float]:
    """Probe and kNN accuracy per task, then align / uniform, for ``encode(texts) -> vectors``."""
    from nlpssl.embeddings import alignment, knn_accuracy, linear_probe_accuracy, uniformity

    scores = {}
    for name, (train, test) in tasks.items():
        x_train, x_test = encode([t for t, _ in train]), encode([t for t, _ in test])
        y_train, y_test = [y for _, y in train], [y for _, y in test]
        scores[f"{name} probe"] = linear_probe_accuracy(x_train, y_train, x_test, y_test, seed=seed)
        scores[f"{name} kNN"] = knn_accuracy(x_train, y_train, x_test, y_test, k=k)
    first = encode([a for a, _ in pairs])
    scores["align"] = alignment(first, encode([b for _, b in pairs]))
    scores["uniform"] = uniformity(first)
    return scores


def score_tfidf(tasks: dict[str, tuple[Rows, Rows]], pairs, seed: int, k: int) -> dict[str, float]:
    """The same figures for TF-IDF rows: fit per task on its training texts, and on the held-out sentences."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from nlpssl.embeddings import alignment, knn_accuracy, linear_probe_accuracy, uniformity

    def vectorizer() -> TfidfVectorizer:
        return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)

    scores = {}
    for name, (train, test) in tasks.items():
        vec = vectorizer()
        x_train, x_test = vec.fit_transform([t for t, _ in train]), vec.transform([t for t, _ in test])
        y_train, y_test = [y for _, y in train], [y for _, y in test]
        scores[f"{name} probe"] = linear_probe_accuracy(x_train, y_train, x_test, y_test, seed=seed)
        scores[f"{name} kNN"] = knn_accuracy(x_train, y_train, x_test, y_test, k=k)
    held = vectorizer().fit([s for pair in pairs for s in pair])
    first, second = held.transform([a for a, _ in pairs]), held.transform([b for _, b in pairs])
    return scores | {"align": alignment(first, second), "uniform": uniformity(first)}


def scratch_folder(model_dir: Path, out: Path, seed: int) -> Path:
    """``model_dir``'s architecture and tokenizer with seeded random weights, saved in ``out``."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    torch.manual_seed(seed)
    AutoModel.from_config(AutoConfig.from_pretrained(model_dir)).save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def parse_model(spec: str) -> tuple[str, Path, str | None]:
    """``NAME=PATH`` or ``NAME=PATH:cls`` / ``:mean`` -> (name, export folder, pooling override or None)."""
    from nlpssl.errors import NlpsslError
    from nlpssl.runs import export_folder

    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise NlpsslError(f"--model: expected NAME=PATH[:cls|:mean] (got {spec!r}). "
                          f"Use e.g. --model mlm=runs/bert-imdb/export.")
    pooling = None
    head, colon, tail = path.rpartition(":")
    if colon and tail in ("cls", "mean"):
        path, pooling = head, tail
    folder = export_folder(Path(path))
    if not (folder / "config.json").is_file():
        raise NlpsslError(f"--model {name}: {path!r} is not an export folder (no config.json). Pass a run's "
                          f"export/ (config.json + model.safetensors + tokenizer files).")
    return name, folder, pooling


# ------------------------------------------------------------------------------------------------
# Output


def format_table(rows: dict[str, dict], columns: list[str]) -> str:
    """One line per model: every score with 3 decimals, then the wall time."""
    width = max(len(n) for n in rows) + 2
    head = f"{'model':<{width}}" + "".join(f"{c:>{max(len(c), 7) + 2}}" for c in columns) + f"{'time s':>9}"
    lines = [head, "-" * len(head)]
    for name, row in rows.items():
        cells = "".join(f"{row['scores'][c]:>{max(len(c), 7) + 2}.3f}" for c in columns)
        lines.append(f"{name:<{width}}{cells}{row['seconds']:>9.1f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=PATH[:cls|:mean]",
                   help="an export folder to score (repeat for several)")
    p.add_argument("--data", default="../shared/data", help="folder holding sst2/, trec/, ag_news/, sms_spam/")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--train-size", type=int, default=2000, help="training rows per task (seeded sample)")
    p.add_argument("--test-size", type=int, default=1000, help="test rows per task (seeded sample)")
    p.add_argument("--heldout", default=None, help="WikiText file or folder (default: <data>/wikitext2/wiki.test.raw)")
    p.add_argument("--pairs", type=int, default=1000, help="adjacent-sentence pairs for align / uniform")
    p.add_argument("--k", type=int, default=10, help="neighbours of the kNN vote")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write every figure to this file")
    args = p.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from nlpssl.embeddings import Encoder
    from nlpssl.pretrain import cpu_description

    # Loading a masked-LM export into AutoModel reports the unused LM head on every load: expected here.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from nlpssl.errors import NlpsslError

    try:
        models = [parse_model(spec) for spec in args.model]
    except NlpsslError as err:
        p.error(str(err))
    data = Path(args.data)
    heldout = Path(args.heldout) if args.heldout else data / "wikitext2"
    heldout = heldout / "wiki.test.raw" if heldout.is_dir() else heldout
    print(f"CPU: {cpu_description()}\ntorch {torch.__version__}", flush=True)

    tasks = {t: load_task(t, data, args.seed, args.train_size, args.test_size) for t in args.tasks}
    pairs = heldout_pairs(heldout, args.pairs, args.seed)
    for t, (train, test) in tasks.items():
        print(f"{t}: {len(train)} train / {len(test)} test rows, {len({y for _, y in train})} labels")
    print(f"held-out: {len(pairs)} adjacent-sentence pairs from {heldout}\n", flush=True)

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="emb-scratch-") as tmp:
        scratch = scratch_folder(models[0][1], Path(tmp), args.seed)
        for name, path, pooling in [*models, ("scratch", scratch, "mean")]:
            start = time.perf_counter()
            enc = Encoder(path, pooling=pooling, max_length=args.max_length, batch_size=args.batch_size)
            scores = score_vectors(lambda texts: enc.encode(texts, progress=False), tasks, pairs, args.seed, args.k)
            where = str(models[0][1]) + " (random init)" if name == "scratch" else str(path)
            rows[name] = {"path": where, "pooling": enc.pooling, "scores": scores,
                          "seconds": time.perf_counter() - start}
            print(f"{name}: {rows[name]['seconds']:.1f} s ({enc.pooling} pooling)", flush=True)
    start = time.perf_counter()
    rows["tf-idf"] = {"path": None, "pooling": None, "scores": score_tfidf(tasks, pairs, args.seed, args.k)}
    rows["tf-idf"]["seconds"] = time.perf_counter() - start

    columns = [f"{t} {kind}" for t in tasks for kind in ("probe", "kNN")] + ["align", "uniform"]
    print(f"\naccuracy (probe: logistic regression; kNN: k={args.k}, cosine); align / uniform: lower is better\n")
    print(format_table(rows, columns))
    if args.json:
        report = {"cpu": cpu_description(), "torch": torch.__version__, "args": vars(args),
                  "data": {t: {"train": len(a), "test": len(b)} for t, (a, b) in tasks.items()},
                  "heldout": {"file": str(heldout), "pairs": len(pairs)}, "models": rows}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
