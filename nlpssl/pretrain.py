"""The pretraining pipeline: tokenizer -> data -> model -> collator -> Trainer -> export.

Read :func:`pretrain` top to bottom; :func:`setup` wires one run (what benchmarks and tests reuse),
and the recipe's objective (``nlpssl.objectives``) supplies every objective-specific part.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nlpssl.errors import NlpsslError
from nlpssl.recipe import Recipe, check_kind, launched_world_size, load_recipe, training_notes
from nlpssl.runs import (
    budget_used_s, check_output_dir, checkpoint_problem, has_weights, last_checkpoint, log, owner_tag, rank, run_lock,
    weights_problem, write_metrics, write_run_recipe, write_text_atomic,
)
from nlpssl.sources import HUB_PREFIX, text_units


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
    check_output_dir(recipe)
    check_inputs(recipe)
    done = finished_run(recipe)
    if done is not None:
        return done
    if recipe.export.enabled and rank() == 0:
        from nlpssl.export import check_export_target

        check_export_target(recipe.output_dir, recipe.output_dir / "export")  # before hours of training
    with run_lock(recipe.output_dir):
        from transformers import set_seed

        # The model is built before the Trainer seeds anything: without this its initial weights
        # came from whatever torch's random state was, and two identical runs started apart.
        set_seed(int(recipe.training.get("seed", 42)))
        run = setup(recipe, callbacks)
        try:
            return _train_and_export(recipe, run)
        finally:
            run.stopper.restore()  # also when training failed (the Trainer then calls no on_train_end)


def _train_and_export(recipe: Recipe, run: Run) -> PretrainResult:
    """Train the wired run, then evaluate, save and export it (rank 0 writes)."""
    trainer = run.trainer
    try:
        if run.resume_from and ended_at(recipe, run.resume_from) and not (
                trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
            result = load_ended(trainer, run.resume_from)
        else:
            result = trainer.train(resume_from_checkpoint=run.resume_from)
    except Exception as err:
        saved = trainer.save_after_stream_error(err, lambda folder: checkpoint_problem(Path(folder)) is None)
        if saved is None:
            raise
        source = recipe.data.source
        fix = (f"once {source!r} reads again (a dropped connection passes), rerun"
               if source == "builtin" or source.startswith(HUB_PREFIX) else
               "fix the file in place, under the same name (a fixed copy under another name changes the "
               "folder's file list, which a resume refuses), then rerun")
        keep = (f"The {trainer.state.global_step} steps trained before it are saved in {saved}: {fix} the same "
                "command with training.resume=true to continue from there.")
        if isinstance(err, NlpsslError):
            raise NlpsslError(f"{err}\n{keep}") from err
        log(keep)
        raise
    if run.stopper.stopped:
        log(f"interrupted at step {trainer.state.global_step}; checkpoint saved. Rerun with "
            "training.resume=true to continue.")
        return PretrainResult(recipe.output_dir, None, {}, interrupted=True)
    budget = trainer._time_budget()
    if budget is not None:
        log(f"time budget: {budget.elapsed_s / 60:.2f} of {budget.minutes:g} minutes used, "
            f"{trainer.state.global_step} steps" + (" (budget reached)" if budget.stopped else ""))
    metrics = summarise(run, result, trainer.evaluate())
    trainer.save_model(str(recipe.output_dir / "final"))
    export_dir = None
    if trainer.is_world_process_zero():
        if run.objective.tokenizer_path():  # as each checkpoint keeps it (nlpssl.training.KeepTokenizer)
            from nlpssl.training import keep_tokenizer

            keep_tokenizer(run.tokenizer, str(recipe.output_dir / "final"))
        write_metrics(recipe.output_dir, metrics, trainer.state.log_history)
        if recipe.export.enabled:
            from nlpssl.export import export_run

            export_dir = export_run(recipe.output_dir, recipe.output_dir / "export")
            log(f"export: {export_dir}")
    return PretrainResult(recipe.output_dir, export_dir, metrics)


@dataclass
class Run:
    """A pretraining run wired and ready: ``run.trainer.train(resume_from_checkpoint=run.resume_from)``."""

    recipe: Recipe
    objective: Any  # nlpssl.objectives.base.Objective
    args: Any  # transformers.TrainingArguments
    tokenizer: Any
    data: Any  # nlpssl.data.PackedData
    model: Any  # the model being trained (the objective may have added training-only parts)
    params: int  # parameters of the exported model
    collator: Any
    trainer: Any  # the objective's Trainer
    stopper: Any  # nlpssl.training.GracefulStop: .stopped after SIGINT/SIGTERM
    resume_from: str | None  # the checkpoint ``training.resume=true`` continues from
    resumed_tokens: int = 0  # tokens the Trainer had counted by that checkpoint (padded rows' runs only)


def setup(recipe: Recipe, callbacks: Sequence[Any] = (), **training_args: Any) -> Run:
    """Tokenizer -> data -> model -> collator -> Trainer, wired as :func:`pretrain` wires them.

    Writes the run's ``recipe.yaml`` and tokenizer (rank 0 first, the others wait) and reads or
    builds the processed-data cache; trains nothing. ``training_args`` override TrainingArguments
    fields (benchmarks and tests pass e.g. ``use_cpu=True``). The model's initial weights come from
    torch's random state as it is (seed it first, ``torch.manual_seed``, for two setups to match).
    """
    from nlpssl.data import eval_coverage_note, prepare_data
    from nlpssl.models import count_parameters, max_positions
    from nlpssl.objectives import objective_for
    from nlpssl.training import GracefulStop, TimeBudget

    objective = objective_for(recipe)
    objective.preflight()
    for note in training_notes(recipe):
        log(f"note: {note}")
    args = training_arguments(recipe, **training_args)
    with args.main_process_first(desc="tokenizer and data", local=False):
        if args.process_index == 0:
            write_run_recipe(recipe)
        tokenizer = get_tokenizer(recipe, model_max_length=max_positions(recipe.model), path=objective.tokenizer_path())
        resume_from = last_checkpoint(recipe) if recipe.resume else None
        if args.process_index == 0 and resume_from is None:
            record_outside(objective, recipe.output_dir)
        if recipe.data.streaming:
            from nlpssl.stream import streaming_data

            data = streaming_data(recipe, tokenizer, args.process_index, args.world_size, resume_from)
        else:
            data = prepare_data(recipe, tokenizer)
    block = (f"2 x {recipe.data.block_size} tokens (sentence pairs)" if objective.framing == "pair"
             else f"{recipe.data.block_size} tokens")
    if recipe.data.streaming:
        log(f"data: streaming {recipe.data.source!r} ({len(data.train.units)} of {len(data.train.all_units)} "
            f"file(s) on this process), {data.stats['eval_blocks']} eval blocks of {block}"
            + (f"; resuming at row {data.train.consumed}" if resume_from else ""))
    else:
        log(f"data: {data.stats['train_blocks']} train / {data.stats['eval_blocks']} eval blocks of "
            f"{block} ({'cache hit' if data.from_cache else 'built'}: {data.cache_path})")
        if cut := data.stats.get("train_cut_documents"):  # one sentence a row (SimCSE): the rest is lost
            log(f"data: {cut} of {data.stats['train_documents']} training sentences "
                f"({cut / data.stats['train_documents']:.1%}) are longer than a row of data.block_size="
                f"{recipe.data.block_size} tokens and were cut to fit; raise data.block_size to keep them whole.")
    if note := eval_coverage_note(data.stats):
        log(note)
    model = objective.build_model(tokenizer, attn=attention_implementation(recipe, args))
    params = count_parameters(model)  # the exported model's (training-only parts come later)
    collator = objective.build_collator(tokenizer)
    stopper = GracefulStop()
    extra = [TimeBudget(recipe.budget_minutes, budget_used_s(resume_from))] if recipe.budget_minutes else []
    kept = []
    if objective.tokenizer_path():  # reused from a folder that may change: each checkpoint keeps a copy
        from nlpssl.training import KeepTokenizer

        check_kept_tokenizer(resume_from, tokenizer, objective.tokenizer_path())
        kept = [KeepTokenizer(tokenizer)]
    trainer = objective.make_trainer(args, model, data, collator, [stopper, *extra, *kept, *callbacks])
    if extra:
        from transformers.trainer_callback import ProgressCallback

        extra[0].progress_bars = next((cb for cb in trainer.callback_handler.callbacks
                                       if isinstance(cb, ProgressCallback)), None)
        log(f"time budget: {recipe.budget_minutes:g} minutes of training (max_steps={trainer.args.max_steps} "
            "is a cap); the learning rate decays over the budget")
    resumed_tokens = 0
    if resume_from and args.include_num_input_tokens_seen != "no":  # read now: the run may rotate it away
        resumed_tokens = int(json.loads((Path(resume_from) / "trainer_state.json").read_text())
                             .get("num_input_tokens_seen", 0))
    return Run(recipe, objective, args, tokenizer, data, trainer.model, params, collator, trainer, stopper, resume_from,
               resumed_tokens)


def record_outside(objective, run_dir: Path) -> None:
    """Write the config.json of each model folder the run trains from (``objective.outside_keys``) into the
    run folder, so that its exports describe the teacher or encoder it began with even after that folder
    was deleted or trained again. A resumed run keeps the record of its start."""
    from nlpssl.objectives.base import OUTSIDE_FILE

    if objective.outside_keys:
        facts = {key: objective.read_outside(key) for key in objective.outside_keys}
        write_text_atomic(run_dir / OUTSIDE_FILE, json.dumps(facts, indent=2, sort_keys=True) + "\n")


def check_kept_tokenizer(checkpoint: str | None, tokenizer, path: str) -> None:
    """Refuse to resume with a reused tokenizer other than the one the checkpoint kept (its ids changed)."""
    if checkpoint is None or not (Path(checkpoint) / "tokenizer.json").is_file():
        return
    from nlpssl.tokenizer import load_tokenizer

    if load_tokenizer(checkpoint).get_vocab() != tokenizer.get_vocab():
        raise NlpsslError(
            f"training.resume: the tokenizer in {path!r} is not the one {checkpoint!r} was trained with (got "
            "another vocabulary: the folder was replaced, a teacher or encoder trained again). The model's ids "
            f"are those of the copy the checkpoint kept: put that tokenizer back in {path!r}, or start a new run."
        )


def check_inputs(recipe: Recipe) -> None:
    """What a pretraining recipe reads must be there before the run folder and recipe.yaml are: each local
    source's files, and a reused tokenizer folder (``nlpssl recipe validate`` runs the same checks)."""
    for source in (recipe.data.source, *(m.source for m in recipe.data.mix)):
        text_units(source)
    if recipe.tokenizer.path:
        from nlpssl.tokenizer import check_tokenizer_folder

        check_tokenizer_folder(recipe.tokenizer.path, f"tokenizer.path={recipe.tokenizer.path!r}",
                               "Point it at a folder holding tokenizer.json: a run's tokenizer/, an export, or "
                               "the --out of `nlpssl tokenizer train`")


def finished_run(recipe: Recipe) -> PretrainResult | None:
    """With ``training.resume=true`` on a run that finished (its ``final/`` model is saved): that run.

    Resuming it would train past its last step and overwrite its metrics and export, so nothing is
    trained; re-export with ``nlpssl export`` if the export is wanted again.
    """
    out = recipe.output_dir
    if not recipe.resume or not has_weights(out / "final"):
        return None
    if problem := weights_problem(out / "final"):
        # Killed while saving it: the run resumes from its newest checkpoint and saves it again.
        log(f"{out / 'final'} was not completely saved ({problem}); resuming from the newest checkpoint instead")
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




def ended_at(recipe: Recipe, checkpoint: str) -> bool:
    """Whether the run had reached its end at ``checkpoint``: its max_steps, or all of its time budget.

    Resumed from such a checkpoint (a kill during the final evaluation, save or export), the Trainer
    still takes one step more: past max_steps, on a batch the run never had, at whatever rate the
    schedule gives past its end (cosine rises again, constant stays). :func:`load_ended` takes none.
    """
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        if state["max_steps"] > 0 and state["global_step"] >= state["max_steps"]:
            return True
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(recipe.budget_minutes) and budget_used_s(checkpoint) >= 60.0 * recipe.budget_minutes


def load_ended(trainer, checkpoint: str):
    """The trainer as training from ``checkpoint`` would leave it, had it taken no step: its weights and
    state loaded; returns a ``TrainOutput`` without this process's training figures."""
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
    log(f"{checkpoint} is the run's last step ({trainer.state.global_step}): nothing left to train; "
        "evaluating and saving it")
    return TrainOutput(trainer.state.global_step, None, {})


# ------------------------------------------------------------------------------------------------
# Tokenizer, collator, training arguments


def get_tokenizer(recipe: Recipe, model_max_length: int = 512, path: str | None = None):
    """The run's shared tokenizer: reused from ``path`` (default ``tokenizer.path``) or the run folder, else trained."""
    from nlpssl.tokenizer import load_tokenizer

    path = path or recipe.tokenizer.path
    if path:
        tokenizer = load_tokenizer(path)
        if path == recipe.tokenizer.path:  # not a teacher's or encoder's, which the tokenizer section never trains
            note_unused_tokenizer_settings(recipe, path, tokenizer)
        return tokenizer
    saved = recipe.output_dir / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return load_tokenizer(saved)
    return train_recipe_tokenizer(recipe, saved, model_max_length)


def note_unused_tokenizer_settings(recipe: Recipe, path: str, tokenizer) -> None:
    """Say so when a reused tokenizer is not what the ``tokenizer`` section would train: its
    ``vocab_size`` and ``algorithm`` stay in the run's recipe.yaml but the run does not use them."""
    t = recipe.tokenizer
    kind = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "unigram"}.get(
        json.loads(tokenizer.backend_tokenizer.to_str()).get("model", {}).get("type"))
    unused = ([f"tokenizer.vocab_size={t.vocab_size}"] if len(tokenizer) != t.vocab_size else []) + (
        [f"tokenizer.algorithm={t.algorithm!r}"] if kind and kind != t.algorithm else [])
    if unused:
        log(f"tokenizer: reusing {path} ({len(tokenizer)} tokens, {kind or 'its own algorithm'}); "
            f"{' and '.join(unused)} are not used: the model is sized to this tokenizer. Remove the path to "
            "train the tokenizer the section describes.")


def train_recipe_tokenizer(recipe: Recipe, out_dir: Path, model_max_length: int = 512):
    """Train the shared tokenizer on the recipe's text source and save it to ``out_dir``.

    ``out_dir`` must be new or empty: a tokenizer is never written over files already there.
    """
    from nlpssl.data import source_texts
    from nlpssl.tokenizer import train_tokenizer

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        held = ("already holds a tokenizer (tokenizer.json)" if (out_dir / "tokenizer.json").is_file()
                else "already exists and is not an empty folder")
        raise NlpsslError(
            f"tokenizer: {str(out_dir)!r} {held}, and a new tokenizer would overwrite its files. Pass --out "
            "NEW_FOLDER to `nlpssl tokenizer train`, reuse a trained tokenizer with tokenizer.path=FOLDER, or "
            "move that folder away."
        )

    d, t = recipe.data, recipe.tokenizer
    texts = source_texts(recipe, d.max_texts if t.max_texts is None else t.max_texts)
    # Trained into a hidden folder and renamed: a killed run never leaves half a tokenizer behind.
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{owner_tag()}")
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


def every_weight_used(recipe: Recipe) -> bool:
    """Whether each training step's loss reaches every trainable weight (then DDP need not search).

    A classifier's loss reaches its body, pooler and head; a pretraining objective says for itself.
    """
    if recipe.kind != "pretrain":
        return True
    from nlpssl.objectives import objective_for

    return objective_for(recipe).every_weight_used


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
    if "dataloader_pin_memory" not in t:
        # Pinned memory speeds copies to a GPU; without one torch warns at every loader (each evaluation).
        kw["dataloader_pin_memory"] = torch.cuda.is_available()
    if torch.cuda.is_available() and "tf32" not in t:
        kw["tf32"] = s.tf32
    if s.compile and "torch_compile" not in t:
        kw["torch_compile"] = True
    if "ddp_find_unused_parameters" not in t:
        # transformers has DDP search every step for weights the loss did not reach (an extra pass
        # over the autograd graph, and a warning on every rank when it finds none). Where the loss
        # reaches every weight no search is needed, and the span boundary head needs none: its
        # logits are not among the model's outputs, so the search would miss its weights and then
        # see their gradients arrive ("marked ready twice").
        kw["ddp_find_unused_parameters"] = not every_weight_used(recipe)
    if recipe.kind == "pretrain" and "include_num_input_tokens_seen" not in t:
        from nlpssl.objectives import objective_for

        if objective_for(recipe).padded_rows:  # count the tokens of the text, not the padding
            kw["include_num_input_tokens_seen"] = "non_padding"
    if recipe.data.streaming:
        # The stream restores its own position (nlpssl.stream); the Trainer must not skip batches too.
        kw["ignore_data_skip"] = True
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
# Metrics


def summarise(run: Run, result, eval_metrics: dict[str, Any]) -> dict[str, Any]:
    """The run's headline figures (what metrics.json and the model card report)."""
    trainer, args = run.trainer, run.trainer.args
    steps = trainer.state.global_step
    rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    runtime = result.metrics.get("train_runtime")  # of this process's steps only; None: it trained none
    resumed_at = int(Path(run.resume_from).name.rpartition("-")[2]) if run.resume_from else 0
    if args.include_num_input_tokens_seen == "non_padding":  # padded rows: the real tokens, summed over ranks
        train_tokens = int(trainer.state.num_input_tokens_seen)
        tokens_now = train_tokens - run.resumed_tokens
    else:
        train_tokens = steps * rows_per_step * run.recipe.data.block_size
        tokens_now = (steps - resumed_at) * rows_per_step * run.recipe.data.block_size
    m: dict[str, Any] = {
        "params": run.params,
        "steps": steps,
        "world_size": args.world_size,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "train_tokens": train_tokens,
        "train_runtime_s": runtime,
        "train_tokens_per_second": tokens_now / runtime if runtime else None,
        "train_loss": result.metrics.get("train_loss"),
        "eval_loss": eval_metrics.get("eval_loss"),
    }
    m |= run.objective.headline(eval_metrics, run.data.stats, trainer)
    m["eval_runtime_s"] = eval_metrics.get("eval_runtime")
    budget = trainer._time_budget()
    if budget is not None:
        m["budget_minutes"] = budget.minutes
        m["budget_used_minutes"] = round(budget.elapsed_s / 60, 3)
    return m
