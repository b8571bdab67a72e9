"""nlpssl pretraining against a plain-HF baseline, side by side in one process.

Usage:
    python benchmarks/pretrain.py --data builtin --steps 60            # quick, a few minutes on 2 cores
    python benchmarks/pretrain.py --data ../shared/data/gutenberg_books --steps 300 --repeats 2
    python benchmarks/pretrain.py --only nlpssl --size small --objectives mlm causal --steps 40  # MFU
    python benchmarks/pretrain.py --device cuda --steps 300 --peak-bf16 989   # GPU; peak also measured
    python benchmarks/pretrain.py --data ../shared/data/gutenberg_books --prep-only --prep-repeats 3

Per objective (masked-LM on BERT, causal-LM on GPT-2) it prints training tokens/s (warm-up steps
excluded), eval loss at equal steps and at equal wall time, data-preparation time, and model FLOP
utilisation against this machine's bf16 and fp32 matmul peak, measured in the same run.

The baseline is written here with stock parts, the way transformers' ``run_mlm.py`` / ``run_clm.py``
do it: ``datasets.map`` with the tokenizer's ``__call__``, ``group_texts`` per 1000-text batch,
``DataCollatorForLanguageModeling``, stock ``BertForMaskedLM`` / ``GPT2LMHeadModel`` and ``Trainer``
with its defaults (fp32). Both sides get the same tokenizer (trained once), the same documents
(same held-out split), the same model shape, hyperparameters, seed and number of steps. The nlpssl
side is built from the components ``nlpssl.pretrain`` uses, with its speed defaults.

Runs alternate (baseline, nlpssl, then nlpssl, baseline, ...) so that load from other jobs on a
shared machine hits both; only the ratios are meant to be compared.

Eval loss is computed the same way for both models, in fp32, on the same held-out blocks laid out
the baseline's way (``group_texts`` of the held-out documents), masked once with a fixed seed for
masked-LM. Loss at equal wall time: each run is evaluated every ``--eval-every`` steps (eval time
excluded from the clock), and the losses at the time the faster run finished are interpolated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
from nlpssl.pretrain import cpu_description  # noqa: E402

ARCH = {"mlm": "bert", "causal": "gpt2"}
ALGORITHM = {"mlm": "wordpiece", "causal": "bpe"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="builtin", help="'builtin' or a text file/folder (e.g. ../shared/data/gutenberg_books)")
    p.add_argument("--builtin-stories", type=int, default=20000)
    p.add_argument("--objectives", nargs="+", default=["mlm", "causal"], choices=["mlm", "causal"])
    p.add_argument("--only", choices=["both", "nlpssl", "baseline"], default="both")
    p.add_argument("--size", default="tiny", choices=["tiny", "small", "base"], help="nlpssl size preset")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup-steps", type=int, default=None, help="steps left out of tokens/s (default: steps // 6)")
    p.add_argument("--eval-every", type=int, default=None, help="default: steps // 4")
    p.add_argument("--eval-blocks", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1, help="training runs per side, alternating")
    p.add_argument("--prep-repeats", type=int, default=2, help="data preparations per side, alternating")
    p.add_argument("--prep-only", action="store_true", help="measure data preparation only (no training)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--peak-bf16", type=float, default=None, help="bf16 peak TFLOP/s to report MFU against (else measured)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--nlpssl", nargs="*", default=[], metavar="KEY=VALUE",
                   help="recipe overrides for the nlpssl side (e.g. speed.bf16=off)")
    a = p.parse_args(argv)
    a.warmup_steps = a.steps // 6 if a.warmup_steps is None else a.warmup_steps
    a.eval_every = max(1, a.steps // 4) if a.eval_every is None else a.eval_every
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    return a


# ------------------------------------------------------------------------------------------------
# Matmul peak and model FLOPs


def matmul_peak(device: str, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Best TFLOP/s of large square matmuls in ``dtype`` on ``device`` (all threads)."""
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4 if device == "cuda" else 1):
            a @ b
        sync()
        reps = 4 if device == "cuda" else 1
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - t) / 1e12)
    return best


def measure_peaks(args) -> dict:
    """bf16 and fp32 matmul peaks; bf16 only where it has hardware support (on an AVX2-only CPU a
    2048^3 bf16 matmul is emulated at well under 1 GFLOP/s and takes minutes)."""
    from nlpssl.pretrain import bf16_supported

    bf16 = matmul_peak(args.device, torch.bfloat16) if bf16_supported() else float("nan")
    return {"bf16": bf16, "fp32": matmul_peak(args.device, torch.float32)}


def train_flops_per_token(config, objective: str, block: int, head_share: float) -> float:
    """Matmul FLOPs per training token (forward + backward = 3x forward, 2 FLOPs per MAC).

    Counts the work the implementation does: the layers, attention scores (QK^T and AV), and the
    vocabulary head on ``head_share`` of the positions (1.0 dense; the masked share for a sparse head).
    """
    d = config.hidden_size
    layers = config.num_hidden_layers
    ff = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
    per_layer = 4 * d * d + 2 * d * ff + 2 * block * d  # projections, FFN, scores + weighted sum
    head = d * config.vocab_size + (d * d if objective == "mlm" else 0)  # BERT: transform + decoder
    return 6.0 * (layers * per_layer + head * head_share)


# ------------------------------------------------------------------------------------------------
# Data


def load_corpus(args):
    """The documents (one per paragraph) and the held-out split both sides use."""
    from nlpssl.data import _split_documents
    from nlpssl.sources import load_texts

    texts = load_texts(args.data, builtin_stories=args.builtin_stories)
    return texts, _split_documents(texts, 0.02, 0)


def tokenizer_for(objective: str, train_texts, args, out: Path):
    from nlpssl.tokenizer import load_tokenizer, set_template, train_tokenizer

    folder = out / f"tokenizer-{objective}"
    train_tokenizer(iter(train_texts["text"]), folder, algorithm=ALGORITHM[objective], vocab_size=args.vocab_size,
                    model_max_length=512)
    baseline_tok = load_tokenizer(folder)
    set_template(baseline_tok, objective)  # what a stock BERT / GPT-2 tokenizer adds: [CLS] x [SEP] / nothing
    return folder, baseline_tok


def baseline_prepare(texts_source, args, tokenizer, objective: str):
    """run_mlm.py / run_clm.py: tokenizer __call__ in datasets.map, then group_texts per 1000 texts."""
    from nlpssl.data import _split_documents
    from nlpssl.sources import load_texts

    block = args.block_size
    texts = load_texts(texts_source, builtin_stories=args.builtin_stories)
    train, held_out = _split_documents(texts, 0.02, 0)

    def tokenize_function(examples):
        if objective == "mlm":
            return tokenizer(examples["text"], return_special_tokens_mask=True)
        return tokenizer(examples["text"])

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = (len(concatenated[next(iter(examples))]) // block) * block
        result = {k: [t[i : i + block] for i in range(0, total, block)] for k, t in concatenated.items()}
        if objective == "causal":
            result["labels"] = result["input_ids"].copy()
        return result

    out = []
    for part in (train, held_out):
        tok = part.map(tokenize_function, batched=True, remove_columns=["text"])
        out.append(tok.map(group_texts, batched=True))
    return out[0], out[1]


def nlpssl_recipe(objective: str, args, tokenizer_dir: Path, run_dir: Path, cache_dir: Path):
    from nlpssl.recipe import load_recipe

    name = "bert-tiny" if objective == "mlm" else "gpt-tiny"
    overrides = [
        f"tokenizer.path={tokenizer_dir}", f"data.source={args.data}", f"data.builtin_stories={args.builtin_stories}",
        f"data.block_size={args.block_size}", "data.eval_fraction=0.02", "data.seed=0", f"data.cache_dir={cache_dir}",
        f"model.size={args.size}", f"model.arch={ARCH[objective]}",  # same architecture as the baseline
        *[f"training.{k}={json.dumps(v)}" for k, v in common_training(args, run_dir).items()],  # "no" stays a string
        *args.nlpssl,
    ]
    return load_recipe(Path(__file__).resolve().parent.parent / "recipes" / f"{name}.yaml", overrides)


def common_training(args, run_dir: Path) -> dict:
    """Hyperparameters both sides share; everything else stays at each side's default."""
    return {
        "output_dir": str(run_dir), "max_steps": args.steps, "per_device_train_batch_size": args.batch_size,
        "learning_rate": args.lr, "warmup_steps": min(100, args.steps // 10), "weight_decay": 0.01,
        "lr_scheduler_type": "linear", "seed": 42, "save_strategy": "no", "eval_strategy": "no",
        "logging_steps": max(1, args.steps), "report_to": "none", "disable_tqdm": True,
    }


def eval_batches(held_out, objective: str, tokenizer, args) -> list[dict]:
    """Fixed fp32 eval batches from the baseline-format held-out blocks (masked once, seeded)."""
    from nlpssl.collators import MaskingCollator

    ids = torch.tensor(held_out["input_ids"][: args.eval_blocks], dtype=torch.long)
    masker = MaskingCollator.from_tokenizer(tokenizer, unit="token", rate=0.15, seed=1234)
    batches = []
    for chunk in ids.split(32):
        if objective == "mlm":
            b = masker([{"input_ids": row} for row in chunk])
        else:
            b = {"input_ids": chunk, "labels": chunk.clone(), "attention_mask": torch.ones_like(chunk)}
        batches.append(b)
    return batches


@torch.no_grad()
def eval_loss(model, batches: list[dict]) -> float:
    """Mean loss over the labelled tokens, fp32, no autocast, the stock model's own head."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.autocast(device.type, enabled=False):
        for b in batches:
            b = {k: v.to(device) for k, v in b.items()}
            labels = b.pop("labels")
            logits = model(**b).logits.float()
            if model.config.model_type in ("gpt2", "llama"):  # causal: position t predicts t + 1
                logits, labels = logits[:, :-1], labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((labels != -100).sum())
    model.train(was_training)
    return total / count


# ------------------------------------------------------------------------------------------------
# Training runs


@dataclass
class RunResult:
    side: str
    tokens_per_s: float
    seconds: float  # training wall time without evals, warm-up included
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, seconds, eval loss)
    head_share: float = 1.0

    @property
    def final_loss(self) -> float:
        return self.curve[-1][2]

    def loss_at(self, seconds: float) -> float:
        """Eval loss at ``seconds`` of training, interpolated linearly between evaluations."""
        pts = self.curve
        for (s0, t0, l0), (s1, t1, l1) in zip(pts, pts[1:]):
            if t0 <= seconds <= t1:
                return l0 + (l1 - l0) * (seconds - t0) / max(t1 - t0, 1e-9)
        return pts[-1][2]


def make_clock(args, batches, tokens_per_step: int):
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        """Training time without evals; evaluates every ``eval_every`` steps with the clock stopped."""

        def __init__(self):
            self.elapsed, self.at_warmup, self.curve, self.model = 0.0, 0.0, [], None

        def _sync(self):
            if args.device == "cuda":
                torch.cuda.synchronize()

        def on_train_begin(self, targs, state, control, model=None, **kw):
            self.model = model
            self.curve.append((0, 0.0, eval_loss(model, batches)))
            self._sync()
            self.mark = time.perf_counter()

        def on_step_end(self, targs, state, control, model=None, **kw):
            self._sync()
            self.elapsed += time.perf_counter() - self.mark
            step = state.global_step
            if step == args.warmup_steps:
                self.at_warmup = self.elapsed
            if step % args.eval_every == 0 or step == state.max_steps:
                self.curve.append((step, self.elapsed, eval_loss(model, batches)))
            self._sync()
            self.mark = time.perf_counter()

        def tokens_per_s(self) -> float:
            return (args.steps - args.warmup_steps) * tokens_per_step / (self.elapsed - self.at_warmup)

    return Clock()


def run_baseline(objective: str, args, tokenizer, train_ds, batches, run_dir: Path) -> RunResult:
    from transformers import (BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, GPT2Config,
                              GPT2LMHeadModel, Trainer, TrainingArguments)
    from transformers.utils.import_utils import enable_tf32

    from nlpssl.models import PRESETS

    if args.device == "cuda":
        enable_tf32(False)  # nlpssl's run turned TF32 on process-wide; the stock default is off
    s = PRESETS[args.size]
    torch.manual_seed(42)
    if objective == "mlm":
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=s.hidden, num_hidden_layers=s.layers,
                            num_attention_heads=s.heads, intermediate_size=s.intermediate,
                            pad_token_id=tokenizer.pad_token_id)
        model = BertForMaskedLM(config)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    else:
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=s.hidden, n_layer=s.layers, n_head=s.heads,
                            n_inner=s.intermediate, n_positions=512, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        model = GPT2LMHeadModel(config)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    targs = TrainingArguments(**common_training(args, run_dir), use_cpu=args.device == "cpu")
    clock = make_clock(args, batches, args.batch_size * args.block_size)
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, data_collator=collator, callbacks=[clock])
    trainer.train()
    return RunResult("baseline", clock.tokens_per_s(), clock.elapsed, clock.curve)


def run_nlpssl(objective: str, args, tokenizer_dir: Path, batches, run_dir: Path, cache_dir: Path) -> RunResult:
    from nlpssl.pretrain import setup

    recipe = nlpssl_recipe(objective, args, tokenizer_dir, run_dir, cache_dir)
    clock = make_clock(args, batches, args.batch_size * args.block_size)
    # the data is a cache hit after the timed preparation; the same initial weights every run
    torch.manual_seed(42)
    run = setup(recipe, [clock], **({"use_cpu": True} if args.device == "cpu" else {}))
    run.trainer.train()
    sparse = objective == "mlm" and recipe.speed.sparse_mlm_head
    return RunResult("nlpssl", clock.tokens_per_s(), clock.elapsed, clock.curve,
                     head_share=run.collator.rate if sparse else 1.0)


def tokenizer_alone(texts_split, tokenizer) -> float:
    """Seconds the Rust tokenizer alone needs for every document (ids only, batches of 2,000).

    Both sides pay this: it is the floor under either side's data preparation.
    """
    backend = tokenizer.backend_tokenizer
    t = time.perf_counter()
    for part in texts_split:
        texts = part["text"]
        for begin in range(0, len(texts), 2000):
            backend.encode_batch_fast(texts[begin : begin + 2000], add_special_tokens=False)
    return time.perf_counter() - t


def nlpssl_prepare(objective: str, args, tokenizer_dir: Path, work: Path, i: int) -> float:
    """Cold nlpssl data preparation (load, split, tokenize, pack, write the cache) in seconds."""
    from nlpssl.data import prepare_data
    from nlpssl.pretrain import get_tokenizer

    recipe = nlpssl_recipe(objective, args, tokenizer_dir, work / "unused", work / f"prep-cache-{i}")
    tokenizer = get_tokenizer(recipe)
    t = time.perf_counter()
    prepare_data(recipe, tokenizer)
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------------
# Main


def bench_objective(objective: str, args, texts_split, work: Path, peaks: dict) -> dict:
    train_texts, _ = texts_split
    tok_dir, baseline_tok = tokenizer_for(objective, train_texts, args, work)
    res: dict = {"objective": objective, "arch": ARCH[objective]}

    # Data preparation, alternating; the nlpssl side is cold (fresh cache folder) every time.
    prep = {"baseline": [], "nlpssl": [], "tokenizer": []}
    baseline_data = None
    for i in range(args.prep_repeats if args.only == "both" else 1):
        prep["tokenizer"].append(tokenizer_alone(texts_split, baseline_tok))
        for side in (("baseline", "nlpssl") if i % 2 == 0 else ("nlpssl", "baseline")):
            if side == "baseline":
                t = time.perf_counter()
                baseline_data = baseline_prepare(args.data, args, baseline_tok, objective)
                prep["baseline"].append(time.perf_counter() - t)
            else:
                prep["nlpssl"].append(nlpssl_prepare(objective, args, tok_dir, work / objective, i))
    res["prep_s"] = {k: min(v) for k, v in prep.items() if v}
    if args.prep_only:
        p = res["prep_s"]
        print(f"{objective}: data preparation baseline {p['baseline']:.2f} s, nlpssl {p['nlpssl']:.2f} s "
              f"({p['baseline'] / p['nlpssl']:.2f}x), Rust tokenizer alone {p['tokenizer']:.2f} s "
              f"(min of {args.prep_repeats}; all: { {k: [round(x, 2) for x in v] for k, v in prep.items()} })",
              flush=True)
        return res
    train_ds, held_out = baseline_data
    batches = eval_batches(held_out, objective, baseline_tok, args)

    runs = {"baseline": [], "nlpssl": []}
    cache = work / objective / "prep-cache-0"
    sides = ["baseline", "nlpssl"] if args.only == "both" else [args.only]
    for i in range(args.repeats):
        for side in (sides if i % 2 == 0 else sides[::-1]):
            run_dir = work / objective / f"{side}-run-{i}"
            if side == "baseline":
                r = run_baseline(objective, args, baseline_tok, train_ds, batches, run_dir)
            else:
                r = run_nlpssl(objective, args, tok_dir, batches, run_dir, cache)
            runs[side].append(r)
            print(f"  [{objective} {side} run {i}] {r.tokens_per_s:,.0f} tok/s, {r.seconds:.1f} s, "
                  f"eval loss {r.final_loss:.4f}", flush=True)
    from nlpssl.models import build_config
    from nlpssl.recipe import ModelSection

    config = build_config(ModelSection(arch=ARCH[objective], size=args.size), baseline_tok)
    for side, rs in runs.items():
        if not rs:
            continue
        tps = statistics.median(r.tokens_per_s for r in rs)
        flops = train_flops_per_token(config, objective, args.block_size, rs[0].head_share)
        res[side] = {
            "tokens_per_s": tps, "train_s": statistics.median(r.seconds for r in rs),
            "eval_loss": statistics.mean(r.final_loss for r in rs),
            "mfu_bf16": flops * tps / (peaks["bf16"] * 1e12), "mfu_fp32": flops * tps / (peaks["fp32"] * 1e12),
            "tflops": flops * tps / 1e12, "curves": [r.curve for r in rs],
        }
    if runs["baseline"] and runs["nlpssl"]:
        t_equal = min(statistics.median(r.seconds for r in runs[s]) for s in runs)
        res["equal_time_s"] = t_equal
        for side in runs:
            res[side]["eval_loss_at_equal_time"] = statistics.mean(r.loss_at(t_equal) for r in runs[side])
    return res


def _share(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1%}"


def print_table(results: list[dict], peaks: dict, args) -> None:
    print(f"\ncpu: {cpu_description()}")
    bf16 = "n/a (no bf16 hardware)" if math.isnan(peaks["bf16"]) else f"{peaks['bf16']:.3f} TFLOP/s"
    print(f"peak matmul ({args.device}, {torch.get_num_threads()} threads): bf16 {bf16}, "
          f"fp32 {peaks['fp32']:.3f} TFLOP/s" + (f" (bf16 given: {args.peak_bf16})" if args.peak_bf16 else ""))
    print(f"data={args.data} size={args.size} block={args.block_size} batch={args.batch_size} steps={args.steps} "
          f"(tokens/s after {args.warmup_steps} warm-up steps) repeats={args.repeats}\n")
    head = f"{'objective':<9} {'side':<9} {'tokens/s':>10} {'eval@steps':>10} {'eval@time':>10} {'prep s':>8} " \
           f"{'TFLOP/s':>8} {'MFU bf16':>9} {'MFU fp32':>9}"
    print(head)
    print("-" * len(head))
    for r in results:
        for side in ("baseline", "nlpssl"):
            if side not in r:
                continue
            s = r[side]
            at_time = s.get("eval_loss_at_equal_time", float("nan"))
            print(f"{r['objective']:<9} {side:<9} {s['tokens_per_s']:>10,.0f} {s['eval_loss']:>10.4f} {at_time:>10.4f} "
                  f"{r['prep_s'].get(side, float('nan')):>8.2f} {s['tflops']:>8.3f} {_share(s['mfu_bf16']):>9} "
                  f"{_share(s['mfu_fp32']):>9}")
        if "baseline" in r and "nlpssl" in r:
            b, n = r["baseline"], r["nlpssl"]
            print(f"{r['objective']:<9} {'ratio':<9} {n['tokens_per_s'] / b['tokens_per_s']:>9.2f}x "
                  f"{n['eval_loss'] - b['eval_loss']:>+10.4f} {n['eval_loss_at_equal_time'] - b['eval_loss_at_equal_time']:>+10.4f} "
                  f"{r['prep_s']['baseline'] / r['prep_s']['nlpssl']:>7.2f}x   (loss columns: nlpssl - baseline; "
                  f"prep: Rust tokenizer alone {r['prep_s']['tokenizer']:.2f} s of it; "
                  f"equal time = {r['equal_time_s']:.1f} s)")
    print()


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    peaks = measure_peaks(args)
    if args.peak_bf16:
        peaks["bf16_measured"], peaks["bf16"] = peaks["bf16"], args.peak_bf16
    print(f"cpu: {cpu_description()}\npeaks: {peaks}", flush=True)
    texts, split = load_corpus(args)
    print(f"corpus {args.data}: {len(texts)} documents, {len(split[0])} train / {len(split[1])} held out", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="nlpssl-bench-") as tmp:
        for objective in args.objectives:
            results.append(bench_objective(objective, args, split, Path(tmp), peaks))
    if args.prep_only:
        return
    after = measure_peaks(args)
    for k in after:  # the best of the two measurements: load from other jobs only lowers it
        if not (k == "bf16" and args.peak_bf16) and after[k] == after[k]:
            peaks[k] = max(peaks[k], after[k])
    for r in results:  # recompute MFU with the final peaks
        for side in ("baseline", "nlpssl"):
            if side in r:
                for dt in ("bf16", "fp32"):
                    r[side][f"mfu_{dt}"] = r[side]["tflops"] / peaks[dt]
    print_table(results, peaks, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "peaks": peaks,
                                         "results": results}, indent=1))


if __name__ == "__main__":
    main()
