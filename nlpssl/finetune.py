"""Fine-tuning on text classification: data -> labels -> model -> Trainer -> metrics -> export.

Read :func:`finetune` top to bottom; each step is one function below it. The model starts from an
nlpssl export (or any Hub-format encoder or decoder folder) loaded into
``AutoModelForSequenceClassification``; ``init: scratch`` builds the same architecture from random
weights as the control that shows what pretraining bought. The result is exported the same way as a
pretraining run: a stock folder that ``pipeline("text-classification")`` loads with its label names.
The labelled data (files, Hub datasets, the built-in set; splits and label names) comes from
`nlpssl.labelled`; `nlpssl.demo.classify` runs the export.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nlpssl.errors import NlpsslError, first_line
from nlpssl.labelled import Split, TaskData, file_problems, load_task_data
from nlpssl.models import set_dropout
from nlpssl.recipe import Recipe, RecipeError, check_kind, load_recipe

# Files a Hub-format folder may hold its tokenizer in (fast tokenizer, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model")


@dataclass(frozen=True)
class FinetuneResult:
    """What a finished fine-tuning run left behind."""

    output_dir: Path
    export_dir: Path
    metrics: dict[str, Any]


def finetune(recipe: Recipe | str | Path, overrides: Sequence[str] = ()) -> FinetuneResult:
    """Fine-tune a model on text classification as the recipe says; export to ``<output_dir>/export``.

    Args:
        recipe: a loaded :class:`Recipe` of ``kind: finetune``, a recipe path, or a shipped name.
        overrides: ``key=value`` strings applied on top of the file (``model=PATH``, ``task.x=...``).

    Raises:
        NlpsslError: a bad recipe, model folder or data set, with where, what and how to fix.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides, kind="finetune")
    from nlpssl.runs import check_output_dir, run_lock

    check_recipe(recipe)
    model_dir = check_model_folder(recipe.finetune_model)
    check_output_dir(recipe)
    with run_lock(recipe.output_dir):
        try:
            return _finetune(recipe, model_dir)
        except KeyboardInterrupt:
            _say_interrupted(recipe.output_dir)
            raise


def _say_interrupted(out: Path) -> None:
    """After Ctrl-C: nothing is exported, and whether the folder takes the same command again."""
    from nlpssl.runs import log

    kept = sorted(p.name for p in out.glob("checkpoint-*"))
    if kept:
        log(f"fine-tuning interrupted; nothing was exported. {out} holds {', '.join(kept)} and fine-tuning does "
            f"not resume: delete {out}, or choose another training.output_dir, and run again.")
    else:
        log(f"fine-tuning interrupted before its first checkpoint; nothing was exported. The same command "
            f"runs again into {out}.")


def _finetune(recipe: Recipe, model_dir: Path) -> FinetuneResult:
    from nlpssl.runs import log, write_run_recipe

    tokenizer = load_classifier_tokenizer(model_dir)
    data = load_task_data(recipe.task)
    log(f"finetune: {', '.join(f'{len(s)} {n}' for n, s in data.splits.items())} examples, "
        f"{len(data.label_names)} labels {data.label_names}, init={recipe.init} from {model_dir}")
    write_run_recipe(recipe)
    trainer, metrics = train_classifier(recipe, model_dir, tokenizer, data)
    write_outputs(recipe.output_dir, metrics, trainer.state.log_history, data.label_names)
    export_dir = export_classifier(trainer, tokenizer, recipe, metrics)
    log(f"export: {export_dir}")
    return FinetuneResult(recipe.output_dir, export_dir, metrics)


def train_classifier(recipe: Recipe, model_dir: Path, tokenizer, data: TaskData, quiet: bool = False):
    """Build, train and score one classifier on prepared splits; returns (trainer, metrics).

    The shared core of `nlpssl finetune` and `nlpssl probe` (which hands every control the same splits).
    ``quiet``: the Trainer does not print each evaluation's figures (the probe's one line a run does).
    """
    model = build_classifier(model_dir, recipe, data.label_names, tokenizer)
    encoded = encode_splits(data, tokenizer, recipe.task.max_length)
    trainer = make_trainer(recipe, model, tokenizer, encoded, len(data.label_names))
    if quiet:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    result = trainer.train()
    return trainer, summarise(recipe, model_dir, trainer, result, encoded, data)


# ------------------------------------------------------------------------------------------------
# Checks that run before any data is read (`nlpssl recipe validate` runs them too)


def check_recipe(recipe: Recipe) -> None:
    """Every check of the recipe itself before data or a model is loaded, all reported together.

    The task's ranges, the training settings fine-tuning adds to or refuses, and the files the task
    names (the folder of ``model`` is :func:`check_model_folder`'s).
    """
    where = recipe.source_path or recipe.name
    check_kind(recipe.kind, "finetune", where)
    problems = task_problems(recipe, where) + training_problems(recipe) + file_problems(recipe.task)
    if problems:
        raise RecipeError(problems)


def task_problems(recipe: Recipe, where: str) -> list[str]:
    """Range and cross-field checks of the ``task`` section."""
    t, problems = recipe.task, []

    def bad(key: str, value: Any, fix: str) -> None:
        problems.append(f"{where}: task.{key} is out of range (got {value!r}). {fix}.")

    # An empty path is the current folder to pathlib (`task.source=$DATA` with DATA unset), and an empty
    # validation/test source was quietly read as "carve it off train": name it, as data.source's check does.
    for key, value in (("source", t.source), ("validation_source", t.validation_source),
                       ("test_source", t.test_source)):
        if isinstance(value, str) and not value.strip():
            problems.append(f"{where}: task.{key} is empty (got {value!r}). Name a file or 'hub:NAME'"
                            + (", or 'builtin'" if key == "source" else ", or null to hold out a share of train")
                            + " (an unset shell variable in key=$VAR gives an empty value).")
    if not 0.0 <= t.validation_fraction < 0.5:
        bad("validation_fraction", t.validation_fraction, "Use a share in [0, 0.5), e.g. 0.1")
    if not 0.0 <= t.test_fraction < 0.5:
        bad("test_fraction", t.test_fraction, "Use a share in [0, 0.5), e.g. 0.1, or 0 for no test split")
    if t.source != "builtin" and not t.validation_source and t.validation_fraction == 0:
        bad("validation_fraction", 0.0, "Hold out a share of train (e.g. 0.1) or set task.validation_source")
    if t.max_length < 8:
        bad("max_length", t.max_length, "Use at least 8 tokens")
    if t.builtin_train_size < 10 or t.builtin_eval_size < 10:
        bad("builtin_train_size/builtin_eval_size", (t.builtin_train_size, t.builtin_eval_size), "Use 10 or more")
    if t.max_train_examples is not None and t.max_train_examples < 2:
        bad("max_train_examples", t.max_train_examples, "Use 2 or more, or null for all")
    if t.early_stopping_patience is not None and t.early_stopping_patience < 1:
        bad("early_stopping_patience", t.early_stopping_patience, "Use 1 or more evaluations, or null to turn it off")
    if t.dropout is not None and not 0.0 <= t.dropout < 1.0:
        bad("dropout", t.dropout, "Use a rate in [0, 1), e.g. 0.1, or null to keep the export's")
    if t.label_names is not None and len(set(map(str, t.label_names))) < 2:
        bad("label_names", t.label_names, "Name at least two distinct classes, or leave it unset")
    return problems


def training_problems(recipe: Recipe) -> list[str]:
    """What fine-tuning's Trainer would refuse after the data and model were built: resuming, and
    TrainingArguments that reject the defaults :func:`finetune_defaults` adds (keep the best checkpoint)."""
    problems = []
    if recipe.resume:
        problems.append(
            f"training.resume: fine-tuning runs do not resume (got {recipe.training.get('resume')!r}); they take "
            "minutes and save model-only checkpoints. Delete training.output_dir or choose another one, and rerun."
        )
    try:
        recipe.training_arguments(**finetune_defaults(recipe)[0])
    except ValueError as err:
        problems.append(_rejected(err))
    return problems


def model_note(recipe: Recipe) -> str | None:
    """For `nlpssl recipe validate`: check the recipe's model folder if it exists, else say it must.

    A recipe is often validated before the pretraining run that writes its model, so a folder that
    does not exist yet is a note; one that exists and is not an export fails as `finetune` would.
    """
    if not Path(str(recipe.finetune_model)).exists():
        return (f"model: {recipe.finetune_model!r} does not exist yet; `nlpssl finetune` needs it there "
                "(pretrain it first, or pass model=PATH).")
    check_model_folder(recipe.finetune_model)
    return None


def check_model_folder(model: str | None) -> Path:
    """The Hub-format folder to start from: an export, or a run folder that holds one."""
    from nlpssl.runs import export_folder

    path = Path(str(model))
    if (found := export_folder(path)) != path:
        return found  # a pretraining run folder: use its export
    if not path.is_dir():
        raise NlpsslError(
            f"model: folder not found (got {str(model)!r}, looked for {str(path.absolute())!r}). "
            "Pretrain one first (e.g. `nlpssl pretrain bert-tiny`) or pass model=PATH to an export."
        )
    if not (path / "config.json").is_file():
        raise NlpsslError(
            f"model: {str(path)!r} is not an export or Hub-format model folder: no config.json (got files "
            f"{sorted(p.name for p in path.iterdir())[:10]}). Pass an export folder such as "
            "runs/bert-tiny/export, or write one with `nlpssl export RUN_DIR OUT_DIR`."
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise NlpsslError(
            f"model: {str(path)!r} holds no tokenizer file such as tokenizer.json or vocab.txt (got files "
            f"{sorted(p.name for p in path.iterdir())[:10]}). Export the run with `nlpssl export RUN_DIR "
            "OUT_DIR`, which writes the tokenizer, or save the tokenizer into the folder with save_pretrained."
        )
    return path


# ------------------------------------------------------------------------------------------------
# Tokenizer and model


def load_classifier_tokenizer(model_dir: Path):
    """The folder's tokenizer, set up so that a decoder's last position summarises the whole text.

    A decoder's classification head reads the hidden state of the last non-pad token. Tokenizers of
    causal-LM exports add no special tokens, so "... glad." would be read at "."; ending every input
    with eos (and starting it with bos), as the pretraining documents were, gives the head the same
    position that saw whole documents. Tokenizers without a pad token (stock GPT-2) pad with eos.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as err:
        raise NlpsslError(
            f"model: cannot load the tokenizer of {str(model_dir)!r} (got {err}). "
            "Re-export the run with `nlpssl export RUN_DIR OUT_DIR`."
        ) from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise NlpsslError(
                f"model: the tokenizer of {str(model_dir)!r} has neither a pad nor an eos token (got None). "
                "Add a pad token to the tokenizer and save it into the folder."
            )
        tokenizer.pad_token = tokenizer.eos_token
    # Causal exports pad on the left, for batched generate(). A classifier reads the last real token
    # whichever side pads, but GPT-2's learned positions count from the row's first slot, pads
    # included: padded on the left, a text's outputs depended on the longest text of its batch.
    tokenizer.padding_side = "right"
    adds_nothing = tokenizer("a b")["input_ids"] == tokenizer("a b", add_special_tokens=False)["input_ids"]
    if adds_nothing and tokenizer.eos_token is not None:
        _wrap_with_bos_eos(tokenizer)
    return tokenizer


def _wrap_with_bos_eos(tokenizer) -> None:
    """Make ``tokenizer(text)`` give ``[BOS] text [EOS]`` (pairs: ``[BOS] a [EOS] b [EOS]``); saved with it."""
    from tokenizers import processors

    # nlpssl causal exports (and stock GPT-2) have bos == eos: a text starts after the separator,
    # as every pretraining document did, and ends with it.
    eos, bos = tokenizer.eos_token, tokenizer.bos_token or tokenizer.eos_token
    head = f"{bos} "
    special = [(eos, tokenizer.eos_token_id)] + ([(bos, tokenizer.bos_token_id)] if bos != eos else [])
    template = processors.TemplateProcessing(
        single=f"{head}$A {eos}", pair=f"{head}$A {eos} $B:1 {eos}:1", special_tokens=special
    )
    backend = tokenizer.backend_tokenizer
    # Keep the existing processor (byte-level offset trimming) in front of the template.
    existing = backend.post_processor
    backend.post_processor = processors.Sequence([existing, template]) if existing else template


def build_classifier(model_dir: Path, recipe: Recipe, label_names: list[str], tokenizer):
    """``AutoModelForSequenceClassification`` from the folder's weights, or random ones (``init: scratch``)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, set_seed

    from nlpssl.console import quiet_transformers, say_loaded

    config = AutoConfig.from_pretrained(str(model_dir))
    replace_head = _head_note(config, model_dir, label_names, recipe.init)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    config.problem_type = "single_label_classification"
    # Decoders find the last real token by pad_token_id; without it they refuse batches of > 1.
    config.pad_token_id = tokenizer.pad_token_id
    if getattr(config, "use_cache", None):
        config.use_cache = False  # no generation here; past_key_values would only cost memory
    set_dropout(config, recipe.task.dropout)
    if hasattr(config, "classifier_pooling"):
        # ModernBERT: the pooling the export declares for sentence vectors (a SimCSE export's
        # 1_Pooling/config.json), else the mean: masked-LM pretraining has no sentence-level
        # objective, so its [CLS] state is not trained and the mean of the token states carries
        # the pretrained knowledge. Other stock classifiers pool [CLS] and have no choice.
        from nlpssl.embeddings import read_pooling

        config.classifier_pooling = read_pooling(model_dir)
    set_seed(int(recipe.training.get("seed", 42)))  # the new head (and, for scratch, everything)
    try:
        if recipe.init == "scratch":
            return AutoModelForSequenceClassification.from_config(config)
        with quiet_transformers():  # its load report (a table per run) gives way to say_loaded's line
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), config=config, ignore_mismatched_sizes=replace_head, output_loading_info=True)
        say_loaded(model_dir, model, info)
        return model
    except (ValueError, KeyError) as err:
        raise NlpsslError(
            f"model: {config.model_type!r} has no sequence-classification class in transformers (got "
            f"{type(err).__name__}: {first_line(err)}). Start from an encoder or decoder "
            "export (bert, roberta, gpt2, llama)."
        ) from err


def _head_note(config, model_dir: Path, label_names: list[str], init: str) -> bool:
    """Whether the folder is already a classifier whose head has another number of labels (then it is
    replaced, said here); a head of as many labels is kept, its classes taken by position, also said."""
    from nlpssl.runs import log

    if init == "scratch" or not any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        return False
    before = [str(config.id2label[i]) for i in sorted(config.id2label)]
    if before == label_names:
        return False
    if len(before) != len(label_names):
        log(f"model: {str(model_dir)!r} is already a classifier of {before}; its head is replaced by a new one "
            f"for {label_names}.", once=True)
        return True
    log(f"model: {str(model_dir)!r} is already a classifier of {before}; its head is kept for {label_names}, "
        f"class by class in that order ({before[0]!r} -> {label_names[0]!r}, ...). To start from a new head, "
        "fine-tune the pretraining export instead.", once=True)
    return False


# ------------------------------------------------------------------------------------------------
# Encoding


def encode_splits(data: TaskData, tokenizer, max_length: int) -> dict[str, Any]:
    """Tokenized `datasets.Dataset` per split (unpadded; the collator pads each batch)."""
    import datasets

    label2id = {name: i for i, name in enumerate(data.label_names)}
    out = {}
    for name, split in data.splits.items():
        report_truncation(split, tokenizer, max_length, name)
        columns = encode_texts(split, tokenizer, max_length)
        out[name] = datasets.Dataset.from_dict({**columns, "labels": [label2id[x] for x in split.labels]})
    return out


def encode_texts(split: Split, tokenizer, max_length: int) -> dict[str, list]:
    """The model's input columns for a split's texts (and second texts), truncated, unpadded; labels unread."""
    encoded = tokenizer(split.texts, split.pairs, truncation=True, max_length=_limit(tokenizer, max_length))
    return {k: encoded[k] for k in tokenizer.model_input_names if k in encoded}


def _limit(tokenizer, max_length: int) -> int:
    return min(max_length, tokenizer.model_max_length or max_length)


def token_counts(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[int] | None:
    """Tokens of each input as the model would get it, special tokens included, before any truncation
    (None for a tokenizer without a ``tokenizers`` backend)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    whole = Tokenizer.from_str(backend.to_str())  # a copy: the caller's tokenizer keeps its settings
    whole.no_truncation()
    whole.no_padding()
    return [len(e.ids) for e in whole.encode_batch(list(texts) if pairs is None else list(zip(texts, pairs)))]


_REPORTED: set[str] = set()  # the probe fine-tunes the same rows many times: each report is printed once


def report_truncation(split: Split, tokenizer, max_length: int, name: str) -> int:
    """Say how many of ``split``'s inputs are longer than the model reads; returns that count."""
    from nlpssl.runs import log

    limit = _limit(tokenizer, max_length)
    counts = token_counts(tokenizer, split.texts, split.pairs) or []
    cut = sum(c > limit for c in counts)
    if cut:
        model_limit = tokenizer.model_max_length or max_length
        which = "task.max_length" if limit == max_length else "the model's length (tokenizer model_max_length)"
        fix = (f"Raise task.max_length (up to {model_limit}) to read more of them" if max_length < model_limit else
               "The model reads no more: longer inputs need a model pretrained on longer rows (data.block_size)")
        message = (f"{cut} of {len(counts)} {name} inputs ({cut / len(counts):.0%}) are longer than {which} "
                   f"({limit} tokens; the longest has {max(counts)}) and are cut to their first {limit} tokens. "
                   f"{fix}.")
        if message not in _REPORTED:
            _REPORTED.add(message)
            log(message)
    return cut


# ------------------------------------------------------------------------------------------------
# Trainer


def finetune_defaults(recipe: Recipe) -> tuple[dict[str, Any], bool]:
    """TrainingArguments fine-tuning sets where the recipe does not: evaluate and save each epoch, keep the best.

    Returns:
        (the keyword arguments, whether the best checkpoint is tracked, which early stopping needs).
    """
    t, task = recipe.training, recipe.task
    eval_strategy, save_strategy = _strategies(recipe)
    best = eval_strategy != "no" and save_strategy == eval_strategy
    defaults: dict[str, Any] = {
        "eval_strategy": eval_strategy, "save_strategy": save_strategy,
        # Weights only: a checkpoint is a candidate for the best model, never a point to resume from.
        "save_total_limit": 1, "save_only_model": True,
    }
    if best:
        defaults.update(load_best_model_at_end=True, metric_for_best_model=task.metric_for_best_model,
                        greater_is_better=True)
        if eval_strategy == "steps":
            defaults["save_steps"] = t.get("eval_steps") or t.get("logging_steps", 500)
    extra = {k: v for k, v in defaults.items() if k not in t}
    return {"prediction_loss_only": False, "label_names": ["labels"], **extra}, best


def _strategies(recipe: Recipe) -> tuple[str, str]:
    """(eval_strategy, save_strategy): each epoch by default, saving when evaluating."""
    eval_strategy = str(recipe.training.get("eval_strategy", "epoch"))
    return eval_strategy, str(recipe.training.get("save_strategy", eval_strategy))


def _rejected(err: ValueError) -> str:
    return (
        f"training: transformers.TrainingArguments rejected the fine-tuning settings (got "
        f"{str(err).strip().splitlines()[0]}). Make save_strategy/save_steps match eval_strategy/eval_steps."
    )


def finetune_arguments(recipe: Recipe):
    """TrainingArguments with the fine-tuning defaults and the speed section's settings.

    Returns:
        (TrainingArguments, whether the best checkpoint is tracked, which early stopping needs).
    """
    from nlpssl.pretrain import training_arguments
    from nlpssl.runs import log

    extra, best = finetune_defaults(recipe)
    if not best and recipe.task.early_stopping_patience:
        eval_strategy, save_strategy = _strategies(recipe)
        log(f"task.early_stopping_patience={recipe.task.early_stopping_patience} is ignored: it needs "
            f"training.eval_strategy == save_strategy != 'no' (got {eval_strategy!r}, {save_strategy!r}).")
    try:
        args = training_arguments(recipe, **extra)
    except ValueError as err:
        raise NlpsslError(_rejected(err)) from err
    return args, best


def make_trainer(recipe: Recipe, model, tokenizer, encoded: dict[str, Any], num_labels: int):
    """A stock Trainer with dynamic padding, offline metrics and (optionally) early stopping."""
    import functools

    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer

    args, best = finetune_arguments(recipe)
    patience = recipe.task.early_stopping_patience
    callbacks = [EarlyStoppingCallback(early_stopping_patience=patience)] if best and patience else []
    return Trainer(
        model=model, args=args, train_dataset=encoded["train"], eval_dataset=encoded["validation"],
        processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=functools.partial(compute_metrics, num_labels=num_labels), callbacks=callbacks,
    )


def compute_metrics(eval_pred, num_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 (through `evaluate`, offline) from logits of shape (rows, num_labels)."""
    from nlpssl.metrics import headline_scores

    return headline_scores(_argmax(eval_pred.predictions), eval_pred.label_ids.tolist(), num_labels)


def _argmax(logits) -> list[int]:
    import numpy as np

    if isinstance(logits, tuple):  # models that also return hidden states: logits come first
        logits = logits[0]
    return np.asarray(logits).argmax(-1).tolist()


# ------------------------------------------------------------------------------------------------
# Metrics, outputs, export


def summarise(recipe: Recipe, model_dir: Path, trainer, result, encoded: dict[str, Any], data: TaskData) -> dict[str, Any]:
    """The run's figures: headline scores per split, then the per-class report (metrics.json)."""
    from nlpssl.metrics import classification_scores

    state = trainer.state
    m: dict[str, Any] = {
        "model": str(model_dir), "init": recipe.init, "labels": data.label_names,
        **{f"{name}_examples": len(split) for name, split in data.splits.items()},
        "steps": state.global_step, "epochs": round(float(state.epoch or 0), 3),
        "train_runtime_s": float(result.metrics.get("train_runtime", float("nan"))),
        "train_loss": result.metrics.get("train_loss"),
        "best_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
    }
    report = {}
    for name, prefix in (("validation", "eval"), ("test", "test")):
        if name not in encoded:
            continue
        out = trainer.predict(encoded[name], metric_key_prefix=prefix)
        scores = classification_scores(_argmax(out.predictions), out.label_ids.tolist(), data.label_names)
        m[f"{prefix}_loss"] = out.metrics.get(f"{prefix}_loss")
        m[f"{prefix}_accuracy"], m[f"{prefix}_macro_f1"] = scores.accuracy, scores.macro_f1
        report[name] = {"source": data.sources[name], "per_class": scores.per_class,
                        "confusion_matrix": scores.confusion_matrix}
    m["report"] = report
    return m


def write_outputs(out: Path, metrics: dict[str, Any], history: list[dict], label_names: list[str]) -> None:
    """metrics.json, log_history.json, loss_curve.png and confusion_matrix.png (test split if any)."""
    from nlpssl.metrics import plot_confusion_matrix
    from nlpssl.runs import write_metrics

    write_metrics(out, metrics, history)
    split, prefix = ("test", "test") if "test" in metrics["report"] else ("validation", "eval")
    title = f"{split}: accuracy {metrics[f'{prefix}_accuracy']:.3f}, macro-F1 {metrics[f'{prefix}_macro_f1']:.3f}"
    plot_confusion_matrix(metrics["report"][split]["confusion_matrix"], label_names, out / "confusion_matrix.png", title)


def export_classifier(trainer, tokenizer, recipe: Recipe, metrics: dict[str, Any]) -> Path:
    """Write the (best) model, tokenizer, recipe, plots and a model card; replace the export atomically."""
    from nlpssl.cards import classifier_card
    from nlpssl.export import replace_dir, save_stock_tokenizer, sweep_stale
    from nlpssl.runs import owner_tag

    out = recipe.output_dir / "export"
    sweep_stale(out)  # what a killed export left
    tmp = out.with_name(f".{out.name}.tmp-{owner_tag()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        trainer.save_model(str(tmp))  # after load_best_model_at_end these are the best weights
        save_stock_tokenizer(tokenizer, tmp, trainer.model.config.model_type)
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the export holds recipe.yaml instead
        for name in ("recipe.yaml", "metrics.json", "confusion_matrix.png", "loss_curve.png"):
            if (recipe.output_dir / name).is_file():
                shutil.copy2(recipe.output_dir / name, tmp / name)
        (tmp / "README.md").write_text(classifier_card(recipe, metrics, trainer.model.config.model_type, out))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk, Ctrl-C: no half export left beside the run
        raise
    return out
