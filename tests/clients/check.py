"""What a client sees of an nlpssl export: run inside a client's own virtual environment.

    python check.py CHECK EXPORT_DIR OUT_JSON [WORK_DIR]

This file must not import nlpssl (the client environments do not have it) and uses only what a
user of that client would write. CHECK is one of:

- ``outputs``: tokenizer ids (single, batched, sentence pairs) and logits of the stock Auto class;
- ``generate``: ``generate()`` with no prompt (causal-LM), greedy;
- ``sentence``: ``SentenceTransformer(EXPORT_DIR).encode`` against the declared pooling done by hand
  (its vectors come back too, for the test to hold against ``nlpssl.embeddings.Encoder``);
- ``lmeval``: lm-evaluation-harness ``HFLM`` loglikelihoods against the same sums done by hand;
- ``onnx``: optimum's ONNX export run by onnxruntime against PyTorch (in WORK_DIR);
- ``card``: ``huggingface_hub.ModelCard`` parses README.md and its metadata;
- ``gguf``: llama.cpp's gguf-py reads WORK_DIR/model.gguf: tokenizer metadata, and every tensor of
  the export found in it with the same values;
- ``llamacpp``: llama.cpp (llama-cpp-python) runs WORK_DIR/model.gguf: same token ids and logits.
"""

import json
import sys
from pathlib import Path

TEXTS = ["The cat sat on the [MASK].", "A dog ran to the park and played with a red ball."]
# Over 128 tokens: transformers 4.x reading a ModernBERT config without the legacy keys would give
# every other layer a 128-token sliding window, which only shows on inputs this long.
LONG = " ".join(["The little fox found a shiny stone near the river and took it home to show her mother."] * 12)
T5_TEXT = "The cat <extra_id_0> on the mat."


def objective(config) -> str:
    if config.is_encoder_decoder:
        return "t5"
    if config.architectures == ["ElectraForPreTraining"]:
        return "rtd"  # ELECTRA's discriminator: replaced-token detection
    return "causal" if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in config.architectures) \
        else "mlm"


def load(path):
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForPreTraining,
                              AutoModelForSeq2SeqLM, AutoTokenizer)

    config = AutoConfig.from_pretrained(path)
    kind = objective(config)
    cls = {"mlm": AutoModelForMaskedLM, "causal": AutoModelForCausalLM, "t5": AutoModelForSeq2SeqLM,
           "rtd": AutoModelForPreTraining}[kind]
    return kind, AutoTokenizer.from_pretrained(path), cls.from_pretrained(path).eval()


def outputs(path, out, work):
    import torch
    import transformers

    kind, tok, model = load(path)
    texts = [T5_TEXT, TEXTS[1]] if kind == "t5" else TEXTS
    singles = [tok(t)["input_ids"] for t in [*texts, LONG]]
    batch = tok(texts, padding=True)
    pair = tok(texts[0], texts[1])
    logits = []
    with torch.no_grad():
        for ids in singles:  # one text at a time: no padding conventions in the comparison
            x = torch.tensor([ids])
            extra = {"decoder_input_ids": torch.tensor([[model.config.decoder_start_token_id, *ids[:3]]])} \
                if kind == "t5" else {}
            logits.append(model(input_ids=x, **extra).logits[0].flatten().tolist())
    return {
        "transformers": transformers.__version__, "kind": kind, "tokenizer_class": type(tok).__name__,
        "singles": singles, "batch": batch["input_ids"], "batch_mask": batch["attention_mask"],
        "input_names": sorted(batch.keys()), "pair_token_types": pair.get("token_type_ids"),
        "padding_side": tok.padding_side, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        "specials": {n: getattr(tok, f"{n}_token_id") for n in ("pad", "unk", "cls", "sep", "mask", "bos", "eos")},
        "sentinel_0": tok.convert_tokens_to_ids("<extra_id_0>"),
        "config_bos": model.config.bos_token_id, "logits": logits,
    }


def generate(path, out, work):
    import torch

    kind, tok, model = load(path)
    with torch.no_grad():
        ids = model.generate(max_new_tokens=6, do_sample=False)[0].tolist()
    return {"ids": ids, "text": tok.decode(ids, skip_special_tokens=True), "bos": model.generation_config.bos_token_id,
            "eos": tok.eos_token_id}


def sentence(path, out, work):
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    st = SentenceTransformer(path, device="cpu")
    got = st.encode(TEXTS, convert_to_tensor=True)
    tok, enc = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    pooling = "mean"  # sentence-transformers' default for a folder without its files
    declared = Path(path) / "1_Pooling" / "config.json"
    if declared.is_file():
        pooling = "cls" if json.loads(declared.read_text()).get("pooling_mode_cls_token") else "mean"
    want = []
    with torch.no_grad():
        for text in TEXTS:
            x = tok(text, return_tensors="pt")
            states = enc(**x).last_hidden_state[0]
            want.append(states[0] if pooling == "cls" else states.mean(0))
    return {"sentence_transformers": sentence_transformers.__version__, "shape": list(got.shape), "pooling": pooling,
            "max_diff": float((got - torch.stack(want)).abs().max()), "vectors": got.tolist()}


def lmeval(path, out, work):
    import lm_eval
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=path, device="cpu", batch_size=1)
    pairs = [("The cat sat on the", " mat."), ("", "Once upon a time there was a dog.")]
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(pairs)]
    got = [ll for ll, _ in lm.loglikelihood(requests)]
    _, tok, model = load(path)
    want = []
    with torch.no_grad():
        for context, continuation in pairs:
            ctx = tok(context)["input_ids"] if context else [lm.prefix_token_id]
            cont = tok(context + continuation)["input_ids"][len(ctx):] if context else tok(continuation)["input_ids"]
            x = torch.tensor([ctx + cont])
            logp = model(input_ids=x).logits[0].log_softmax(-1)
            want.append(sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont)))
    return {"lm_eval": lm_eval.__version__, "got": got, "want": want, "prefix_token_id": lm.prefix_token_id}


def onnx(path, out, work):
    import subprocess

    import numpy as np
    import onnxruntime
    import torch

    kind, tok, model = load(path)
    task = {"mlm": "fill-mask", "causal": "text-generation"}[kind]
    folder = Path(work) / "onnx"
    run = subprocess.run([sys.executable, "-m", "optimum.exporters.onnx", "--model", path, "--task", task,
                          str(folder)], capture_output=True, text=True)
    if run.returncode != 0:
        return {"error": run.stderr[-2000:]}
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    names = {i.name for i in session.get_inputs()}
    diffs = []
    for text in TEXTS:
        enc = tok(text, return_tensors="np")
        feed = {k: v.astype(np.int64) for k, v in enc.items() if k in names}
        if "position_ids" in names:
            feed["position_ids"] = np.arange(enc["input_ids"].shape[1], dtype=np.int64)[None]
        got = session.run(None, feed)[0]
        with torch.no_grad():
            want = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
        diffs.append(float(np.abs(got - want).max()))
    return {"max_diff": max(diffs), "files": sorted(p.name for p in folder.iterdir()),
            "tokenizer_in_output": (folder / "tokenizer.json").is_file()}


def card(path, out, work):
    from pathlib import Path

    import huggingface_hub
    from huggingface_hub import ModelCard

    parsed = ModelCard.load(Path(path) / "README.md")
    data = parsed.data
    return {"huggingface_hub": huggingface_hub.__version__, "pipeline_tag": data.pipeline_tag,
            "tags": data.tags, "datasets": data.datasets, "library_name": data.library_name,
            "eval_results": [(r.metric_type, r.metric_value, r.dataset_type) for r in (data.eval_results or [])],
            "model_name": data.model_name}


def gguf(path, out, work):
    from pathlib import Path

    import numpy as np
    from safetensors.numpy import load_file

    sys.path.insert(0, str(Path(sys.executable).parent.parent / "llama.cpp" / "gguf-py"))
    from gguf import GGUFReader

    reader = GGUFReader(Path(work) / "model.gguf")
    fields = {k: reader.fields[k].contents() for k in reader.fields
              if k.startswith(("tokenizer.ggml.", "general.architecture")) or k.endswith(".context_length")}
    weights = load_file(str(Path(path) / "model.safetensors"))
    gguf_tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    # Each exported tensor's values, looked up by shape and content (names differ by design).
    matched = 0
    for tensor in weights.values():
        flat = np.sort(tensor.astype(np.float32).ravel())
        if any(g.size == flat.size and np.allclose(np.sort(g.astype(np.float32).ravel()), flat, atol=1e-6)
               for g in gguf_tensors.values()):
            matched += 1
    return {"pre": fields.get("tokenizer.ggml.pre"), "model": fields.get("tokenizer.ggml.model"),
            "n_tokens": len(fields.get("tokenizer.ggml.tokens") or []), "eos": fields.get("tokenizer.ggml.eos_token_id"),
            "bos": fields.get("tokenizer.ggml.bos_token_id"), "arch": fields.get("general.architecture"),
            "matched": matched, "n_weights": len(weights)}


def llamacpp(path, out, work):
    from pathlib import Path

    import numpy as np
    import torch
    from llama_cpp import Llama

    _, tok, model = load(path)
    # type_k/type_v 0 = GGML_TYPE_F32: llama.cpp's default f16 KV cache alone moves logits by ~1e-3.
    llm = Llama(model_path=str(Path(work) / "model.gguf"), logits_all=True, verbose=False, n_ctx=256, type_k=0, type_v=0)
    result = {"ids_equal": [], "max_diff": 0.0}
    for text in [TEXTS[1], "It's 33 years old, isn't it? Yes!\nA new line."]:
        ids = tok(text)["input_ids"]
        result["ids_equal"].append(ids == llm.tokenize(text.encode(), add_bos=False, special=False))
        llm.reset()
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
        with torch.no_grad():
            want = model(input_ids=torch.tensor([ids])).logits[0].numpy()
        result["max_diff"] = max(result["max_diff"], float(np.abs(got - want).max()))
    result["bos"], result["eos"] = llm.token_bos(), llm.token_eos()
    return result


if __name__ == "__main__":
    check, path, out_json = sys.argv[1:4]
    result = globals()[check](path, out_json, sys.argv[4] if len(sys.argv) > 4 else None)
    result["nlpssl_imported"] = "nlpssl" in sys.modules
    with open(out_json, "w") as f:
        json.dump(result, f)
