"""Convert a causal-LM export to GGUF with llama.cpp's own converter (``convert_hf_to_gguf.py``).

llama.cpp names a BPE tokenizer's pre-tokenizer by hashing the token ids its tokenizer gives for a
fixed test string, and knows only the hashes of the Hub models listed in its
``convert_hf_to_gguf_update.py``. The ids depend on the vocabulary, so every newly trained tokenizer
is unknown by construction, whatever its pre-tokenizer: the converter stops with "BPE pre-tokenizer
was not recognized". Registering means adding a Hub repository to that script and regenerating.

nlpssl's byte-level BPE pre-tokenizes exactly as GPT-2 does (``ByteLevel`` with GPT-2's regex, no
normaliser), which llama.cpp implements as the pre-tokenizer ``gpt-2``. So this module runs the
user's converter unchanged, answering ``gpt-2`` where the hash lookup fails, and only for a
tokenizer whose ``tokenizer.json`` it has checked is that GPT-2 byte-level BPE.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nlpssl.errors import NlpsslError

# Run in a child interpreter: the converter imports its own ``conversion`` and ``gguf`` packages.
_BOOTSTRAP = """
import runpy, sys
from pathlib import Path
converter = Path(sys.argv[1])
sys.path.insert(0, str(converter.parent))
sys.path.insert(1, str(converter.parent / "gguf-py"))
import conversion.base as base
known = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        return "gpt-2"  # checked by nlpssl.gguf: GPT-2 byte-level BPE, no normaliser
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = [str(converter), *sys.argv[2:]]
runpy.run_path(str(converter), run_name="__main__")
"""


def check_gpt2_bytelevel(export_dir: Path) -> None:
    """Refuse a tokenizer that llama.cpp's ``gpt-2`` pre-tokenizer would not reproduce."""
    path = export_dir / "tokenizer.json"
    if not path.is_file():
        raise NlpsslError(f"gguf: no tokenizer.json in {str(export_dir)!r}. Point at an nlpssl causal-LM export.")
    spec = json.loads(path.read_text(encoding="utf-8"))
    pre, model = spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    gpt2 = (model.get("type") == "BPE" and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
            and not pre.get("add_prefix_space", False) and spec.get("normalizer") is None)
    if not gpt2:
        raise NlpsslError(
            f"gguf: the tokenizer in {str(export_dir)!r} is not a GPT-2 byte-level BPE without normaliser "
            f"(got model {model.get('type')!r}, pre-tokenizer {pre.get('type')!r}, normalizer "
            f"{(spec.get('normalizer') or {}).get('type')!r}), so llama.cpp would split text differently. "
            "Train with tokenizer.algorithm=bpe and tokenizer.lowercase=false."
        )


def convert(export_dir: str | Path, out_file: str | Path, converter: str | Path, outtype: str = "f32",
            python: str | Path | None = None) -> Path:
    """Write ``out_file`` (GGUF) from a GPT-2 or Llama export with llama.cpp's ``convert_hf_to_gguf.py``.

    ``python`` is the interpreter that runs the converter (default: this one); it needs the
    converter's own requirements (torch, transformers, numpy, sentencepiece), not nlpssl.
    """
    export_dir, out_file, converter = Path(export_dir), Path(out_file), Path(converter)
    python = str(python or sys.executable)
    config_path = export_dir / "config.json"
    if not config_path.is_file():
        raise NlpsslError(f"gguf: {str(export_dir)!r} holds no config.json. Point at an nlpssl export folder.")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type not in ("gpt2", "llama"):
        raise NlpsslError(
            f"gguf: only causal-LM exports convert (model_type 'gpt2' or 'llama'; got {model_type!r} in "
            f"{str(config_path)!r}). Export a gpt-tiny / llama recipe run."
        )
    if converter.name != "convert_hf_to_gguf.py" or not converter.is_file():
        raise NlpsslError(
            f"gguf: --converter must be llama.cpp's convert_hf_to_gguf.py (got {str(converter)!r}). It is in a "
            "llama.cpp checkout, or in the llama-cpp-python source distribution under vendor/llama.cpp/."
        )
    if out_file.exists():
        raise NlpsslError(f"gguf: {str(out_file)!r} exists; nlpssl does not overwrite it. Choose a new file name.")
    check_gpt2_bytelevel(export_dir)
    probe = ("import importlib.util as u; print(' '.join(m for m in "
             "('sentencepiece', 'numpy', 'torch', 'transformers') if u.find_spec(m) is None))")
    try:
        missing = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as err:
        raise NlpsslError(f"gguf: cannot run the Python {python!r} (got {err}). Pass --python with a working one.")
    if missing:
        raise NlpsslError(
            f"gguf: llama.cpp's converter needs {', '.join(missing)}, which the Python {python!r} lacks. Install "
            f"the converter's requirements (requirements/requirements-convert_hf_to_gguf.txt beside it), e.g. "
            f"`{python} -m pip install {' '.join(missing)}`, or pass --python with the one you installed them into."
        )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([python, "-c", _BOOTSTRAP, str(converter), str(export_dir),
                          "--outfile", str(out_file), "--outtype", outtype], capture_output=True, text=True)
    if run.returncode != 0 or not out_file.is_file():
        out_file.unlink(missing_ok=True)
        raise NlpsslError(f"gguf: llama.cpp's converter failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return out_file
