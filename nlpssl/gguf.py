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
import os
import re
import subprocess
import sys
from pathlib import Path

from nlpssl.errors import NlpsslError

# Run in a child interpreter: the converter imports its own ``gguf`` package (and, since 2026, its
# ``conversion`` package). It is loaded as a module, not run as a script, so that the class holding
# ``get_vocab_base_pre`` can be patched wherever the llama.cpp version defines it: ``TextModel``
# (in the script until 2025, in conversion/base.py after) or ``Model`` (2024).
CAUSAL_CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
UNKNOWN_LAYOUT = 3  # the child's exit status when the converter is not a layout this bootstrap knows
_BOOTSTRAP = """
import importlib.util, sys
from pathlib import Path
converter = Path(sys.argv[1])
sys.path[:0] = [str(converter.parent), str(converter.parent / "gguf-py")]
spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", converter)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
base = getattr(module, "TextModel", None) or getattr(module, "Model", None)
if base is None and (converter.parent / "conversion" / "base.py").is_file():
    from conversion.base import TextModel as base
if not hasattr(base, "get_vocab_base_pre") or not callable(getattr(module, "main", None)):
    print("no TextModel or Model class with get_vocab_base_pre, or no main()", file=sys.stderr)
    sys.exit(%d)
known = base.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        return "gpt-2"  # checked by nlpssl.gguf: GPT-2 byte-level BPE, no normaliser
base.get_vocab_base_pre = get_vocab_base_pre
sys.argv = [str(converter), *sys.argv[2:]]
module.main()
""" % UNKNOWN_LAYOUT


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
    config = json.loads(config_path.read_text())
    model_type, architectures = config.get("model_type"), config.get("architectures") or []
    if model_type not in ("gpt2", "llama"):
        raise NlpsslError(
            f"gguf: only causal-LM exports convert (model_type 'gpt2' or 'llama'; got {model_type!r} in "
            f"{str(config_path)!r}). Export a gpt-tiny / llama recipe run."
        )
    if architectures != [CAUSAL_CLASSES[model_type]]:
        # A fine-tuned classifier has a score head instead of the LM head: llama.cpp's converter
        # names it by the architecture and would write a model that cannot generate, or fail inside.
        raise NlpsslError(
            f"gguf: only language-model exports convert ({CAUSAL_CLASSES[model_type]!r}; got architectures "
            f"{architectures!r} in {str(config_path)!r}). Convert the export `nlpssl pretrain` wrote, not a "
            "fine-tuned classifier."
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
    # Converted under a hidden name and renamed: a conversion stopped part way (Ctrl-C, a kill) leaves no
    # file that looks like a model, nor one that a second try would refuse to overwrite.
    from nlpssl.runs import owner_tag

    tmp = out_file.with_name(f".{out_file.stem}.tmp-{owner_tag()}{out_file.suffix}")
    try:
        run = subprocess.run([python, "-c", _BOOTSTRAP, str(converter), str(export_dir),
                              "--outfile", str(tmp), "--outtype", outtype], capture_output=True, text=True)
        if run.returncode != 0 or not tmp.is_file():
            raise NlpsslError(_failure(run, converter, python))
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return out_file


# Modules the converter imports whose package has another name.
_PACKAGES = {"yaml": "pyyaml", "google": "protobuf", "mistral_common": "mistral-common"}


def _failure(run: subprocess.CompletedProcess, converter: Path, python: str) -> str:
    """What went wrong in the converter's run, and the fix where there is one."""
    if run.returncode == UNKNOWN_LAYOUT:
        return (f"gguf: {str(converter)!r} is not a llama.cpp converter nlpssl knows how to run "
                f"({run.stderr.strip()[-300:]}). Tested with the convert_hf_to_gguf.py of llama-cpp-python 0.3.16 "
                "and 0.3.36 (vendor/llama.cpp/); use one of those, or a llama.cpp checkout of the same era.")
    lacking = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'\s*$", run.stderr)
    if lacking:
        module = lacking.group(1).split(".")[0]
        package = _PACKAGES.get(module, module)
        return (f"gguf: llama.cpp's converter needs the module {module!r}, which the Python {python!r} lacks. "
                f"Install its package (`{python} -m pip install {package}`) or the converter's requirements "
                "(requirements/requirements-convert_hf_to_gguf.txt in its llama.cpp), or pass --python with one "
                "that has it.")
    return f"gguf: llama.cpp's converter failed (exit {run.returncode}):\n{run.stderr[-3000:]}"
