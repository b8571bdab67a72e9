"""ELECTRA against masked-LM at equal compute: the same wall-clock budget, the same fine-tuning.

Pretrains ``electra-tiny``, ``bert-classic-tiny`` (the same BERT-Tiny body trained as a masked-LM) and
``bert-tiny`` (the main job, ModernBERT) one after the other on this machine with the same
``training.budget_minutes`` (nothing else should run meanwhile), then fine-tunes each export with
``nlpssl probe`` (pretrained arm only: the same rows, learning-rate grid, epochs and early stopping
for both) on the built-in labelled set and on SST-2 with 1,000 training sentences (scored on GLUE
dev), several seeds, and prints one table with means and standard deviations.

Run (about 60 minutes on 2 CPU cores):
    python benchmarks/electra_vs_mlm.py --out runs/electra-vs-mlm --budget 7 --seeds 3

SST-2 is read by the shipped ``finetune-sst2`` recipe (its default path is ../shared/data/sst2;
pass ``--sst2-set task.source=... task.test_source=...`` for another copy).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RECIPES = ("electra-tiny", "bert-classic-tiny", "bert-tiny")  # the same body as electra-tiny; the main job


def pretrain_all(out: Path, budget: float, extra: list[str]) -> dict[str, dict]:
    from nlpssl.pretrain import pretrain

    found = {}
    for name in RECIPES:
        run = out / name
        if (run / "export" / "config.json").is_file():
            print(f"[bench] {name}: reusing {run}")
        else:
            pretrain(name, [f"training.output_dir={run}", f"training.budget_minutes={budget}", *extra])
        found[name] = json.loads((run / "metrics.json").read_text())
    return found


def probe_all(out: Path, tasks: dict[str, tuple[str, list[str], list[str]]], seeds: int) -> dict:
    from nlpssl.probe import probe

    scores: dict = {}
    for name in RECIPES:
        for task, (spec, labels, overrides) in tasks.items():
            where = out / f"probe-{name}-{task}"
            if (where / "probe.json").is_file():
                report = json.loads((where / "probe.json").read_text())
            else:
                report = probe(out / name / "export", task=spec, labels=labels, seeds=seeds, out_dir=where,
                               arms=["pretrained"], overrides=overrides).to_dict()
            for budget, row in report["summary"].items():
                scores[(name, task, budget)] = row["pretrained"]
    return scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/electra-vs-mlm"))
    p.add_argument("--budget", type=float, default=7.0, help="pretraining minutes of wall time, each")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sst2-labels", default="1000")
    p.add_argument("--sst2-set", nargs="*", default=["task.dropout=0.1"], help="overrides of finetune-sst2")
    p.add_argument("--set", nargs="*", default=[], help="overrides applied to both pretraining recipes")
    args = p.parse_args()

    from nlpssl.pretrain import cpu_description

    print(f"[bench] CPU: {cpu_description()}")
    metrics = pretrain_all(args.out, args.budget, args.set)
    tasks = {"builtin": ("builtin", ["all"], []),
             "sst2": ("finetune-sst2", [args.sst2_labels], list(args.sst2_set))}
    scores = probe_all(args.out, tasks, args.seeds)

    print(f"\nEqual compute: {args.budget:g} minutes of pretraining each; fine-tuning by `nlpssl probe` "
          f"(pretrained arm), mean ± sd over {args.seeds} seeds")
    header = "| recipe | steps | train tokens | pretraining metric | built-in set | SST-2, 1,000 labels |"
    print(header + "\n|---|---:|---:|---|---:|---:|")
    for name in RECIPES:
        m = metrics[name]
        metric = (f"replaced-token AUC {m['eval_replaced_auc']:.3f}" if "eval_replaced_auc" in m
                  else f"masked-token accuracy {m['eval_mlm_accuracy']:.3f}")
        cells = []
        for task in tasks:
            row = next((v for (n, t, _), v in scores.items() if n == name and t == task), None)
            cells.append("-" if row is None else f"{row['mean']:.3f} ± {row['std']:.3f}")
        print(f"| {name} | {m['steps']:,} | {m['train_tokens']:,} | {metric} | {cells[0]} | {cells[1]} |")
    runs = {name: statistics.fmean([r["accuracy"] for r in
                                    json.loads((args.out / f"probe-{name}-sst2" / "probe.json").read_text())["runs"]])
            for name in RECIPES}
    for other in RECIPES[1:]:
        print(f"SST-2 difference (electra-tiny - {other}): {runs['electra-tiny'] - runs[other]:+.3f}")


if __name__ == "__main__":
    main()
