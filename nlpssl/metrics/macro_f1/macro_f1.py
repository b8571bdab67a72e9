"""Macro-averaged F1 as an offline `evaluate` module: `evaluate.load("path/to/macro_f1")`.

Averages over every class id in `labels` (not only those that occur), so a class the model never
predicts counts as F1 = 0 instead of silently leaving the average.
"""

import datasets
import evaluate

_DESCRIPTION = "Unweighted mean of per-class F1 scores (macro-F1)."
_KWARGS = """
Args:
    predictions: predicted label ids.
    references: true label ids.
    labels: every class id to average over (default: those in predictions or references).
Returns:
    macro_f1: float in [0, 1].
Example:
    >>> metric.compute(predictions=[0, 0, 0], references=[0, 1, 0], labels=[0, 1])
    {'macro_f1': 0.4}
"""


class MacroF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, labels=None):
        from sklearn.metrics import f1_score

        score = f1_score(references, predictions, labels=labels, average="macro", zero_division=0)
        return {"macro_f1": float(score)}
