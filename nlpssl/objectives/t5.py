"""T5 span corruption: an encoder-decoder restores the spans replaced by sentinels.

Rows: raw token runs of the length that corruption shortens to ``data.block_size`` (documents
separated by ``[EOS]``). Collator: ``T5SpanCorruptionCollator`` (Raffel et al. 2020). Loss: the
model's own decoder cross-entropy. Metric: perplexity of the targets. Export: the stock
``T5ForConditionalGeneration`` with greedy ``generation_config.json``; no pipeline tag
(transformers 5 removed text2text-generation).
"""

from __future__ import annotations

from nlpssl.objectives.base import Objective


class SpanCorruption(Objective):
    framing = "t5"
    template = "t5"
    collators = ("t5",)
    auto_class = "AutoModelForSeq2SeqLM"
    tag = "span-corruption"
    generative = True
    usage = ('from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n'
             'tok = AutoTokenizer.from_pretrained(model)\n'
             'lm = AutoModelForSeq2SeqLM.from_pretrained(model)\n'
             'out = lm.generate(**tok("The cat <extra_id_0> on the mat.", return_tensors="pt"))\n'
             'print(tok.decode(out[0]))')

    def row_length(self) -> int:
        from nlpssl.collators.t5 import t5_input_target_lengths

        c = self.recipe.collator
        raw, _ = t5_input_target_lengths(self.recipe.data.block_size, c.noise_density, c.mean_span_length)
        return raw

    def build_collator(self, tokenizer):
        from nlpssl.collators import T5SpanCorruptionCollator

        c = self.recipe.collator
        return T5SpanCorruptionCollator.from_tokenizer(
            tokenizer, noise_density=c.noise_density, mean_noise_span_length=c.mean_span_length,
            seed=int(self.recipe.training.get("seed", 42)),
        )

    def make_trainer(self, args, model, data, collator, callbacks: list):
        trainer = super().make_trainer(args, model, data, collator, callbacks)
        trainer.keep_attention_mask = True  # the collator pads corrupted rows: the mask is real
        return trainer

    def card_notes(self, arch: str) -> str:
        from nlpssl.tokenizer import FIRST_SENTINEL_ID

        return (f"Span-corruption sentinels `<extra_id_0>`, `<extra_id_1>`, ... sit at ids {FIRST_SENTINEL_ID}, "
                f"{FIRST_SENTINEL_ID + 1}, ... ascending (Google's T5 tokenizers put `<extra_id_0>` at the top of "
                "the vocabulary instead): look sentinels up by name, never by arithmetic on the vocabulary "
                "size. There is no pipeline for it in transformers 5 (text2text-generation was removed), "
                "so it carries no pipeline tag; use `generate()` as above (greedy by default).")
