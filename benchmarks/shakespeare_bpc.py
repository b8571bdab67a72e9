"""Causal-LM on real text: nlpssl against nanoGPT's README CPU run, bits per character on raw held-out text.

Both train on the first 90% of tinyshakespeare's characters (nanoGPT's own split, made by its
``data/shakespeare_char/prepare.py``) and both are scored on the last 10% exactly as it is, newlines
and blank lines kept, in non-overlapping windows of one block (nanoGPT: 64 characters; nlpssl: 64
BPE tokens). bits/char = summed negative log-likelihood of every predicted token / ln 2 / the
characters those tokens spell. nanoGPT also prints its own estimate (20 random batches); both are shown.

nanoGPT runs its README command for CPUs (4 x 128, block 64, batch 12, 2,000 iterations, fp32);
nlpssl runs the gpt-tiny recipe at the same width and depth on a byte-level BPE of 1,024 tokens,
with ``txt_unit: file`` (the book as one document: its last 1% of tokens is the run's own eval) and
``training.budget_minutes`` set so that the whole command, tokenizer and export included, takes no
longer than nanoGPT's training did in this run.

Run (a nanoGPT checkout: ``git clone https://github.com/karpathy/nanoGPT``; nothing is written into it):
    python benchmarks/shakespeare_bpc.py --data ../shared/data/tinyshakespeare/input.txt --nanogpt PATH
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NANOGPT_CPU = [  # nanoGPT README, "I only have a macbook" (CPU) command
    "config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1",
    "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
    "--lr_decay_iters=2000", "--dropout=0.0",
]
BLOCK = 64


def windowed_nats(logits_of, ids, size_of) -> tuple[float, int]:
    """Summed next-token NLL (nats) over non-overlapping windows of BLOCK inputs, and the size
    (``size_of(targets)``: tokens or characters) of everything predicted."""
    import torch

    nats, size = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, BLOCK):
            y = ids[start + 1 : start + 1 + BLOCK]
            x = ids[start : start + len(y)]
            logits = logits_of(x[None], y[None])  # [len, vocab]
            nats += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            size += size_of(y)
    return nats, size


def run_nanogpt(checkout: Path, text: Path, work: Path) -> dict:
    import numpy as np
    import torch

    copy = work / "nanogpt"
    shutil.copytree(checkout, copy, ignore=shutil.ignore_patterns(".git", "out-*"))
    data_dir = copy / "data" / "shakespeare_char"
    shutil.copy(text, data_dir / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=data_dir, check=True, stdout=subprocess.DEVNULL)
    out_dir = work / "out-nanogpt"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", *NANOGPT_CPU, f"--out_dir={out_dir}"], cwd=copy,
                          check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", proc.stdout)
    step, _, own_val = evals[-1]

    sys.path.insert(0, str(copy))
    from model import GPT, GPTConfig  # nanoGPT's own model code, from the copy

    ckpt = torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=False)
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    model.eval()
    val = torch.from_numpy(np.fromfile(data_dir / "val.bin", dtype=np.uint16).astype(np.int64))
    nats, predicted = windowed_nats(lambda x, y: model(x, y)[0][0], val, lambda y: y.numel())
    params = sum(p.numel() for p in model.parameters())
    return {"system": "nanoGPT (char)", "wall_s": wall, "steps": int(step), "params": params,
            "non_embedding_params": params - model.transformer.wte.weight.numel() - model.transformer.wpe.weight.numel(),
            "own_val_bits_per_char": float(own_val) / math.log(2),
            "bits_per_char": nats / math.log(2) / predicted, "ckpt_iter": ckpt["iter_num"]}


def run_nlpssl(train_text: Path, val_text: str, work: Path, budget_s: float, vocab: int, max_steps: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = work / "nlpssl-run"
    overrides = [
        f"training.output_dir={out}", f"data.cache_dir={work / 'cache'}", f"data.source={train_text}",
        "data.txt_unit=file", "data.eval_fraction=0.01", f"data.block_size={BLOCK}", f"tokenizer.vocab_size={vocab}",
        "tokenizer.num_sentinels=0", "model.hidden_size=128", "model.num_layers=4", "model.num_heads=4",
        "model.intermediate_size=512", "training.per_device_train_batch_size=12", f"training.max_steps={max_steps}",
        f"training.budget_minutes={budget_s / 60:.4f}", "training.eval_steps=100000", "training.save_steps=100000",
        "training.logging_steps=100", "speed.bf16=off",
    ]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nlpssl", "pretrain", "gpt-tiny", *overrides], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())

    export = out / "export"
    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    ids = torch.tensor(tok(val_text, add_special_tokens=False)["input_ids"])
    assert tok.decode(ids) == val_text, "the byte-level tokenizer round-trips the raw text"
    nats, chars = windowed_nats(lambda x, y: model(input_ids=x).logits[0], ids, lambda y: len(tok.decode(y)))
    params = sum(p.numel() for p in model.parameters())
    embedding = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    return {"system": f"nlpssl gpt-tiny (BPE {vocab})", "wall_s": wall, "steps": metrics.get("steps"),
            "params": params, "non_embedding_params": params - embedding,
            "own_val_bits_per_char": None, "bits_per_char": nats / math.log(2) / chars,
            "chars_per_token": len(val_text) / len(ids)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/tinyshakespeare/input.txt", help="tinyshakespeare input.txt")
    p.add_argument("--nanogpt", help="a nanoGPT checkout (left untouched: copied into the work folder)")
    p.add_argument("--nanogpt-wall-s", type=float, help="skip nanoGPT and give nlpssl this many seconds")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--max-steps", type=int, default=100_000, help="cap on nlpssl steps (the time budget decides)")
    p.add_argument("--work", help="work folder (default: a new temporary folder, removed afterwards)")
    args = p.parse_args()
    if not args.nanogpt and not args.nanogpt_wall_s:
        p.error("pass --nanogpt PATH (a nanoGPT checkout) or --nanogpt-wall-s SECONDS")

    from nlpssl.pretrain import cpu_description

    text = Path(args.data).read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)  # nanoGPT's prepare.py split
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bpc-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        train_text = work / "train.txt"
        train_text.write_text(text[:cut], encoding="utf-8")
        print(f"CPU: {cpu_description()}; torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
        rows = []
        if args.nanogpt:
            rows.append(run_nanogpt(Path(args.nanogpt), Path(args.data), work))
            print(json.dumps(rows[-1]), flush=True)
        wall = rows[0]["wall_s"] if rows else args.nanogpt_wall_s
        # The command's own start-up, tokenizer, data and export (~20 s here) come out of nanoGPT's time.
        rows.append(run_nlpssl(train_text, text[cut:], work, max(30.0, wall - 25.0), args.vocab_size, args.max_steps))
        print(json.dumps(rows[-1]), flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nheld-out: last 10% of {args.data} ({len(text) - cut:,} characters, raw), windows of {BLOCK} tokens\n")
    print("| system | params (non-embedding) | steps | wall s | bits/char, raw held-out | own estimate |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        own = f"{r['own_val_bits_per_char']:.3f}" if r["own_val_bits_per_char"] else "-"
        print(f"| {r['system']} | {r['params']:,} ({r['non_embedding_params']:,}) | {r['steps']} | "
              f"{r['wall_s']:.0f} | {r['bits_per_char']:.3f} | {own} |")


if __name__ == "__main__":
    main()
