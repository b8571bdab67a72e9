"""Unsupervised SimCSE (Gao et al. 2021): sentence embeddings from an encoder, without labels.

- Start: any encoder folder, ``simcse.encoder`` (typically an nlpssl masked-LM export;
  ``AutoModel`` loads its body and leaves the masked-LM head behind), with its tokenizer.
- Rows: one sentence per row, ``[CLS] sentence [SEP]`` padded to ``data.block_size`` (longer ones
  cut); documents of any text source are split into sentences (``nlpssl.data.split_sentences``).
  The held-out split is by sentence. Collator: :class:`SentenceCollator` (trim padding, mask).
  With ``simcse.positive: document`` a row is two sentences of the same document side by side, each
  half framed so (``nlpssl.data.sentence_pairs``; held out by pair).
- Loss: every sentence of a batch goes through the encoder twice with dropout on
  (``simcse.dropout``), so the two views differ only by dropout; with ``positive: document`` the two
  views are the two sentences of a pair, each through once (as in DeCLUTR, Giorgi et al. 2021). Their
  pooled vectors (``simcse.pooling``: mean over tokens or [CLS]; with cls, a training-only MLP as in
  the paper) make an InfoNCE over in-batch negatives at ``simcse.temperature`` (0.05). Another row's
  positive that is a row's own sentence (a sentence twice in a batch) is not one of its negatives.
- Logged: at evaluation (dropout off) the InfoNCE loss and the uniformity of the held-out sentence
  vectors (Wang and Isola 2020; lower: more spread out).
- Export: the encoder body, a stock ``AutoModel`` folder with its own dropout rates, plus the
  sentence-transformers files (``modules.json``, ``1_Pooling/config.json``) so that
  ``SentenceTransformer(folder).encode(...)`` pools as training did; ``nlpssl embed`` reads them too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nlpssl.errors import NlpsslError
from nlpssl.objectives.base import Objective
from nlpssl.training import PretrainTrainer

MLP = "simcse_mlp"  # the training-only projection on the pooled vector, dropped at export
ENCODER_TYPES = ("bert", "roberta", "modernbert", "electra", "distilbert", "deberta", "deberta-v2", "xlm-roberta")


class SimCSE(Objective):
    template = "mlm"
    collators = ("token",)  # none is used: the default value, so that setting one is refused
    auto_class = "AutoModel"
    tag = "sentence-embeddings"
    pipeline_tag = "feature-extraction"
    metric = ("uniformity", "eval_uniformity")
    training_only = (f"{MLP}.",)
    padded_rows = True  # one sentence a row
    outside_keys = ("simcse.encoder",)

    @property
    def framing(self) -> str:  # type: ignore[override]
        return "pair" if self.recipe.simcse.positive == "document" else "sentence"

    def row_length(self) -> int:
        """A pair row holds two sentence rows of ``data.block_size`` side by side."""
        return self.recipe.data.block_size * (2 if self.framing == "pair" else 1)

    @property
    def every_weight_used(self) -> bool:
        """BERT's and RoBERTa's bodies carry a pooler that the sentence vector never reads."""
        return self.arch not in ("bert", "roberta")

    @property
    def mlp(self) -> bool:
        s = self.recipe.simcse
        return s.pooling == "cls" if s.mlp is None else s.mlp

    usage = ('from sentence_transformers import SentenceTransformer\n'
             'vectors = SentenceTransformer(model).encode(["A cat sat on the mat.", "A dog lay on the rug."])\n'
             '# or, without sentence-transformers: nlpssl embed MODEL_DIR "A cat sat on the mat." ...')

    @property
    def arch(self) -> str:
        return str(self.outside_config("simcse.encoder").get("model_type"))

    def read_outside(self, key: str) -> dict:
        return encoder_config(self.recipe.simcse.encoder)

    def tokenizer_path(self) -> str | None:
        return self.recipe.tokenizer.path or self.recipe.simcse.encoder

    def columns(self) -> list[str]:
        return ["input_ids"]

    def preflight(self) -> None:
        from nlpssl.objectives.base import check_positions, check_same_tokenizer

        encoder = self.recipe.simcse.encoder
        config = encoder_config(encoder)
        if config.get("model_type") not in ENCODER_TYPES or config.get("is_encoder_decoder"):
            raise NlpsslError(
                f"simcse.encoder: {encoder!r} is a {config.get('model_type')!r} model, not an encoder (one of "
                f"{', '.join(ENCODER_TYPES)}). Start from a masked-LM export, e.g. runs/bert-tiny/export."
            )
        check_positions(config, self.recipe.data.block_size, "simcse.encoder", encoder)
        check_same_tokenizer(self.recipe.tokenizer.path, encoder, "simcse", "the encoder")

    def build_collator(self, tokenizer):
        return SentenceCollator(tokenizer.pad_token_id, pairs=self.framing == "pair")

    def build_model(self, tokenizer, attn: str = "sdpa"):
        """The encoder body with SimCSE's dropout (the export gets the encoder's own back)."""
        from transformers import AutoConfig, AutoModel

        from nlpssl.console import quiet_transformers, say_loaded
        from nlpssl.models import set_dropout

        encoder = self.recipe.simcse.encoder
        config = AutoConfig.from_pretrained(encoder)
        set_dropout(config, self.recipe.simcse.dropout)
        with quiet_transformers():  # its load report (a table of the masked-LM head left out) gives way to one line
            model, info = AutoModel.from_pretrained(encoder, config=config, attn_implementation=attn,
                                                    output_loading_info=True)
        say_loaded(encoder, model, info)
        return model

    def trainer_class(self):
        return SimCSETrainer

    def trainer_kwargs(self) -> dict[str, Any]:
        s = self.recipe.simcse
        return {"pooling": s.pooling, "mlp": self.mlp, "temperature": s.temperature, "pairs": self.framing == "pair"}

    def headline(self, eval_metrics: dict[str, Any], stats: dict, trainer) -> dict[str, Any]:
        return {"eval_uniformity": eval_metrics.get("eval_uniformity")}

    def write_extra(self, out_dir, config: dict) -> None:
        """The encoder's own dropout rates back in config.json, and the sentence-transformers files."""
        from nlpssl.embeddings import write_pooling_files
        from nlpssl.models import DROPOUT_FIELDS

        own = self.outside_config("simcse.encoder")
        for name in DROPOUT_FIELDS:
            if name in config and name in own:
                config[name] = own[name]
        (Path(out_dir) / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        write_pooling_files(out_dir, self.recipe.simcse.pooling, config["hidden_size"], self.recipe.data.block_size)

    def described(self) -> str:
        return f"{self.arch} sentence encoder"

    def origin(self) -> str:
        how = " (positives: two sentences of the same document)" if self.framing == "pair" else ""
        return f"trained with unsupervised SimCSE{how} from `{self.recipe.simcse.encoder}`"

    def card_notes(self, arch: str) -> str:
        s = self.recipe.simcse
        return (f"Sentence vectors are the {s.pooling} pooling of the last token states (`1_Pooling/config.json`); "
                "compare them by cosine similarity. `AutoModel` loads the encoder alone; "
                "`nlpssl finetune` fine-tunes it as a classifier.")

    def check(self, where: str, problems: list[str]) -> None:
        super().check(where, problems)
        s = self.recipe.simcse
        if not s.temperature > 0:
            problems.append(f"{where}: simcse.temperature is out of range (got {s.temperature!r}). "
                            "Use a positive temperature, e.g. 0.05 (SimCSE).")
        if not 0.0 <= s.dropout < 1.0:
            problems.append(f"{where}: simcse.dropout is out of range (got {s.dropout!r}). Use a rate in [0, 1), "
                            "e.g. 0.1 (SimCSE): dropout is what makes the two views differ.")
        batch = self.recipe.training.get("per_device_train_batch_size", 8)
        if isinstance(batch, int) and batch < 2:
            problems.append(f"{where}: training.per_device_train_batch_size is too small for SimCSE (got {batch}): "
                            "the other sentences of a batch are the negatives. Use 2 or more, e.g. 64.")


def encoder_config(folder: str) -> dict:
    """The encoder's config.json as a dict, or a clear error naming the folder."""
    from nlpssl.objectives.base import folder_config

    return folder_config(folder, "simcse.encoder", "an encoder export, e.g. runs/bert-tiny/export after "
                         "`nlpssl pretrain bert-tiny`")


class SentenceCollator:
    """Stack sentence rows, cut the padding columns no row of the batch needs, add the attention mask.

    ``pairs``: each row is two sentence rows side by side; the batch is every first half, then every
    second half (2B rows), so row i and row B + i are partners.
    """

    def __init__(self, pad_id: int, pairs: bool = False):
        self.pad_id, self.pairs = pad_id, pairs

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = torch.stack([torch.as_tensor(r["input_ids"], dtype=torch.long) for r in rows])
        if self.pairs:
            ids = torch.cat(ids.chunk(2, dim=1))
        mask = ids != self.pad_id
        width = max(1, int(mask.sum(1).max()))
        return {"input_ids": ids[:, :width].contiguous(), "attention_mask": mask[:, :width].long()}


def duplicate_pairs(ids: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
    """[B, B] True where row i != j of ``ids`` holds the same sentence as row j of ``positives`` (default:
    ``ids``): row j's positive is then no negative of row i. Both [B, L], padded alike."""
    other = ids if positives is None else positives
    same = (ids.unsqueeze(1) == other.unsqueeze(0)).all(-1)
    return same & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)


def simcse_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float, duplicates: torch.Tensor | None = None):
    """InfoNCE of view 1 against view 2: row i's positive is z2[i], its negatives the other rows of z2.

    ``sim[i, j] = cos(z1[i], z2[j]) / temperature``; ``loss = mean_i(logsumexp_j sim[i, j] - sim[i, i])``
    with ``duplicates[i, j]`` left out of the sum.
    """
    sim = F.normalize(z1.float(), dim=-1) @ F.normalize(z2.float(), dim=-1).T / temperature
    if duplicates is not None:
        sim = sim.masked_fill(duplicates, float("-inf"))
    return F.cross_entropy(sim, torch.arange(len(sim), device=sim.device))


class SimCSETrainer(PretrainTrainer):
    """Two views per sentence in one forward of 2B rows, pooled, InfoNCE over the batch.

    The views are the sentence twice (dropout makes them differ) or, with ``pairs``, the two
    sentences of a pair row (the collator has put the second ones after the first ones).

    The encoder's forward is swapped on the instance (as the other objectives swap a head's) for
    one that pools and, while training, applies the MLP, so the call still goes through the
    (possibly DDP-wrapped) model and the MLP's gradients are synchronised with the rest.
    """

    keep_attention_mask = True  # sentences are padded

    def __init__(self, *args, pooling: str = "mean", mlp: bool = False, temperature: float = 0.05,
                 pairs: bool = False, **kwargs):
        model = kwargs["model"]
        if mlp:
            hidden = model.config.hidden_size
            model.add_module(MLP, torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.Tanh()))
        super().__init__(*args, **kwargs)
        self.pooling, self.use_mlp, self.temperature, self.pairs = pooling, mlp, float(temperature), pairs
        self._eval_vectors: list[torch.Tensor] = []
        self._wrap_forward(model)

    def _wrap_forward(self, encoder) -> None:
        from nlpssl.embeddings import pool

        stock, trainer = encoder.forward, self

        def forward(input_ids, attention_mask, **_):
            hidden = stock(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            z = pool(hidden, attention_mask, trainer.pooling)
            if trainer.use_mlp and encoder.training:
                z = getattr(encoder, MLP)(z)
            return {"embeddings": z}

        encoder.forward = forward

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if not self.pairs:
            ids, mask = torch.cat([ids, ids]), torch.cat([mask, mask])
        z = model(input_ids=ids, attention_mask=mask)["embeddings"]
        z1, z2 = z.float().chunk(2)
        loss = simcse_loss(z1, z2, self.temperature, duplicate_pairs(*ids.chunk(2)))
        if not model.training:
            self._eval_vectors.append(F.normalize(z1.detach(), dim=-1).cpu())
        return (loss, {}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The InfoNCE loss of an evaluation batch (the stock step computes a loss only from labels)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluate(self, *args, **kwargs):
        self._eval_vectors = []
        return super().evaluate(*args, **kwargs)

    def eval_logs(self, logs: dict) -> None:
        if self._eval_vectors:
            from nlpssl.embeddings import uniformity

            logs["eval_uniformity"] = round(float(uniformity(torch.cat(self._eval_vectors).numpy())), 4)
