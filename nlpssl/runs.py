"""The run folder: what a pretraining or fine-tuning run leaves on disk, and how it is read back.

One low-level place for the contract every command shares (it imports nothing else of nlpssl
but errors, the console and the recipe types, so any module above the recipe may import it; the
objectives, which the recipe imports, use :mod:`nlpssl.console` directly)::

    <output_dir>/
      recipe.yaml             the resolved recipe, written whole or not at all
      .nlpssl.lock            flock held by the process training into the folder
      tokenizer/              the shared tokenizer (pretraining)
      checkpoint-N/           Trainer checkpoints; a complete one has trainer_state.json last
      final/                  the finished model
                              (both with a copy of a tokenizer reused from another folder)
      metrics.json, log_history.json, loss_curve.png
      export/                 the Hub-format export
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

from nlpssl.console import log, note, quiet_transformers, rank, say_loaded  # noqa: F401  (the commands' voice)
from nlpssl.errors import NlpsslError, first_line
from nlpssl.recipe import Recipe


def owner_tag() -> str:
    """``HOST-PID``: the part of every temporary name nlpssl writes that says which process writes it.

    A sweep of what killed processes left (:func:`left_by_gone_process`) then removes only this
    machine's: on a disk shared between machines (NFS, a cluster's home) a pid alone says nothing
    about a process elsewhere, and pids repeat across machines. The host has ``-`` made ``_``.
    """
    return f"{_host()}-{os.getpid()}"


def left_by_gone_process(tag: str) -> bool:
    """Whether ``tag`` (an :func:`owner_tag`) names a process of this machine that has ended.

    Another machine's tag, or a name that is not a tag at all, is never taken as gone.
    """
    host, _, pid = tag.rpartition("-")
    return host == _host() and pid.isdigit() and not process_alive(int(pid))


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine, for sweeping what killed processes left (their
    temporary folders carry their pid). This process counts as gone: a leftover of its own is stale."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or no valid pid at all: leave it
    return True


def check_output_dir(recipe: Recipe) -> None:
    """Refuse to train into a folder that holds another run, unless resuming that run.

    Allowed without ``training.resume``: a new or empty folder, one holding only the tokenizer that
    ``nlpssl tokenizer train`` wrote for this run, and a run that stopped before it trained anything
    (its recipe.yaml is rewritten; a tokenizer it left is kept only if the text and tokenizer settings match).
    """
    if rank() != 0:
        return  # rank 0 decides; the other ranks may see the recipe rank 0 just wrote
    out = recipe.output_dir
    if out.exists() and not out.is_dir():
        raise NlpsslError(
            f"training.output_dir={str(out)!r}: a file is there, not a folder. Choose another training.output_dir."
        )
    folders = {"training.output_dir": out}
    if recipe.kind == "pretrain" and not recipe.data.streaming:
        folders["data.cache_dir"] = Path(recipe.data.cache_dir).expanduser()
    for key, folder in folders.items():
        # A file where a parent folder should be ended in a bare "Not a directory ('runs/x')" after setup.
        if blocker := next((p for p in folder.absolute().parents if p.exists() and not p.is_dir()), None):
            raise NlpsslError(
                f"{key}={str(folder)!r}: {str(blocker)!r} is a file, not a folder, so nothing can be written "
                f"under it. Choose another {key}."
            )
    if not out.exists():
        return
    held = {p.name for p in out.iterdir()} - {LOCK_NAME}
    if not held:
        return
    saved = out / "recipe.yaml"
    where = f"training.output_dir={str(out)!r}"
    if not saved.is_file():
        if held == {"tokenizer"} and (out / "tokenizer" / "tokenizer.json").is_file():
            return  # `nlpssl tokenizer train RECIPE` wrote the run's tokenizer here first; the run uses it
        raise NlpsslError(
            f"{where}: the folder exists and is not an nlpssl run (no recipe.yaml). "
            "Choose another training.output_dir or empty the folder."
        )
    if (out / "config.json").is_file():
        # An export (a run keeps its models in final/ and checkpoint-N/): a run there would rewrite its
        # recipe.yaml and loss curve and add its own files, and the export would no longer be one.
        raise NlpsslError(
            f"{where}: the folder is a model export, not a run folder (got config.json beside recipe.yaml). "
            "Training into it would overwrite its files; choose another training.output_dir."
        )
    if not (held & TRAINED or any(out.glob("checkpoint-*"))):
        _check_untrained_run(recipe, saved, where)
        return
    if not recipe.resume:
        resume = "Pass training.resume=true to continue it, " if recipe.kind == "pretrain" else ""
        raise NlpsslError(
            f"{where}: the folder already holds a run. {resume}"
            f"{'c' if resume else 'C'}hoose another training.output_dir, or delete the folder."
        )
    import yaml

    from nlpssl.recipe import recipe_from_dict

    before = yaml.safe_load(saved.read_text())
    try:  # sections a newer nlpssl added get their defaults, as the recipe being resumed has them
        before = recipe_from_dict(before, name=recipe.name, where=str(saved)).to_dict()
    except NlpsslError:
        pass  # compared as written: the keys that differ are named below
    now = recipe.to_dict()
    for d in (before, now):
        d.get("training", {}).pop("resume", None)
    if before != now:
        changed = sorted(
            f"{s}.{k}" for s in now if isinstance(now[s], dict)
            for k in set(now[s]) | set(before.get(s) or {})
            if (before.get(s) or {}).get(k) != now[s].get(k)
        )
        raise NlpsslError(
            f"{where}: cannot resume, the recipe differs from the run's recipe.yaml in {', '.join(changed)}. "
            "Resume with the same settings, or start a new run in another folder."
        )


LOCK_NAME = ".nlpssl.lock"
# The data settings that decide which texts the tokenizer is trained on (nlpssl.data.source_texts).
TOKENIZER_TEXT_KEYS = ("source", "text_column", "hub_config", "split", "txt_unit", "unwrap", "clean",
                       "builtin_stories", "max_texts", "seed", "mix")
TRAINED = {"final", "export", "metrics.json", "log_history.json"}  # with checkpoint-N: a run that trained


def _check_untrained_run(recipe: Recipe, saved: Path, where: str) -> None:
    """A run folder that stopped before its first checkpoint (bad data, Ctrl-C while preparing) is started
    again, its recipe.yaml rewritten, unless a tokenizer it trained no longer fits the recipe's settings."""
    tokenizer = saved.parent / "tokenizer"
    if recipe.kind != "pretrain" or recipe.tokenizer.path or not tokenizer.exists():
        return
    import yaml

    from nlpssl.recipe import recipe_from_dict

    before = yaml.safe_load(saved.read_text()) or {}
    try:  # its paths as a recipe loaded now has them (absolute, ~ expanded), as the resume check reads it
        before = recipe_from_dict(before, name=recipe.name, where=str(saved)).to_dict()
    except NlpsslError:
        pass
    now = recipe.to_dict()
    keys = [("tokenizer", k) for k in set(now["tokenizer"]) | set(before.get("tokenizer") or {}) if k != "path"]
    keys += [("data", k) for k in TOKENIZER_TEXT_KEYS]
    changed = sorted(f"{section}.{k}" for section, k in keys
                     if (before.get(section) or {}).get(k) != (now.get(section) or {}).get(k))
    if changed:
        raise NlpsslError(
            f"{where}: the run has not trained yet and holds a tokenizer in {str(tokenizer)!r} (from `nlpssl "
            "tokenizer train` or a run that stopped before training), trained with other settings than now "
            f"({', '.join(changed)}). Delete that tokenizer folder (nlpssl wrote it) to "
            "train a new one, pass tokenizer.path=FOLDER to use another, or choose another training.output_dir."
        )


@contextlib.contextmanager
def run_lock(folder: Path):
    """Hold an exclusive lock on a run folder for the life of the run (rank 0 only).

    A second process that tries to train into the same folder is refused with the process id and
    command of the one that holds it. The lock is an ``flock`` on ``<folder>/.nlpssl.lock``, released
    by the system when the holder exits, however it exits; the file stays.
    """
    if rank() != 0:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, run unlocked
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise NlpsslError(
                f"training.output_dir={str(folder)!r}: the run folder is in use by {holder}. Wait for it to "
                "finish (or stop it; Ctrl-C saves a checkpoint), or choose another training.output_dir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()} (`{' '.join(sys.argv)}`)\n")
        handle.flush()
        yield
    finally:
        handle.close()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a reader never sees half of it)."""
    tmp = path.with_name(f".{path.name}.tmp-{owner_tag()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_run_recipe(recipe: Recipe) -> None:
    """The resolved recipe, written whole or not at all."""
    recipe.output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(recipe.output_dir / "recipe.yaml", recipe.to_yaml())


def budget_used_s(checkpoint: str | None) -> float:
    """Seconds of the time budget a checkpoint had used (0 for a new run).

    Read from the checkpoint's ``trainer_state.json`` (``stateful_callbacks``) here rather than by the
    Trainer, which restores callback state only with ``restore_callback_states_from_checkpoint``.
    """
    if checkpoint is None:
        return 0.0
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        return float(state["stateful_callbacks"]["TimeBudget"]["args"]["used_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def last_checkpoint(recipe: Recipe) -> str | None:
    """The newest complete checkpoint of the run (see :func:`newest_complete_checkpoint`), or None."""
    found = newest_complete_checkpoint(recipe.output_dir)
    return None if found is None else str(found)


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder that was saved completely and reads back, or None.

    A process killed while saving (or a disk that filled up) can leave a checkpoint whose
    ``trainer_state.json`` (the Trainer writes it last) is missing or half-written, or whose weights
    or optimizer files are truncated; resuming from it would crash, so such a folder is skipped with
    a note saying why, and the one before it is used.
    """
    if not run_dir.is_dir():
        return None
    steps = sorted(
        (int(p.name.removeprefix("checkpoint-")), p) for p in run_dir.glob("checkpoint-*")
        if p.name.removeprefix("checkpoint-").isdigit()
    )
    for _, folder in reversed(steps):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        log(f"skipping {folder}, which was not completely saved ({problem}); using the one before it")
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (None if it can): cheap header and index checks only."""
    import zipfile

    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError) as err:
        return f"trainer_state.json: {type(err).__name__}"
    if problem := weights_problem(folder):
        return problem
    for state in sorted(folder.glob("data_state-rank*.json")):  # a streaming run's position (nlpssl.stream)
        try:
            json.loads(state.read_text())
        except (OSError, ValueError) as err:
            return f"{state.name}: {type(err).__name__}"
    for state in sorted(folder.glob("*.pt")) + sorted(folder.glob("*.pth")):
        if not zipfile.is_zipfile(state):  # torch.save writes zip archives; a truncated one has no index
            return f"{state.name} is truncated"
    return None


def weights_problem(folder: Path) -> str | None:
    """Why the model weights in ``folder`` cannot be loaded (None if they can): missing, or a
    model.safetensors cut short (a process killed while saving it; the header check is cheap)."""
    if not has_weights(folder):
        return "no model.safetensors"
    if (folder / "model.safetensors").is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(folder / "model.safetensors"), framework="pt"):
                pass
        except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
            return f"model.safetensors: {first_line(err, 120)}"
    return None


def has_weights(folder: Path) -> bool:
    """True if ``folder`` holds safetensors weights, single-file or sharded."""
    return (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()


def write_metrics(out: Path, metrics: dict[str, Any], history: list[dict]) -> None:
    # Whole or not at all: `nlpssl export` and a resumed run read them back.
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    write_text_atomic(out / "log_history.json", json.dumps(history, indent=1))
    plot_loss_curve(history, out / "loss_curve.png")


def plot_loss_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def export_folder(path: Path) -> Path:
    """``path`` itself, or its ``export/`` when ``path`` is a run folder that holds an export."""
    path = Path(path)
    if (path / "export" / "config.json").is_file() and not (path / "config.json").is_file():
        return path / "export"
    return path
