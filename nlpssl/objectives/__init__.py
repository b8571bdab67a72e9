"""Pretraining objectives, one module each; :func:`objective_for` picks the recipe's.

| objective | module | collator.kind | trained model | export class | metric |
|---|---|---|---|---|---|
| masked-LM | ``mlm`` | token, word, span | ``*ForMaskedLM`` | the same | masked-token accuracy |
| causal-LM | ``causal`` | causal | ``*ForCausalLM`` | the same | perplexity, bits per byte |
| T5 span corruption | ``t5`` | t5 | ``T5ForConditionalGeneration`` | the same | perplexity |
| ELECTRA | ``electra`` | token, word, span | generator + ``ElectraForPreTraining`` | ``ElectraForPreTraining`` | replaced-token accuracy, AUC |
| distillation | ``distill`` | the teacher's (masked-LM or causal) | a smaller student beside a frozen teacher | the student's stock class | the student's, top-1 agreement |
| SimCSE | ``simcse`` | none (sentences) | an encoder (``AutoModel``) + training-only MLP | ``AutoModel`` + sentence-transformers files | InfoNCE loss, uniformity |

Each module reads top to bottom: what it is, its :class:`~nlpssl.objectives.base.Objective`
subclass (framing, collator, model, export facts), then its Trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nlpssl.objectives.base import Objective
    from nlpssl.recipe import Recipe

# Which objective trains each model.arch.
ARCH_OBJECTIVE = {
    "bert": "mlm", "roberta": "mlm", "modernbert": "mlm", "gpt2": "causal", "llama": "causal", "t5": "t5",
    "electra": "electra",
}


def objective_name(recipe: Recipe) -> str:
    """Which objective ``recipe`` trains: a distillation teacher or a SimCSE encoder picks theirs,
    else ``model.arch`` does."""
    if recipe.distill.teacher:
        return "distill"
    if recipe.simcse.encoder:
        return "simcse"
    return ARCH_OBJECTIVE[recipe.model.arch]


def objective_for(recipe: Recipe) -> Objective:
    """The objective that ``recipe`` trains."""
    match objective_name(recipe):
        case "mlm":
            from nlpssl.objectives.mlm import MaskedLM

            return MaskedLM(recipe)
        case "causal":
            from nlpssl.objectives.causal import CausalLM

            return CausalLM(recipe)
        case "t5":
            from nlpssl.objectives.t5 import SpanCorruption

            return SpanCorruption(recipe)
        case "electra":
            from nlpssl.objectives.electra import Electra

            return Electra(recipe)
        case "distill":  # the student's family (model.arch) picks the loss; the check reports other arches
            from nlpssl.objectives.distill import DistilledCausalLM, DistilledMaskedLM

            causal = ARCH_OBJECTIVE[recipe.model.arch] == "causal"
            return DistilledCausalLM(recipe) if causal else DistilledMaskedLM(recipe)
        case "simcse":
            from nlpssl.objectives.simcse import SimCSE

            return SimCSE(recipe)
    raise AssertionError(recipe.model.arch)  # pragma: no cover - the recipe loader admits only the arches above
