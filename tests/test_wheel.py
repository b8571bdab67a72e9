"""A real package: the built wheel, installed into a fresh virtual environment, runs from any folder.

The wheel is built from a copy of the source (so stale build folders cannot leak into it), installed
with pip into a new venv without network access, and that venv reuses the dependencies already
installed here through a .pth line (the wheel's own nlpssl comes first on sys.path).
"""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_recipes_and_metrics_and_runs_from_an_empty_folder(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "nlpssl", src / "nlpssl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheel = next(dist.glob("nlpssl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).stem for n in names if n.startswith("nlpssl/recipes/") and n.endswith(".yaml")}
    assert shipped == {p.stem for p in (ROOT / "nlpssl" / "recipes").glob("*.yaml")}
    assert "nlpssl/metrics/accuracy/accuracy.py" in names and "nlpssl/metrics/macro_f1/macro_f1.py" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "reuse-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                              "--no-compile", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    where = subprocess.run([str(py), "-c", "import nlpssl; print(nlpssl.__file__)"], cwd=empty,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(site), f"nlpssl came from {where}, not the installed wheel"
    listed = subprocess.run([str(venv / "bin" / "nlpssl"), "recipe", "list"], cwd=empty,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert {line.split()[0] for line in listed.stdout.splitlines() if line.strip()} == shipped

    # Runs write under the current folder: runs/<recipe> and the data cache .cache/nlpssl.
    over = [o for o in tiny_overrides(tmp_path) if not o.startswith(("training.output_dir=", "data.cache_dir="))]
    run = subprocess.run([str(venv / "bin" / "nlpssl"), "pretrain", "bert-tiny", *over, "training.max_steps=4"],
                         cwd=empty, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (empty / "runs" / "bert-tiny" / "export" / "model.safetensors").is_file()
    assert any((empty / ".cache" / "nlpssl").iterdir())
    fill = subprocess.run([str(venv / "bin" / "nlpssl"), "fill-mask", "runs/bert-tiny/export", "The cat sat on the [MASK].",
                           "--json"], cwd=empty, capture_output=True, text=True, timeout=120)
    assert fill.returncode == 0 and '"token"' in fill.stdout, fill.stderr[-3000:]
