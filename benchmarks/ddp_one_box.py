"""Does ``torchrun`` pay on one small CPU box? One process with every core against one process per core.

Usage:
    python benchmarks/ddp_one_box.py --steps 300 --repeats 2
    python benchmarks/ddp_one_box.py --set model.hidden_size=256 model.num_layers=4 model.num_heads=4

On a 2-core machine, ``torchrun --nproc_per_node 2`` with one thread per process (gloo) could beat one
process with 2 threads when a step is made of many small ops that 2 threads barely speed up. This runs
the same recipe both ways on the built-in corpus with the same global batch (the per-process batch is
halved under DDP), alternating single, DDP, DDP, single so that load from other jobs hits both, and
prints each run's training tokens/s (from metrics.json) and the ratio of the means. The default shape
is ``bert-imdb-sst2``'s 2 x 128 ModernBERT. Timings on a shared machine are noisy: compare the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPE = ["model.hidden_size=128", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=512"]


def run(a, out: Path, processes: int) -> float:
    over = [f"training.output_dir={out}", f"data.cache_dir={out.parent / 'cache'}", "data.builtin_stories=4000",
            f"training.max_steps={a.steps}", "training.budget_minutes=null", "training.eval_strategy=no",
            "training.save_strategy=no", "export.enabled=false", "training.disable_tqdm=true",
            f"training.per_device_train_batch_size={a.batch // processes}", *a.set]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 \
        else [sys.executable]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["OMP_NUM_THREADS"] = str(max(1, a.cores // processes))
    cmd = [*launch, "-m", "nlpssl", "pretrain", a.recipe, *over]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    tps = json.loads((out / "metrics.json").read_text())["train_tokens_per_second"]
    print(f"  {processes} process(es) x {env['OMP_NUM_THREADS']} thread(s): {tps:,.0f} tokens/s", flush=True)
    return tps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="bert-tiny")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32, help="global batch (rows per step), the same both ways")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--set", nargs="*", default=SHAPE, metavar="KEY=VALUE", help="recipe overrides (default: 2 x 128)")
    a = p.parse_args()
    if a.cores < 2 or a.batch % a.cores:
        p.error(f"--cores {a.cores} and --batch {a.batch}: need at least 2 cores and a batch they divide")
    one, many = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.repeats):
            for processes in ((1, a.cores) if i % 2 == 0 else (a.cores, 1)):
                (one if processes == 1 else many).append(run(a, Path(tmp) / f"run{i}-{processes}", processes))
    print(f"{a.recipe} {' '.join(a.set)}, {a.steps} steps of {a.batch} rows: 1 process x {a.cores} threads "
          f"{statistics.mean(one):,.0f} tokens/s, {a.cores} processes x 1 thread {statistics.mean(many):,.0f} tokens/s, "
          f"DDP / one process = {statistics.mean(many) / statistics.mean(one):.3f}")


if __name__ == "__main__":
    main()
