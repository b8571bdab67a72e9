"""T5 span corruption: an encoder-decoder restores the spans replaced by sentinels.

Rows: raw token runs of the length that corruption shortens to ``data.block_size`` (documents
separated by ``[EOS]``). Collator: ``T5SpanCorruptionCollator`` (Raffel et al. 2020). Loss: the
model's own decoder cross-entropy. Metric: perplexity of the targets. Export: the stock
``T5ForConditionalGeneration`` with greedy ``generation_config.json``; no pipeline tag
(transformers 5 removed text2text-generation).
"""

from __future__ import annotations

from nlpssl.errors import NlpsslError
from nlpssl.objectives.base import Objective

# The densities T5 studied (Raffel et al. 2020, table 6: 0.10 to 0.50). Above 0.5 a row hides more than
# it shows and its raw length grows as 1 / (1 - density): at 0.99, 128 inputs come from 9,549 tokens.
MAX_NOISE_DENSITY = 0.5


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

    def check(self, where: str, problems: list[str]) -> None:
        """Noise settings that give rows of exactly ``data.block_size`` inputs, and a sentinel per span."""
        super().check(where, problems)
        from nlpssl.collators.t5 import noise_counts, t5_input_target_lengths

        c, d, t = self.recipe.collator, self.recipe.data, self.recipe.tokenizer
        layers = self.recipe.model.num_layers
        if layers is not None and layers >= 1 and layers % 2:
            # nlpssl.models gives the encoder and the decoder num_layers // 2 each (at least 1).
            problems.append(f"{where}: model.num_layers must be even for t5, which splits it between the encoder "
                            f"and the decoder (got {layers}: that would build {max(1, layers // 2)} + "
                            f"{max(1, layers // 2)}). Use e.g. model.num_layers={layers + 1}.")
        if not (0 < c.noise_density < 1 and c.mean_span_length >= 1 and d.block_size >= 8):
            return  # the range checks reported it
        if c.noise_density > MAX_NOISE_DENSITY:
            problems.append(f"{where}: collator.noise_density is out of range for t5 (got {c.noise_density!r}): a row "
                            f"of data.block_size={d.block_size} inputs would hide more tokens than it shows. Use at "
                            f"most {MAX_NOISE_DENSITY} (T5 studied 0.10 to 0.50; its default is 0.15).")
            return
        try:
            raw, _ = t5_input_target_lengths(d.block_size, c.noise_density, c.mean_span_length)
        except NlpsslError:
            problems.append(f"{where}: collator.noise_density={c.noise_density!r} with collator.mean_span_length="
                            f"{c.mean_span_length!r}: no raw row length corrupts to exactly data.block_size="
                            f"{d.block_size} inputs (one sentinel per span leaves no room). Raise "
                            "collator.mean_span_length (T5: 3.0) or lower collator.noise_density (T5: 0.15).")
            return
        spans = noise_counts(raw, c.noise_density, c.mean_span_length)[1]
        if not t.path and t.num_sentinels < spans:
            problems.append(f"{where}: tokenizer.num_sentinels is too small for t5 (got {t.num_sentinels}): a row of "
                            f"data.block_size={d.block_size} makes {spans} noise spans, each replaced by its own "
                            f"sentinel. Set tokenizer.num_sentinels={max(spans, 100)} or more (the default is 100), "
                            "or lower data.block_size.")

    def preflight(self) -> None:
        """A reused tokenizer (``tokenizer.path``) must hold a sentinel for every noise span of a row."""
        t = self.recipe.tokenizer
        if not t.path:
            return
        from nlpssl.collators.t5 import noise_counts, sentinel_ids_from_tokenizer
        from nlpssl.tokenizer import load_tokenizer

        c = self.recipe.collator
        spans = noise_counts(self.row_length(), c.noise_density, c.mean_span_length)[1]
        have = len(sentinel_ids_from_tokenizer(load_tokenizer(t.path)))
        if have < spans:
            raise NlpsslError(
                f"tokenizer.path={t.path!r} holds {have} T5 sentinels (<extra_id_0>, ...), and a row of "
                f"data.block_size={self.recipe.data.block_size} makes {spans} noise spans, each needing its own. "
                f"Remove tokenizer.path to train a tokenizer with tokenizer.num_sentinels={max(spans, 100)}, or "
                "lower data.block_size."
            )

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
