"""Client virtual environments for tests/test_clients.py, built once and cached.

Each environment is a plain ``python -m venv`` with pinned client packages (and this machine's
``torch==2.13.0``), nlpssl not installed. They live in ``$NLPSSL_CLIENT_ENVS`` (default
``~/.cache/nlpssl/client-envs``), one folder per name and requirement list, built in a temporary
folder and renamed into place when complete, so an interrupted build is never used.

    python tests/clients/envs.py [NAME...]   # build (or find) environments, print their paths
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
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
    # llama.cpp's converter with its own requirements file's pins (requirements-convert_hf_to_gguf.txt),
    # its sources taken from the llama-cpp-python source distribution (CONVERTER_SOURCES below).
    "gguf": ["transformers==4.57.6", "sentencepiece>=0.1.98,<0.3.0", "numpy~=2.2.6", "protobuf>=4.21.0,<5.0.0",
             "pyyaml", "tqdm", "requests"],
    # The converter of a 2025 llama.cpp (before its conversion/ package), which imports mistral_common
    # unconditionally (its requirements file does not say so).
    "gguf2025": ["transformers==4.57.6", "sentencepiece>=0.1.98,<0.3.0", "numpy~=2.2.6", "protobuf>=4.21.0,<5.0.0",
                 "mistral_common==1.13.1"],
    # llama.cpp itself, compiled from that source distribution: about 20 minutes on 2 cores.
    "llamacpp": ["llama-cpp-python==0.3.36", "transformers==5.24.0"],
}
LLAMA_CPP = "llama-cpp-python==0.3.36"
CONVERTER_SOURCES = {"gguf": LLAMA_CPP, "gguf2025": "llama-cpp-python==0.3.16"}  # env -> sdist its converter comes from
BUILD_ENV = {"llamacpp": {"CMAKE_ARGS": "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DLLAMA_BUILD_TESTS=OFF "
                                          "-DLLAMA_BUILD_EXAMPLES=OFF", "CMAKE_BUILD_PARALLEL_LEVEL": "2"}}


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
        pip = [str(tmp / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "install", "-q", TORCH, *ENVS[name]], name, {**os.environ, **BUILD_ENV.get(name, {})})
        if name in CONVERTER_SOURCES:
            _run([*pip, "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(tmp / "sdist"),
                  CONVERTER_SOURCES[name]], name)
            [archive] = (tmp / "sdist").glob("*.tar.gz")
            with tarfile.open(archive) as tar:
                top = tar.getnames()[0].split("/")[0]
                keep = [m for m in tar.getmembers() if m.name.startswith(
                    tuple(f"{top}/vendor/llama.cpp/{p}" for p in ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")))]
                tar.extractall(tmp / "sdist", members=keep, filter="data")
            os.replace(tmp / "sdist" / top / "vendor" / "llama.cpp", tmp / "llama.cpp")
            shutil.rmtree(tmp / "sdist")
        # venv writes absolute paths into its scripts; the interpreter itself works after a rename.
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return exe


def converter(env: str = "gguf") -> Path:
    """llama.cpp's convert_hf_to_gguf.py, from a converter environment (``gguf`` or ``gguf2025``)."""
    python(env)
    return env_dir(env) / "llama.cpp" / "convert_hf_to_gguf.py"


def _run(cmd: list[str], name: str, env: dict | None = None) -> None:
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"building client env {name} failed ({' '.join(cmd[:4])} ...):\n"
                           f"{run.stdout[-3000:]}{run.stderr[-3000:]}")


if __name__ == "__main__":
    for env in sys.argv[1:] or ENVS:
        print(env, python(env))
