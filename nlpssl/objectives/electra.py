"""ELECTRA replaced-token detection (Clark et al. 2020).

A small masked-LM *generator* fills the masked positions with tokens sampled from its own
predictions; the *discriminator* (the model that is kept) reads the whole corrupted row and says,
for every token, whether it was replaced. Every token gives the discriminator a training signal,
where a masked-LM learns from the ~15% that were masked.

- Rows and collator: the masked-LM's (``[CLS] ... [SEP]`` blocks, ``MaskingCollator``; the
  recipes mask 15% and put [MASK] on 85% of them, as ELECTRA's code does).
- Generator: ``ElectraForMaskedLM`` at ``electra.generator_fraction`` of the discriminator's width,
  FFN and heads, same depth, its token embeddings *the same tensor* as the discriminator's.
- Discriminator: stock ``ElectraForPreTraining``. Its input is the original row with every masked
  position replaced by a generator sample (drawn without gradient at ``electra.temperature``);
  its label is "replaced" only where the sample differs from the original token.
- Loss: generator MLM + ``electra.discriminator_weight`` (lambda, 50) x the discriminator's binary
  cross-entropy over all non-pad tokens.
- Logged: generator accuracy on masked tokens, discriminator accuracy, the share of tokens
  replaced, precision / recall on replaced tokens, and (at evaluation) their ROC AUC.
- Export: the discriminator alone, a stock ``ElectraForPreTraining`` folder (``AutoModel`` and
  ``AutoModelForSequenceClassification`` load it); the generator is training-only and dropped.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from nlpssl.objectives.base import Objective
from nlpssl.objectives.mlm import all_ranks_sum, masking_collator
from nlpssl.training import PretrainTrainer

GENERATOR = "generator"  # the generator's submodule name inside the discriminator during training
SHARED = "electra.embeddings.word_embeddings.weight"  # the token embeddings both models use


class Electra(Objective):
    framing = "mlm"
    template = "mlm"
    collators = ("token", "word", "span")
    tag = "replaced-token-detection"
    task_type = "token-classification"
    metric = ("roc_auc", "eval_replaced_auc")
    training_only = (f"{GENERATOR}.",)
    usage = ('import torch\nfrom transformers import AutoTokenizer, ElectraForPreTraining\n'
             'tok = AutoTokenizer.from_pretrained(model)\n'
             'disc = ElectraForPreTraining.from_pretrained(model)\n'
             'batch = tok("The cat sat on the car.", return_tensors="pt")\n'
             'replaced = torch.sigmoid(disc(**batch).logits)  # per token: probability it was replaced')

    def build_collator(self, tokenizer):
        return masking_collator(self.recipe, tokenizer)

    def build_model(self, tokenizer, attn: str = "sdpa"):
        """The discriminator (the generator is attached by :class:`ElectraTrainer`)."""
        from transformers import ElectraForPreTraining

        from nlpssl.models import build_config

        return ElectraForPreTraining(build_config(self.recipe.model, tokenizer, attn))

    def trainer_class(self):
        return ElectraTrainer

    def trainer_kwargs(self) -> dict[str, Any]:
        e = self.recipe.electra
        return {"generator_fraction": e.generator_fraction, "discriminator_weight": e.discriminator_weight,
                "temperature": e.temperature}

    def headline(self, eval_metrics: dict[str, Any], stats: dict, trainer) -> dict[str, Any]:
        return {f"eval_{k}": eval_metrics.get(f"eval_{k}") for k in EVAL_FIGURES}

    def card_notes(self, arch: str) -> str:
        return ("This is ELECTRA's discriminator: its head scores every token as original or replaced. "
                "For a task, load it with `AutoModelForSequenceClassification` (or `AutoModel` for "
                "features); the generator that trained it is not included.")

    def check(self, where: str, problems: list[str]) -> None:
        super().check(where, problems)
        e, c = self.recipe.electra, self.recipe.collator
        if not 0.0 < e.generator_fraction <= 1.0:
            problems.append(f"{where}: electra.generator_fraction is out of range (got {e.generator_fraction!r}). "
                            "Use a share in (0, 1], e.g. 0.25 (the paper's small model).")
        if not e.discriminator_weight > 0:
            problems.append(f"{where}: electra.discriminator_weight is out of range (got {e.discriminator_weight!r}). "
                            "Use a positive weight, e.g. 50.")
        if not e.temperature > 0:
            problems.append(f"{where}: electra.temperature is out of range (got {e.temperature!r}). "
                            "Use a positive temperature, e.g. 1.0.")
        if c.span_boundary:
            problems.append(f"{where}: collator.span_boundary is a masked-LM head and has no place in ELECTRA "
                            "(got true). Set collator.span_boundary=false.")


EVAL_FIGURES = ("generator_accuracy", "discriminator_accuracy", "replaced_share", "replaced_precision",
                "replaced_recall", "replaced_auc")


def generator_config(config, fraction: float):
    """The generator's config: the discriminator's, ``fraction`` as wide (hidden size, FFN, heads)."""
    from transformers import ElectraConfig

    head_dim = config.hidden_size // config.num_attention_heads
    hidden = max(1, round(config.hidden_size * fraction))
    heads = max(1, hidden // head_dim)
    if hidden % heads:
        heads = 1
    values = config.to_dict()
    values.update(hidden_size=hidden, num_attention_heads=heads,
                  intermediate_size=max(1, round(config.intermediate_size * fraction)))
    values.pop("architectures", None)
    return ElectraConfig(**values)


def attach_generator(discriminator, fraction: float):
    """Build the generator, share the discriminator's token embeddings with it, and attach it.

    A submodule (``generator``), so the optimizer, checkpoints, resume and DDP all see it; the
    export drops it (``Electra.training_only``). The shared tensor is saved once, under the
    discriminator's name: the generator declares its copy tied.
    """
    from transformers import ElectraForMaskedLM

    generator = ElectraForMaskedLM(generator_config(discriminator.config, fraction))
    shared = discriminator.electra.embeddings.word_embeddings
    generator.electra.embeddings.word_embeddings = shared
    generator.generator_lm_head.weight = shared.weight
    generator._tied_weights_keys = {**(generator._tied_weights_keys or {}), SHARED: SHARED}
    discriminator.add_module(GENERATOR, generator)
    return generator


def sample_rows(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of ``probs`` [N, V], drawn from that row's distribution (inverse CDF).

    The same distribution as ``torch.multinomial(probs, 1)``, from N uniform numbers instead of the
    N x V exponential draws multinomial makes: on a 2-core CPU that was 18% of an electra-tiny step.
    """
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, device=probs.device, dtype=cdf.dtype, generator=generator) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=probs.shape[-1] - 1)


def replaced_token_labels(original: torch.Tensor, selected: torch.Tensor, sampled: torch.Tensor):
    """(discriminator input, labels): ``original`` with the ``selected`` positions set to ``sampled``
    (one per selected position, row-major), labelled 1 where the sample differs from the original.

    A sample that happens to equal the original token is labelled original (0), as in the paper.
    """
    corrupted = original.clone()
    corrupted[selected] = sampled
    return corrupted, (corrupted != original).to(torch.float32)


class ElectraTrainer(PretrainTrainer):
    """Generator MLM + lambda x replaced-token detection, in one forward of the discriminator.

    The discriminator's forward is swapped on the instance (as the masked-LM trainer swaps its
    head's) for one that runs generator, sampling and discriminator, so the call still goes through
    the (possibly DDP-wrapped) model: gradients of both models are synchronised in one backward.
    """

    def __init__(self, *args, generator_fraction: float = 0.25, discriminator_weight: float = 50.0,
                 temperature: float = 1.0, **kwargs):
        model = kwargs["model"]
        attach_generator(model, generator_fraction)
        super().__init__(*args, **kwargs)
        self.discriminator_weight = float(discriminator_weight)
        self.temperature = float(temperature)
        self._rng: torch.Generator | None = None  # sampling; a fixed one during evaluation
        self._sums = torch.zeros(len(COUNTS), dtype=torch.float64)  # training counts since the last log
        self._eval_sums = torch.zeros(len(COUNTS), dtype=torch.float64)
        self._eval_scores: list[torch.Tensor] = []
        self._eval_labels: list[torch.Tensor] = []
        self._wrap_forward(model)

    def _generator(self, device) -> torch.Generator:
        if self._rng is None or self._rng.device != torch.device(device):
            self._rng = torch.Generator(device=device).manual_seed(self.args.seed + self.args.process_index)
        return self._rng

    def _wrap_forward(self, disc) -> None:
        stock = disc.forward
        trainer = self

        def forward(input_ids, labels, attention_mask=None, **_):
            gen = getattr(disc, GENERATOR)
            selected = labels != -100
            target = labels[selected]
            hidden = gen.electra(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            gen_logits = gen.generator_lm_head(gen.generator_predictions(hidden[selected]))  # [N, V] masked only
            gen_loss = F.cross_entropy(gen_logits.float(), target)
            with torch.no_grad():
                probs = torch.softmax(gen_logits.float() / trainer.temperature, dim=-1)
                sampled = sample_rows(probs, trainer._generator(probs.device))
                original = torch.where(selected, labels, input_ids)
                corrupted, is_replaced = replaced_token_labels(original, selected, sampled)
            disc_logits = stock(input_ids=corrupted, attention_mask=attention_mask).logits.float()  # [B, L]
            real = original != trainer.pad_id if attention_mask is None else attention_mask.bool()
            scores, replaced = disc_logits[real], is_replaced[real]  # non-pad tokens only
            loss = gen_loss + trainer.discriminator_weight * F.binary_cross_entropy_with_logits(scores, replaced)
            with torch.no_grad():
                counts = count_figures(gen_logits.argmax(-1) == target, scores, replaced)
            return {"loss": loss, "counts": counts, "scores": scores.detach(), "replaced": replaced}

        disc.forward = forward

    @property
    def pad_id(self) -> int:
        return self.model.config.pad_token_id

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(**self.model_inputs(inputs))
        counts = out["counts"].detach().to("cpu", torch.float64)
        if model.training:
            self._sums += counts
        else:
            self._eval_sums += counts
            self._eval_scores.append(out["scores"].cpu())
            self._eval_labels.append(out["replaced"].cpu())
        return (out["loss"], {}) if return_outputs else out["loss"]

    def evaluate(self, *args, **kwargs):
        self._eval_sums.zero_()
        self._eval_scores, self._eval_labels = [], []
        training_rng, self._rng = self._rng, None  # evaluation samples from a fresh, fixed generator
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self._rng = training_rng

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self._sums[0] > 0:
            logs |= {k: round(v, 4) for k, v in figures(all_ranks_sum(self._sums, self.args.device)).items()}
            self._sums.zero_()
        super().log(logs, *args, **kwargs)

    def eval_logs(self, logs: dict) -> None:
        if self._eval_sums[0] > 0:
            found = figures(all_ranks_sum(self._eval_sums, self.args.device))
            found["replaced_auc"] = roc_auc(torch.cat(self._eval_labels), torch.cat(self._eval_scores))
            logs |= {f"eval_{k}": round(v, 4) for k, v in found.items() if v is not None}


# Counts summed over batches: [masked, generator correct, tokens, discriminator correct,
# replaced, predicted replaced, true positives].
COUNTS = ("masked", "gen_correct", "tokens", "disc_correct", "replaced", "predicted", "true_positive")


def count_figures(gen_hits: torch.Tensor, disc_logits: torch.Tensor, is_replaced: torch.Tensor) -> torch.Tensor:
    predicted = disc_logits > 0
    actual = is_replaced > 0.5
    return torch.stack([
        torch.tensor(gen_hits.numel(), device=gen_hits.device), gen_hits.sum(),
        torch.tensor(actual.numel(), device=actual.device), (predicted == actual).sum(),
        actual.sum(), predicted.sum(), (predicted & actual).sum(),
    ]).to(torch.float64)


def figures(sums: torch.Tensor) -> dict[str, float]:
    """Accuracies, the replaced share and precision / recall from summed :data:`COUNTS`."""
    c = dict(zip(COUNTS, sums.tolist()))
    return {
        "generator_accuracy": c["gen_correct"] / max(1.0, c["masked"]),
        "discriminator_accuracy": c["disc_correct"] / max(1.0, c["tokens"]),
        "replaced_share": c["replaced"] / max(1.0, c["tokens"]),
        "replaced_precision": c["true_positive"] / max(1.0, c["predicted"]),
        "replaced_recall": c["true_positive"] / max(1.0, c["replaced"]),
    }


def roc_auc(labels: torch.Tensor, scores: torch.Tensor) -> float | None:
    """ROC AUC of ``scores`` for ``labels`` (this rank's evaluation tokens); None with one class only."""
    from sklearn.metrics import roc_auc_score

    y = labels.numpy() > 0.5
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, scores.float().numpy()))
