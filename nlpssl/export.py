"""Export a run to a Hub-format folder that stock ``from_pretrained`` and ``pipeline`` load.

The folder holds ``config.json``, ``model.safetensors``, the tokenizer files (with the
post-processor suited to the objective: [CLS] ... [SEP] for masked-LM, nothing for causal-LM,
... [EOS] for T5), ``generation_config.json`` for generative models, the resolved recipe, the
loss curve and a model card ``README.md`` with Hub metadata. It is written to a temporary folder
and renamed into place, so a crash never leaves a half export.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from nlpssl.errors import NlpsslError



def find_weights(run_dir: Path) -> Path:
    """The run's final model folder, else its newest completely saved checkpoint."""
    from nlpssl.runs import has_weights, log, newest_complete_checkpoint, weights_problem

    final = run_dir / "final"
    if has_weights(final):
        if (problem := weights_problem(final)) is None:
            return final
        log(f"skipping {final}, which was not completely saved ({problem}); using the newest complete checkpoint")
    last = newest_complete_checkpoint(run_dir)
    if last is not None:
        return last
    raise NlpsslError(
        f"export: {str(run_dir)!r} holds no trained weights (no final/model.safetensors and no "
        "complete checkpoint-*/). Point it at a pretraining run folder (training.output_dir) that saved a checkpoint."
    )


# Every file an export folder can hold; a folder with anything else is not (only) an export.
EXPORT_FILES = frozenset({
    "config.json", "model.safetensors", "model.safetensors.index.json", "generation_config.json",
    "recipe.yaml", "README.md", "loss_curve.png", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "chat_template.jinja",
    "modules.json", "sentence_bert_config.json",  # sentence-transformers (SimCSE exports)
})
EXPORT_FOLDERS = {"1_Pooling": {"config.json"}}
_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def _export_file(p: Path) -> bool:
    """True if ``p`` is a file (or folder of files) that an export holds."""
    if p.is_dir() and not p.is_symlink() and p.name in EXPORT_FOLDERS:
        return all(q.is_file() and q.name in EXPORT_FOLDERS[p.name] for q in p.iterdir())
    return p.is_file() and (p.name in EXPORT_FILES or bool(_SHARD.fullmatch(p.name)))


def is_export(folder: Path) -> bool:
    """True if ``folder`` is an export that nlpssl wrote: its files and nothing else."""
    if not ((folder / "config.json").is_file() and (folder / "recipe.yaml").is_file()):
        return False
    return all(_export_file(p) for p in folder.iterdir())


def check_export_target(run_dir: Path, out_dir: Path) -> None:
    """Refuse an ``out_dir`` whose replacement would delete what the export did not create."""
    run, out = run_dir.resolve(), out_dir.resolve()
    if out == run or out in run.parents:
        raise NlpsslError(
            f"export: the output folder {str(out_dir)!r} is the run folder {str(run_dir)!r} or holds it, and "
            f"writing the export there would delete the run. Choose a new folder, e.g. {str(run_dir / 'export')!r}."
        )
    if out.parent == run and re.fullmatch(r"checkpoint-\d+", out.name):
        # The Trainer would take it for a checkpoint: resuming skips it with a note, save_total_limit deletes it.
        raise NlpsslError(
            f"export: the output folder {str(out_dir)!r} is named like one of the run's checkpoints, and the run "
            f"would take it for one (and may delete it when it rotates checkpoints). Choose another name, e.g. "
            f"{str(run_dir / ('export-' + out.name))!r}."
        )
    if holder := next((p for p in out.parents if is_export(p)), None):
        raise NlpsslError(
            f"export: the output folder {str(out_dir)!r} lies inside the earlier export {str(holder)!r}, which would "
            "then hold a folder no export has (loaders and `nlpssl export` would no longer take it for an export). "
            "Choose a folder outside it."
        )
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise NlpsslError(
            f"export: {str(out_dir)!r} exists and is not a folder. Choose a new folder for the export."
        )
    from nlpssl.cards import edited_by_hand, is_sealed

    card = out_dir / "README.md"
    if edited_by_hand(card):
        how = ("was edited after nlpssl wrote it" if is_sealed(card.read_text(encoding="utf-8")) else
               "carries no nlpssl digest (a card of someone else's, or from an nlpssl before cards had one), so an "
               "edit cannot be ruled out")
        raise NlpsslError(
            f"export: {str(card)!r}, the model card of the earlier export, {how}, and a new export would replace it. "
            "Copy your edits elsewhere and delete that README.md, or choose a new folder for the export."
        )
    if out_dir.exists() and any(out_dir.iterdir()) and not is_export(out_dir):
        held = sorted(p.name for p in out_dir.iterdir())
        foreign = [n for n in held if not _export_file(out_dir / n)]
        what = (f"it holds {', '.join(foreign[:5])}{'...' if len(foreign) > 5 else ''}, which no export has"
                if foreign and (out_dir / "config.json").is_file() and (out_dir / "recipe.yaml").is_file()
                else f"it holds {', '.join(held[:5])}{'...' if len(held) > 5 else ''}")
        raise NlpsslError(
            f"export: {str(out_dir)!r} exists and is not an earlier nlpssl export ({what}), so nlpssl will not "
            "replace it. Choose a new folder, or move that folder away yourself."
        )


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Export the pretraining run in ``run_dir`` to ``out_dir``.

    ``out_dir`` must be new, empty or an earlier export (which is replaced atomically); the export is
    built in a hidden temporary folder beside it, removed if anything fails.
    """
    import yaml

    from nlpssl.cards import pretrained_card
    from nlpssl.recipe import recipe_from_dict
    from nlpssl.runs import owner_tag

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    weights = None
    if run_dir.name.startswith("checkpoint-") and (run_dir.parent / "recipe.yaml").is_file():
        weights, run_dir = run_dir, run_dir.parent  # one checkpoint of a run: its recipe and tokenizer are the run's
        from nlpssl.runs import checkpoint_problem

        problem = checkpoint_problem(weights)
        if problem is not None:
            raise NlpsslError(f"export: {str(weights)!r} was not completely saved ({problem}). Export another "
                              f"checkpoint, or the run folder {str(run_dir)!r} (its final model or newest complete checkpoint).")
    if not (run_dir / "recipe.yaml").is_file():
        raise NlpsslError(
            f"export: {str(run_dir)!r} is not an nlpssl run folder (no recipe.yaml). "
            "Pass the training.output_dir of a `nlpssl pretrain` run, or one of its checkpoint-N folders."
        )
    if is_export(run_dir):
        raise NlpsslError(
            f"export: {str(run_dir)!r} is an export already, not a run folder (got config.json and model weights "
            "beside recipe.yaml). Copy it as it is, or pass the run folder it came from."
        )
    check_export_target(run_dir, out_dir)
    raw = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    recipe = recipe_from_dict(raw, name=run_dir.name, where=str(run_dir / "recipe.yaml"))
    if recipe.kind != "pretrain":
        # Its checkpoints hold a classifier, and its folder no tokenizer/: the export came out wrong or not at all.
        raise NlpsslError(
            f"export: {str(run_dir)!r} is a {recipe.kind} run (got kind: {recipe.kind} in its recipe.yaml), and "
            f"nlpssl export writes pretraining runs. A fine-tuning run exports itself: use {str(run_dir / 'export')!r}."
        )
    weights = weights or find_weights(run_dir)
    from nlpssl.objectives import objective_for

    objective = objective_for(recipe)
    objective.run_dir = run_dir  # a teacher's or encoder's facts as the run recorded them
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{owner_tag()}")
    tmp.mkdir()
    try:
        shutil.copy2(weights / "config.json", tmp / "config.json")
        model_type = write_stock_config(tmp / "config.json", decoder_only=objective.decoder_only)
        write_stock_weights(weights, tmp, model_type, drop=objective.training_only)
        write_tokenizer(recipe, run_dir, tmp, objective, weights)
        if objective.generative:
            write_generation_config(tmp)
        objective.write_extra(tmp, json.loads((tmp / "config.json").read_text()))
        (tmp / "recipe.yaml").write_text((run_dir / "recipe.yaml").read_text())
        if weights.name.startswith("checkpoint-"):
            # A checkpoint (chosen, or the newest of a run that did not finish): its own step and
            # figures, not the finished run's.
            state = json.loads((weights / "trainer_state.json").read_text())
            metrics, history = checkpoint_metrics(weights.name, state), state.get("log_history", [])
            if history:
                from nlpssl.runs import plot_loss_curve

                plot_loss_curve(history, tmp / "loss_curve.png")
        else:
            metrics = {}
            if (run_dir / "metrics.json").is_file():
                try:
                    metrics = json.loads((run_dir / "metrics.json").read_text())
                except ValueError as err:  # cut short by a kill (nlpssl before it was written atomically)
                    from nlpssl.runs import log

                    log(f"export: {str(run_dir / 'metrics.json')!r} is not readable JSON ({err}); the model card "
                        "gives no figures. Evaluate the export to get them.")
            if (run_dir / "loss_curve.png").is_file():
                shutil.copy2(run_dir / "loss_curve.png", tmp / "loss_curve.png")
        title = recipe.export.model_name or recipe_name(run_dir)
        (tmp / "README.md").write_text(pretrained_card(recipe, objective, metrics, weights, title, out_dir,
                                                           curve=(tmp / "loss_curve.png").is_file()))
        follow_umask(tmp)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def checkpoint_metrics(name: str, state: dict) -> dict:
    """The step of checkpoint ``name`` and the figures of its last evaluation (``state``: its trainer_state.json)."""
    evals = [h for h in state.get("log_history", []) if "eval_loss" in h]
    last = {k: v for k, v in evals[-1].items()
            if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))} if evals else {}
    return {"checkpoint": name, "steps": state.get("global_step"),
            **({"eval_step": evals[-1].get("step")} if evals else {}), **last}


def sweep_stale(out_dir: Path) -> None:
    """Remove temporary folders that an export to ``out_dir`` left behind when it was killed.

    Only nlpssl's own names (``.NAME.tmp-HOST-PID`` / ``.NAME.old-HOST-PID``) of a process of this
    machine that is gone are removed.
    """
    from nlpssl.runs import left_by_gone_process

    for leftover in out_dir.parent.glob(f".{out_dir.name}.*-*"):
        kind, _, tag = leftover.name.removeprefix(f".{out_dir.name}.").partition("-")
        if kind in ("tmp", "old") and leftover.is_dir() and left_by_gone_process(tag):
            if kind == "old" and not out_dir.exists():
                os.replace(leftover, out_dir)  # killed between the two renames: the old export comes back
            else:
                shutil.rmtree(leftover, ignore_errors=True)


def follow_umask(folder: Path) -> None:
    """Give every file the mode the user's umask asks for (safetensors writes weights 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~mask)


# Tensors that transformers 4.x reads under a second name. RoBERTa's masked-LM head: 5.x saves only
# lm_head.bias; 4.x ties lm_head.bias to lm_head.decoder.bias on load, and without the second name
# it keeps the decoder's zero bias (logits off by the whole bias, with no warning).
LEGACY_COPIES = {"roberta": {"lm_head.bias": "lm_head.decoder.bias"}}


def write_stock_weights(weights: Path, out: Path, model_type: str, drop: tuple[str, ...] = ()) -> None:
    """Copy the weights, leaving out training-only weights (names starting with a ``drop`` prefix:
    the span boundary head, ELECTRA's generator) and adding the second names that transformers 4.x
    needs (``LEGACY_COPIES``)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    prefix = tuple(drop)
    index = weights / "model.safetensors.index.json"
    if index.is_file():  # sharded (large models): copied as they are
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        if prefix and any(n.startswith(prefix) for n in weight_map):
            raise NlpsslError(
                f"export: {str(weights)!r} holds sharded weights with training-only tensors "
                f"({', '.join(p.rstrip('.') for p in prefix)}; got a model.safetensors.index.json). Re-save the "
                "model unsharded (a larger max_shard_size) before exporting."
            )
        for name in [index.name, *sorted(set(weight_map.values()))]:
            shutil.copy2(weights / name, out / name)
        return
    src, dst = weights / "model.safetensors", out / "model.safetensors"
    copies = LEGACY_COPIES.get(model_type, {})
    with safe_open(str(src), framework="pt") as f:
        names, metadata = list(f.keys()), f.metadata()
        missing = {new: old for old, new in copies.items() if old in names and new not in names}
        if not missing and not (prefix and any(n.startswith(prefix) for n in names)):
            shutil.copy2(src, dst)
            return
        kept = {n: f.get_tensor(n) for n in names if not (prefix and n.startswith(prefix))}
    kept |= {new: kept[old].clone() for new, old in missing.items()}
    save_file(kept, str(dst), metadata=metadata or {"format": "pt"})


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` to ``out_dir``, replacing an older export without a window of no export."""
    if out_dir.exists():
        from nlpssl.runs import owner_tag

        old = out_dir.with_name(f".{out_dir.name}.old-{owner_tag()}")
        os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            os.replace(old, out_dir)  # keep the earlier export
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def recipe_name(run_dir: Path) -> str:
    """The name of the recipe a run came from (the first line of its recipe.yaml), else the folder's name."""
    first = (run_dir / "recipe.yaml").read_text(encoding="utf-8").partition("\n")[0]
    found = re.match(r"# Resolved nlpssl recipe '([^']+)'", first)
    return found.group(1) if found else run_dir.name


def write_stock_config(path: Path, *, decoder_only: bool) -> str:
    """Make ``config.json`` mean the same model to transformers 4.x as to 5.x, and to llama.cpp.

    - ModernBERT: 5.x describes attention only with ``layer_types`` / ``rope_parameters``; 4.x ignores
      them and falls back to a global layer every third layer, 128-token windows elsewhere and other
      rope thetas. The legacy keys beside the new ones make both lines build the same model.
    - Llama: the legacy ``rope_theta`` beside ``rope_parameters``.
    - GPT-2: ``n_ctx`` (5.x no longer writes it; llama.cpp's converter needs it).
    - Decoder-only (causal-LM): BOS is [EOS]. The packer separates documents with [EOS] only, so a document's start
      follows [EOS]; the [BOS] embedding was never trained, and clients that prepend BOS (generate()
      with no prompt, lm-evaluation-harness) would condition on noise.
    """
    config = json.loads(path.read_text())
    match config.get("model_type"):
        case "modernbert":
            every = global_every(config.get("layer_types") or ["full_attention"] * config["num_hidden_layers"])
            rope = config.get("rope_parameters") or {}
            config["global_attn_every_n_layers"] = every
            config["global_rope_theta"] = rope.get("full_attention", {}).get("rope_theta", 160000.0)
            config["local_rope_theta"] = rope.get("sliding_attention", {}).get("rope_theta", 10000.0)
        case "llama":
            theta = (config.get("rope_parameters") or {}).get("rope_theta")
            if theta is not None:
                config["rope_theta"] = theta
        case "gpt2":
            config["n_ctx"] = config["n_positions"]
    if decoder_only:
        config["bos_token_id"] = config["eos_token_id"]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config["model_type"]


def global_every(layer_types: list[str]) -> int:
    """The n for which 4.x's rule "layer i is global iff i % n == 0" gives ``layer_types``."""
    for n in range(1, len(layer_types) + 1):
        if all((t == "full_attention") == (i % n == 0) for i, t in enumerate(layer_types)):
            return n
    raise NlpsslError(
        f"export: ModernBERT layer_types {layer_types} have no every-n-th-layer-global pattern, which "
        "transformers 4.x needs (global_attn_every_n_layers). Use all full-attention layers (nlpssl's default)."
    )


def write_tokenizer(recipe, run_dir: Path, out: Path, objective, weights: Path | None = None) -> None:
    """The export's tokenizer: the copy kept beside ``weights`` (a reused tokenizer, whose folder may have
    changed since), else the folder the run took it from, else the run's own ``tokenizer/``."""
    from nlpssl.tokenizer import load_tokenizer, set_template

    path = objective.tokenizer_path()
    if weights is not None and (weights / "tokenizer.json").is_file():
        path = str(weights)
    tokenizer = load_tokenizer(Path(path) if path else run_dir / "tokenizer")
    set_template(tokenizer, objective.template)
    from nlpssl.models import config_positions

    positions = config_positions(json.loads((out / "config.json").read_text()))
    if positions:
        # A tokenizer shared through tokenizer.path keeps the model_max_length of the run it was trained
        # for; pipelines truncate to it, so a longer one than the model's positions crashed them.
        tokenizer.model_max_length = positions
    save_stock_tokenizer(tokenizer, out, objective.arch, decoder_only=objective.decoder_only)


def save_stock_tokenizer(tokenizer, out: Path, arch: str, *, decoder_only: bool = False) -> None:
    """``save_pretrained``, then a ``tokenizer_config.json`` that transformers 4.x and 5.x read alike.

    - ``tokenizer_class: PreTrainedTokenizerFast`` (4.x has no ``TokenizersBackend``);
    - the sentinels under ``additional_special_tokens`` (4.x reads ``extra_special_tokens`` as a dict);
    - no ``is_local`` / ``local_files_only`` (facts about this machine's load, not the tokenizer);
    - ``token_type_ids`` for classic BERT (segment ids for sentence pairs), none for the others;
    - decoder-only: left padding (batched ``generate``) and BOS = [EOS] (see ``write_stock_config``).
    """
    if decoder_only:
        tokenizer.bos_token = tokenizer.eos_token
    tokenizer.save_pretrained(str(out))
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text())
    for key in ("is_local", "local_files_only", "backend"):
        config.pop(key, None)
    extra = config.pop("extra_special_tokens", None)
    if extra:
        config["additional_special_tokens"] = list(extra.values() if isinstance(extra, dict) else extra)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["model_input_names"] = (["input_ids", "token_type_ids", "attention_mask"] if arch == "bert"
                                   else ["input_ids", "attention_mask"])
    config["padding_side"] = "left" if decoder_only else "right"
    path.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_generation_config(out: Path) -> None:
    """Causal-LM samples (a demo that writes stories); T5 decodes greedily, so span fills are repeatable.

    Read from the export's own ``config.json`` (``write_stock_config``), so BOS is the one it declares.
    """
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(str(out))
    causal = not getattr(config, "is_encoder_decoder", False)
    sampling = dict(do_sample=True, temperature=0.8, top_k=50, top_p=0.95) if causal else dict(do_sample=False)
    GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        decoder_start_token_id=getattr(config, "decoder_start_token_id", None),
        max_new_tokens=48, **sampling,
    ).save_pretrained(str(out))
