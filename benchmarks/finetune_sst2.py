"""SST-2 dev accuracy: nlpssl-pretrained tiny BERT vs the same fine-tune from scratch vs bag of words.

Usage:
    python benchmarks/finetune_sst2.py ../shared/data/sst2/train.tsv ../shared/data/sst2/dev.tsv \\
        ../shared/data/gutenberg_books [--pretrain-steps 1500] [--train-examples 10000] [--out runs/bench-sst2]

Three numbers on the GLUE dev set (872 sentences), each with its budget:

1. bag of words: TF-IDF unigrams+bigrams and logistic regression (scikit-learn), on the same
   training subsample as the neural models and on all 67,349 sentences;
2. the masked-LM encoder of recipes/bert-tiny.yaml (~5M parameters), pretrained by nlpssl on the
   Gutenberg books for --pretrain-steps steps (lower-cased WordPiece tokenizer, since SST-2 is
   lower-cased), then fine-tuned with recipes/finetune-sst2.yaml;
3. the same fine-tune from random weights (`init=scratch`).

The data is read where it lies; nothing is copied into the repository. Runs go to --out (replaced).
Pass --threads 1 on a CPU shared with other jobs: torch's default of one thread per core is many
times slower once another process competes for the cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", type=Path, help="SST-2 train.tsv (sentence<TAB>label)")
    parser.add_argument("dev", type=Path, help="SST-2 dev.tsv")
    parser.add_argument("books", type=Path, help="folder of .txt books to pretrain on")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-sst2"))
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--train-examples", type=int, default=10000, help="SST-2 training subsample (seeded)")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    return parser.parse_args()


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    # GLUE TSVs: no quoting, one tab per line.
    rows = [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    return [r[0] for r in rows], [int(r[1]) for r in rows]


def bag_of_words(train: Path, dev: Path, subsample: int) -> dict[str, float]:
    """TF-IDF (1-2 grams) + logistic regression, on the subsample the neural models see and on all rows."""
    import random

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, labels = read_tsv(train)
    dev_texts, dev_labels = read_tsv(dev)
    # The same rows as task.max_train_examples picks (seed 0, sorted indices).
    pick = sorted(random.Random(0).sample(range(len(texts)), min(subsample, len(texts))))
    out = {}
    for name, idx in (("subsample", pick), ("full", range(len(texts)))):
        start = time.perf_counter()
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True),
                              LogisticRegression(C=4.0, max_iter=2000))
        model.fit([texts[i] for i in idx], [labels[i] for i in idx])
        accuracy = float((model.predict(dev_texts) == dev_labels).mean())
        out[name] = {"dev_accuracy": accuracy, "train_rows": len(idx), "seconds": time.perf_counter() - start}
    return out


def pretrain_bert(books: Path, out: Path, steps: int):
    from nlpssl.pretrain import pretrain
    from nlpssl.recipe import load_recipe

    recipe = load_recipe("bert-tiny", [
        f"training.output_dir={out}", f"data.source={books}", "data.txt_unit=paragraph",
        f"data.cache_dir={out.parent / 'cache'}", "tokenizer.lowercase=true", "tokenizer.vocab_size=8192",
        "data.block_size=128", "data.eval_fraction=0.01", f"training.max_steps={steps}",
        "training.per_device_train_batch_size=32", "training.learning_rate=1e-3", "training.warmup_steps=100",
        f"training.eval_steps={steps}", f"training.save_steps={steps}", "training.logging_steps=100",
        "training.disable_tqdm=true",
    ])
    start = time.perf_counter()
    result = pretrain(recipe)
    return result, time.perf_counter() - start


def finetune(model: Path, init: str, out: Path, args: argparse.Namespace) -> dict:
    from nlpssl.finetune import finetune as run_finetune
    from nlpssl.recipe import load_recipe

    recipe = load_recipe("finetune-sst2", [
        f"model={model}", f"init={init}", f"training.output_dir={out}",
        f"task.source={args.train}", f"task.test_source={args.dev}",
        f"task.max_train_examples={args.train_examples}", f"training.num_train_epochs={args.epochs}",
        "training.disable_tqdm=true",
    ])
    start = time.perf_counter()
    metrics = run_finetune(recipe).metrics
    # The dev set is the test split; early stopping picks on 10% of the training sentences.
    return {"dev_accuracy": metrics["test_accuracy"], "dev_macro_f1": metrics["test_macro_f1"],
            "steps": metrics["steps"], "train_runtime_s": metrics["train_runtime_s"],
            "seconds": time.perf_counter() - start, "best_checkpoint": metrics["best_checkpoint"]}


def main() -> None:
    args = parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    results: dict = {"settings": {k: str(v) for k, v in vars(args).items()}}
    results["bag_of_words"] = bag_of_words(args.train, args.dev, args.train_examples)
    print(json.dumps(results["bag_of_words"], indent=1), flush=True)
    pre, seconds = pretrain_bert(args.books, args.out / "pretrain", args.pretrain_steps)
    results["pretrain"] = {**{k: pre.metrics.get(k) for k in ("params", "steps", "train_tokens", "eval_mlm_accuracy")},
                           "seconds": seconds}
    print(json.dumps(results["pretrain"], indent=1), flush=True)
    for init in ("pretrained", "scratch"):
        results[init] = finetune(pre.export_dir, init, args.out / f"finetune-{init}", args)
        print(init, json.dumps(results[init], indent=1), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print("\nSST-2 dev accuracy (872 sentences)")
    bow = results["bag_of_words"]
    print(f"  bag of words, {bow['subsample']['train_rows']} rows: {bow['subsample']['dev_accuracy']:.3f}")
    print(f"  bag of words, all {bow['full']['train_rows']} rows: {bow['full']['dev_accuracy']:.3f}")
    print(f"  bert-tiny encoder pretrained ({args.pretrain_steps} steps, {seconds / 60:.1f} min): "
          f"{results['pretrained']['dev_accuracy']:.3f}")
    print(f"  bert-tiny encoder from scratch: {results['scratch']['dev_accuracy']:.3f}")


if __name__ == "__main__":
    main()
