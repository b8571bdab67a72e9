"""The one exception nlpssl raises for bad input, and the file-system faults it turns into one."""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path


class NlpsslError(ValueError):
    """A problem the user can fix; the message says where, what (with the value) and how to fix it."""


# What libraries say for a full disk or a read-only folder when they do not raise a plain OSError
# (torch's writer: "basic_ios::clear: iostream error", "file write failed"; safetensors: StorageFull).
_FULL = ("no space left", "storagefull", "iostream error", "file write failed", "disk quota")
_READ_ONLY = ("read-only file system", "permission denied", "readonlyfilesystem")


@contextlib.contextmanager
def storage_errors(paths: Mapping[str, Path]) -> Iterator[None]:
    """Turn a full disk or an unwritable folder under ``paths`` (setting -> folder) into an NlpsslError.

    The message names the path (the file the error names, or each folder with its free space),
    what happened, and the fix. Any other exception passes through unchanged.
    """
    try:
        yield
    except NlpsslError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised unless it is a storage fault
        message = storage_message(err, paths)
        if message is None:
            raise
        raise NlpsslError(message) from err


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of ``err``'s message, at most ``limit`` characters ('' if it has none): the part of a
    library's error that nlpssl's own messages quote."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else ""


def storage_message(err: BaseException, paths: Mapping[str, Path]) -> str | None:
    code = getattr(err, "errno", None)
    text = f"{type(err).__name__}: {err}".lower()
    full = code in (errno.ENOSPC, errno.EDQUOT) or any(s in text for s in _FULL)
    read_only = code in (errno.EROFS, errno.EACCES, errno.EPERM) or any(s in text for s in _READ_ONLY)
    if not (full or read_only):
        return None
    where = getattr(err, "filename", None)
    folders = "; ".join(f"{key}={str(p)!r} ({_free(p)})" for key, p in paths.items())
    place = f"{where!r}" if where else f"one of {folders}" if folders else "the output folder"
    if full:
        return (
            f"no space left on the disk while writing {place}" + (f" [{folders}]" if where and folders else "")
            + f" ({first_line(err) or type(err).__name__}). "
            "Free space on that disk, or point the setting at another disk, and rerun; a pretraining run "
            "continues from its last complete checkpoint with training.resume=true."
        )
    return (
        f"cannot write {place}: the folder is read-only or not yours ({first_line(err)}). "
        "Choose a writable folder for that setting (training.output_dir, data.cache_dir, or the OUT_DIR argument); "
        "if the path is an input file, make it readable."
    )


def _free(path: Path) -> str:
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            try:
                return f"{shutil.disk_usage(candidate).free / 2**20:,.0f} MiB free"
            except OSError:
                break
    return "free space unknown"
