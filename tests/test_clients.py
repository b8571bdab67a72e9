"""Exports in the hands of other clients, each in its own virtual environment without nlpssl.

Marked ``clients``: skipped by the default ``pytest -q`` (the environments take minutes to build the
first time), run by ``.ci/run`` with ``pytest -m "clients and not slow"``; the llama.cpp run, which
compiles llama.cpp (about 20 minutes on 2 cores), with ``-m "clients and slow"``. The environments are cached between runs
(tests/clients/envs.py). One tiny export per architecture is built here with the shipped recipes, then
tests/clients/check.py runs in each client environment and writes what that client saw as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "clients"))
import envs  # noqa: E402
from conftest import tiny_overrides  # noqa: E402

pytestmark = pytest.mark.clients

CHECK = Path(__file__).parent / "clients" / "check.py"
ARCHS = {
    "bert": ("bert-tiny", {"model.arch": "bert"}),
    "roberta": ("bert-tiny", {"model.arch": "roberta", "tokenizer.algorithm": "bpe"}),
    "modernbert": ("bert-tiny", {}),
    "gpt2": ("gpt-tiny", {"model.intermediate_size": 128}),  # llama.cpp's GPT-2 assumes a 4x MLP
    "llama": ("gpt-tiny", {"model.arch": "llama"}),
    "t5": ("t5-tiny", {}),
    "electra": ("electra-tiny", {}),
}
ENCODERS, CAUSAL = ["bert", "roberta", "modernbert"], ["gpt2", "llama"]
NO_PIPELINE = ("t5", "electra")  # no Hub pipeline runs them as trained
# Pipeline types the Hub lists today (text2text-generation is no longer one of them).
HUB_TASKS = {"fill-mask", "text-generation", "feature-extraction", "sentence-similarity", "text-classification"}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    from nlpssl import load_recipe, pretrain

    out = {}
    for arch, (recipe, extra) in ARCHS.items():
        # A longer context than the tiny default, so a 4.x ModernBERT without the legacy keys would
        # put 128-token windows in; 4 layers, so that some layers would be local.
        folder = tmp_path_factory.mktemp(arch)
        pretrain(load_recipe(recipe, tiny_overrides(folder, **extra, **{"model.num_layers": 4})))
        out[arch] = folder / "run" / "export"
    return out


@pytest.fixture(scope="module")
def simcse_exports(exports, tmp_path_factory) -> dict[str, Path]:
    """SimCSE exports of the ModernBERT export, one per pooling (a few steps: the files are what is tested)."""
    from nlpssl import load_recipe, pretrain

    out = {}
    for pooling in ("mean", "cls"):
        folder = tmp_path_factory.mktemp(f"simcse-{pooling}")
        pretrain(load_recipe("simcse-tiny", tiny_overrides(folder, **{
            "simcse.encoder": str(exports["modernbert"]), "simcse.pooling": pooling, "training.max_steps": 4})))
        out[pooling] = folder / "run" / "export"
    return out


@pytest.fixture(scope="module")
def ggufs(exports, tmp_path_factory) -> dict[str, Path]:
    """Each causal export converted by ``nlpssl gguf`` with llama.cpp's converter (its own venv)."""
    from nlpssl.gguf import convert

    out = {}
    for arch in CAUSAL:
        work = tmp_path_factory.mktemp(f"gguf-{arch}")
        convert(exports[arch], work / "model.gguf", envs.converter(), python=envs.python("gguf"))
        out[arch] = work
    return out


def client(env: str, check: str, export: Path, tmp_path: Path, work: Path | None = None) -> dict:
    """Run ``check`` on ``export`` with the interpreter of client environment ``env``."""
    out = tmp_path / f"{env}-{check}.json"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    run = subprocess.run([str(envs.python(env)), "-I", str(CHECK), check, str(export), str(out), str(work or tmp_path)],
                         capture_output=True, text=True, env={**clean, "HF_HUB_OFFLINE": "1"}, timeout=900)
    assert run.returncode == 0, f"{env} {check} failed:\n{run.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert result.pop("nlpssl_imported") is False
    return result


@pytest.mark.parametrize("arch", list(ARCHS))
def test_4x_and_5x_give_the_same_tokens_and_logits(arch, exports, tmp_path):
    new = client("tf5", "outputs", exports[arch], tmp_path)
    assert new["transformers"].startswith("5.")
    for env in ("tf448", "tf457"):
        old = client(env, "outputs", exports[arch], tmp_path)
        assert old["transformers"].startswith("4."), old["transformers"]
        assert old["tokenizer_class"] == "PreTrainedTokenizerFast"
        for key in ("singles", "batch", "batch_mask", "input_names", "pair_token_types", "padding_side",
                    "specials", "sentinel_0", "config_bos"):
            assert old[key] == new[key], f"{arch}: {key} differs between {old['transformers']} and 5.x"
        for a, b in zip(old["logits"], new["logits"], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=f"{arch} logits, {old['transformers']}")
    assert len(new["singles"][2]) > 128  # the long text reaches past a 4.x sliding window
    assert new["sentinel_0"] == 7  # sentinels at fixed low ids, as the card says
    if arch == "bert":
        assert "token_type_ids" in new["input_names"] and 1 in new["pair_token_types"]
    else:
        assert "token_type_ids" not in new["input_names"]
    if arch in CAUSAL:
        assert new["padding_side"] == "left"
        assert new["bos_token_id"] == new["eos_token_id"] == new["config_bos"]  # BOS is the trained [EOS]


@pytest.mark.parametrize("arch", CAUSAL)
def test_generate_from_nothing_starts_from_the_document_separator(arch, exports, tmp_path):
    got = client("tf5", "generate", exports[arch], tmp_path)
    assert got["bos"] == got["eos"] and got["ids"][0] == got["eos"]
    assert len(got["ids"]) > 1


def same_vectors_as_nlpssl(got: dict, export: Path) -> None:
    """The client's sentence vectors are the ones ``nlpssl embed`` (``Encoder``) gives for the same texts."""
    from check import TEXTS  # the texts the client encoded

    from nlpssl.embeddings import Encoder

    ours = Encoder(export).encode(TEXTS, normalize=False, progress=False)
    np.testing.assert_allclose(np.asarray(got["vectors"]), ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", [*ENCODERS, "electra"])
@pytest.mark.parametrize("env", ["tf5", "tf457"])
def test_sentence_transformers_encodes(arch, env, exports, tmp_path):
    got = client(env, "sentence", exports[arch], tmp_path)
    assert got["shape"] == [2, 32]
    assert got["max_diff"] < 1e-5  # its default (mean) pooling of the stock encoder
    same_vectors_as_nlpssl(got, exports[arch])


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("env", ["tf5", "tf457"])
def test_sentence_transformers_pools_a_simcse_export_as_trained(pooling, env, simcse_exports, tmp_path):
    got = client(env, "sentence", simcse_exports[pooling], tmp_path)
    assert got["pooling"] == pooling and got["shape"] == [2, 32]
    assert got["max_diff"] < 1e-5  # the pooling its 1_Pooling/config.json declares, done by hand
    same_vectors_as_nlpssl(got, simcse_exports[pooling])
    card = client("tf5", "card", simcse_exports[pooling], tmp_path)
    assert card["pipeline_tag"] == "feature-extraction"
    [(metric, value, dataset)] = card["eval_results"]
    assert metric == "uniformity" and value < 0


@pytest.mark.parametrize("arch", CAUSAL)
def test_lm_evaluation_harness_loglikelihood(arch, exports, tmp_path):
    got = client("tf5", "lmeval", exports[arch], tmp_path)
    np.testing.assert_allclose(got["got"], got["want"], atol=1e-4)
    assert all(ll < 0 for ll in got["got"])
    eos = json.loads((exports[arch] / "config.json").read_text())["eos_token_id"]
    assert got["prefix_token_id"] == eos  # an empty context is conditioned on the trained separator


@pytest.mark.parametrize("arch", ENCODERS + CAUSAL)
def test_optimum_onnx_matches_pytorch(arch, exports, tmp_path):
    got = client("tf457", "onnx", exports[arch], tmp_path)
    assert "error" not in got, got.get("error")
    assert got["max_diff"] < 1e-4
    assert got["tokenizer_in_output"], got["files"]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_hub_model_card_parses(arch, exports, tmp_path):
    got = client("tf5", "card", exports[arch], tmp_path)
    assert got["pipeline_tag"] is None or got["pipeline_tag"] in HUB_TASKS, got["pipeline_tag"]
    assert (got["pipeline_tag"] is None) == (arch in NO_PIPELINE)
    assert len(got["tags"]) == len(set(got["tags"])), got["tags"]
    assert got["datasets"] is None  # built-in corpus: no Hub dataset id to name
    [(metric, value, dataset)] = got["eval_results"]
    assert metric == ("accuracy" if arch in ENCODERS else "roc_auc" if arch == "electra" else "perplexity") and value > 0
    card = (exports[arch] / "README.md").read_text()
    assert '"PATH"' not in card and "pypi.org" not in card


@pytest.mark.parametrize("arch", CAUSAL)
def test_gguf_conversion_keeps_tokenizer_and_weights(arch, exports, ggufs, tmp_path):
    got = client("gguf", "gguf", exports[arch], tmp_path, ggufs[arch])
    vocab = json.loads((exports[arch] / "config.json").read_text())["vocab_size"]
    assert got["pre"] == "gpt-2" and got["model"] == "gpt2" and got["n_tokens"] == vocab
    assert got["eos"] == got["bos"] == 6  # BOS is the trained [EOS]
    assert got["arch"] == arch
    assert got["matched"] == got["n_weights"], got  # every exported tensor, values unchanged


def test_gguf_conversion_with_a_2025_llama_cpp(exports, tmp_path):
    """The converter of llama-cpp-python 0.3.16 (before llama.cpp's conversion/ package) converts as well;
    run by a Python without a module it imports, the error names the module; an unknown script is refused."""
    from nlpssl.errors import NlpsslError
    from nlpssl.gguf import convert

    old = envs.converter("gguf2025")
    assert not (old.parent / "conversion").exists()
    with pytest.raises(NlpsslError, match="converter needs the module 'mistral_common', which the Python .*pip "
                                          "install mistral-common"):
        convert(exports["gpt2"], tmp_path / "lacking.gguf", old, python=envs.python("gguf"))
    stranger = tmp_path / "other" / "convert_hf_to_gguf.py"
    stranger.parent.mkdir()
    stranger.write_text("def main():\n    raise SystemExit('must not run')\n")
    with pytest.raises(NlpsslError, match="not a llama.cpp converter nlpssl knows how to run"):
        convert(exports["gpt2"], tmp_path / "stranger.gguf", stranger, python=envs.python("gguf"))
    assert not list(tmp_path.glob("*.gguf"))
    work = tmp_path / "work"
    convert(exports["gpt2"], work / "model.gguf", old, python=envs.python("gguf2025"))
    got = client("gguf", "gguf", exports["gpt2"], tmp_path, work)
    assert got["pre"] == "gpt-2" and got["model"] == "gpt2" and got["eos"] == got["bos"] == 6
    assert got["matched"] == got["n_weights"], got


@pytest.mark.slow  # llama.cpp compiles for about 20 minutes on 2 cores the first time
@pytest.mark.parametrize("arch", CAUSAL)
def test_gguf_runs_in_llama_cpp_with_the_same_logits(arch, exports, ggufs, tmp_path):
    got = client("llamacpp", "llamacpp", exports[arch], tmp_path, ggufs[arch])
    assert all(got["ids_equal"]), got
    assert got["max_diff"] < 1e-4, got
    assert got["bos"] == got["eos"] == 6
