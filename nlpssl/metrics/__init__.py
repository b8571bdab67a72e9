"""Classification metrics through `evaluate`, offline: accuracy, macro-F1 and a per-class report.

`evaluate.load("accuracy")` downloads the metric script from the Hub, which fails with no network
(`HF_HUB_OFFLINE=1`). The scripts here ship inside the package (`metrics/<name>/<name>.py`) and load
with `evaluate.load(<folder>)`, which reads a local folder without any network access.

    >>> scores = classification_scores([0, 1, 1], [0, 1, 0], ["neg", "pos"])
    >>> scores.accuracy, scores.macro_f1
    (0.666..., 0.666...)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("accuracy", "macro_f1", "classification_report")


@lru_cache(maxsize=None)
def load_metric(name: str):
    """The local `evaluate` module ``name`` (one of `METRIC_NAMES`), kept in memory (no cache files)."""
    import evaluate

    if name not in METRIC_NAMES:
        raise ValueError(f"load_metric: unknown metric (got {name!r}). Use one of {METRIC_NAMES}.")
    return evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)


@dataclass(frozen=True)
class ClassificationScores:
    """Headline scores and the per-class report of one split."""

    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]  # name -> precision, recall, f1, support
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class

    def as_dict(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_accuracy": self.accuracy,
            f"{prefix}_macro_f1": self.macro_f1,
            f"{prefix}_per_class": self.per_class,
            f"{prefix}_confusion_matrix": self.confusion_matrix,
        }


def headline_scores(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 over all ``num_labels`` classes (what the Trainer logs each evaluation)."""
    labels = list(range(num_labels))
    scores = load_metric("accuracy").compute(predictions=predictions, references=references)
    scores.update(
        load_metric("macro_f1").compute(predictions=predictions, references=references, labels=labels)
    )
    return scores


def classification_scores(
    predictions: Sequence[int], references: Sequence[int], label_names: Sequence[str]
) -> ClassificationScores:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    head = headline_scores(predictions, references, len(label_names))
    report = load_metric("classification_report").compute(
        predictions=predictions, references=references,
        labels=list(range(len(label_names))), label_names=list(label_names),
    )
    return ClassificationScores(
        accuracy=head["accuracy"], macro_f1=head["macro_f1"],
        per_class=report["per_class"], confusion_matrix=report["confusion_matrix"],
    )


def plot_confusion_matrix(matrix: list[list[int]], label_names: Sequence[str], path: Path, title: str) -> None:
    """Save the confusion matrix as a PNG: rows true labels, columns predicted, counts in cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix)
    n = len(label_names)
    size = 2.5 + 0.45 * n
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(n), labels=label_names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    # Dark cells get white numbers so every count stays readable.
    threshold = counts.max() / 2 if counts.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                    color="white" if counts[i, j] > threshold else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
