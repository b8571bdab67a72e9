"""Does a span-corruption (T5) run's decoder read its encoder? Held-out loss with the real inputs
against the same targets with random inputs, and greedy fills of a few prompts.

A decoder that has learned only what spans look like (their words, the sentinel order, the [EOS])
scores the same whatever the encoder is given; one that restores the hidden words from their
context does much better with the real input. The gap (random minus real, in nats per target
token) says which, over all target tokens and apart for the first word of each span (which only
the input can tell) and the later ones (which the span's own first words help predict).

    .venv/bin/python benchmarks/t5_encoder_use.py runs/t5-tiny [runs/other-t5 ...] [--batches 8]

Each RUN_DIR is a finished ``nlpssl pretrain`` run of a t5 recipe (recipe.yaml, tokenizer/, export/); its
held-out blocks are rebuilt from its own recipe and tokenizer (from the data cache when present) and
corrupted with the fixed evaluation masks the trainer uses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

PROMPTS = ("The cat <extra_id_0> on the mat.", "She was very <extra_id_0> and started to cry.",
           "Tom went to the <extra_id_0> to buy some <extra_id_1> for his mom.")


@torch.no_grad()
def losses(run: Path, model, batches: int, batch_size: int) -> dict[str, tuple[float, float, int]]:
    """Held-out loss of ``model`` with the real inputs and with random inputs, and the target tokens scored:
    over every target token ("all"), the first word of each span ("first": where the decoder has only the
    input to go on) and the span's later words ("later")."""
    from nlpssl.collators.batching import fixed_copy
    from nlpssl.collators.t5 import sentinel_ids_from_tokenizer
    from nlpssl.data import prepare_data
    from nlpssl.objectives import objective_for
    from nlpssl.recipe import load_recipe
    from nlpssl.tokenizer import load_tokenizer

    recipe = load_recipe(run / "recipe.yaml")
    tokenizer = load_tokenizer(run / "tokenizer")
    blocks = prepare_data(recipe, tokenizer).eval
    collate = fixed_copy(objective_for(recipe).build_collator(tokenizer))
    sentinels = torch.tensor(sentinel_ids_from_tokenizer(tokenizer))
    special = set(tokenizer.all_special_ids) | set(sentinels.tolist())
    kept = torch.tensor(sorted(special))
    plain = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    gen = torch.Generator().manual_seed(0)
    sums = {part: [0.0, 0.0, 0] for part in ("all", "first", "later")}
    for start in range(0, min(len(blocks), batches * batch_size), batch_size):
        batch = collate([blocks[i] for i in range(start, min(start + batch_size, len(blocks)))])
        labels = batch["labels"]
        after = torch.isin(torch.nn.functional.pad(labels[:, :-1], (1, 0), value=-100), sentinels)
        word = (labels != -100) & ~torch.isin(labels, kept)
        parts = {"all": labels != -100, "first": word & after, "later": word & ~after}
        noise = plain[torch.randint(len(plain), batch["input_ids"].shape, generator=gen)]
        # sentinels, [EOS] and padding stay where they are; every word of the input is replaced
        keep = torch.isin(batch["input_ids"], kept)
        shuffled = {**batch, "input_ids": torch.where(keep, batch["input_ids"], noise)}
        for column, inputs in enumerate((batch, shuffled)):
            logits = model(**inputs).logits
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
            for part, where in parts.items():
                sums[part][column] += float(nll[where].sum())
        for part, where in parts.items():
            sums[part][2] += int(where.sum())
    return {part: (real / max(n, 1), fake / max(n, 1), n) for part, (real, fake, n) in sums.items()}


@torch.no_grad()
def fills(run: Path, model) -> list[str]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run / "export")
    out = []
    for prompt in PROMPTS:
        ids = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=12, do_sample=False)
        out.append(f"{prompt} -> {tok.decode(ids[0], skip_special_tokens=False)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished t5 pretraining runs (RUN_DIR)")
    parser.add_argument("--batches", type=int, default=8, help="held-out batches to score (default 8)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    from transformers import AutoModelForSeq2SeqLM

    for run in args.runs:
        model = AutoModelForSeq2SeqLM.from_pretrained(run / "export").eval()
        scored = losses(run, model, args.batches, args.batch_size)
        real, fake, n = scored["all"]
        print(f"{run}: held-out loss {real:.3f} with the real inputs, {fake:.3f} with random words in their place "
              f"(gap {fake - real:+.3f} nats per target token, {n} tokens)")
        for part, what in (("first", "first word of a span"), ("later", "later words of a span")):
            real, fake, n = scored[part]
            print(f"    {what}: {real:.3f} real, {fake:.3f} random (gap {fake - real:+.3f}, {n} tokens)")
        for line in fills(run, model):
            print(f"    {line}")


if __name__ == "__main__":
    main()
