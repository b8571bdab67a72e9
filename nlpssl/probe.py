"""Does pretraining help my task? A downstream report: the export against two controls.

For each label budget and seed the probe draws the same labelled rows for three classifiers:

* ``pretrained``: the export fine-tuned (``nlpssl finetune`` with ``init: pretrained``);
* ``scratch``: the same architecture from random weights, same fine-tuning and search;
* ``bag-of-words``: TF-IDF of word 1-2-grams and logistic regression (scikit-learn).

Data flow::

    task (finetune recipe, labelled file or "builtin")
      -> pool of labelled training rows + a scored split (the task's test or validation file,
         else a seeded share of the pool held out once)
      -> per seed: one permutation of the pool; budget n takes its first n rows (nested budgets),
         of which a stratified 10% is carved off for early stopping and model selection
      -> every arm gets exactly those splits (their digests are recorded and compared)
      -> neural arms: one fine-tuning run per learning rate of the grid, the best on the carved
         validation rows is kept; bag-of-words: the best C of a grid, chosen the same way
      -> accuracy on the scored split: table (mean and spread over seeds), plot, probe.json,
         and optionally the Hub's ``model-index`` metadata in the export's model card
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nlpssl.errors import NlpsslError
from nlpssl.labelled import LABELLED_EXTENSIONS, Split, TaskData, carve, is_labelled_file, load_task_data
from nlpssl.recipe import Recipe
from nlpssl.sources import COMPRESSIONS

ARMS = ("pretrained", "scratch", "bag-of-words")
NEURAL_ARMS = ("pretrained", "scratch")
# Fine-tuning search shared by both neural arms (chosen on SST-2, BENCHMARKS.md "Fine-tuning search").
DEFAULT_LEARNING_RATES = (3e-4, 1e-3)
BOW_C = (1.0, 4.0, 16.0)
SELECTION_FRACTION = 0.1  # of each budget, held out for early stopping and picking the learning rate
HELD_OUT_FRACTION = 0.2  # of the pool, scored on, when the task names no test or validation file
TARGET_STEPS = 1000  # fine-tuning steps aimed at per run: epochs = clip(ceil(TARGET_STEPS / steps_per_epoch))
MIN_EPOCHS, MAX_EPOCHS = 2, 20
# Epochs without a better selection accuracy before a run stops. The selection rows are few (100 of
# 1,000 labels), so their accuracy is noisy: patience 2 stopped SST-2 runs at epoch 4-7, 7 points
# below a full run from scratch (BENCHMARKS.md "Fine-tuning search").
PATIENCE = 5
MARKER = "probe.json"  # a folder holding this was written by the probe and may be rewritten by it


@dataclass
class ProbeRun:
    """One arm at one label budget and seed."""

    arm: str
    labels: int
    seed: int
    accuracy: float  # on the scored split
    macro_f1: float
    selection_accuracy: float  # on the carved validation rows, which picked the setting
    setting: dict[str, Any]  # the chosen learning rate (neural) or C (bag-of-words)
    seconds: float
    splits: dict[str, str]  # digest of each split the arm saw: train, validation, test
    tried: list[dict[str, Any]] = field(default_factory=list)  # every setting of the search


@dataclass
class ProbeReport:
    """Every run of a probe, with where the outputs went."""

    model: str
    task: str
    scored_on: str
    label_budgets: list[int]
    seeds: int
    runs: list[ProbeRun]
    out_dir: Path
    fine_tuning: dict[str, Any]

    def summary(self) -> dict[int, dict[str, tuple[float, float, int]]]:
        """budget -> arm -> (mean accuracy, standard deviation, number of seeds)."""
        table: dict[int, dict[str, tuple[float, float, int]]] = {}
        for n in self.label_budgets:
            for arm in ARMS:
                scores = [r.accuracy for r in self.runs if r.labels == n and r.arm == arm]
                if scores:
                    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
                    table.setdefault(n, {})[arm] = (statistics.fmean(scores), spread, len(scores))
        return table

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "task": self.task, "scored_on": self.scored_on,
            "label_budgets": self.label_budgets, "seeds": self.seeds, "fine_tuning": self.fine_tuning,
            "summary": {str(n): {arm: {"mean": m, "std": s, "seeds": k} for arm, (m, s, k) in row.items()}
                        for n, row in self.summary().items()},
            "runs": [dataclasses.asdict(r) for r in self.runs],
        }


def probe(
    model_dir: str | Path,
    task: str = "builtin",
    overrides: Sequence[str] = (),
    labels: Sequence[int | str] = (500, 1000, "all"),
    seeds: int = 3,
    out_dir: str | Path | None = None,
    learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES,
    arms: Sequence[str] = ARMS,
    epochs: int | None = None,
    card: bool = False,
) -> ProbeReport:
    """Fine-tune ``model_dir`` and its controls at each label budget; write the table, plot and JSON.

    Args:
        model_dir: an nlpssl export (or a pretraining run folder holding one).
        task: a finetune recipe (name or path, e.g. ``finetune-sst2``), a labelled .csv/.tsv/.jsonl/
            .parquet file, or ``builtin``.
        overrides: ``task.x=...`` / ``training.x=...`` strings applied to the task recipe.
        labels: label budgets; ``"all"`` is every labelled training row.
        seeds: draws of the labelled rows (and of the fine-tuning seed) per budget.
        out_dir: where probe.json, probe.md and probe.png go (default: beside the export).
        learning_rates: the fine-tuning grid searched for both neural arms.
        arms: a subset of :data:`ARMS`.
        epochs: fine-tuning epochs for every run (default: aimed at ~TARGET_STEPS steps).
        card: add the results to the export's model card as ``model-index`` metadata.

    Raises:
        NlpsslError: a bad model folder, task, label budget or output folder, before any training.
    """
    from nlpssl.finetune import check_model_folder, check_recipe, load_classifier_tokenizer
    from nlpssl.runs import log

    model_path = check_model_folder(str(model_dir))
    recipe = task_recipe(task, model_path, overrides)
    check_recipe(recipe)
    arms = _check_arms(arms)
    learning_rates = _check_rates(learning_rates)
    if seeds < 1:
        raise NlpsslError(f"probe: --seeds must be 1 or more (got {seeds}). Use e.g. --seeds 3.")
    if epochs is not None and epochs < 1:
        raise NlpsslError(f"probe: --epochs must be 1 or more (got {epochs}). Leave it out for the default.")
    if card:
        from nlpssl.cards import check_card

        check_card(model_path)
    out = Path(out_dir) if out_dir is not None else model_path.parent / f"probe-{_slug(recipe.task.source)}"
    check_out_dir(out)
    pool, scored, data, scored_on = probe_splits(recipe)
    budgets = resolve_budgets(labels, pool, data.label_names, recipe.task.source)
    tokenizer = load_classifier_tokenizer(model_path) if set(arms) & set(NEURAL_ARMS) else None
    out.mkdir(parents=True, exist_ok=True)
    fine_tuning = {"learning_rates": list(learning_rates), "bow_C": list(BOW_C),
                   "selection_fraction": SELECTION_FRACTION, "epochs": epochs or "auto", "patience": PATIENCE,
                   "dropout": recipe.task.dropout, "max_length": recipe.task.max_length,
                   "batch_size": int(recipe.training.get("per_device_train_batch_size", 8))}
    report = ProbeReport(str(model_path), task, scored_on, budgets, seeds, [], out, fine_tuning)
    log(f"probe: {len(pool)} labelled rows in the pool, scoring on {len(scored)} rows ({scored_on}), "
        f"budgets {budgets}, {seeds} seed(s), arms {list(arms)}")
    for seed in range(seeds):
        order = list(range(len(pool)))
        random.Random(1000 * recipe.task.seed + seed).shuffle(order)
        for n in budgets:
            train, selection = carve(pool.subset(order[:n]), SELECTION_FRACTION, seed)
            splits = TaskData({"train": train, "validation": selection, "test": scored}, data.label_names,
                              {"train": f"{n} of {recipe.task.source}", "validation": f"selection rows of {n}",
                               "test": scored_on})
            for arm in arms:
                started = time.perf_counter()
                if arm == "bag-of-words":
                    run = bag_of_words(splits, n, seed)
                else:
                    run = fine_tune_arm(recipe, model_path, tokenizer, splits, arm, n, seed, learning_rates,
                                        epochs, out / "runs")
                run.seconds = round(time.perf_counter() - started, 1)
                report.runs.append(run)
                log(f"probe: {arm:>12} {n:>6} labels seed {seed}: accuracy {run.accuracy:.4f} "
                    f"(selection {run.selection_accuracy:.4f}, {run.setting}, {run.seconds:.0f} s)")
            write_report(report)  # after every budget: an interrupted probe keeps what it measured
    shutil.rmtree(out / "runs", ignore_errors=True)
    write_report(report, plot=True)
    if card:
        add_to_card(model_path, report, recipe)
    return report


# ------------------------------------------------------------------------------------------------
# Checks and data


def task_recipe(task: str, model_dir: Path, overrides: Sequence[str]) -> Recipe:
    """A finetune recipe for ``task``: a recipe as named, or a default one around a labelled file."""
    from nlpssl.recipe import apply_overrides, load_recipe, recipe_from_dict

    base = [f"model={model_dir}", *overrides]
    path = Path(task)
    if task == "builtin" or task.startswith("hub:") or is_labelled_file(path):
        raw: dict[str, Any] = {"kind": "finetune", "task": {"source": task},
                               "training": {"per_device_train_batch_size": 32, "per_device_eval_batch_size": 128,
                                            "weight_decay": 0.01}}
        problems = apply_overrides(raw, base)
        return recipe_from_dict(raw, name=_slug(task), where=f"--task {task}", problems=problems)
    return load_recipe(task, base, kind="finetune")


def probe_splits(recipe: Recipe) -> tuple[Split, Split, TaskData, str]:
    """(pool of labelled training rows, scored split, the task data, what the scored split is).

    The scored split is the task's test file if it names one, else its validation file, else a
    seeded share of the training rows set aside once (the pool never contains it).
    """
    t = recipe.task
    named = bool(t.test_source or t.validation_source) or t.source == "builtin"
    task = dataclasses.replace(t, max_train_examples=None, validation_fraction=0.0,
                               test_fraction=0.0 if named else (t.test_fraction or HELD_OUT_FRACTION))
    data = load_task_data(task)
    name = "test" if "test" in data.splits else "validation"
    return data.splits["train"], data.splits[name], data, f"{name}: {data.sources[name]}"


def resolve_budgets(labels: Sequence[int | str], pool: Split, names: list[str], source: str) -> list[int]:
    """Label budgets as sorted row counts; each must fit the pool and leave rows to select on."""
    budgets = []
    for value in labels:
        if str(value).lower() == "all":
            budgets.append(len(pool))
            continue
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise NlpsslError(
                f"probe: --labels takes row counts or 'all' (got {value!r}). Write e.g. --labels 500 1000 all."
            ) from None
        if n > len(pool):
            raise NlpsslError(
                f"probe: --labels {n} is more than the {len(pool)} labelled training rows of {source}. "
                f"Use budgets up to {len(pool)}, or 'all'."
            )
        smallest = max(10, 2 * len(names))
        if n < smallest:
            raise NlpsslError(
                f"probe: --labels {n} is too few to train on and select with {len(names)} classes (got {n}). "
                f"Use {smallest} or more."
            )
        budgets.append(n)
    return sorted(set(budgets))


def _check_arms(arms: Sequence[str]) -> tuple[str, ...]:
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise NlpsslError(f"probe: unknown arm(s) {unknown or list(arms)}. Choose from {list(ARMS)}.")
    return tuple(a for a in ARMS if a in arms)


def _check_rates(rates: Sequence[float]) -> tuple[float, ...]:
    if not rates or any(not (0 < float(r) < 1) for r in rates):
        raise NlpsslError(
            f"probe: --learning-rates must be numbers in (0, 1) (got {list(rates)}). Write e.g. 1e-4 3e-4 1e-3."
        )
    return tuple(float(r) for r in rates)


def check_out_dir(out: Path) -> None:
    """The probe writes into a new or empty folder, or one a previous probe wrote (it holds probe.json)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise NlpsslError(
            f"probe: --out {str(out)!r} exists and holds files the probe did not write (no {MARKER}). "
            "Pass --out NEW_FOLDER, or move that folder away."
        )


def _slug(text: str) -> str:
    name = Path(text.removeprefix("hub:")).name
    for suffix in (*COMPRESSIONS, *LABELLED_EXTENSIONS, ".yaml", ".yml"):
        name = name.removesuffix(suffix)
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "task"


def digest(split: Split) -> str:
    """A short hash of a split's rows (texts, second texts, labels, in order)."""
    h = hashlib.sha256()
    for i in range(len(split)):
        h.update(split.texts[i].encode())
        h.update(b"\x1f" + (split.pairs[i].encode() if split.pairs else b""))
        h.update(b"\x1f" + split.labels[i].encode() + b"\x1e")
    return h.hexdigest()[:16]


def _digests(data: TaskData) -> dict[str, str]:
    return {name: digest(split) for name, split in data.splits.items()}


# ------------------------------------------------------------------------------------------------
# The arms


def epochs_for(n_train: int, batch_size: int) -> int:
    """Epochs that give about TARGET_STEPS steps, within [MIN_EPOCHS, MAX_EPOCHS]."""
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    return max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch)))


def fine_tune_arm(recipe: Recipe, model_dir: Path, tokenizer, data: TaskData, arm: str, n: int, seed: int,
                  learning_rates: Sequence[float], epochs: int | None, runs_dir: Path) -> ProbeRun:
    """Fine-tune once per learning rate; keep the one best on the carved selection rows."""
    from nlpssl.finetune import train_classifier

    batch = int(recipe.training.get("per_device_train_batch_size", 8))
    n_epochs = epochs or epochs_for(len(data.splits["train"]), batch)
    tried, best = [], None
    for lr in learning_rates:
        out = runs_dir / f"{arm}-{n}-seed{seed}-lr{lr:g}"
        shutil.rmtree(out, ignore_errors=True)  # a leftover of an interrupted probe (the probe's own folder)
        # Step-based settings of the task recipe give way to the probe's per-epoch schedule.
        kept = {k: v for k, v in recipe.training.items() if k not in ("max_steps", "eval_steps", "save_steps")}
        training = {**kept, "output_dir": str(out), "learning_rate": lr, "num_train_epochs": n_epochs,
                    "seed": seed, "eval_strategy": "epoch", "save_strategy": "epoch", "logging_strategy": "epoch",
                    "warmup_steps": 0.1, "lr_scheduler_type": "linear", "disable_tqdm": True,
                    # Batches of similar lengths: short sentences are not padded to the longest one.
                    "train_sampling_strategy": "group_by_length", "dataloader_pin_memory": False}
        task = dataclasses.replace(recipe.task, early_stopping_patience=PATIENCE)
        run_recipe = dataclasses.replace(recipe, init=arm, training=training, task=task)
        _, metrics = train_classifier(run_recipe, model_dir, tokenizer, data)
        shutil.rmtree(out, ignore_errors=True)  # checkpoints of this run: the figures are kept below
        row = {"learning_rate": lr, "epochs": metrics["epochs"], "steps": metrics["steps"],
               "selection_accuracy": metrics["eval_accuracy"], "accuracy": metrics["test_accuracy"],
               "macro_f1": metrics["test_macro_f1"]}
        tried.append(row)
        if best is None or row["selection_accuracy"] > best["selection_accuracy"]:
            best = row
    return ProbeRun(arm, n, seed, best["accuracy"], best["macro_f1"], best["selection_accuracy"],
                    {"learning_rate": best["learning_rate"], "epochs": n_epochs}, 0.0, _digests(data), tried)


def bag_of_words(data: TaskData, n: int, seed: int) -> ProbeRun:
    """TF-IDF word 1-2-grams + logistic regression; C picked on the carved selection rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    def texts(split: Split) -> list[str]:
        return split.texts if not split.pairs else [f"{a} || {b}" for a, b in zip(split.texts, split.pairs)]

    train, selection, test = (data.splits[k] for k in ("train", "validation", "test"))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
    x_train = vectorizer.fit_transform(texts(train))
    x_sel, x_test = vectorizer.transform(texts(selection)), vectorizer.transform(texts(test))
    tried, best, best_model = [], None, None
    for c in BOW_C:
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_train, train.labels)
        row = {"C": c, "selection_accuracy": float(accuracy_score(selection.labels, model.predict(x_sel)))}
        tried.append(row)
        if best is None or row["selection_accuracy"] > best["selection_accuracy"]:
            best, best_model = row, model
    predicted = best_model.predict(x_test)
    accuracy = float(accuracy_score(test.labels, predicted))
    macro_f1 = float(f1_score(test.labels, predicted, average="macro", labels=data.label_names, zero_division=0))
    return ProbeRun("bag-of-words", n, seed, accuracy, macro_f1, best["selection_accuracy"], {"C": best["C"]},
                    0.0, _digests(data), tried)


# ------------------------------------------------------------------------------------------------
# Outputs


def format_table(report: ProbeReport) -> str:
    """The accuracy table as Markdown: one row per budget, mean +- standard deviation over seeds."""
    arms = [a for a in ARMS if any(r.arm == a for r in report.runs)]
    lines = ["| labels | " + " | ".join(arms) + " |", "|---:|" + "---:|" * len(arms)]
    for n, row in report.summary().items():
        cells = [f"{row[a][0]:.3f} ± {row[a][1]:.3f}" if row[a][2] > 1 else f"{row[a][0]:.3f}"
                 if a in row else "" for a in arms]
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: ProbeReport, plot: bool = False) -> None:
    """probe.json and probe.md (and probe.png), each written whole or not at all."""
    from nlpssl.runs import write_text_atomic

    out = report.out_dir
    write_text_atomic(out / MARKER, json.dumps(report.to_dict(), indent=2))
    header = (f"Probe of `{report.model}` on `{report.task}`, accuracy on {report.scored_on} "
              f"(mean ± standard deviation over {report.seeds} seed(s)).\n\n")
    write_text_atomic(out / "probe.md", header + format_table(report) + "\n")
    if plot:
        plot_report(report, out / "probe.png")


def plot_report(report: ProbeReport, path: Path) -> None:
    """Accuracy against the number of labels (log scale), one line per arm with its spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = report.summary()
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in ARMS:
        points = [(n, *row[arm][:2]) for n, row in table.items() if arm in row]
        if points:
            xs, ys, errs = zip(*points)
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=arm)
    ax.set_xscale("log")
    ax.set_xticks(list(table), [f"{n:,}" for n in table])  # the budgets themselves, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("labelled training rows")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{_slug(report.task)}: {Path(report.model).parent.name or report.model}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def add_to_card(model_dir: Path, report: ProbeReport, recipe: Recipe) -> None:
    """The report in the export's card: ``model-index`` results (per label budget and arm) and a table."""
    from nlpssl.cards import add_classification_results

    metrics = [(f"accuracy, {n} labels, {arm}, mean of {k} seed(s)", mean)
               for n, row in report.summary().items() for arm, (mean, _, k) in row.items()]
    section = (f"Accuracy on {report.scored_on}; mean ± standard deviation over {report.seeds} "
               f"seed(s); `nlpssl probe` against the same architecture from scratch and bag-of-words, on the "
               f"same rows.\n\n{format_table(report)}")
    add_classification_results(model_dir, f"Downstream probe: {_slug(report.task)}",
                               {"name": _slug(report.task), "type": _slug(recipe.task.source)}, metrics, section)
