"""How much of a probe figure is the fine-tuning seed, and does an ensemble of fine-tunes close a gap?

`nlpssl probe` draws, per seed, the labelled rows and the fine-tuning seed together, so its spread mixes
the two. This benchmark keeps each seed's rows (the probe's own, by digest) and fine-tunes each neural arm
from several training seeds on them, each with the probe's learning-rate search. Training seed 0 of a draw
is the probe's own run, so that column repeats the probe's table. It prints, per arm and label draw:

* the probe's run, the mean and spread of single runs over the training seeds;
* the ensemble: the class probabilities of the chosen models averaged, scored on the same split;
* optionally (``--distil N``), self-training from the ensemble: the N pool rows after the draw's labelled
  ones (the probe's ``--self-train`` rows, labels blanked) are labelled by the ensemble, the most confident
  half join the labelled rows (``nlpssl.probe.pseudo_labelled``), and one student is trained from the arm's
  start at the probe's run's learning rate; beside it the same from the probe's run alone as teacher (what
  ``nlpssl probe --self-train N`` does; ``--teachers K`` trains the other). The student is one stock
  model, where the ensemble is ``--inits`` models;
* optionally (``--frozen``) a linear probe: logistic regression on the frozen export's mean-pooled hidden
  states of every layer (C picked on the selection rows), which asks what the features hold without
  fine-tuning.

Run (two processes side by side, one thread each, fp32):
    NLPSSL_CPU_BF16=0 OMP_NUM_THREADS=1 python benchmarks/finetune_inits.py runs/bert-imdb-sst2/export \\
        --task finetune-sst2 --labels 1000 --seeds 3 --inits 5 --arms pretrained --frozen --set task.dropout=0.1
    (and the same with --arms scratch; add --distil 20000 for self-training from the ensemble)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from nlpssl.finetune import check_model_folder, check_recipe, load_classifier_tokenizer
from nlpssl.labelled import Split
from nlpssl.probe import (DEFAULT_LEARNING_RATES, NEURAL_ARMS, TEACHER_SEED_STRIDE, digest, epochs_for, permutation,
                          predict_proba, probe_splits, resolve_budgets, search_learning_rate, seed_splits,
                          task_recipe, train_student, without_labels)
from nlpssl.runs import quiet_transformers

# Training seed of init k > 0 at draw s: INIT_STRIDE * (k + 1) + s (k = 0: the probe's s), as the probe's
# --teachers numbers its extra teachers, so --distil's students are the probe's.
INIT_STRIDE = TEACHER_SEED_STRIDE


def class_ids(split: Split, names: list[str]) -> np.ndarray:
    return np.array([names.index(label) for label in split.labels])


def frozen_features(model_dir: Path, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Mean-pooled hidden states of every layer (embeddings included), concatenated."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), 256):
            batch = tokenizer(texts[start:start + 256], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            states = model(**batch, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(torch.cat([(h * mask).sum(1) / mask.sum(1) for h in states], -1).numpy())
    return np.concatenate(out)


def linear_probe(model_dir: Path, tokenizer, data, max_length: int) -> dict[str, float]:
    """Logistic regression on frozen features; C of a grid picked on the selection rows."""
    from sklearn.linear_model import LogisticRegression

    feats = {k: frozen_features(model_dir, tokenizer, data.splits[k].texts, max_length)
             for k in ("train", "validation", "test")}
    mean, std = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    x = {k: (v - mean) / std for k, v in feats.items()}
    y = {k: class_ids(data.splits[k], data.label_names) for k in feats}
    best = None
    for c in (0.01, 0.03, 0.1, 0.3, 1.0):
        fit = LogisticRegression(C=c, max_iter=3000).fit(x["train"], y["train"])
        row = {"C": c, "selection_accuracy": fit.score(x["validation"], y["validation"]),
               "accuracy": fit.score(x["test"], y["test"])}
        if best is None or row["selection_accuracy"] > best["selection_accuracy"]:
            best = row
    return best


def student(recipe, model_dir: Path, tokenizer, splits, arm: str, unlabelled: Split, truth: np.ndarray,
            teacher_probs: np.ndarray, lr: float, seed: int, out: Path) -> dict:
    """Self-training from ``teacher_probs`` on ``unlabelled`` as the probe does it: the student's figures,
    and how right the kept pseudo-labels were (``truth``: the rows' real classes, read only for this report)."""
    pseudo, _, row = train_student(recipe, model_dir, tokenizer, splits, arm, unlabelled, teacher_probs, lr, None,
                                   seed, out)
    row_of = {text: i for i, text in reversed(list(enumerate(unlabelled.texts)))}  # a text's first row
    right = float(np.mean([splits.label_names.index(label) == truth[row_of[text]]
                           for text, label in zip(pseudo.texts, pseudo.labels)]))
    return {**row, "pseudo_labelled": len(pseudo), "pseudo_label_accuracy": right,
            "teacher_accuracy_on_unlabelled": float((np.asarray(teacher_probs).argmax(1) == truth).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--task", default="finetune-sst2")
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3, help="label draws, as the probe's --seeds")
    parser.add_argument("--inits", type=int, default=5, help="training seeds per draw (the first is the probe's)")
    parser.add_argument("--arms", nargs="+", default=list(NEURAL_ARMS), choices=NEURAL_ARMS)
    parser.add_argument("--frozen", action="store_true", help="also a linear probe on the frozen export")
    parser.add_argument("--distil", type=int, default=0, metavar="N",
                        help="self-training from the ensemble (and from the probe's run) on N unlabelled pool rows")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="task recipe overrides")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    if args.seeds < 1 or args.inits < 1 or args.distil < 0:
        parser.error(f"--seeds and --inits must be 1 or more, --distil 0 or more (got {args.seeds}, {args.inits}, "
                     f"{args.distil})")

    model_dir = check_model_folder(args.model_dir)
    recipe = task_recipe(args.task, model_dir, args.overrides)
    check_recipe(recipe)
    pool, scored, data, scored_on = probe_splits(recipe)
    (n,) = resolve_budgets([args.labels], pool, data.label_names, recipe.task.source)
    tokenizer = load_classifier_tokenizer(model_dir)
    gold = class_ids(scored, data.label_names)
    batch = int(recipe.training.get("per_device_train_batch_size", 8))
    print(f"{model_dir}: {n} labels, {args.seeds} draw(s) x {args.inits} training seed(s), scored on {scored_on}")
    rows = []
    # tens of fine-tunes: transformers' load reports and weight-writing bars off, as in the probe
    with tempfile.TemporaryDirectory() as runs, quiet_transformers():
        for seed in range(args.seeds):
            order = permutation(pool, recipe, seed)
            splits = seed_splits(pool, order, n, seed, scored, data, recipe, scored_on)
            n_epochs = epochs_for(len(splits.splits["train"]), batch)
            rest = pool.subset(order[n:n + args.distil])
            unlabelled, truth = without_labels(rest), class_ids(rest, data.label_names)
            for arm in args.arms:
                singles, probs, teach, lrs = [], [], [], []
                for k in range(args.inits):
                    init = seed if k == 0 else INIT_STRIDE * (k + 1) + seed
                    best, trainer, _ = search_learning_rate(
                        recipe, model_dir, tokenizer, splits, arm, DEFAULT_LEARNING_RATES, n_epochs, init,
                        Path(runs) / f"{arm}-{seed}-{k}")
                    probs.append(predict_proba(trainer.model, tokenizer, scored, recipe.task.max_length))
                    if args.distil:
                        teach.append(predict_proba(trainer.model, tokenizer, unlabelled, recipe.task.max_length))
                    singles.append(best["accuracy"])
                    lrs.append(best["learning_rate"])
                    rows.append({"arm": arm, "draw": seed, "init": init, "train_digest": digest(
                        splits.splits["train"]), **best})
                    del trainer
                ensemble = float((np.mean(probs, axis=0).argmax(1) == gold).mean())
                spread = statistics.stdev(singles) if len(singles) > 1 else 0.0
                rows.append({"arm": arm, "draw": seed, "ensemble_of": len(probs), "accuracy": ensemble})
                print(f"{arm:>10} draw {seed} ({digest(splits.splits['train'])}): probe's run {singles[0]:.3f}, "
                      f"single runs {statistics.mean(singles):.3f} +- {spread:.3f} "
                      f"({' / '.join(f'{a:.3f}' for a in singles)}), ensemble of {len(probs)} {ensemble:.3f}",
                      flush=True)
                teachers = (("self-trained", teach[:1]), ("ensemble-distilled", teach)) if args.distil else ()
                for name, teacher in teachers:
                    row = student(recipe, model_dir, tokenizer, splits, arm, unlabelled, truth,
                                  np.mean(teacher, axis=0), lrs[0], seed, Path(runs) / f"{arm}-{seed}-{name}")
                    rows.append({"arm": arm, "draw": seed, "student": name, "teachers": len(teacher), **row})
                    print(f"{arm:>10} draw {seed}: {name} student {row['accuracy']:.3f} ({row['pseudo_labelled']} "
                          f"pseudo-labelled rows, {row['pseudo_label_accuracy']:.3f} of them right; teacher "
                          f"{row['teacher_accuracy_on_unlabelled']:.3f} on all {len(unlabelled)})", flush=True)
            if args.frozen:
                best = linear_probe(model_dir, tokenizer, splits, recipe.task.max_length)
                rows.append({"arm": "frozen-linear", "draw": seed, **best})
                print(f"frozen-linear draw {seed}: {best['accuracy']:.3f} (C {best['C']})", flush=True)
    for arm in [*args.arms, "frozen-linear"]:
        probe_runs = [r["accuracy"] for r in rows if r["arm"] == arm and r.get("init") == r["draw"]]
        singles = [r["accuracy"] for r in rows if r["arm"] == arm and "init" in r]
        ensembles = [r["accuracy"] for r in rows if r["arm"] == arm and "ensemble_of" in r]
        frozen = [r["accuracy"] for r in rows if r["arm"] == arm and arm == "frozen-linear"]
        for name in ("self-trained", "ensemble-distilled"):
            got = [r["accuracy"] for r in rows if r["arm"] == arm and r.get("student") == name]
            if got:
                print(f"{arm}: {name} students {statistics.mean(got):.3f} over {len(got)} draw(s)")
        if frozen:
            print(f"frozen-linear: {statistics.mean(frozen):.3f} over {len(frozen)} draw(s)")
        elif singles:
            print(f"{arm}: probe's runs {statistics.mean(probe_runs):.3f}, every single run "
                  f"{statistics.mean(singles):.3f} ({len(singles)}), ensembles {statistics.mean(ensembles):.3f} "
                  f"over {len(ensembles)} draw(s)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
