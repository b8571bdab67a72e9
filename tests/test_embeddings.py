"""nlpssl.embeddings: pooling, the sentence-transformers files, the encoder and the scores, on a tiny random BERT."""

import json

import numpy as np
import pytest

from nlpssl.embeddings import (
    POOLING_CONFIG,
    Encoder,
    alignment,
    knn_accuracy,
    linear_probe_accuracy,
    nearest,
    pool,
    read_pooling,
    uniformity,
    write_pooling_files,
)
from nlpssl.errors import NlpsslError

TEXTS = ["the cat sat on the mat", "a dog ran", "the little girl found a red ball in the garden today"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A stock Hub-format folder: a random 2-layer BertModel (hidden 32) and an mlm-template tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    from nlpssl.corpus import generate_stories
    from nlpssl.tokenizer import set_template, train_tokenizer

    out = tmp_path_factory.mktemp("encoder")
    tok = train_tokenizer(list(generate_stories(50, seed=1)), out, algorithm="wordpiece", vocab_size=200,
                          num_sentinels=0)
    set_template(tok, "mlm")
    tok.save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, pad_token_id=tok.pad_token_id)
    BertModel(config).save_pretrained(out)
    return out


def test_mean_pooling_ignores_padding(encoder_dir, one_torch_thread):
    enc = Encoder(encoder_dir, pooling="mean", batch_size=8)
    alone = enc.encode(TEXTS[1:2], normalize=False)
    padded = enc.encode(TEXTS, normalize=False)  # TEXTS[1] is padded to the longest text in the batch
    lengths = [len(ids) for ids in enc.tokenizer(TEXTS)["input_ids"]]
    assert lengths[1] < lengths[2]  # so the batch really pads it
    np.testing.assert_allclose(padded[1], alone[0], atol=1e-5)
    assert padded.dtype == np.float32 and padded.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(enc.encode(TEXTS), axis=1), 1.0, atol=1e-5)


def test_pool_on_hand_written_tensors():
    import torch

    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # [B=2, L=3, H=2]
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, "cls").tolist() == [[0.0, 1.0], [6.0, 7.0]]  # token 0 of each row
    assert pool(hidden, mask, "mean").tolist() == [[1.0, 2.0], [8.0, 9.0]]  # row 0 averages tokens 0-1 only
    with pytest.raises(NlpsslError, match="max"):
        pool(hidden, mask, "max")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_files_round_trip(tmp_path, pooling):
    assert read_pooling(tmp_path) == "mean"  # no files yet
    write_pooling_files(tmp_path, pooling, hidden_size=32, max_seq_length=64)
    assert read_pooling(tmp_path) == pooling
    modules = json.loads((tmp_path / "modules.json").read_text())
    kinds = [(m["path"], m["type"].rsplit(".", 1)[1]) for m in modules]
    assert kinds == [("", "Transformer"), ("1_Pooling", "Pooling")]
    config = json.loads((tmp_path / POOLING_CONFIG).read_text())
    modes_on = [k for k, v in config.items() if k.startswith("pooling_mode") and v is True]
    assert config["word_embedding_dimension"] == 32 and len(modes_on) == 1
    assert json.loads((tmp_path / "sentence_bert_config.json").read_text())["max_seq_length"] == 64


def test_unsupported_pooling_mode_names_the_file(tmp_path):
    write_pooling_files(tmp_path, "mean", hidden_size=8, max_seq_length=16)
    path = tmp_path / POOLING_CONFIG
    config = json.loads(path.read_text()) | {"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}
    path.write_text(json.dumps(config))
    with pytest.raises(NlpsslError, match=r"1_Pooling/config\.json.*pooling_mode_max_tokens"):
        read_pooling(tmp_path)
    with pytest.raises(NlpsslError, match="unknown pooling"):
        write_pooling_files(tmp_path, "max", hidden_size=8, max_seq_length=16)


def test_cls_pooling_uses_first_token(encoder_dir, one_torch_thread):
    import torch

    enc = Encoder(encoder_dir, pooling="cls")
    batch = enc.tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.inference_mode():
        hidden = enc.model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).last_hidden_state
    np.testing.assert_allclose(enc.encode(TEXTS[:1], normalize=False)[0], hidden[0, 0].numpy(), atol=1e-5)
    assert not np.allclose(enc.encode(TEXTS[:1]), Encoder(encoder_dir, pooling="mean").encode(TEXTS[:1]))


def test_encoder_reads_pooling_from_the_folder(encoder_dir, one_torch_thread):
    write_pooling_files(encoder_dir, "cls", hidden_size=32, max_seq_length=128)
    try:
        assert Encoder(encoder_dir).pooling == "cls"
    finally:
        for name in ("modules.json", "sentence_bert_config.json", str(POOLING_CONFIG)):
            (encoder_dir / name).unlink()
    assert Encoder(encoder_dir).pooling == "mean"


def test_encoder_errors(tmp_path, encoder_dir):
    with pytest.raises(NlpsslError, match=r"has no config\.json.*export folder"):
        Encoder(tmp_path)
    with pytest.raises(NlpsslError, match="does not exist"):
        Encoder(tmp_path / "missing")
    enc = Encoder(encoder_dir)
    for bad in ([], "one text", ["ok", 3]):
        with pytest.raises(NlpsslError, match="encode"):
            enc.encode(bad)


def test_nearest_returns_the_text_itself_first(encoder_dir, one_torch_thread):
    x = Encoder(encoder_dir).encode(TEXTS)
    hits = nearest(x, x, k=2)
    assert [row[0][0] for row in hits] == [0, 1, 2]
    assert all(row[0][1] == pytest.approx(1.0, abs=1e-5) and row[0][1] >= row[1][1] for row in hits)


def test_alignment_and_uniformity_by_hand():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8))
    assert alignment(x, x) == pytest.approx(0.0, abs=1e-9)
    # Antipodal unit vectors: ||x1 - x2||^2 = 4, one pair, so log(exp(-2 * 4)) = -8.
    assert uniformity(np.array([[1.0, 0.0], [-1.0, 0.0]]), t=2) == pytest.approx(-8.0)
    assert alignment(np.array([[3.0, 0.0]]), np.array([[0.0, 5.0]]), alpha=2) == pytest.approx(2.0)  # normalised
    assert uniformity(x) < uniformity(x[:, :1])  # spread over 8 dims is more uniform than along one axis


def test_knn_and_linear_probe_on_separable_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    labels = np.repeat(["a", "b", "c", "d"], 30)
    x = centres[np.repeat(np.arange(4), 30)] + rng.normal(size=(120, 4))
    train, test = np.arange(120) % 3 != 0, np.arange(120) % 3 == 0
    assert knn_accuracy(x[train], labels[train], x[test], labels[test], k=5) == 1.0
    assert linear_probe_accuracy(x[train], labels[train], x[test], labels[test]) == 1.0
    shuffled = rng.permutation(labels[train])
    assert knn_accuracy(x[train], shuffled, x[test], labels[test], k=5) < 0.7  # would pass by luck otherwise


def test_knn_tie_goes_to_larger_summed_similarity():
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    # k=2: one vote each; the query is nearer the "x" row, so "x" wins the tie.
    assert knn_accuracy(train, ["x", "y"], np.array([[0.9, 0.1]]), ["x"], k=2) == 1.0
    assert knn_accuracy(train, ["x", "y"], np.array([[0.1, 0.9]]), ["y"], k=2) == 1.0
