"""Every benchmark script still imports what it uses from nlpssl and prints its usage.

BENCHMARKS.md quotes a command for each figure; a rename in the package that a script was not
updated for would break that command without any test noticing. Importing runs each script's
top-level imports (the scripts run their work only under ``__main__``), and ``--help`` builds its
argument parser. The scripts' real runs need the shared corpora and minutes each, so they are not here.
"""

import contextlib
import importlib.util
import io
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 10


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports_and_prints_its_usage(script, monkeypatch):
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    monkeypatch.setattr(sys, "path", list(sys.path))  # a script may put its folder on the path
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
    monkeypatch.setattr(sys, "argv", [script.name, "--help"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        module.main()
    assert done.value.code == 0
    assert out.getvalue().startswith("usage:"), out.getvalue()[:300]
