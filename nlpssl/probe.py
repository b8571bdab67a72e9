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
      -> optionally (``self_train``), self-training: each arm's chosen model labels the next rows
         of the permutation (their labels are never read), the most confident of them join the
         labelled rows, and the arm is trained again on both with its chosen setting; with
         ``teachers`` K > 1 the labels are the averaged probabilities of K fine-tunes of the arm
         (the chosen model and K - 1 more training seeds, each with the same search), so the student
         learns what an ensemble knows and is still one model
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
import tempfile
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
# Self-training: of the unlabelled rows, the most confident share of those predicted as each class is
# kept as pseudo-labelled rows, in the class proportions of the labelled training rows.
SELF_TRAIN_KEEP = 0.5
# Training seed of self-training's teacher k > 0 at seed s (teacher 0 is the probe's own run, seed s);
# benchmarks/finetune_inits.py numbers its extra training seeds the same way.
TEACHER_SEED_STRIDE = 100
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
    # With self-training: the first model's figures and what it labelled (accuracy above is the retrained one's).
    self_train: dict[str, Any] | None = None


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

    @property
    def self_trained(self) -> bool:
        return any(r.self_train for r in self.runs)

    def summary(self, first: bool = False) -> dict[int, dict[str, tuple[float, float, int]]]:
        """budget -> arm -> (mean accuracy, standard deviation, number of seeds).

        ``first``: of the models before self-training (the same as the results where there was none).
        """
        table: dict[int, dict[str, tuple[float, float, int]]] = {}
        for n in self.label_budgets:
            for arm in ARMS:
                scores = [r.self_train["accuracy"] if first and r.self_train else r.accuracy
                          for r in self.runs if r.labels == n and r.arm == arm]
                if scores:
                    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
                    table.setdefault(n, {})[arm] = (statistics.fmean(scores), spread, len(scores))
        return table

    def _summary_dict(self, first: bool = False) -> dict[str, dict[str, dict[str, float]]]:
        return {str(n): {arm: {"mean": m, "std": s, "seeds": k} for arm, (m, s, k) in row.items()}
                for n, row in self.summary(first).items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "task": self.task, "scored_on": self.scored_on,
            "label_budgets": self.label_budgets, "seeds": self.seeds, "fine_tuning": self.fine_tuning,
            "summary": self._summary_dict(),
            **({"summary_before_self_training": self._summary_dict(first=True)} if self.self_trained else {}),
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
    self_train: int = 0,
    teachers: int = 1,
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
        self_train: up to this many unlabelled rows per budget and seed for self-training (0: off):
            the pool rows after the budget's in the seed's permutation, their labels never read.
            Every arm (each with its own chosen model) labels the same rows, keeps the most
            confident :data:`SELF_TRAIN_KEEP` of them and is trained again on them and its labelled rows.
        teachers: with ``self_train``, how many fine-tunes of each neural arm (training seeds) label
            the rows together, by their averaged class probabilities (1: the chosen model alone).
            Bag-of-words has one: its fit does not depend on a seed.

    Raises:
        NlpsslError: a bad model folder, task, label budget or output folder, before any training.
    """
    from nlpssl.finetune import check_model_folder, check_recipe, load_classifier_tokenizer
    from nlpssl.runs import log, owner_tag, quiet_transformers

    model_path = check_model_folder(str(model_dir))
    recipe = task_recipe(task, model_path, overrides)
    check_recipe(recipe)
    arms = _check_arms(arms)
    learning_rates = _check_rates(learning_rates)
    if seeds < 1:
        raise NlpsslError(f"probe: --seeds must be 1 or more (got {seeds}). Use e.g. --seeds 3.")
    if epochs is not None and epochs < 1:
        raise NlpsslError(f"probe: --epochs must be 1 or more (got {epochs}). Leave it out for the default.")
    if self_train < 0:
        raise NlpsslError(f"probe: --self-train must be 0 (off) or a number of unlabelled rows (got {self_train}). "
                          "Use e.g. --self-train 20000.")
    if teachers < 1 or (teachers > 1 and not self_train):
        raise NlpsslError(f"probe: --teachers must be 1 or more and needs --self-train (got --teachers {teachers}, "
                          f"--self-train {self_train}). Use e.g. --self-train 20000 --teachers 5.")
    if card:
        from nlpssl.cards import check_card

        check_card(model_path)
    out = Path(out_dir) if out_dir is not None else model_path.parent / f"probe-{_slug(recipe.task.source)}"
    check_out_dir(out)
    pool, scored, data, scored_on = probe_splits(recipe)
    carved = not (recipe.task.test_source or recipe.task.validation_source or recipe.task.source == "builtin")
    budgets = resolve_budgets(labels, pool, data.label_names, recipe.task.source, len(scored) if carved else 0)
    tokenizer = load_classifier_tokenizer(model_path) if set(arms) & set(NEURAL_ARMS) else None
    out.mkdir(parents=True, exist_ok=True)
    fine_tuning = {"learning_rates": list(learning_rates), "bow_C": list(BOW_C),
                   "selection_fraction": SELECTION_FRACTION, "epochs": epochs or "auto", "patience": PATIENCE,
                   "dropout": recipe.task.dropout, "max_length": recipe.task.max_length,
                   "batch_size": int(recipe.training.get("per_device_train_batch_size", 8)),
                   "self_train": ({"unlabelled": self_train, "keep": SELF_TRAIN_KEEP, "teachers": teachers}
                                  if self_train else None)}
    report = ProbeReport(str(model_path), task, scored_on, budgets, seeds, [], out, fine_tuning)
    # Fine-tuning checkpoints go to a folder of the probe's own making, never a fixed name: --out may be a
    # folder of the user's (e.g. a project folder whose runs/ holds their pretraining runs).
    sweep_runs(out)
    runs_dir = Path(tempfile.mkdtemp(prefix=f".probe-runs-{owner_tag()}-", dir=out))
    log(f"probe: {len(pool)} labelled rows in the pool, scoring on {len(scored)} rows ({scored_on}), "
        f"budgets {budgets}, {seeds} seed(s), arms {list(arms)}")
    # Time left, by neural runs: each aims at about TARGET_STEPS steps whatever its budget; bag-of-words is seconds.
    neural_total, neural_done, neural_s = seeds * len(budgets) * len(set(arms) & set(NEURAL_ARMS)), 0, 0.0
    try:
        with quiet_transformers():  # tens of fine-tunes: their load reports and weight-writing bars add nothing
            for seed in range(seeds):
                order = permutation(pool, recipe, seed)
                for n in budgets:
                    splits = seed_splits(pool, order, n, seed, scored, data, recipe, scored_on)
                    unlabelled = without_labels(pool.subset(order[n:n + self_train])) if self_train else None
                    if unlabelled is not None and not len(unlabelled):
                        log(f"probe: --self-train: no pool rows are left beyond the {n} labelled ones; "
                            f"no self-training at {n}")
                        unlabelled = None
                    for arm in arms:
                        started = time.perf_counter()
                        if arm == "bag-of-words":
                            run = bag_of_words(splits, n, seed, unlabelled)
                        else:
                            run = fine_tune_arm(recipe, model_path, tokenizer, splits, arm, n, seed, learning_rates,
                                                epochs, runs_dir, unlabelled, teachers)
                        run.seconds = round(time.perf_counter() - started, 1)
                        report.runs.append(run)
                        first = (f", first model {run.self_train['accuracy']:.4f}, {run.self_train['pseudo_labelled']} "
                                 f"pseudo-labelled rows" if run.self_train else "")
                        if arm in NEURAL_ARMS:
                            neural_done, neural_s = neural_done + 1, neural_s + run.seconds
                        left = neural_s / neural_done * (neural_total - neural_done) if neural_done else 0.0
                        log(f"probe: {arm:>12} {n:>6} labels seed {seed}: accuracy {run.accuracy:.4f} "
                            f"(selection {run.selection_accuracy:.4f}, {run.setting}{first}, {run.seconds:.0f} s)"
                            + (f"; about {_minutes(left)} left" if left >= 1 else ""))
                    write_report(report)  # after every budget: an interrupted probe keeps what it measured
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    write_report(report, plot=True)
    if card:
        add_to_card(model_path, report, recipe)
    return report


# ------------------------------------------------------------------------------------------------
# Checks and data


def task_recipe(task: str, model_dir: Path, overrides: Sequence[str]) -> Recipe:
    """A finetune recipe for ``task``: a recipe as named, or a default one around a labelled file."""
    from nlpssl.recipe import RecipeError, apply_overrides, blame_overrides, load_recipe, recipe_from_dict

    base = [f"model={model_dir}", *overrides]
    path = Path(task)
    if task == "builtin" or task.startswith("hub:") or is_labelled_file(path):
        raw: dict[str, Any] = {"kind": "finetune", "task": {"source": task},
                               "training": {"per_device_train_batch_size": 32, "per_device_eval_batch_size": 128,
                                            "weight_decay": 0.01}}
        in_file, where = set(raw), f"--task {task}"
        problems = apply_overrides(raw, base)
        try:
            return recipe_from_dict(raw, name=_slug(task), where=where, problems=problems)
        except RecipeError as err:  # a problem with a --set value names it, not the task file
            raise RecipeError(blame_overrides(err.problems, where, overrides, in_file)) from None
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


def permutation(pool: Split, recipe: Recipe, seed: int) -> list[int]:
    """The seed's order of the pool: budget n labels its first n rows (so budgets are nested)."""
    order = list(range(len(pool)))
    random.Random(1000 * recipe.task.seed + seed).shuffle(order)
    return order


def seed_splits(pool: Split, order: list[int], n: int, seed: int, scored: Split, data: TaskData,
                recipe: Recipe, scored_on: str) -> TaskData:
    """The splits every arm gets at budget ``n`` and ``seed``: the first n rows of ``order``, less a
    stratified :data:`SELECTION_FRACTION` carved off for selection, and the scored split."""
    train, selection = carve(pool.subset(order[:n]), SELECTION_FRACTION, seed)
    return TaskData({"train": train, "validation": selection, "test": scored}, data.label_names,
                    {"train": f"{n} of {recipe.task.source}", "validation": f"selection rows of {n}",
                     "test": scored_on})


def resolve_budgets(labels: Sequence[int | str], pool: Split, names: list[str], source: str,
                    scored: int = 0) -> list[int]:
    """Label budgets as sorted row counts; each must fit the pool and leave rows to select on.

    ``scored``: rows of the source set aside for scoring (0 where a test or validation file scores).
    """
    budgets = []
    smallest = max(10, 2 * len(names))
    rows = f"; its {len(pool) + scored} rows less the {scored} set aside for scoring" if scored else ""
    for value in labels:
        if str(value).lower() == "all":
            if len(pool) < smallest:  # as a number it would be refused below
                raise NlpsslError(
                    f"probe: --labels all is {len(pool)} labelled training rows of {source}, too few to train on "
                    f"and select with {len(names)} classes (got {len(pool)}{rows}). Use a task with {smallest} or "
                    "more training rows."
                )
            budgets.append(len(pool))
            continue
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise NlpsslError(
                f"probe: --labels takes row counts or 'all' (got {value!r}). Write e.g. --labels 500 1000 all."
            ) from None
        if n > len(pool):
            half = max(smallest, len(pool) // 2)
            example = f"--labels {half} {len(pool)}" if half < len(pool) else f"--labels {len(pool)}"
            raise NlpsslError(
                f"probe: --labels {n} is more than the {len(pool)} labelled training rows of {source} (got {n}{rows}). "
                f"Use budgets up to {len(pool)}, e.g. {example}, or --labels all (--labels defaults to 500 1000 all)."
            )
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


def sweep_runs(out: Path) -> None:
    """Remove the fine-tuning checkpoints a killed probe left in ``out`` (``.probe-runs-HOST-PID-*`` of a gone
    process of this machine); each held up to two model checkpoints, never cleaned otherwise."""
    from nlpssl.runs import left_by_gone_process

    for leftover in out.glob(".probe-runs-*-*"):
        tag = leftover.name.removeprefix(".probe-runs-").rpartition("-")[0]  # mkdtemp's suffix has no "-"
        if leftover.is_dir() and left_by_gone_process(tag):
            shutil.rmtree(leftover, ignore_errors=True)


def _minutes(seconds: float) -> str:
    """'40 s', '12 min', '2 h 05 min'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


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


def _digests(data: TaskData, unlabelled: Split | None = None) -> dict[str, str]:
    found = {name: digest(split) for name, split in data.splits.items()}
    return found if unlabelled is None else {**found, "unlabelled": digest(unlabelled)}


# ------------------------------------------------------------------------------------------------
# Self-training


def without_labels(split: Split) -> Split:
    """The rows' texts with every label blanked, so nothing downstream can read them."""
    return Split(list(split.texts), [""] * len(split), list(split.pairs) if split.pairs else None)


def pseudo_labelled(unlabelled: Split, probs, train: Split, label_names: list[str],
                    keep: float = SELF_TRAIN_KEEP) -> Split:
    """The rows a model is surest of, labelled as it predicts, in the labelled rows' class proportions.

    Of ``keep`` x len(unlabelled) rows, class c gets its share of the labelled training rows; those are
    the rows predicted as c with the highest probability (fewer where fewer were predicted as c).

    >>> rows = Split(["a", "b", "c", "d"], ["", "", "", ""])
    >>> pseudo_labelled(rows, [[.9, .1], [.6, .4], [.2, .8], [.45, .55]], Split(["x", "y"], ["neg", "pos"]),
    ...                 ["neg", "pos"]).labels
    ['neg', 'pos']
    """
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    predicted, confidence = probs.argmax(1), probs.max(1)
    total = keep * len(unlabelled)
    picked: list[int] = []
    for c, name in enumerate(label_names):
        share = train.labels.count(name) / max(1, len(train))
        rows = np.flatnonzero(predicted == c)
        rows = rows[np.argsort(-confidence[rows], kind="stable")][: int(total * share)]
        picked.extend(int(i) for i in rows)
    picked.sort()
    chosen = unlabelled.subset(picked)
    return Split(chosen.texts, [label_names[int(predicted[i])] for i in picked], chosen.pairs)


def with_pseudo_labels(data: TaskData, pseudo: Split) -> TaskData:
    """The same splits, the training rows followed by the pseudo-labelled ones."""
    train = data.splits["train"]
    pairs = None
    if train.pairs or pseudo.pairs:
        pairs = (train.pairs or [""] * len(train)) + (pseudo.pairs or [""] * len(pseudo))
    joined = Split(train.texts + pseudo.texts, train.labels + pseudo.labels, pairs)
    return TaskData({**data.splits, "train": joined}, data.label_names,
                    {**data.sources, "train": f"{data.sources.get('train', 'train')} + {len(pseudo)} pseudo-labelled"})


def predict_proba(model, tokenizer, split: Split, max_length: int, batch_size: int = 128):
    """Class probabilities of a fine-tuned classifier for the rows of ``split``, in their order (labels unused).

    Not ``Trainer.predict``: with ``group_by_length`` its evaluation sampler reorders the rows by length,
    which keeps accuracy right (labels travel along) but loses which prediction is whose.
    """
    import numpy as np
    import torch
    from transformers import DataCollatorWithPadding

    from nlpssl.finetune import encode_texts

    encoded = encode_texts(split, tokenizer, max_length)  # as the model was trained on
    collate = DataCollatorWithPadding(tokenizer)
    was_training, out = model.training, []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            rows = [{k: v[i] for k, v in encoded.items()} for i in range(start, min(start + batch_size, len(split)))]
            batch = {k: v.to(model.device) for k, v in collate(rows).items()}
            out.append(torch.softmax(model(**batch).logits.float(), dim=-1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, model.config.num_labels))


# ------------------------------------------------------------------------------------------------
# The arms


def epochs_for(n_train: int, batch_size: int) -> int:
    """Epochs that give about TARGET_STEPS steps, within [MIN_EPOCHS, MAX_EPOCHS]."""
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    return max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch)))


def fine_tune_arm(recipe: Recipe, model_dir: Path, tokenizer, data: TaskData, arm: str, n: int, seed: int,
                  learning_rates: Sequence[float], epochs: int | None, runs_dir: Path,
                  unlabelled: Split | None = None, teachers: int = 1) -> ProbeRun:
    """Fine-tune once per learning rate; keep the one best on the carved selection rows.

    With ``unlabelled`` rows, that model labels them (with ``teachers`` K > 1, it and K - 1 more
    fine-tunes from other training seeds, each with the same search, by their averaged probabilities),
    and the arm is fine-tuned again from its start (pretrained or random) at the chosen rate on the
    labelled and the pseudo-labelled rows.
    """
    batch = int(recipe.training.get("per_device_train_batch_size", 8))
    n_epochs = epochs or epochs_for(len(data.splits["train"]), batch)
    best, teacher, tried = search_learning_rate(recipe, model_dir, tokenizer, data, arm, learning_rates, n_epochs,
                                                seed, runs_dir / f"{arm}-{n}-seed{seed}")
    setting = {"learning_rate": best["learning_rate"], "epochs": n_epochs}
    if unlabelled is None:
        return ProbeRun(arm, n, seed, best["accuracy"], best["macro_f1"], best["selection_accuracy"], setting, 0.0,
                        _digests(data), tried)
    import numpy as np

    probs = [predict_proba(teacher.model, tokenizer, unlabelled, recipe.task.max_length)]
    del teacher
    for k in range(1, teachers):
        k_seed = TEACHER_SEED_STRIDE * (k + 1) + seed
        _, other, _ = search_learning_rate(recipe, model_dir, tokenizer, data, arm, learning_rates, n_epochs, k_seed,
                                           runs_dir / f"{arm}-{n}-seed{seed}-teacher{k}")
        probs.append(predict_proba(other.model, tokenizer, unlabelled, recipe.task.max_length))
        del other
    pseudo, student_epochs, row = train_student(recipe, model_dir, tokenizer, data, arm, unlabelled,
                                                np.mean(probs, axis=0), best["learning_rate"], epochs, seed,
                                                runs_dir / f"{arm}-{n}-seed{seed}-self-trained")
    return ProbeRun(arm, n, seed, row["accuracy"], row["macro_f1"], row["selection_accuracy"],
                    {**setting, "self_train_epochs": student_epochs}, 0.0, _digests(data, unlabelled), tried,
                    _first_model(best, unlabelled, pseudo, teachers))


def train_student(recipe: Recipe, model_dir: Path, tokenizer, data: TaskData, arm: str, unlabelled: Split,
                  probs, lr: float, epochs: int | None, seed: int, out: Path) -> tuple[Split, int, dict[str, Any]]:
    """Self-training's last run: the rows ``probs`` (a teacher's class probabilities for ``unlabelled``) are
    surest of join the labelled ones, and the arm is fine-tuned from its start at ``lr`` on both.

    Returns (the pseudo-labelled rows, the epochs run, the run's figures).
    """
    batch = int(recipe.training.get("per_device_train_batch_size", 8))
    pseudo = pseudo_labelled(unlabelled, probs, data.splits["train"], data.label_names)
    student_data = with_pseudo_labels(data, pseudo)
    n_epochs = epochs or epochs_for(len(student_data.splits["train"]), batch)
    _, row = _fine_tune(recipe, model_dir, tokenizer, student_data, arm, lr, n_epochs, seed, out)
    return pseudo, n_epochs, row


def search_learning_rate(recipe: Recipe, model_dir: Path, tokenizer, data: TaskData, arm: str,
                         learning_rates: Sequence[float], n_epochs: int, seed: int, runs_prefix: Path):
    """One fine-tuning run per learning rate (training seed ``seed``); the first best on the selection rows wins.

    Returns (its figures, its trainer holding the chosen weights, the figures of every rate).
    """
    tried, best, chosen = [], None, None
    for lr in learning_rates:
        trainer, row = _fine_tune(recipe, model_dir, tokenizer, data, arm, lr, n_epochs, seed,
                                  Path(f"{runs_prefix}-lr{lr:g}"))
        tried.append(row)
        if best is None or row["selection_accuracy"] > best["selection_accuracy"]:
            best, chosen = row, trainer
    return best, chosen, tried


def _fine_tune(recipe: Recipe, model_dir: Path, tokenizer, data: TaskData, arm: str, lr: float, n_epochs: int,
               seed: int, out: Path):
    """One fine-tuning run at one learning rate; returns (its trainer, holding the best epoch, its figures)."""
    from nlpssl.finetune import train_classifier

    shutil.rmtree(out, ignore_errors=True)  # a leftover of an interrupted probe (the probe's own folder)
    # Step-based settings of the task recipe give way to the probe's per-epoch schedule.
    kept = {k: v for k, v in recipe.training.items() if k not in ("max_steps", "eval_steps", "save_steps")}
    training = {**kept, "output_dir": str(out), "learning_rate": lr, "num_train_epochs": n_epochs,
                "seed": seed, "eval_strategy": "epoch", "save_strategy": "epoch", "logging_strategy": "epoch",
                "warmup_steps": 0.1, "lr_scheduler_type": "linear", "disable_tqdm": True,
                # Batches of similar lengths: short sentences are not padded to the longest one.
                "train_sampling_strategy": "group_by_length"}
    task = dataclasses.replace(recipe.task, early_stopping_patience=PATIENCE)
    run_recipe = dataclasses.replace(recipe, init=arm, training=training, task=task)
    trainer, metrics = train_classifier(run_recipe, model_dir, tokenizer, data, quiet=True)
    shutil.rmtree(out, ignore_errors=True)  # checkpoints of this run: the best weights stay in the trainer
    return trainer, {"learning_rate": lr, "epochs": metrics["epochs"], "steps": metrics["steps"],
                     "selection_accuracy": metrics["eval_accuracy"], "accuracy": metrics["test_accuracy"],
                     "macro_f1": metrics["test_macro_f1"]}


def _first_model(best: dict[str, Any], unlabelled: Split, pseudo: Split, teachers: int = 1) -> dict[str, Any]:
    """What self-training started from and what it labelled, for probe.json."""
    return {"accuracy": best["accuracy"], "macro_f1": best["macro_f1"],
            "selection_accuracy": best["selection_accuracy"], "teachers": teachers, "unlabelled": len(unlabelled),
            "pseudo_labelled": len(pseudo),
            "pseudo_labels": {name: pseudo.labels.count(name) for name in sorted(set(pseudo.labels))}}


def bag_of_words(data: TaskData, n: int, seed: int, unlabelled: Split | None = None) -> ProbeRun:
    """TF-IDF word 1-2-grams + logistic regression; C picked on the carved selection rows.

    With ``unlabelled`` rows, the chosen model labels them and is fitted again, at its C, on the
    labelled and the pseudo-labelled rows, as the neural arms are.
    """
    train, selection, test = (data.splits[k] for k in ("train", "validation", "test"))
    tried, best, best_model = [], None, None
    for c in BOW_C:
        model = _fit_bag_of_words(train, c, seed)
        row = {"C": c, "selection_accuracy": _bow_scores(model, selection, data.label_names)["accuracy"]}
        tried.append(row)
        if best is None or row["selection_accuracy"] > best["selection_accuracy"]:
            best, best_model = row, model
    first = {**best, **_bow_scores(best_model, test, data.label_names)}
    if unlabelled is None:
        return ProbeRun("bag-of-words", n, seed, first["accuracy"], first["macro_f1"], best["selection_accuracy"],
                        {"C": best["C"]}, 0.0, _digests(data), tried)
    import numpy as np

    found = best_model.predict_proba(_joined(unlabelled))  # columns in the model's (sorted) class order
    probs = np.zeros((len(unlabelled), len(data.label_names)))
    for column, name in enumerate(best_model.classes_):
        probs[:, data.label_names.index(name)] = found[:, column]
    pseudo = pseudo_labelled(unlabelled, probs, train, data.label_names)
    student_data = with_pseudo_labels(data, pseudo)
    student = _fit_bag_of_words(student_data.splits["train"], best["C"], seed)
    scores = _bow_scores(student, test, data.label_names)
    selection_accuracy = _bow_scores(student, selection, data.label_names)["accuracy"]
    return ProbeRun("bag-of-words", n, seed, scores["accuracy"], scores["macro_f1"], selection_accuracy,
                    {"C": best["C"]}, 0.0, _digests(data, unlabelled), tried, _first_model(first, unlabelled, pseudo))


def _joined(split: Split) -> list[str]:
    return split.texts if not split.pairs else [f"{a} || {b}" for a, b in zip(split.texts, split.pairs)]


def _fit_bag_of_words(train: Split, c: float, seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True),
                          LogisticRegression(C=c, max_iter=2000, random_state=seed))
    return model.fit(_joined(train), train.labels)


def _bow_scores(model, split: Split, label_names: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 of a fitted bag-of-words model on one split."""
    from sklearn.metrics import accuracy_score, f1_score

    predicted = model.predict(_joined(split))
    return {"accuracy": float(accuracy_score(split.labels, predicted)),
            "macro_f1": float(f1_score(split.labels, predicted, average="macro", labels=label_names,
                                       zero_division=0))}


# ------------------------------------------------------------------------------------------------
# Outputs


def format_table(report: ProbeReport, first: bool = False) -> str:
    """The accuracy table as Markdown: one row per budget, mean +- standard deviation over seeds.

    ``first``: the models before self-training (the probe's results where it did none).
    """
    arms = [a for a in ARMS if any(r.arm == a for r in report.runs)]
    lines = ["| labels | " + " | ".join(arms) + " |", "|---:|" + "---:|" * len(arms)]
    for n, row in report.summary(first).items():
        cells = [f"{row[a][0]:.3f} ± {row[a][1]:.3f}" if row[a][2] > 1 else f"{row[a][0]:.3f}"
                 if a in row else "" for a in arms]
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(report: ProbeReport) -> str:
    """The table, or with self-training the results after it and the first models' before it."""
    if not report.self_trained:
        return format_table(report)
    st = report.fine_tuning["self_train"]
    teachers = st["teachers"]
    by = f", labelled by {teachers} fine-tunes of each neural arm" if teachers > 1 else ""
    return (f"After self-training (up to {st['unlabelled']:,} unlabelled rows per draw{by}):\n\n"
            f"{format_table(report)}\n\n"
            f"Before self-training (each arm's first model):\n\n{format_table(report, first=True)}")


def write_report(report: ProbeReport, plot: bool = False) -> None:
    """probe.json and probe.md (and probe.png), each written whole or not at all."""
    from nlpssl.runs import write_text_atomic

    out = report.out_dir
    write_text_atomic(out / MARKER, json.dumps(report.to_dict(), indent=2))
    header = (f"Probe of `{report.model}` on `{report.task}`, accuracy on {report.scored_on} "
              f"(mean ± standard deviation over {report.seeds} seed(s)).\n\n")
    write_text_atomic(out / "probe.md", header + tables(report) + "\n")
    if plot:
        plot_report(report, out / "probe.png")


def plot_report(report: ProbeReport, path: Path) -> None:
    """Accuracy against the number of labels (log scale), one line per arm with its spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = report.summary()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, arm in enumerate(ARMS):
        points = [(n, *row[arm][:2]) for n, row in table.items() if arm in row]
        if points:
            xs, ys, errs = zip(*points)
            label = f"{arm}, self-trained" if report.self_trained else arm
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label, color=f"C{i}")
        if report.self_trained:  # the first models, dashed
            firsts = [(n, row[arm][0]) for n, row in report.summary(first=True).items() if arm in row]
            if firsts:
                ax.plot(*zip(*firsts), linestyle="--", marker=".", color=f"C{i}", alpha=0.6, label=f"{arm}, first")
    ax.set_xscale("log")
    ax.set_xticks(list(table), [f"{n:,}" for n in table])  # the budgets themselves, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("labelled training rows")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{_slug(report.task)}: {Path(report.model).parent.name or report.model}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from nlpssl.runs import owner_tag

    tmp = path.with_name(f".{path.stem}.tmp-{owner_tag()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def add_to_card(model_dir: Path, report: ProbeReport, recipe: Recipe) -> None:
    """The report in the export's card: ``model-index`` results (per label budget and arm) and a table."""
    from nlpssl.cards import add_classification_results

    how = ""
    if report.self_trained:
        teachers = report.fine_tuning["self_train"]["teachers"]
        how = f", self-trained from {teachers} teachers" if teachers > 1 else ", self-trained"
    metrics = [(f"accuracy, {n} labels, {arm}{how}, mean of {k} seed(s)", mean)
               for n, row in report.summary().items() for arm, (mean, _, k) in row.items()]
    section = (f"Accuracy on {report.scored_on}; mean ± standard deviation over {report.seeds} "
               f"seed(s); `nlpssl probe` against the same architecture from scratch and bag-of-words, on the "
               f"same rows.\n\n{tables(report)}")
    add_classification_results(model_dir, f"Downstream probe: {_slug(report.task)}",
                               {"name": _slug(report.task), "type": _slug(recipe.task.source)}, metrics, section)
