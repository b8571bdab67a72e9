"""Client virtual environments for tests/test_clients.py, built once and cached.

Each environment is a plain ``python -m venv`` with pinned client packages (and this machine's
``torch==2.13.0``), nlpssl not installed. They live in ``$NLPSSL_CLIENT_ENVS`` (default
``~/.cache/nlpssl/client-envs``), one folder per name and requirement list, built in a temporary
folder and renamed into place when complete, so an interrupted build is never used.

    python tests/clients/envs.py            # build (or find) every environment, print their paths
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

TORCH = "torch==2.13.0"
# name -> pinned requirements. tf448: the oldest 4.x line with every architecture nlpssl exports
# (ModernBERT arrived in 4.48); tf457: the last 4.x line, the one optimum's ONNX exporter and
# sentence-transformers 5 run on; tf5: today's line with sentence-transformers 6 and lm-evaluation-harness.
ENVS: dict[str, list[str]] = {
    "tf5": ["transformers==5.24.0", "sentence-transformers==6.2.0", "lm-eval==0.4.13", "accelerate==1.15.0",
            "huggingface_hub==2.4.0"],
    "tf448": ["transformers==4.48.3"],
    "tf457": ["transformers==4.57.6", "sentence-transformers==5.1.2", "optimum-onnx==0.1.0", "onnxruntime==1.32.0"],
}


def root() -> Path:
    return Path(os.environ.get("NLPSSL_CLIENT_ENVS", Path.home() / ".cache" / "nlpssl" / "client-envs"))


def env_dir(name: str) -> Path:
    digest = hashlib.sha256("\n".join([sys.version, TORCH, *ENVS[name]]).encode()).hexdigest()[:10]
    return root() / f"{name}-{digest}"


def python(name: str) -> Path:
    """The environment's interpreter, building the environment first if it is not cached."""
    final = env_dir(name)
    exe = final / "bin" / "python"
    if exe.is_file():
        return exe
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True)
        run = subprocess.run([str(tmp / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                              TORCH, *ENVS[name]], capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"pip install for client env {name} failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
        # venv writes absolute paths into its scripts; the interpreter itself works after a rename.
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return exe


if __name__ == "__main__":
    for env in ENVS:
        print(env, python(env))
