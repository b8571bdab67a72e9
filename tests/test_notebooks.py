"""Every notebook in notebooks/ runs top to bottom on the venv's Python, in a fresh working folder."""

import os
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_notebooks_found():
    # A glob bug must not make the parametrised test below pass on nothing.
    assert len(NOTEBOOKS) == 3, [p.name for p in NOTEBOOKS]


def test_kernel_runs_this_python():
    """Kernel "python3" must start the interpreter that has nlpssl installed (this venv's)."""
    from jupyter_client import KernelManager

    # jupyter_client swaps a bare "python" in the kernelspec for sys.executable.
    assert KernelManager(kernel_name="python3").format_kernel_cmd()[0] == sys.executable


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "store no outputs"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg",
        # One thread: on a shared 2-core box two threads are many times slower once another job runs.
        "OMP_NUM_THREADS": "1",
    }
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env=env, cwd=str(tmp_path))
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert (tmp_path / "runs").is_dir(), "the notebook writes its runs into the working folder"
