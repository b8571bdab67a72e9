"""Per-class precision, recall, F1 and support, plus the confusion matrix, as an offline `evaluate` module.

Load with `evaluate.load("path/to/classification_report")`; needs no network.
"""

import datasets
import evaluate

_DESCRIPTION = "Per-class precision/recall/F1/support and the confusion matrix (rows: true, columns: predicted)."
_KWARGS = """
Args:
    predictions: predicted label ids.
    references: true label ids.
    labels: every class id, in report order (default: those in predictions or references).
    label_names: a name per entry of `labels` (default: the ids as strings).
Returns:
    per_class: {name: {"precision", "recall", "f1", "support"}}.
    confusion_matrix: list of rows, one per true class, counts per predicted class.
Example:
    >>> metric.compute(predictions=[0, 0], references=[0, 1], labels=[0, 1], label_names=["neg", "pos"])
    {'per_class': {'neg': {'precision': 0.5, 'recall': 1.0, ...}, ...}, 'confusion_matrix': [[1, 0], [1, 0]]}
"""


class ClassificationReport(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, labels=None, label_names=None):
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        if labels is None:
            labels = sorted(set(predictions) | set(references))
        names = [str(n) for n in (label_names or labels)]
        p, r, f, s = precision_recall_fscore_support(
            references, predictions, labels=labels, average=None, zero_division=0
        )
        per_class = {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(names)
        }
        matrix = confusion_matrix(references, predictions, labels=labels)
        return {"per_class": per_class, "confusion_matrix": matrix.tolist()}
