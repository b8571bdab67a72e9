"""Two-process DDP pretraining with and without DDP's search for unused weights, side by side.

Usage:
    python benchmarks/ddp_search.py --steps 40 --repeats 2
    python benchmarks/ddp_search.py --recipe gpt-tiny --steps 40

transformers turns the search on by default (``find_unused_parameters=True``): every step DDP walks
the autograd graph for weights the loss did not reach, and each rank warns when it finds none.
nlpssl turns it off where the objective's loss reaches every weight. This runs the recipe under
``torchrun --nproc_per_node 2`` (gloo, one thread per process) with the search on
(``training.ddp_find_unused_parameters=true``) and as nlpssl sets it, alternating, on the built-in
corpus, and prints each run's training tokens/s (from its metrics.json) and the ratio of the means.
Timings on a shared machine are noisy: compare the ratio, not the figures.
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


def run(recipe: str, steps: int, out: Path, search: bool) -> float:
    over = [f"training.output_dir={out}", f"data.cache_dir={out.parent / 'cache'}", "data.builtin_stories=2000",
            f"training.max_steps={steps}", "training.budget_minutes=null", "training.eval_strategy=no",
            "training.save_strategy=no", "export.enabled=false", "training.disable_tqdm=true"]
    if search:
        over.append("training.ddp_find_unused_parameters=true")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "nlpssl", "pretrain", recipe,
           *over]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    warned = "find_unused_parameters=True was specified" in proc.stdout + proc.stderr
    tps = json.loads((out / "metrics.json").read_text())["train_tokens_per_second"]
    print(f"  search {'on ' if search else 'off'}: {tps:,.0f} tokens/s" + ("  (DDP warned: none unused)" if warned else ""),
          flush=True)
    return tps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="bert-tiny")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    on, off = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.repeats):  # on, off, then off, on: load from other jobs hits both
            for search in ((True, False) if i % 2 == 0 else (False, True)):
                (on if search else off).append(run(a.recipe, a.steps, Path(tmp) / f"run{i}-{int(search)}", search))
    print(f"{a.recipe}, 2 processes x 1 thread, {a.steps} steps: search on {statistics.mean(on):,.0f} tokens/s, "
          f"off {statistics.mean(off):,.0f} tokens/s, off / on = {statistics.mean(off) / statistics.mean(on):.3f}")


if __name__ == "__main__":
    main()
