"""Sentence embeddings from any encoder export, and the figures that score them without fine-tuning.

An export folder (config.json + model.safetensors + tokenizer files, e.g. a BERT / ModernBERT /
ELECTRA masked-LM export) loads its encoder body with ``AutoModel.from_pretrained``; a sentence vector
is the mean of the last hidden states over the non-pad tokens, or the first token's. The pooling lives
in the folder as sentence-transformers files (``modules.json``, ``1_Pooling/config.json``), so
``sentence_transformers.SentenceTransformer(folder)`` gives the same vectors without nlpssl.

    enc = Encoder("runs/simcse/export")              # pooling read from the folder ("mean" if none)
    x = enc.encode(["a cat sat", "a dog ran"])       # float32 [2, H], rows L2-normalised
    nearest(x[:1], x, k=2)                           # [[(0, 1.0), (1, 0.83)]]

Scores: kNN and linear-probe accuracy on labelled sets; alignment and uniformity (Wang & Isola
2020, "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
Hypersphere"), lower is better for both. The metric functions take dense arrays or scipy sparse
matrices (TF-IDF rows), and normalise rows themselves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nlpssl.errors import NlpsslError

if TYPE_CHECKING:
    import numpy as np
    import torch

Pooling = Literal["mean", "cls"]
POOLINGS: tuple[str, ...] = ("mean", "cls")
POOLING_CONFIG = Path("1_Pooling") / "config.json"
# The flags of the sentence-transformers Pooling module (v2 .. v5); nlpssl sets exactly one of the first two.
_ST_FLAGS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens"}
_ST_OTHER_FLAGS = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def _check_pooling(pooling: str, where: str) -> Pooling:
    if pooling not in POOLINGS:
        raise NlpsslError(f"{where}: unknown pooling (got {pooling!r}). Use one of {list(POOLINGS)}.")
    return pooling


def write_pooling_files(model_dir: str | Path, pooling: Pooling, hidden_size: int, max_seq_length: int) -> None:
    """Write the sentence-transformers files so ``SentenceTransformer(model_dir)`` pools with ``pooling``.

    Two modules: the folder itself as a Transformer (path "") and a Pooling module in ``1_Pooling/``;
    no Normalize module, so sentence-transformers returns raw pooled vectors, as ``encode(normalize=False)``.
    """
    _check_pooling(pooling, "write_pooling_files")
    model_dir = Path(model_dir)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": str(POOLING_CONFIG.parent), "type": "sentence_transformers.models.Pooling"},
    ]
    config = {"word_embedding_dimension": int(hidden_size)}
    config |= {flag: mode == pooling for mode, flag in _ST_FLAGS.items()}
    config |= {flag: False for flag in _ST_OTHER_FLAGS} | {"include_prompt": True}
    (model_dir / POOLING_CONFIG.parent).mkdir(parents=True, exist_ok=True)
    (model_dir / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (model_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": int(max_seq_length), "do_lower_case": False}, indent=2) + "\n")
    (model_dir / POOLING_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def read_pooling(model_dir: str | Path) -> Pooling:
    """The pooling ``1_Pooling/config.json`` in ``model_dir`` sets: "mean" or "cls"; "mean" without the file."""
    path = Path(model_dir) / POOLING_CONFIG
    if not path.is_file():
        return "mean"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise NlpsslError(f"{path}: not a readable JSON file ({err}). Rewrite it with "
                          f"nlpssl.embeddings.write_pooling_files or delete it for mean pooling.") from err
    on = sorted(k for k, v in config.items() if k.startswith("pooling_mode") and v is True)
    modes = [mode for mode, flag in _ST_FLAGS.items() if on == [flag]]
    if not modes:
        raise NlpsslError(f"{path}: pooling mode nlpssl does not support (got {on or 'no pooling_mode_* set'}). "
                          f"Set exactly one of {list(_ST_FLAGS.values())} to true, or pass pooling= explicitly.")
    return modes[0]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Sentence vectors [B, H] from hidden states [B, L, H]: mean over tokens the mask keeps, or the first kept token.

    With right padding the first kept token is token 0 (``[CLS]``); taking the first kept one keeps
    "cls" right for a left-padding tokenizer too.
    """
    import torch

    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # [B, L, 1]
    match _check_pooling(pooling, "pool"):
        case "mean":
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        case "cls":
            first = attention_mask.to(torch.long).argmax(dim=1)  # [B]: index of the first 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    raise AssertionError("unreachable")


class Encoder:
    """Encode texts with an export folder's encoder body: eval mode, no grad, fp32, batched by length."""

    def __init__(self, model_dir: str | Path, pooling: Pooling | None = None, max_length: int = 128,
                 batch_size: int = 64) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir)  # an export folder (callers resolve a run folder: nlpssl.runs.export_folder)
        if not (path / "config.json").is_file():
            what = "does not exist" if not path.exists() else "has no config.json"
            raise NlpsslError(f"Encoder: {str(model_dir)!r} {what}, so it is not a model folder. Pass an export "
                              f"folder (config.json + model.safetensors + tokenizer files), e.g. runs/<name>/export.")
        for name, value in (("max_length", max_length), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise NlpsslError(f"Encoder: {name} must be a positive integer (got {value!r}). Use e.g. 128 / 64.")
        self.model_dir = path
        self.pooling = _check_pooling(pooling, "Encoder") if pooling is not None else read_pooling(path)
        self.max_length, self.batch_size = max_length, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # Causal exports pad on the left (generate); GPT-2's learned positions would then move each text
        # by the padding its batch needs, and its vector with them. Pooling reads the mask either way.
        self.tokenizer.padding_side = "right"
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
        if getattr(self.model.config, "is_encoder_decoder", False):
            # T5: the whole model wants decoder inputs too (a bare ValueError); the encoder reads the text.
            self.model = self.model.get_encoder()
        self.hidden_size = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], normalize: bool = True, progress: bool = True) -> np.ndarray:
        """Vectors float32 [N, H] for ``texts`` in their order; rows L2-normalised unless ``normalize=False``.

        Texts are sorted by length before batching (less padding), padded and truncated to
        ``max_length``; a progress bar shows when there are more than 4 batches and ``progress``.
        """
        import numpy as np
        import torch
        from tqdm.auto import tqdm

        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise NlpsslError(f"Encoder.encode: texts must be a non-empty list of strings (got {texts!r:.80}). "
                              f"Wrap a single text in a list: encode([text]).")
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise NlpsslError(f"Encoder.encode: texts[{bad}] is not a string (got {texts[bad]!r:.80}). "
                              f"Pass only strings.")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        starts = range(0, len(texts), self.batch_size)
        out = np.empty((len(texts), self.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in tqdm(starts, desc="encode", disable=not progress or len(starts) <= 4):
                rows = order[start:start + self.batch_size]
                batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = self.model(input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"]).last_hidden_state
                vectors = pool(hidden.float(), batch["attention_mask"], self.pooling)
                if normalize:
                    vectors = torch.nn.functional.normalize(vectors, dim=-1)
                out[rows] = vectors.numpy()
        return out


def _unit(x):
    """Rows L2-normalised, float64 (dense) or CSR (sparse); zero rows stay zero."""
    import numpy as np
    from scipy import sparse
    from sklearn.preprocessing import normalize

    return normalize(x.astype(np.float64) if sparse.issparse(x) else np.asarray(x, dtype=np.float64))


def _similarities(a, b) -> np.ndarray:
    """Cosine similarities [len(a), len(b)], dense."""
    import numpy as np

    sims = _unit(a) @ _unit(b).T
    return np.asarray(sims.todense()) if hasattr(sims, "todense") else sims


def nearest(queries, corpus, k: int) -> list[list[tuple[int, float]]]:
    """For each query row, the ``k`` corpus rows of highest cosine similarity as (index, similarity), best first."""
    import numpy as np

    if k < 1:
        raise NlpsslError(f"nearest: k must be 1 or more (got {k}). Use e.g. k=5.")
    sims = _similarities(queries, corpus)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [[(int(j), float(sims[i, j])) for j in row] for i, row in enumerate(top)]


def alignment(x, y, alpha: float = 2) -> float:
    """Mean ||x_i - y_i||^alpha over positive pairs (rows of ``x`` and ``y``) of L2-normalised vectors."""
    import numpy as np
    from scipy import sparse

    if x.shape != y.shape:
        raise NlpsslError(f"alignment: x and y must hold the same number of pairs (got {x.shape} vs {y.shape}).")
    xu, yu = _unit(x), _unit(y)
    dots = np.asarray(xu.multiply(yu).sum(1)).ravel() if sparse.issparse(xu) else (xu * yu).sum(1)
    squared = np.clip(2 - 2 * dots, 0, None)  # ||a - b||^2 = 2 - 2 a.b for unit vectors
    return float(np.mean(squared ** (alpha / 2)))


def uniformity(x, t: float = 2) -> float:
    """log of the mean over distinct pairs i < j of exp(-t ||x_i - x_j||^2), rows L2-normalised."""
    import numpy as np
    from scipy.special import logsumexp

    if x.shape[0] < 2:
        raise NlpsslError(f"uniformity: needs 2 or more vectors (got {x.shape[0]}).")
    squared = np.clip(2 - 2 * _similarities(x, x), 0, None)
    pairs = squared[np.triu_indices(x.shape[0], k=1)]
    return float(logsumexp(-t * pairs) - np.log(len(pairs)))


def knn_accuracy(train_x, train_y, test_x, test_y, k: int = 10) -> float:
    """Accuracy of a cosine k-nearest-neighbour majority vote; a tie goes to the label of larger summed similarity."""
    import numpy as np

    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    correct = 0
    for row, truth in zip(nearest(test_x, train_x, k), test_y):
        votes: dict = {}
        for j, sim in row:
            count, total = votes.get(train_y[j], (0, 0.0))
            votes[train_y[j]] = (count + 1, total + sim)
        correct += max(votes, key=votes.get) == truth
    return correct / len(test_y)


def linear_probe_accuracy(train_x, train_y, test_x, test_y, seed: int = 0) -> float:
    """Test accuracy of logistic regression (C=1) on frozen features.

    Dense features are standardised first (fit on train), so C=1 regularises every model's vectors
    alike whatever their scale; sparse ones (TF-IDF rows) go in as they are, already on a fixed scale.
    """
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(max_iter=5000, random_state=seed)
    if not sparse.issparse(train_x):
        model = make_pipeline(StandardScaler(), model)
    return float(model.fit(train_x, train_y).score(test_x, test_y))
