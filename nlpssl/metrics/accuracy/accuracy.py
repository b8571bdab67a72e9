"""Accuracy as an offline `evaluate` module: `evaluate.load("path/to/accuracy")`.

`evaluate.load("accuracy")` fetches its script from the Hub and fails on a machine with no
network; this file is loaded from disk instead and needs nothing but scikit-learn.
"""

import datasets
import evaluate

_DESCRIPTION = "Share of predictions equal to the reference label."
_KWARGS = """
Args:
    predictions: predicted label ids.
    references: true label ids.
Returns:
    accuracy: float in [0, 1].
Example:
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.666...}
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        from sklearn.metrics import accuracy_score

        return {"accuracy": float(accuracy_score(references, predictions))}
