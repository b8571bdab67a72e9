"""Score finished masked-LM runs on their held-out blocks under token, whole-word and span masking.

A span model and a token model trained with their own collators are normally evaluated on
different questions: span masks hide whole runs of words, so each masked token has less context.
This script asks every model every kind of question, with the fixed evaluation masks the trainer
uses (``nlpssl.collators.batching.fixed_copy``), so the rows of the table compare models and the
columns compare tasks.

    .venv/bin/python benchmarks/masking_eval.py runs/bert-tiny runs/bert-tiny-span

Each RUN_DIR is a finished ``nlpssl pretrain`` run (recipe.yaml, tokenizer/, export/); its held-out
blocks are rebuilt from its own recipe and tokenizer (from the data cache when present).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

UNITS = ("token", "word", "span")


def held_out(run: Path):
    """(recipe, tokenizer, eval blocks with word starts) of a finished run."""
    from nlpssl.data import prepare_data
    from nlpssl.recipe import load_recipe
    from nlpssl.tokenizer import load_tokenizer

    recipe = load_recipe(run / "recipe.yaml", ["collator.kind=span"])  # a word-level kind: word starts too
    tokenizer = load_tokenizer(run / "tokenizer")
    return recipe, tokenizer, prepare_data(recipe, tokenizer).eval


@torch.no_grad()
def score(model, blocks, collator, batch_size: int) -> tuple[float, float, int]:
    """(masked-token accuracy, loss, masked tokens) of ``model`` on ``blocks`` masked by ``collator``."""
    correct = total = 0
    loss_sum = 0.0
    for start in range(0, len(blocks), batch_size):
        rows = blocks[start : start + batch_size]
        rows = [{"input_ids": i, "word_starts": w} for i, w in zip(rows["input_ids"], rows["word_starts"])]
        batch = collator(rows)
        selected = batch["labels"] != -100
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[selected]
        target = batch["labels"][selected]
        correct += int((logits.argmax(-1) == target).sum())
        total += int(target.numel())
        loss_sum += float(torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum"))
    if total == 0:
        raise SystemExit("masking_eval: no token was masked in the held-out blocks; is the eval split empty?")
    return correct / total, loss_sum / total, total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished masked-LM run folders")
    p.add_argument("--units", nargs="+", choices=UNITS, default=["token", "span"])
    p.add_argument("--mask-seeds", type=int, default=1,
                   help="average over this many mask seeds (the recipe's seed, then seed+1, ...), to see past "
                        "the luck of one draw of masks; prints mean and standard deviation")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForMaskedLM

    from nlpssl.collators.batching import fixed_copy
    from nlpssl.errors import NlpsslError
    from nlpssl.objectives import objective_for
    from nlpssl.recipe import load_recipe

    for run in args.runs:
        if not (run / "export" / "config.json").is_file() or not (run / "recipe.yaml").is_file():
            raise NlpsslError(f"{run}: not a finished nlpssl run (needs recipe.yaml and export/). "
                              "Pass the training.output_dir of a completed masked-LM run.")
    print(f"{'run':<28} {'trained with':<13}" + "".join(f"{u + ' masks':>28}" for u in args.units))
    for run in args.runs:
        recipe, tokenizer, blocks = held_out(run)
        trained = load_recipe(run / "recipe.yaml").collator.kind
        model = AutoModelForMaskedLM.from_pretrained(run / "export").eval()
        cells = []
        for unit in args.units:
            base = load_recipe(run / "recipe.yaml", [f"collator.kind={unit}", "collator.span_boundary=false"])
            seed = int(base.training.get("seed", 42))
            results = []
            for k in range(args.mask_seeds):
                masked = load_recipe(run / "recipe.yaml", [f"collator.kind={unit}", "collator.span_boundary=false",
                                                           f"training.seed={seed + k}"])
                results.append(score(model, blocks, fixed_copy(objective_for(masked).build_collator(tokenizer)), args.batch_size))
            accs = torch.tensor([r[0] for r in results], dtype=torch.float64)
            loss = sum(r[1] for r in results) / len(results)
            spread = f"±{accs.std().item():.3f}" if len(results) > 1 else ""
            cells.append(f"acc {accs.mean().item():.3f}{spread} loss {loss:.3f}")
        print(f"{str(run):<28} {trained:<13}" + "".join(f"{c:>28}" for c in cells), flush=True)
    print(f"(held-out blocks: {len(blocks)} of {recipe.data.block_size} tokens in the last run; masks fixed per "
          f"unit, seed and row, as in training's evaluation; {args.mask_seeds} mask seed(s))")


if __name__ == "__main__":
    main()
