"""The `nlpssl` command line. No logic lives here: each command calls one library function.

Heavy libraries (torch, transformers, datasets) are imported inside the commands, so
`nlpssl --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from nlpssl.errors import NlpsslError


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe file (recipes/NAME.yaml) or shipped recipe name")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, e.g. training.max_steps=100")


def cmd_recipe_list(a) -> None:
    """Print the shipped recipes with their one-line purpose."""
    from nlpssl.recipe import describe, list_recipes

    for path in list_recipes():
        print(f"{path.stem:<20} {describe(path)}")


def cmd_recipe_show(a) -> None:
    """Print the fully resolved recipe, defaults and overrides included."""
    from nlpssl.recipe import load_recipe

    print(load_recipe(a.recipe, a.overrides).to_yaml(), end="")


def cmd_recipe_validate(a) -> None:
    """Check recipes with the overrides applied to each; every problem at once, then pretrain's notes."""
    import re
    from pathlib import Path

    from nlpssl.recipe import RecipeError, load_recipe, training_notes

    # RECIPE... then key=value overrides, applied to each recipe (a file whose name has a '=' is a file).
    def is_override(arg: str) -> bool:
        return bool(re.match(r"[A-Za-z_]\w*(\.\w+)*=", arg)) and not Path(arg).is_file()

    names, overrides = [r for r in a.recipes if not is_override(r)], [r for r in a.recipes if is_override(r)]
    if not names:
        raise NlpsslError(f"recipe validate: no recipe given, only overrides (got {a.recipes}). Name a recipe first, "
                          "e.g. `nlpssl recipe validate bert-tiny training.max_steps=100`.")
    failed = 0
    for name in names:
        try:
            recipe = load_recipe(name, overrides)
            notes = []
            if recipe.kind == "finetune":  # the checks finetune() runs before it reads data
                from nlpssl.finetune import check_recipe, model_note

                check_recipe(recipe)
                notes.append(model_note(recipe))
            else:  # a teacher or encoder folder may still be to be trained: a note, as for finetune
                from nlpssl.objectives import objective_for
                from nlpssl.pretrain import check_inputs

                check_inputs(recipe)  # the data files and a reused tokenizer, as pretrain checks them

                try:
                    objective_for(recipe).preflight()
                except NlpsslError as err:
                    notes.append(str(err))
                notes += training_notes(recipe)  # what pretrain says before the data
            print(f"ok      {name}" + "".join(f"\n        note: {n}" for n in notes if n))
        except NlpsslError as err:
            failed += 1
            print(f"invalid {name}\n{err}" if isinstance(err, RecipeError) else f"invalid {name}: {err}")
    if failed:
        raise SystemExit(1)


def _recipe_paths(recipe) -> dict:
    """The folders a run writes, for file-system error messages."""
    from pathlib import Path

    paths = {"training.output_dir": recipe.output_dir}
    if recipe.kind == "pretrain":
        paths["data.cache_dir"] = Path(recipe.data.cache_dir).expanduser()
    return paths


def cmd_tokenizer_train(a) -> None:
    """Train the recipe's shared tokenizer on its text (default: into the run folder pretrain reads)."""
    from pathlib import Path

    from nlpssl.errors import NlpsslError, storage_errors
    from nlpssl.models import max_positions
    from nlpssl.objectives import objective_for, objective_name
    from nlpssl.pretrain import train_recipe_tokenizer
    from nlpssl.recipe import load_recipe
    from nlpssl.runs import write_run_recipe

    recipe = load_recipe(a.recipe, a.overrides, kind="pretrain")
    reused = objective_for(recipe).tokenizer_path()  # tokenizer.path, or a teacher's / an encoder's
    if reused:  # pretrain uses that folder's tokenizer, so one trained here would go unused
        if recipe.tokenizer.path:
            fix = ("To train one into that folder, pass it as --out and set tokenizer.path=null; to reuse it, "
                   "there is nothing to train.")
            raise NlpsslError(f"tokenizer train: the recipe reuses a trained tokenizer (got tokenizer.path={reused!r}), "
                              f"so `nlpssl pretrain` would not use one trained here. {fix}")
        key = {"distill": "distill.teacher", "simcse": "simcse.encoder"}[objective_name(recipe)]
        raise NlpsslError(
            f"tokenizer train: this recipe trains with the tokenizer of its {key} (got {key}={reused!r}), whose ids "
            f"that model was trained on, so `nlpssl pretrain` would not use one trained here. There is nothing to "
            f"train: run `nlpssl pretrain {a.recipe}`."
        )
    out = Path(a.out) if a.out else recipe.output_dir / "tokenizer"
    with storage_errors({"--out": out}):
        tok = train_recipe_tokenizer(recipe, out, max_positions(recipe.model))
        if out.absolute() == (recipe.output_dir / "tokenizer").absolute():
            # The run's recipe.yaml beside its tokenizer: `nlpssl pretrain` with other tokenizer or text
            # settings is then refused with the keys that differ, instead of training on this tokenizer
            # and exporting a recipe.yaml that describes another.
            write_run_recipe(recipe)
    print(f"tokenizer: {len(tok):,} tokens ({recipe.tokenizer.algorithm}) saved to {out}")
    if len(tok) < recipe.tokenizer.vocab_size:  # a small corpus, or a source that was not all read
        print(f"tokenizer: fewer than tokenizer.vocab_size={recipe.tokenizer.vocab_size:,}: the text holds no more "
              f"pieces, so models trained with it have a vocabulary of {len(tok):,}. Check data.source (and "
              "data.max_texts, tokenizer.max_texts) if it should hold more.")


def cmd_pretrain(a) -> None:
    """Pretrain as the recipe says and export; print the run's figures."""
    import os

    from nlpssl.errors import storage_errors
    from nlpssl.pretrain import pretrain
    from nlpssl.recipe import load_recipe

    recipe = load_recipe(a.recipe, a.overrides, kind="pretrain")
    with storage_errors(_recipe_paths(recipe)):
        result = pretrain(recipe)
    if result.interrupted:
        raise SystemExit(130)
    if int(os.environ.get("RANK", "0")) != 0 or result.already_finished:
        return  # rank 0 reports for the whole job; a finished run said so already
    print(json.dumps(result.metrics, indent=2))  # the export's folder was logged as it was written


def cmd_gguf(a) -> None:
    """Convert a causal-LM export to GGUF with llama.cpp's own converter."""
    from pathlib import Path

    from nlpssl.gguf import convert

    model = Path(a.model_dir)
    # Resolved first: "." (run inside the export) has no name to replace.
    out = Path(a.out) if a.out else model.resolve().with_name(f"{model.resolve().name}.gguf")
    print(f"gguf: {convert(model, out, a.converter, a.outtype, a.python)}")


def cmd_export(a) -> None:
    """Export a run (its final model or newest checkpoint), or one checkpoint, to a Hub-format folder."""
    from pathlib import Path

    from nlpssl.errors import storage_errors
    from nlpssl.export import export_run

    with storage_errors({"OUT_DIR": Path(a.out_dir)}):
        print(f"export: {export_run(a.run_dir, a.out_dir)}")


def cmd_fill_mask(a) -> None:
    """Fill the mask of a text with a masked-LM export; a table, or JSON with --json."""
    from dataclasses import asdict

    from nlpssl.demo import fill_mask

    preds = fill_mask(a.model_dir, a.text, top_k=a.top_k)
    if a.json:
        print(json.dumps([asdict(p) for p in preds], indent=2))
    else:
        def shown(text: str) -> str:  # one row each: line breaks and tabs as \n, \t (--json has them as is)
            return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")

        for p in preds:
            print(f"{p.score:6.3f}  {shown(p.token):<14} {shown(p.sequence)}")


def cmd_generate(a) -> None:
    """Continue a prompt with a causal-LM export (or fill a T5 export's sentinels)."""
    from nlpssl.demo import generate

    text = generate(
        a.model_dir, a.prompt, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
        top_k=a.top_k, top_p=a.top_p, seed=a.seed, greedy=a.greedy,
    )
    print(json.dumps({"prompt": a.prompt, "text": text}) if a.json else text)


def cmd_finetune(a) -> None:
    """Fine-tune an export on text classification; print the figures and the export's folder."""
    from nlpssl.errors import storage_errors
    from nlpssl.finetune import finetune
    from nlpssl.recipe import load_recipe

    recipe = load_recipe(a.recipe, a.overrides, kind="finetune")
    with storage_errors(_recipe_paths(recipe)):
        result = finetune(recipe)
    print(json.dumps(result.metrics, indent=2))
    print(f"export: {result.export_dir}")


def cmd_probe(a) -> None:
    """Compare the export with scratch and bag-of-words at label budgets; print the table."""
    from nlpssl.labelled import ColumnError
    from nlpssl.probe import probe, tables

    try:
        report = probe(
            a.model_dir, a.task, a.overrides, labels=a.labels, seeds=a.seeds, out_dir=a.out,
            learning_rates=a.learning_rates, arms=a.arms, epochs=a.epochs, card=a.card, self_train=a.self_train,
            teachers=a.teachers,
        )
    except ColumnError as err:  # the probe takes the task's settings as --set KEY=VALUE, not as a recipe
        raise NlpsslError(err.message(flag="--set")) from err
    print(f"\nAccuracy on {report.scored_on} (mean ± std over {report.seeds} seed(s)):\n")
    print(tables(report))
    print(f"\nprobe: {report.out_dir / 'probe.json'}, {report.out_dir / 'probe.md'}, {report.out_dir / 'probe.png'}")


def cmd_classify(a) -> None:
    """Score a text (or a pair) with a fine-tuned classifier export, most likely label first."""
    from dataclasses import asdict

    from nlpssl.demo import classify

    preds = classify(a.model_dir, a.text, top_k=a.top_k, pair=a.pair)
    if a.json:
        print(json.dumps([asdict(p) for p in preds], indent=2))
    else:
        for p in preds:
            print(f"{p.score:6.3f}  {p.label}")


def cmd_embed(a) -> None:
    """Print sentence vectors of texts (JSON lines), or each text's nearest others with --nearest."""
    from dataclasses import asdict

    from nlpssl.demo import embed

    texts = list(a.texts)
    if a.file:
        texts += _file_texts(a.file)
    found = embed(a.model_dir, texts, nearest=a.nearest)
    if a.nearest is None:
        for text, vector in zip(texts, found):
            print(json.dumps({"text": text, "vector": [round(x, 6) for x in vector]}))
    elif a.json:
        print(json.dumps([{"text": t, "nearest": [asdict(n) for n in ns]} for t, ns in zip(texts, found)], indent=2))
    else:
        for text, neighbours in zip(texts, found):
            print(text)
            for n in neighbours:
                print(f"  {n.score:6.3f}  {n.text}")


def _file_texts(name: str) -> list[str]:
    """The non-blank lines of embed's --file, or an error that names the option."""
    from pathlib import Path

    path = Path(name)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "file not found"
        raise NlpsslError(f"embed: --file {name!r}: {what} (got {str(path.absolute())!r}). "
                          "Pass a UTF-8 text file with one text per line, or the texts as arguments.")
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise NlpsslError(f"embed: --file {name!r}: not UTF-8 text (got byte {err.object[err.start]:#04x} at "
                          f"offset {err.start}). Save the file as UTF-8.") from err


class _Parser(argparse.ArgumentParser):
    """Options may stand before or after a command's free arguments.

    Plain argparse ends a nargs="*" positional at the first option, so `embed MODEL --nearest 3 a b`
    failed with "unrecognized arguments: a b". A command's own parser reads its options first and
    then its positionals (argparse's intermixed parsing, which a parser of subcommands cannot use).
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._subparsers is not None or self._intermixing:  # intermixed parsing calls back in here
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    from nlpssl import __version__

    parser = _Parser(
        prog="nlpssl", description="Self-supervised pretraining of language models on Hugging Face parts."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    recipe = sub.add_parser("recipe", help="list, show or validate recipes").add_subparsers(dest="action", required=True)
    recipe.add_parser("list", help="shipped recipes").set_defaults(fn=cmd_recipe_list)
    show = recipe.add_parser("show", help="print the resolved recipe (with overrides)")
    _recipe_args(show)
    show.set_defaults(fn=cmd_recipe_show)
    val = recipe.add_parser("validate", help="check recipes; every problem reported at once")
    val.add_argument("recipes", nargs="+", metavar="RECIPE",
                     help="recipe files or shipped recipe names, then key=value overrides applied to each")
    val.set_defaults(fn=cmd_recipe_validate)

    tok = sub.add_parser("tokenizer", help="train the shared tokenizer").add_subparsers(dest="action", required=True)
    train = tok.add_parser("train", help="train the recipe's tokenizer on its text source")
    _recipe_args(train)
    train.add_argument("--out", help="output folder (default: <training.output_dir>/tokenizer)")
    train.set_defaults(fn=cmd_tokenizer_train)

    pre = sub.add_parser("pretrain", help="tokenizer -> data -> Trainer -> export")
    _recipe_args(pre)
    pre.set_defaults(fn=cmd_pretrain)

    exp = sub.add_parser("export", help="export a run folder to a Hub-format folder")
    exp.add_argument("run_dir", help="a pretraining run folder (training.output_dir): its final model, else its "
                     "latest complete checkpoint; or one of its checkpoint-N folders")
    exp.add_argument("out_dir", help="the export folder to write (an earlier export there is replaced)")
    exp.set_defaults(fn=cmd_export)

    gg = sub.add_parser("gguf", help="convert a causal-LM export to GGUF with llama.cpp's convert_hf_to_gguf.py")
    gg.add_argument("model_dir", help="a GPT-2 or Llama export")
    gg.add_argument("--converter", required=True,
                    help="llama.cpp's convert_hf_to_gguf.py (a llama.cpp checkout, or vendor/llama.cpp/ in the "
                         "llama-cpp-python source distribution)")
    gg.add_argument("--out", default=None, help="the .gguf file to write (default: MODEL_DIR.gguf beside the folder)")
    gg.add_argument("--outtype", default="f32", choices=["f32", "f16", "bf16", "q8_0"])
    gg.add_argument("--python", default=None,
                    help="the Python that runs the converter, with its requirements installed (default: this one)")
    gg.set_defaults(fn=cmd_gguf)

    fm = sub.add_parser("fill-mask", help='fill "[MASK]" with a masked-LM export')
    fm.add_argument("model_dir")
    fm.add_argument("text")
    fm.add_argument("--top-k", type=int, default=5, help="how many fillings to print, most likely first")
    fm.add_argument("--json", action="store_true")
    fm.set_defaults(fn=cmd_fill_mask)

    gen = sub.add_parser("generate", help="continue a prompt with a causal-LM export")
    gen.add_argument("model_dir")
    gen.add_argument("prompt")
    gen.add_argument("--max-new-tokens", type=int, default=40)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-k", type=int, default=50)
    gen.add_argument("--top-p", type=float, default=0.95)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(fn=cmd_generate)

    ft = sub.add_parser("finetune", help="fine-tune an export on text classification")
    _recipe_args(ft)
    ft.set_defaults(fn=cmd_finetune)

    from nlpssl.probe import ARMS, DEFAULT_LEARNING_RATES

    pr = sub.add_parser(
        "probe", help="does pretraining help my task? the export vs. scratch and bag-of-words at label budgets",
        description="Fine-tune MODEL_DIR, the same architecture from scratch and a bag-of-words classifier on "
        "the same labelled rows at each label budget; print the accuracy table, write probe.json/.md/.png.",
    )
    pr.add_argument("model_dir", help="an export (or a pretraining run folder holding one)")
    pr.add_argument("--task", default="builtin",
                    help="a finetune recipe (e.g. finetune-sst2), a labelled .csv/.tsv/.jsonl/.parquet file, or builtin")
    pr.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="overrides of the task recipe, e.g. --set task.text_column=sentence training.per_device_train_batch_size=16")
    pr.add_argument("--labels", nargs="+", default=["500", "1000", "all"], help="label budgets (row counts or 'all')")
    pr.add_argument("--seeds", type=int, default=3, help="draws of the labelled rows per budget")
    pr.add_argument("--learning-rates", nargs="+", type=float, default=list(DEFAULT_LEARNING_RATES),
                    help="fine-tuning grid searched for both neural arms")
    pr.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: ~1,000 steps, 2-20 epochs, early stopping)")
    pr.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    pr.add_argument("--out", default=None, help="output folder (default: probe-TASK beside the export)")
    pr.add_argument("--card", action="store_true", help="add the results to the export's model card (model-index)")
    pr.add_argument("--self-train", type=int, default=0, metavar="N",
                    help="self-training for every arm: its model labels up to N further rows of the pool (labels "
                    "never read), the most confident half joins the labelled rows, and it is trained again (default 0: off)")
    pr.add_argument("--teachers", type=int, default=1, metavar="K",
                    help="with --self-train: K fine-tunes of each neural arm (training seeds) label the rows by their "
                    "averaged probabilities, and one model learns from them (default 1: the chosen model alone)")
    pr.set_defaults(fn=cmd_probe)

    em = sub.add_parser("embed", help="sentence vectors of texts, or each text's nearest neighbours among them",
                        description="Encode texts with an encoder export (a SimCSE export pools as it declares; "
                        "others: mean pooling). Prints one JSON line per text with its vector, or with --nearest K "
                        "each text's K most similar other texts (cosine similarity).")
    em.add_argument("model_dir")
    em.add_argument("texts", nargs="*", help="texts to encode")
    em.add_argument("--file", default=None, help="a UTF-8 text file, one text per line (added after TEXTS)")
    em.add_argument("--nearest", type=int, default=None, metavar="K", help="print the K nearest other texts instead")
    em.add_argument("--json", action="store_true", help="with --nearest: JSON output")
    em.set_defaults(fn=cmd_embed)

    cl = sub.add_parser("classify", help="classify a text with a fine-tuned export")
    cl.add_argument("model_dir")
    cl.add_argument("text")
    cl.add_argument("--pair", default=None, metavar="TEXT",
                    help="the second text, for a classifier fine-tuned on text pairs (task.text_pair_column)")
    cl.add_argument("--top-k", type=int, default=None, metavar="K",
                    help="print the K most likely labels (default: all)")
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(fn=cmd_classify)
    return parser


# Arguments that name files or folders: `--out=~/x` and quoted '~/x' reach nlpssl with the tilde unexpanded
# (the shell expands it only at the start of a word), so nlpssl expands it, as recipe paths are.
PATH_ARGS = ("recipe", "recipes", "out", "run_dir", "out_dir", "model_dir", "converter", "python", "file", "task")


def _expand_paths(args) -> None:
    for name in PATH_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value.startswith("~"):
            setattr(args, name, os.path.expanduser(value))
        elif isinstance(value, list):
            setattr(args, name, [os.path.expanduser(v) if isinstance(v, str) and v.startswith("~") else v
                                 for v in value])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _expand_paths(args)
    code = _run(args)
    _end_distributed(code)
    return code


def _run(args) -> int:
    try:
        args.fn(args)
    except NlpsslError as err:
        print(f"nlpssl: error: {err}" if "\n" not in str(err) else f"nlpssl: error:\n{err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nlpssl: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # a file-system fault no command turned into an NlpsslError
        from nlpssl.errors import storage_message

        where = f" ({err.filename!r})" if getattr(err, "filename", None) else ""
        print(f"nlpssl: error: {storage_message(err, {}) or f'{err.strerror or err}{where}'}", file=sys.stderr)
        return 1
    return 0


def _end_distributed(code: int) -> None:
    """In a torchrun / accelerate launch process, leave at once once the command is done.

    Interpreter shutdown in such a process sometimes destroyed a still-joinable C++ thread of the
    distributed stack: "terminate called without an active exception", SIGABRT, and the launcher
    reporting a failed run whose every file had been written (2 of 16 two-process CPU runs on a
    loaded 2-core machine, before and after destroying the process group; none in a plain run).
    So after the process group is destroyed and the output flushed, the process exits without that
    teardown. Everything the command writes is closed by then.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
