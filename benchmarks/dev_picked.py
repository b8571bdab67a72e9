"""The probe's arms under a kinder protocol: every labelled row trained on, the setting picked on the scored split.

`nlpssl probe` trains on 90% of each label budget and picks the learning rate, the epoch and bag-of-words' C on
the other 10%, so the scored split never chooses anything. Reference figures quoted elsewhere (issue 10's
bag-of-words 0.704 at 1,000 SST-2 labels, "best of C in {1, 4, 16}") read as all 1,000 rows trained on and the
best setting taken on GLUE dev. This benchmark runs each arm that way on the probe's own rows (each seed's
first n rows of the probe's permutation, by digest), so a probe figure and a figure of that kind can be set
side by side. Its accuracies are optimistic by construction (the scored split picks), and are not probe figures.

Run (two processes side by side, one thread each, fp32):
    NLPSSL_CPU_BF16=0 OMP_NUM_THREADS=1 python benchmarks/dev_picked.py runs/bert-imdb-sst2/export \\
        --task finetune-sst2 --labels 1000 --seeds 3 --arms pretrained bag-of-words --set task.dropout=0.1
    (and the same with --arms scratch)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from nlpssl.finetune import check_model_folder, check_recipe, load_classifier_tokenizer
from nlpssl.labelled import TaskData
from nlpssl.probe import (ARMS, BOW_C, DEFAULT_LEARNING_RATES, _bow_scores, _fit_bag_of_words, digest, epochs_for,
                          permutation, probe_splits, resolve_budgets, search_learning_rate, task_recipe)
from nlpssl.runs import quiet_transformers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--task", default="finetune-sst2")
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="task recipe overrides")
    args = parser.parse_args()

    model_dir = check_model_folder(args.model_dir)
    recipe = task_recipe(args.task, model_dir, args.overrides)
    check_recipe(recipe)
    pool, scored, data, scored_on = probe_splits(recipe)
    (n,) = resolve_budgets([args.labels], pool, data.label_names, recipe.task.source)
    tokenizer = load_classifier_tokenizer(model_dir)
    batch = int(recipe.training.get("per_device_train_batch_size", 8))
    print(f"{model_dir}: all {n} labelled rows trained on, settings picked on {scored_on} (optimistic)")
    results: dict[str, list[float]] = {arm: [] for arm in args.arms}
    # tens of fine-tunes: transformers' load reports and weight-writing bars off, as in the probe
    with tempfile.TemporaryDirectory() as runs, quiet_transformers():
        for seed in range(args.seeds):
            train = pool.subset(permutation(pool, recipe, seed)[:n])
            splits = TaskData({"train": train, "validation": scored, "test": scored}, data.label_names,
                              {"train": f"{n} of {recipe.task.source}", "validation": scored_on, "test": scored_on})
            for arm in args.arms:
                if arm == "bag-of-words":
                    tried = {c: _bow_scores(_fit_bag_of_words(train, c, seed), scored, data.label_names)["accuracy"]
                             for c in BOW_C}
                    accuracy, setting = max(tried.values()), f"C {max(tried, key=tried.get):g}"
                else:
                    best, _, tried = search_learning_rate(recipe, model_dir, tokenizer, splits, arm,
                                                          DEFAULT_LEARNING_RATES, epochs_for(n, batch), seed,
                                                          Path(runs) / f"{arm}-{seed}")
                    accuracy, setting = best["accuracy"], f"lr {best['learning_rate']:g}, {best['epochs']:g} epochs run"
                results[arm].append(accuracy)
                print(f"{arm:>12} seed {seed} ({digest(train)}): {accuracy:.3f} ({setting})", flush=True)
    for arm, accs in results.items():
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{arm}: {statistics.mean(accs):.3f} +- {spread:.3f} ({' / '.join(f'{a:.3f}' for a in accs)})")


if __name__ == "__main__":
    main()
