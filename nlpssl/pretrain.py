"""The pretraining pipeline: tokenizer -> data -> collator -> model -> Trainer -> export.

Read :func:`pretrain` top to bottom; each step is one function below it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nlpssl.errors import NlpsslError
from nlpssl.recipe import Recipe, check_kind, load_recipe


@dataclass(frozen=True)
class PretrainResult:
    """What a finished run left behind."""

    output_dir: Path
    export_dir: Path | None
    metrics: dict[str, Any]
    interrupted: bool = False
    already_finished: bool = False  # resumed a run that had finished: nothing was trained


def pretrain(recipe: Recipe | str | Path, overrides: Sequence[str] = (), callbacks: Sequence[Any] = ()) -> PretrainResult:
    """Pretrain a model as the recipe says and export it to ``<output_dir>/export``.

    Args:
        recipe: a loaded :class:`Recipe`, a recipe path, or a shipped recipe's name.
        overrides: ``section.key=value`` strings applied on top of the file.
        callbacks: extra ``transformers.TrainerCallback`` objects for the Trainer.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides, kind="pretrain")
    check_kind(recipe.kind, "pretrain", recipe.source_path or recipe.name)
    from nlpssl.data import objective_of, prepare_data
    from nlpssl.models import build_model, count_parameters, max_positions

    check_output_dir(recipe)
    done = finished_run(recipe)
    if done is not None:
        return done
    if recipe.export.enabled and int(os.environ.get("RANK", "0")) == 0:
        from nlpssl.export import check_export_target

        check_export_target(recipe.output_dir, recipe.output_dir / "export")  # before hours of training
    args = training_arguments(recipe)
    with run_lock(recipe.output_dir):
        with args.main_process_first(desc="tokenizer and data", local=False):
            if args.process_index == 0:
                write_run_recipe(recipe)
            tokenizer = get_tokenizer(recipe, model_max_length=max_positions(recipe.model))
            data = prepare_data(recipe, tokenizer)
        log(f"data: {data.stats['train_blocks']} train / {data.stats['eval_blocks']} eval blocks of "
            f"{recipe.data.block_size} tokens ({'cache hit' if data.from_cache else 'built'}: {data.cache_path})")
        model = build_model(recipe.model, tokenizer, attn=attention_implementation(recipe, args))
        params = count_parameters(model)  # the exported model's (training-only heads come later)
        objective = objective_of(recipe)
        collator = build_collator(recipe, tokenizer)
        from nlpssl.training import GracefulStop, TimeBudget

        stopper = GracefulStop()
        resume_from = last_checkpoint(recipe) if recipe.resume else None
        extra = [TimeBudget(recipe.budget_minutes, budget_used_s(resume_from))] if recipe.budget_minutes else []
        trainer = make_trainer(recipe, args, model, data, collator, [stopper, *extra, *callbacks])
        if extra:
            from transformers.trainer_callback import ProgressCallback

            extra[0].progress_bars = next((cb for cb in trainer.callback_handler.callbacks
                                           if isinstance(cb, ProgressCallback)), None)
            log(f"time budget: {recipe.budget_minutes:g} minutes of training (max_steps={trainer.args.max_steps} "
                "is a cap); the learning rate decays over the budget")
        result = trainer.train(resume_from_checkpoint=resume_from)
        if stopper.stopped:
            log(f"interrupted at step {trainer.state.global_step}; checkpoint saved. Rerun with "
                "training.resume=true to continue.")
            return PretrainResult(recipe.output_dir, None, {}, interrupted=True)
        budget = trainer._time_budget()
        if budget is not None:
            log(f"time budget: {budget.elapsed_s / 60:.2f} of {budget.minutes:g} minutes used, "
                f"{trainer.state.global_step} steps" + (" (budget reached)" if budget.stopped else ""))
        metrics = trainer.evaluate()
        metrics = summarise(recipe, trainer, result, metrics, data.stats, params, objective)
        trainer.save_model(str(recipe.output_dir / "final"))
        export_dir = None
        if trainer.is_world_process_zero():
            write_metrics(recipe.output_dir, metrics, trainer.state.log_history)
            if recipe.export.enabled:
                from nlpssl.export import export_run

                export_dir = export_run(recipe.output_dir, recipe.output_dir / "export")
                log(f"export: {export_dir}")
    return PretrainResult(recipe.output_dir, export_dir, metrics)


def budget_used_s(checkpoint: str | None) -> float:
    """Seconds of the time budget a checkpoint had used (0 for a new run).

    Read from the checkpoint's ``trainer_state.json`` (``stateful_callbacks``) here rather than by the
    Trainer, which restores callback state only with ``restore_callback_states_from_checkpoint``.
    """
    if checkpoint is None:
        return 0.0
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        return float(state["stateful_callbacks"]["TimeBudget"]["args"]["used_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def log(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[nlpssl] {message}", flush=True)


# ------------------------------------------------------------------------------------------------
# Checks that run before any data is read


def check_output_dir(recipe: Recipe) -> None:
    """Refuse to train into a folder that holds another run, unless resuming that run."""
    if int(os.environ.get("RANK", "0")) != 0:
        return  # rank 0 decides; the other ranks may see the recipe rank 0 just wrote
    out = recipe.output_dir
    if out.exists() and not out.is_dir():
        raise NlpsslError(
            f"training.output_dir={str(out)!r}: a file is there, not a folder. Choose another training.output_dir."
        )
    if not out.exists() or not [p for p in out.iterdir() if p.name != LOCK_NAME]:
        return
    saved = out / "recipe.yaml"
    where = f"training.output_dir={str(out)!r}"
    if not saved.is_file():
        raise NlpsslError(
            f"{where}: the folder exists and is not an nlpssl run (no recipe.yaml). "
            "Choose another training.output_dir or empty the folder."
        )
    if not recipe.resume:
        raise NlpsslError(
            f"{where}: the folder already holds a run. Pass training.resume=true to continue it, "
            "choose another training.output_dir, or delete the folder."
        )
    import yaml

    before = yaml.safe_load(saved.read_text())
    now = recipe.to_dict()
    for d in (before, now):
        d.get("training", {}).pop("resume", None)
    if before != now:
        changed = sorted(
            f"{s}.{k}" for s in now if isinstance(now[s], dict)
            for k in set(now[s]) | set(before.get(s) or {})
            if (before.get(s) or {}).get(k) != now[s].get(k)
        )
        raise NlpsslError(
            f"{where}: cannot resume, the recipe differs from the run's recipe.yaml in {', '.join(changed)}. "
            "Resume with the same settings, or start a new run in another folder."
        )


def finished_run(recipe: Recipe) -> PretrainResult | None:
    """With ``training.resume=true`` on a run that finished (its ``final/`` model is saved): that run.

    Resuming it would train past its last step and overwrite its metrics and export, so nothing is
    trained; re-export with ``nlpssl export`` if the export is wanted again.
    """
    out = recipe.output_dir
    if not recipe.resume or not has_weights(out / "final"):
        return None
    metrics = {}
    try:
        metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        pass
    export = out / "export"
    steps = metrics.get("steps", "?")
    log(f"{out} already finished (step {steps}); nothing to train. "
        + (f"Its export is {export}; " if (export / "config.json").is_file() else "It has no export; ")
        + f"write one again with `nlpssl export {out} OUT_DIR`, or start a new run in another training.output_dir.")
    return PretrainResult(out, export if (export / "config.json").is_file() else None, metrics, already_finished=True)


LOCK_NAME = ".nlpssl.lock"


@contextlib.contextmanager
def run_lock(folder: Path):
    """Hold an exclusive lock on a run folder for the life of the run (rank 0 only).

    A second process that tries to train into the same folder is refused with the process id and
    command of the one that holds it. The lock is an ``flock`` on ``<folder>/.nlpssl.lock``, released
    by the system when the holder exits, however it exits; the file stays.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, run unlocked
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise NlpsslError(
                f"training.output_dir={str(folder)!r}: the run folder is in use by {holder}. Wait for it to "
                "finish (or stop it; Ctrl-C saves a checkpoint), or choose another training.output_dir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()} (`{' '.join(sys.argv)}`)\n")
        handle.flush()
        yield
    finally:
        handle.close()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a reader never sees half of it)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_run_recipe(recipe: Recipe) -> None:
    """The resolved recipe, written whole or not at all."""
    recipe.output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(recipe.output_dir / "recipe.yaml", recipe.to_yaml())


def last_checkpoint(recipe: Recipe) -> str | None:
    """The newest complete checkpoint of the run (see :func:`newest_complete_checkpoint`), or None."""
    found = newest_complete_checkpoint(recipe.output_dir)
    return None if found is None else str(found)


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder that was saved completely and reads back, or None.

    A process killed while saving (or a disk that filled up) can leave a checkpoint whose
    ``trainer_state.json`` (the Trainer writes it last) is missing or half-written, or whose weights
    or optimizer files are truncated; resuming from it would crash, so such a folder is skipped with
    a note saying why, and the one before it is used.
    """
    if not run_dir.is_dir():
        return None
    steps = sorted(
        (int(p.name.removeprefix("checkpoint-")), p) for p in run_dir.glob("checkpoint-*")
        if p.name.removeprefix("checkpoint-").isdigit()
    )
    for _, folder in reversed(steps):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        log(f"skipping {folder}, which was not completely saved ({problem}); using the one before it")
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (None if it can): cheap header and index checks only."""
    import zipfile

    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError) as err:
        return f"trainer_state.json: {type(err).__name__}"
    if not has_weights(folder):
        return "no model.safetensors"
    if (folder / "model.safetensors").is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(folder / "model.safetensors"), framework="pt"):
                pass
        except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
            return f"model.safetensors: {str(err).splitlines()[0][:120]}"
    for state in sorted(folder.glob("*.pt")) + sorted(folder.glob("*.pth")):
        if not zipfile.is_zipfile(state):  # torch.save writes zip archives; a truncated one has no index
            return f"{state.name} is truncated"
    return None


def has_weights(folder: Path) -> bool:
    """True if ``folder`` holds safetensors weights, single-file or sharded."""
    return (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()


# ------------------------------------------------------------------------------------------------
# Tokenizer, collator, training arguments


def get_tokenizer(recipe: Recipe, model_max_length: int = 512):
    """The run's shared tokenizer: reused from ``tokenizer.path`` or the run folder, else trained."""
    from nlpssl.tokenizer import load_tokenizer

    t = recipe.tokenizer
    if t.path:
        return load_tokenizer(t.path)
    saved = recipe.output_dir / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return load_tokenizer(saved)
    return train_recipe_tokenizer(recipe, saved, model_max_length)


def train_recipe_tokenizer(recipe: Recipe, out_dir: Path, model_max_length: int = 512):
    """Train the shared tokenizer on the recipe's text source and save it to ``out_dir``.

    ``out_dir`` must be new or empty: a tokenizer is never written over files already there.
    """
    from nlpssl.sources import iter_texts
    from nlpssl.tokenizer import train_tokenizer

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise NlpsslError(
            f"tokenizer: {str(out_dir)!r} already exists and is not an empty folder (and has no tokenizer.json), "
            "and a new tokenizer would overwrite its files. Pass --out NEW_FOLDER to `nlpssl tokenizer train`, "
            "reuse a trained tokenizer with tokenizer.path=FOLDER, or move that folder away."
        )

    d, t = recipe.data, recipe.tokenizer
    texts = iter_texts(
        d.source, text_column=d.text_column, hub_config=d.hub_config, split=d.split,
        txt_unit=d.txt_unit, max_texts=d.max_texts if t.max_texts is None else t.max_texts,
        builtin_stories=d.builtin_stories, seed=d.seed, unwrap=d.unwrap, clean=d.clean,
    )
    # Trained into a hidden folder and renamed: a killed run never leaves half a tokenizer behind.
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    try:
        tokenizer = train_tokenizer(
            texts, tmp, algorithm=t.algorithm, vocab_size=t.vocab_size, min_frequency=t.min_frequency,
            num_sentinels=t.num_sentinels, lowercase=t.lowercase, model_max_length=model_max_length,
            show_progress=True,
        )
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tokenizer


def build_collator(recipe: Recipe, tokenizer):
    """The collator named by ``collator.kind``, with ids read from the shared tokenizer."""
    from nlpssl.collators import CausalCollator, MaskingCollator, T5SpanCorruptionCollator

    c, seed = recipe.collator, int(recipe.training.get("seed", 42))
    match c.kind:
        case "token" | "word" | "span":
            return MaskingCollator.from_tokenizer(
                tokenizer, unit=c.kind, rate=c.rate, mask_frac=c.mask_frac, random_frac=c.random_frac,
                exact_budget=c.exact_budget, span_p=c.span_p, span_max_len=c.span_max, seed=seed,
            )
        case "causal":
            return CausalCollator.from_tokenizer(tokenizer, reset_positions=c.reset_positions)
        case "t5":
            return T5SpanCorruptionCollator.from_tokenizer(
                tokenizer, noise_density=c.noise_density, mean_noise_span_length=c.mean_span_length, seed=seed,
            )
    raise NlpsslError(f"collator.kind: unknown kind (got {c.kind!r}).")  # pragma: no cover


def bf16_supported() -> bool:
    """bf16 pays off on CUDA GPUs with bf16 and on CPUs with AVX512-BF16 or AMX.

    ``NLPSSL_CPU_BF16=0`` (or ``1``) overrides what the CPU flags say, so the fp32 path of a CPU
    without bf16 can be run on one that has it (the tests do this), and the other way round.
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    forced = os.environ.get("NLPSSL_CPU_BF16", "").strip().lower()
    if forced in ("0", "1", "off", "on", "false", "true", "no", "yes"):
        return forced in ("1", "on", "true", "yes")
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


def cpu_description() -> str:
    """The CPU the figures come from: model name, the vector and bf16 flags, and the kernels torch uses."""
    import torch

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    forced = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                                         "NLPSSL_CPU_BF16") if k in os.environ}
    return (f"{model}, {os.cpu_count()} cores, flags {' '.join(shown) or 'none of avx2/avx512/amx'}; torch kernels "
            f"{torch.backends.cpu.get_cpu_capability()}; bf16 supported: {bf16_supported()}"
            + (f"; forced: {forced}" if forced else ""))


def launched_world_size() -> int:
    """Processes started by torchrun / accelerate launch (``WORLD_SIZE``), 1 for a plain run."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def attention_implementation(recipe: Recipe, args) -> str:
    """``sdpa`` where it is the fast path; ``eager`` for bf16 on CPU or with ``speed.sdpa=false``.

    On CPU in bf16 (torch 2.13) eager attention measured 10-35% faster per training step than
    SDPA for BERT and GPT-2 at 128 and 512 tokens: SDPA's CPU flash kernel has a slow bf16 backward,
    and with attention dropout it falls back to an unfused path anyway. In fp32 on CPU SDPA is as
    fast or faster (20% at 512 tokens); on CUDA it selects flash / memory-efficient kernels.
    """
    if not recipe.speed.sdpa:
        return "eager"
    return "eager" if args.device.type == "cpu" and args.bf16 else "sdpa"


def training_arguments(recipe: Recipe, **extra: Any):
    """TrainingArguments from the recipe with the speed section's defaults filled in."""
    import torch

    s, t = recipe.speed, recipe.training
    kw: dict[str, Any] = {"remove_unused_columns": False, "prediction_loss_only": True}
    if "bf16" not in t and "fp16" not in t:
        kw["bf16"] = s.bf16 == "on" or (s.bf16 == "auto" and bf16_supported())
    world = launched_world_size()
    if not torch.cuda.is_available() and (kw.get("bf16") or t.get("bf16") or world > 1):
        # TrainingArguments only accepts bf16 without a GPU when told so, and without use_cpu a
        # CPU-only multi-process launch is not set up as distributed: each process would train alone.
        kw["use_cpu"] = True
    if torch.cuda.is_available() and "tf32" not in t:
        kw["tf32"] = s.tf32
    if s.compile and "torch_compile" not in t:
        kw["torch_compile"] = True
    if recipe.collator.span_boundary and "ddp_find_unused_parameters" not in t:
        # The boundary logits are not among the model's outputs, so DDP's search for unused
        # parameters would miss the head's and then see their gradients arrive ("marked ready
        # twice"). Every parameter is used on every step here, so no search is needed.
        kw["ddp_find_unused_parameters"] = False
    kw.update(extra)
    args = recipe.training_arguments(**kw)
    if world > 1 and args.world_size != world:
        raise NlpsslError(
            f"launch: {world} processes were started (WORLD_SIZE={world}), but the Trainer set up a run of "
            f"world size {args.world_size} ({args.parallel_mode}), so every process would train alone on all "
            "the data. Launch with `torchrun --nproc_per_node N -m nlpssl ...` or `accelerate launch --multi_gpu "
            "...`, and leave training.use_cpu / training.local_rank unset."
        )
    return args


# ------------------------------------------------------------------------------------------------
# Trainer


def make_trainer(recipe: Recipe, args, model, data, collator, callbacks: list):
    from nlpssl.collators.diagnostics import MaskingDiagnosticsCallback
    from nlpssl.data import objective_of
    from nlpssl.training import PretrainTrainer

    objective = objective_of(recipe)
    columns = ["input_ids", "word_starts"] if recipe.collator.kind in ("word", "span") else ["input_ids"]
    trainer = PretrainTrainer(
        model=model, args=args, data_collator=collator,
        train_dataset=data.train.select_columns(columns), eval_dataset=data.eval.select_columns(columns),
        callbacks=callbacks, objective=objective,
        sparse_mlm_head=recipe.speed.sparse_mlm_head and objective == "mlm",
        chunked_lm_loss=recipe.speed.chunked_lm_loss and objective == "causal",
        span_boundary=recipe.collator.span_boundary,
    )
    if objective == "mlm" and args.dataloader_num_workers == 0:
        # First in the list, so the stats reach log_history and the progress bar.
        MaskingDiagnosticsCallback.attach(trainer, collator)
    return trainer


# ------------------------------------------------------------------------------------------------
# Metrics


def summarise(recipe, trainer, result, eval_metrics, stats, params: int, objective: str) -> dict[str, Any]:
    """The run's headline figures (what metrics.json and the model card report)."""
    import numpy as np

    args = trainer.args
    steps = trainer.state.global_step
    rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    train_tokens = steps * rows_per_step * recipe.data.block_size
    runtime = float(result.metrics.get("train_runtime", float("nan")))
    m: dict[str, Any] = {
        "params": params,
        "steps": steps,
        "world_size": args.world_size,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "train_tokens": train_tokens,
        "train_runtime_s": runtime,
        "train_tokens_per_second": train_tokens / runtime if runtime > 0 else None,
        "train_loss": result.metrics.get("train_loss"),
        "eval_loss": eval_metrics.get("eval_loss"),
    }
    if objective == "mlm":
        m["eval_mlm_accuracy"] = eval_metrics.get("eval_mlm_accuracy")
    else:
        loss = m["eval_loss"]
        m["eval_perplexity"] = math.exp(loss) if loss is not None and loss < 50 else None
        if stats.get("eval_bytes"):
            # bits per byte compares models across tokenizers: NLL in bits over UTF-8 bytes.
            m["eval_bits_per_byte"] = loss / math.log(2) * stats["eval_tokens"] / stats["eval_bytes"]
        counts = np.asarray(stats.get("train_unigram_counts", []), dtype=np.float64)
        if counts.size and objective == "causal":
            m["eval_unigram_perplexity"] = unigram_perplexity(counts, trainer.eval_dataset, trainer)
    m["eval_runtime_s"] = eval_metrics.get("eval_runtime")
    budget = trainer._time_budget()
    if budget is not None:
        m["budget_minutes"] = budget.minutes
        m["budget_used_minutes"] = round(budget.elapsed_s / 60, 3)
    return m


def unigram_perplexity(counts, eval_dataset, trainer) -> float:
    """Perplexity of an add-one unigram model fitted on the training tokens, on the held-out blocks."""
    import numpy as np

    probs = (counts + 1.0) / (counts.sum() + len(counts))
    ids = np.asarray(eval_dataset.with_format("numpy")["input_ids"])[:, 1:].reshape(-1)
    pad = trainer.data_collator.pad_id if hasattr(trainer.data_collator, "pad_id") else 0
    ids = ids[ids != pad]
    return float(np.exp(-np.log(probs[ids]).mean()))


def write_metrics(out: Path, metrics: dict[str, Any], history: list[dict]) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "log_history.json").write_text(json.dumps(history, indent=1))
    plot_loss_curve(history, out / "loss_curve.png")


def plot_loss_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
