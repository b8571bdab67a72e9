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

PIPELINE_TAG = {"mlm": "fill-mask", "causal": "text-generation", "t5": "text2text-generation"}
SPAN_BOUNDARY_HEAD = "span_boundary_head"  # training-only submodule (nlpssl.training), never exported


def find_weights(run_dir: Path) -> Path:
    """The run's final model folder, else its newest completely saved checkpoint."""
    from nlpssl.pretrain import has_weights, newest_complete_checkpoint

    final = run_dir / "final"
    if has_weights(final):
        return final
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
})
_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def is_export(folder: Path) -> bool:
    """True if ``folder`` is an export that nlpssl wrote: its files and nothing else."""
    if not ((folder / "config.json").is_file() and (folder / "recipe.yaml").is_file()):
        return False
    return all(p.is_file() and (p.name in EXPORT_FILES or _SHARD.fullmatch(p.name)) for p in folder.iterdir())


def check_export_target(run_dir: Path, out_dir: Path) -> None:
    """Refuse an ``out_dir`` whose replacement would delete what the export did not create."""
    run, out = run_dir.resolve(), out_dir.resolve()
    if out == run or out in run.parents:
        raise NlpsslError(
            f"export: the output folder {str(out_dir)!r} is the run folder {str(run_dir)!r} or holds it, and "
            f"writing the export there would delete the run. Choose a new folder, e.g. {str(run_dir / 'export')!r}."
        )
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise NlpsslError(
            f"export: {str(out_dir)!r} exists and is not a folder. Choose a new folder for the export."
        )
    if out_dir.exists() and any(out_dir.iterdir()) and not is_export(out_dir):
        raise NlpsslError(
            f"export: {str(out_dir)!r} exists and is not an earlier nlpssl export (it holds "
            f"{', '.join(sorted(p.name for p in out_dir.iterdir())[:5])}...), so nlpssl will not replace it. "
            "Choose a new folder, or move that folder away yourself."
        )


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Export the pretraining run in ``run_dir`` to ``out_dir``.

    ``out_dir`` must be new, empty or an earlier export (which is replaced atomically); the export is
    built in a hidden temporary folder beside it, removed if anything fails.
    """
    import yaml

    from nlpssl.recipe import recipe_from_dict

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise NlpsslError(
            f"export: {str(run_dir)!r} is not an nlpssl run folder (no recipe.yaml). "
            "Pass the training.output_dir of a `nlpssl pretrain` run."
        )
    check_export_target(run_dir, out_dir)
    raw = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    recipe = recipe_from_dict(raw, name=run_dir.name, where=str(run_dir / "recipe.yaml"))
    weights = find_weights(run_dir)
    from nlpssl.models import OBJECTIVE

    objective = OBJECTIVE[recipe.model.arch]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        shutil.copy2(weights / "config.json", tmp / "config.json")
        write_stock_weights(weights, tmp)
        write_tokenizer(recipe, run_dir, tmp, objective)
        if objective != "mlm":
            write_generation_config(tmp, weights)
        (tmp / "recipe.yaml").write_text((run_dir / "recipe.yaml").read_text())
        metrics = {}
        if (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text())
        if (run_dir / "loss_curve.png").is_file():
            shutil.copy2(run_dir / "loss_curve.png", tmp / "loss_curve.png")
        (tmp / "README.md").write_text(model_card(recipe, objective, metrics, weights))
        follow_umask(tmp)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def sweep_stale(out_dir: Path) -> None:
    """Remove temporary folders that an export to ``out_dir`` left behind when it was killed.

    Only nlpssl's own names (``.NAME.tmp-PID`` / ``.NAME.old-PID``) whose process is gone are removed.
    """
    for leftover in out_dir.parent.glob(f".{out_dir.name}.*-*"):
        kind, _, pid = leftover.name.removeprefix(f".{out_dir.name}.").partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and leftover.is_dir() and not _alive(int(pid)):
            if kind == "old" and not out_dir.exists():
                os.replace(leftover, out_dir)  # killed between the two renames: the old export comes back
            else:
                shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover from an earlier export in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def follow_umask(folder: Path) -> None:
    """Give every file the mode the user's umask asks for (safetensors writes weights 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~mask)


def write_stock_weights(weights: Path, out: Path) -> None:
    """Copy the weights, leaving out training-only heads (the span boundary head) if present."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    prefix = f"{SPAN_BOUNDARY_HEAD}."
    index = weights / "model.safetensors.index.json"
    if index.is_file():  # sharded (large models): copied as they are
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        if any(n.startswith(prefix) for n in weight_map):
            raise NlpsslError(
                f"export: {str(weights)!r} holds sharded weights with the training-only span boundary "
                "head (got a model.safetensors.index.json). Re-save the model unsharded (a larger "
                "max_shard_size) before exporting, or train without collator.span_boundary."
            )
        for name in [index.name, *sorted(set(weight_map.values()))]:
            shutil.copy2(weights / name, out / name)
        return
    src, dst = weights / "model.safetensors", out / "model.safetensors"
    with safe_open(str(src), framework="pt") as f:
        names, metadata = list(f.keys()), f.metadata()
        if not any(n.startswith(prefix) for n in names):
            shutil.copy2(src, dst)
            return
        kept = {n: f.get_tensor(n) for n in names if not n.startswith(prefix)}
    save_file(kept, str(dst), metadata=metadata or {"format": "pt"})


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` to ``out_dir``, replacing an older export without a window of no export."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            os.replace(old, out_dir)  # keep the earlier export
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def write_tokenizer(recipe, run_dir: Path, out: Path, objective: str) -> None:
    from nlpssl.tokenizer import load_tokenizer, set_template

    source = Path(recipe.tokenizer.path) if recipe.tokenizer.path else run_dir / "tokenizer"
    tokenizer = load_tokenizer(source)
    set_template(tokenizer, objective)
    tokenizer.save_pretrained(str(out))


def write_generation_config(out: Path, weights: Path) -> None:
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(str(weights))
    GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        decoder_start_token_id=getattr(config, "decoder_start_token_id", None),
        max_new_tokens=48, do_sample=True, temperature=0.8, top_k=50, top_p=0.95,
    ).save_pretrained(str(out))


def model_card(recipe, objective: str, metrics: dict, weights: Path) -> str:
    """A model card with Hub metadata (YAML front matter) and the run's figures."""
    import yaml

    metric_names = ["accuracy"] if objective == "mlm" else ["perplexity"]
    source = recipe.data.source
    meta = {
        "library_name": "transformers",
        "pipeline_tag": PIPELINE_TAG[objective],
        "license": recipe.export.license,
        "tags": ["nlpssl", recipe.model.arch, {"mlm": "masked-lm", "causal": "causal-lm", "t5": "t5"}[objective],
                 "pretraining"],
        "datasets": [source.removeprefix("hub:") if source.startswith("hub:") else
                     ("nlpssl-builtin-stories" if source == "builtin" else Path(source).name)],
        "metrics": metric_names,
    }
    name = recipe.export.model_name or recipe.name
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if not isinstance(v, (list, dict)))
    usage = {
        "mlm": 'pipe = pipeline("fill-mask", model="PATH")\npipe("The cat sat on the [MASK].")',
        "causal": 'pipe = pipeline("text-generation", model="PATH")\npipe("Once upon a time")',
        "t5": 'from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n'
              'tok = AutoTokenizer.from_pretrained("PATH")\n'
              'model = AutoModelForSeq2SeqLM.from_pretrained("PATH")\n'
              'out = model.generate(**tok("The cat <extra_id_0> on the mat.", return_tensors="pt"))\n'
              'print(tok.decode(out[0]))',
    }[objective]
    curve = "\n## Loss curve\n\n![loss curve](loss_curve.png)\n" if (weights.parent / "loss_curve.png").exists() else ""
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {name}

A {recipe.model.size} {recipe.model.arch} ({objective}) pretrained from scratch with
[nlpssl](https://pypi.org/project/nlpssl/) on `{source}` (collator `{recipe.collator.kind}`,
block size {recipe.data.block_size}, {recipe.tokenizer.algorithm} tokenizer of {recipe.tokenizer.vocab_size} tokens).
It is a stock transformers model: no `trust_remote_code`, no nlpssl needed to load it.

## Use

```python
{"" if objective == "t5" else "from transformers import pipeline"}
{usage}
```

## Results (held-out split of the training corpus)

| metric | value |
|---|---|
{rows}
{curve}
## Training recipe

The full resolved recipe is in `recipe.yaml` beside this card.
"""


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
