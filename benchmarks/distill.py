"""A distilled student against the same student trained from scratch, for the same wall time.

Pretrains, one after the other on this machine (nothing else should run meanwhile):

- ``distilled``: ``distil-tiny`` with ``distill.teacher=TEACHER`` (the student: the teacher's layers
  0, 2, ... copied, then 5 x KL + 2 x masked-LM + 1 x cosine against the frozen teacher);
- ``scratch``: ``bert-tiny`` cut to the student's depth (``model.num_layers``), with the teacher's
  tokenizer, its own learning rate (the main job's 2e-3), no teacher;

on the same text (``--set`` overrides, applied to both) with the same ``training.budget_minutes``.
Both are scored on the same held-out blocks (same data settings, split and tokenizer) by masked-token
accuracy, and fine-tuned by ``nlpssl probe`` (pretrained arm) on SST-2 with 1,000 training sentences
(GLUE dev); the teacher is fine-tuned the same way for reference. Last, inference speed: tokens per
second of the student and the teacher's forward pass (fp32, eval mode, batches of 32 x 128),
alternating in one loop so both see the same machine load.

Run (about 40 minutes on 2 CPU cores; the teacher here: the bert-imdb export, on the IMDB reviews):
    python benchmarks/distill.py --teacher runs/bert-imdb/export --out runs/distill-bench --budget 7 \\
        --set data.source=../shared/data/imdb data.clean=html data.eval_fraction=0.01 data.builtin_stories=null
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def pretrain_arms(out: Path, teacher: Path, budget: float, layers: int, extra: list[str]) -> dict[str, dict]:
    from nlpssl.pretrain import pretrain

    arms = {
        "distilled": ("distil-tiny", [f"distill.teacher={teacher}"]),
        "scratch": ("bert-tiny", [f"tokenizer.path={teacher}", f"model.num_layers={layers}"]),
    }
    found = {}
    for name, (recipe, own) in arms.items():
        run = out / name
        if (run / "export" / "config.json").is_file():
            print(f"[bench] {name}: reusing {run}")
        else:
            pretrain(recipe, [f"training.output_dir={run}", f"training.budget_minutes={budget}",
                              f"data.cache_dir={out / 'cache'}", *own, *extra])
        found[name] = json.loads((run / "metrics.json").read_text())
    return found


def probe_arm(model: Path, where: Path, labels: str, seeds: int, overrides: list[str]) -> list[float]:
    from nlpssl.probe import probe

    if not (where / "probe.json").is_file():
        probe(model, task="finetune-sst2", labels=[labels], seeds=seeds, out_dir=where, arms=["pretrained"],
              overrides=overrides)
    return [r["accuracy"] for r in json.loads((where / "probe.json").read_text())["runs"]]


def inference_speed(models: dict[str, Path], rounds: int = 10, batch: int = 32, length: int = 128) -> dict[str, float]:
    """Tokens per second of each model's forward, the models taking turns in one loop."""
    import torch
    from transformers import AutoModelForMaskedLM

    loaded = {name: AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float32).eval() for name, path in models.items()}
    vocab = min(m.config.vocab_size for m in loaded.values())
    ids = torch.randint(5, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    seconds = {name: 0.0 for name in loaded}
    with torch.no_grad():
        for model in loaded.values():
            model(input_ids=ids)  # warm-up
        for _ in range(rounds):
            for name, model in loaded.items():
                start = time.perf_counter()
                model(input_ids=ids)
                seconds[name] += time.perf_counter() - start
    return {name: rounds * batch * length / s for name, s in seconds.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True, help="a masked-LM export (ModernBERT, as bert-tiny makes)")
    p.add_argument("--out", type=Path, default=Path("runs/distill-bench"))
    p.add_argument("--budget", type=float, default=7.0, help="pretraining minutes of wall time, each")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--sst2-labels", default="1000")
    p.add_argument("--sst2-set", nargs="*", default=["task.dropout=0.1"], help="overrides of finetune-sst2")
    p.add_argument("--set", nargs="*", default=[], help="overrides applied to both pretraining recipes")
    args = p.parse_args()

    from nlpssl.objectives.distill import teacher_config, teacher_layers
    from nlpssl.pretrain import cpu_description

    print(f"[bench] CPU: {cpu_description()}")
    layers = len(teacher_layers(teacher_config(str(args.teacher)), None))
    metrics = pretrain_arms(args.out, args.teacher, args.budget, layers, args.set)
    own = args.teacher.parent / "metrics.json"  # the teacher's own run, when it is an nlpssl export
    if own.is_file():
        metrics["teacher"] = json.loads(own.read_text())
    models = {"teacher": args.teacher, "distilled": args.out / "distilled" / "export",
              "scratch": args.out / "scratch" / "export"}
    sst2 = {name: probe_arm(path, args.out / f"probe-{name}", args.sst2_labels, args.seeds, list(args.sst2_set))
            for name, path in models.items()}
    speed = inference_speed({"teacher": models["teacher"], "student": models["distilled"]})

    print(f"\nSame wall time: {args.budget:g} minutes of pretraining each; SST-2 with {args.sst2_labels} labels by "
          f"`nlpssl probe` (pretrained arm), mean ± sd over {args.seeds} seeds, GLUE dev")
    print("| model | layers | steps | masked-token accuracy (held-out) | teacher agreement | SST-2 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in models:
        m = metrics.get(name, {})
        depth = json.loads((models[name] / "config.json").read_text())["num_hidden_layers"]
        acc = m.get("eval_mlm_accuracy")
        agree = m.get("eval_teacher_agreement")
        scores = sst2[name]
        sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(f"| {name} | {depth} | {m.get('steps', '-')} | {'-' if acc is None else f'{acc:.3f}'} | "
              f"{'-' if agree is None else f'{agree:.3f}'} | {statistics.fmean(scores):.3f} ± {sd:.3f} |")
    print(f"\nInference (fp32, batch 32 x 128, forward only): teacher {speed['teacher']:,.0f} tokens/s, "
          f"student {speed['student']:,.0f} tokens/s, student / teacher = {speed['student'] / speed['teacher']:.2f}x")
    (args.out / "summary.json").write_text(json.dumps({"metrics": metrics, "sst2": sst2, "speed": speed}, indent=2))


if __name__ == "__main__":
    main()
