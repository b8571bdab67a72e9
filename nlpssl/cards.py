"""Model cards, in one place: the Hub-format README.md of pretraining exports and fine-tuned
classifiers (YAML front matter with ``model-index`` results, usage, figures), and the edits
``nlpssl probe --card`` makes to them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlpssl.errors import NlpsslError

if TYPE_CHECKING:
    from nlpssl.recipe import Recipe

# The oldest transformers 4.x line checked to load every architecture the same as 5.x (tests/test_clients.py;
# ModernBERT arrived in 4.48, older lines are not checked).
OLDEST_4X = "4.48"

# Every card nlpssl writes ends with this comment, holding the digest of the text above it, so a card
# changed by hand afterwards is told apart from one nlpssl may replace (an export again, `probe --card`).
_SEAL = re.compile(r"\n<!-- nlpssl card sha256:([0-9a-f]{64}) -->\n")


def seal(text: str) -> str:
    """The card with its closing digest comment (invisible on the Hub)."""
    text = text.rstrip("\n") + "\n"
    return f"{text}\n<!-- nlpssl card sha256:{hashlib.sha256(text.encode()).hexdigest()} -->\n"


def unsealed(text: str) -> str:
    """The card without its digest comment (anything after the comment is kept: someone added it)."""
    found = _SEAL.search(text)
    return text if found is None else text[:found.start()] + text[found.end():]


def is_sealed(text: str) -> bool:
    """True if the card text carries nlpssl's digest comment."""
    return _SEAL.search(text) is not None


def edited_by_hand(card: Path) -> bool:
    """True if the card at ``card`` changed after nlpssl last wrote it, or carries no digest to tell
    (a card of someone else's, or of an nlpssl from before the digest); False if there is no card."""
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8")
    found = _SEAL.search(text)
    if found is None:
        return True
    above, after = text[:found.start()], text[found.end():]
    return bool(after.strip()) or hashlib.sha256(above.encode()).hexdigest() != found.group(1)


def pretrained_card(recipe, objective, metrics: dict, weights: Path, title: str, out_dir: Path,
                    curve: bool = False) -> str:
    """A model card with Hub metadata (YAML front matter, ``model-index`` results) and the run's figures;
    ``curve``: the export holds ``loss_curve.png``, which the card shows."""
    import yaml

    source = recipe.data.source
    arch = objective.arch
    metric, key = objective.metric
    value = metrics.get(key)
    held_out = f"held-out {recipe.data.eval_fraction:g} of the training text"
    meta = {"library_name": "transformers"}
    if objective.pipeline_tag:
        meta["pipeline_tag"] = objective.pipeline_tag
    meta |= {"license": recipe.export.license, "tags": ["nlpssl", arch, objective.tag, "pretraining"]}
    if source.startswith("hub:"):  # the Hub's datasets: field takes dataset ids only
        meta["datasets"] = [source.removeprefix("hub:").split(":")[0]]
    if isinstance(value, (int, float)):
        meta["model-index"] = [{"name": title, "results": [{
            "task": {"type": objective.pipeline_tag or objective.task_type, "name": objective.tag},
            "dataset": {"name": f"{_source_name(source)} ({held_out})", "type": _source_id(source)},
            "metrics": [{"type": metric, "value": round(float(value), 4), "name": f"eval {metric}"}],
        }]}]
    where = out_dir.as_posix()
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if not isinstance(v, (list, dict)))
    usage, notes = objective.usage, objective.card_notes(arch)
    curve = "\n## Loss curve\n\n![loss curve](loss_curve.png)\n" if curve else ""
    return seal(f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {title}

A {objective.described()} ({objective.tag}) {objective.origin()} with nlpssl on
{_source_name(source)}{_mix_phrase(recipe)} (collator `{recipe.collator.kind}`, block size {recipe.data.block_size},
{_tokenizer_phrase(recipe, objective)}).
It is a stock transformers model: no `trust_remote_code`, no nlpssl needed to load it.

## Use

```python
model = "{where}"  # this folder, or its Hub id once uploaded
{usage}
```

{notes}

## Compatibility

Loads with transformers {OLDEST_4X} and newer (4.x and 5.x give the same outputs), as
`PreTrainedTokenizerFast` plus a stock `{_architecture(weights)}`; the weights are safetensors.

## Results ({held_out})

| metric | value |
|---|---|
{rows}
{curve}
## Training recipe

The full resolved recipe is in `recipe.yaml` beside this card.
""")


def _mix_phrase(recipe) -> str:
    """", plus `train.tsv` (column `sentence`, read 16 times)" for each ``data.mix`` entry."""
    return "".join(
        f", plus {_source_name(m.source)} ("
        + (f"column `{m.text_column}`, " if m.text_column else "")
        + (f"read {m.repeat} times)" if m.repeat > 1 else "read once)")
        for m in recipe.data.mix
    )


def _source_name(source: str) -> str:
    if source == "builtin":
        return "the nlpssl built-in story corpus"
    return _source_id(source) if source.startswith("hub:") else f"local text `{_source_id(source)}`"


def _source_id(source: str) -> str:
    if source == "builtin":
        return "nlpssl-builtin-stories"
    return source.removeprefix("hub:") if source.startswith("hub:") else Path(source.split(",")[0]).name


def _tokenizer_phrase(recipe, objective) -> str:
    reused = objective.tokenizer_path()
    if reused:
        return f"the tokenizer of `{reused}`"
    return f"{recipe.tokenizer.algorithm} tokenizer of {recipe.tokenizer.vocab_size} tokens"


def _architecture(weights: Path) -> str:
    architectures = json.loads((weights / "config.json").read_text()).get("architectures") or ["model"]
    return architectures[0]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def classifier_card(recipe: Recipe, metrics: dict[str, Any], model_type: str, out_dir: Path) -> str:
    """A model card with Hub metadata (YAML front matter), labels and scores."""
    import yaml

    from nlpssl.recipe import home_as_tilde

    task = recipe.task
    source = home_as_tilde(task.source)  # a local path: the card does not publish the home folder
    meta = {"library_name": "transformers", "pipeline_tag": "text-classification",
            "tags": ["nlpssl", model_type, "text-classification", f"init-{recipe.init}"], "metrics": ["accuracy", "f1"]}
    if source.startswith("hub:"):  # the Hub's datasets: field takes dataset ids only
        meta["datasets"] = [source.removeprefix("hub:")]
    rows = "\n".join(
        f"| {split} | {metrics[f'{p}_accuracy']:.4f} | {metrics[f'{p}_macro_f1']:.4f} |"
        for split, p in (("validation", "eval"), ("test", "test")) if f"{p}_accuracy" in metrics
    )
    start = "random weights (control run)" if recipe.init == "scratch" else f"`{home_as_tilde(metrics['model'])}`"
    example = ('pipe({"text": "first text", "text_pair": "second text"}, top_k=None)  # fine-tuned on text pairs'
               if recipe.task.text_pair_column else 'pipe("some text", top_k=None)')
    return seal(f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {recipe.name}

A {model_type} text classifier fine-tuned with nlpssl from {start}
on `{source}` ({metrics['train_examples']} training examples, {metrics['steps']} steps,
{metrics['train_runtime_s']:.0f} s). Labels: {', '.join(f'`{n}`' for n in metrics['labels'])}.
It is a stock transformers model: no `trust_remote_code`, no nlpssl needed to load it.

## Use

```python
from transformers import pipeline
pipe = pipeline("text-classification", model="{out_dir.as_posix()}")  # or its Hub id once uploaded
{example}
```

## Results

| split | accuracy | macro-F1 |
|---|---|---|
{rows}

Per-class precision and recall are in `metrics.json` (`report`).

![confusion matrix](confusion_matrix.png)

## Training recipe

The full resolved recipe is in `recipe.yaml` beside this card.
""")


def check_card(model_dir: Path) -> None:
    """--card rewrites only a model card nlpssl wrote (its metadata carries the nlpssl tag)."""
    meta, _ = read_card(model_dir)
    if "nlpssl" not in (meta.get("tags") or []):
        raise NlpsslError(
            f"probe: --card edits only model cards written by nlpssl, and {str(model_dir / 'README.md')!r} "
            "is missing or has no 'nlpssl' tag. Leave out --card and copy the table from probe.md."
        )
    import tempfile

    try:  # the card is rewritten by a rename in its folder, after all the training: try that now
        fd, name = tempfile.mkstemp(prefix=".README.md.check-", dir=model_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise NlpsslError(
            f"probe: --card writes the model card in {str(model_dir)!r}, which cannot be written (got "
            f"{err.strerror or err}). Leave out --card and copy the table from probe.md, or probe a writable "
            "copy of the export."
        ) from err


def read_card(model_dir: Path) -> tuple[dict[str, Any], str]:
    """(front-matter metadata, body) of the folder's README.md; ({}, text) without front matter."""
    import yaml

    path = model_dir / "README.md"
    if not path.is_file():
        return {}, ""
    text = unsealed(path.read_text(encoding="utf-8"))
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        return {}, text
    head, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(head) or {}
    return (meta if isinstance(meta, dict) else {}), body


def add_classification_results(model_dir: Path, heading: str, dataset: dict[str, str],
                               metrics: list[tuple[str, float]], section: str) -> None:
    """Add text-classification results to the card's ``model-index`` and a ``## heading`` section.

    The card's own model-index entry (the export writes one with its held-out figure) gets the
    results; a section with the same heading from an earlier call is replaced.
    """
    import yaml

    from nlpssl.runs import write_text_atomic

    edited = edited_by_hand(model_dir / "README.md")  # stays so: a later export must not replace the edits
    meta, body = read_card(model_dir)
    entries = meta.get("model-index") or []
    name = (entries[0].get("name") if entries else None) or model_dir.parent.name or model_dir.name
    results = [{
        "task": {"type": "text-classification", "name": "Text Classification"},
        "dataset": dataset,
        "metrics": [{"type": "accuracy", "value": round(value, 4), "name": label} for label, value in metrics],
    }]
    index = [entry for entry in entries if entry.get("name") != name]
    others = [r for entry in entries if entry.get("name") == name
              for r in entry.get("results", []) if r.get("dataset") != dataset]
    meta["model-index"] = index + [{"name": name, "results": others + results}]
    marker = f"## {heading}"
    if marker in body:  # replace the section an earlier call wrote
        before, _, after = body.partition(marker)
        rest = after.split("\n## ", 1)
        body = before + (("## " + rest[1]) if len(rest) > 1 else "")
    text = ("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body.rstrip("\n")
            + f"\n\n{marker}\n\n{section}\n\n")
    write_text_atomic(model_dir / "README.md", text if edited else seal(text))
