"""SimCSE: sentence rows, the InfoNCE loss by hand, duplicates, the export and what reads it."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from nlpssl.errors import NlpsslError
from nlpssl.recipe import RecipeError, load_recipe


def _simcse(tmp_path, encoder, **extra):
    return tiny_overrides(tmp_path, **{"simcse.encoder": str(encoder), "speed.bf16": "off", **extra})


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, mlm_export):
    """A finished SimCSE run with cls pooling (and so the MLP): (run folder, result)."""
    from nlpssl.pretrain import pretrain

    folder = tmp_path_factory.mktemp("simcse-cls")
    return folder, pretrain("simcse-tiny", _simcse(folder, mlm_export, **{"simcse.pooling": "cls",
                                                                          "training.max_steps": 4}))


def test_sentences_are_split_and_framed_one_per_row():
    import datasets

    from nlpssl.data import Tokens, pack, split_sentences

    texts = datasets.Dataset.from_dict({"text": ['He said "Stop!" Then he left. Why?\nA new line', "   "]})
    assert split_sentences(texts)["text"] == ['He said "Stop!"', "Then he left.", "Why?", "A new line"]
    # Chinese and Japanese put no space after a sentence's end; Arabic and Hindi have their own marks.
    texts = datasets.Dataset.from_dict({"text": ["猫が座った。「行こう！」と言った。犬は？", "他走了。好的", "كيف حالك؟ جيد", "यह है। वह"]})
    assert split_sentences(texts)["text"] == [
        "猫が座った。", "「行こう！」", "と言った。", "犬は？", "他走了。", "好的", "كيف حالك؟", "جيد", "यह है।", "वह",
    ]
    tokens = Tokens(np.array([5, 6, 7, 8, 9, 10, 11], np.int32), np.array([0, 2, 2, 7], np.int64))
    rows, _ = pack(tokens, 5, "sentence", {"pad": 0, "cls": 2, "sep": 3, "eos": 4})
    # an empty document is dropped; a long one is cut to fit [CLS] ... [SEP]
    assert rows.tolist() == [[2, 5, 6, 3, 0], [2, 7, 8, 9, 3]]


def test_document_positives_pair_sentences_of_the_same_text():
    from nlpssl.data import Tokens, held_out_documents, pack, sentence_pairs, sentences

    texts = ["One two three. Four five six! Seven eight nine.", "Only one sentence here.",
             "Wow. Ten eleven twelve. Thirteen fourteen fifteen.", " ".join(f"Sentence number {i}." for i in range(40))]
    flat = sentence_pairs(texts, seed=0)
    # 3 usable sentences: one pair (the odd one left); 1: none; "Wow." is too short: one pair; 40: 20 pairs
    assert len(flat) == 2 * (1 + 0 + 1 + 20)
    pairs = list(zip(flat[0::2], flat[1::2]))
    owners = [[i for i, t in enumerate(texts) if a in sentences([t]) and b in sentences([t])] for a, b in pairs]
    assert [o for o in owners if len(o) != 1] == [] and all(a != b for a, b in pairs)
    assert [o[0] for o in owners] == [0, 2] + [3] * 20
    assert sorted(flat[4:]) == sorted(sentences([texts[3]])), "each sentence is used once"
    # the pairs depend on the seed and the text, not on how the corpus is cut into chunks
    assert flat == sentence_pairs(texts[:2], 0) + sentence_pairs(texts[2:], 0)
    assert sentence_pairs(texts, seed=1)[4:] != flat[4:]
    # a pair's two sentences fall on the same side of the held-out split
    many = sentence_pairs([" ".join(f"Text {t} sentence {i} here." for i in range(10)) for t in range(40)], 0)
    mask = held_out_documents(many, "pair", 0.5, seed=0)
    assert np.array_equal(mask[0::2], mask[1::2]) and 0 < mask.sum() < len(mask)
    # a row holds the two sentences side by side, each half framed; a pair with an empty half is dropped
    tokens = Tokens(np.array([5, 6, 7, 8, 9, 10, 11], np.int32), np.array([0, 2, 3, 3, 5, 6, 7], np.int64))
    rows, _ = pack(tokens, 10, "pair", {"pad": 0, "cls": 2, "sep": 3, "eos": 4})
    # documents 2 and 3 (an empty one) are gone
    assert rows.tolist() == [[2, 5, 6, 3, 0, 2, 7, 3, 0, 0], [2, 10, 3, 0, 0, 2, 11, 3, 0, 0]]


def test_collator_trims_padding_and_masks_it():
    from nlpssl.objectives.simcse import SentenceCollator

    batch = SentenceCollator(pad_id=0)([{"input_ids": [2, 5, 3, 0, 0, 0]}, {"input_ids": [2, 5, 6, 7, 3, 0]}])
    assert batch["input_ids"].tolist() == [[2, 5, 3, 0, 0], [2, 5, 6, 7, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    # pair rows: every first half, then every second half, trimmed to the widest
    batch = SentenceCollator(pad_id=0, pairs=True)([{"input_ids": [2, 5, 3, 0, 2, 6, 6, 3]},
                                                     {"input_ids": [2, 7, 3, 0, 2, 8, 3, 0]}])
    assert batch["input_ids"].tolist() == [[2, 5, 3, 0], [2, 7, 3, 0], [2, 6, 6, 3], [2, 8, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0]]


def test_duplicates_are_not_negatives():
    from nlpssl.objectives.simcse import duplicate_pairs, simcse_loss

    ids = torch.tensor([[2, 5, 3], [2, 6, 3], [2, 5, 3]])
    dup = duplicate_pairs(ids)
    assert dup.tolist() == [[False, False, True], [False, False, False], [True, False, False]]
    torch.manual_seed(0)
    z1, z2 = torch.randn(3, 4), torch.randn(3, 4)
    sim = torch.nn.functional.normalize(z1, dim=-1) @ torch.nn.functional.normalize(z2, dim=-1).T / 0.05
    by_hand = torch.stack([
        torch.logsumexp(sim[0, [0, 1]], 0) - sim[0, 0],  # row 0 leaves out row 2, the same sentence
        torch.logsumexp(sim[1, :], 0) - sim[1, 1],
        torch.logsumexp(sim[2, [1, 2]], 0) - sim[2, 2],
    ]).mean()
    assert simcse_loss(z1, z2, 0.05, dup).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert simcse_loss(z1, z2, 0.05).item() > 0 and simcse_loss(z1, z2, 0.05).item() != pytest.approx(by_hand.item())
    # document positives: row 1's anchor is row 0's positive sentence, so row 0's positive is no negative of row 1
    positives = torch.tensor([[2, 6, 3], [2, 7, 3], [2, 8, 3]])
    assert duplicate_pairs(ids, positives).tolist() == [[False, False, False], [True, False, False],
                                                        [False, False, False]]


def test_with_dropout_off_the_views_agree_and_the_loss_is_infonce_by_hand(tmp_path, mlm_export):
    from nlpssl.objectives.simcse import MLP, duplicate_pairs
    from nlpssl.pretrain import setup

    # temperature 1: a loss near log(8), not near 0, so the comparison below means something
    run = setup(load_recipe("simcse-tiny", _simcse(tmp_path, mlm_export, **{"simcse.dropout": 0.0,
                                                                            "simcse.temperature": 1.0})), use_cpu=True)
    assert not hasattr(run.model, MLP), "mean pooling trains no MLP"
    batch = run.collator([run.data.train[i] for i in range(8)])
    assert not duplicate_pairs(batch["input_ids"]).any()
    run.model.train()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        z = run.model(input_ids=torch.cat([ids, ids]), attention_mask=torch.cat([mask, mask]))["embeddings"]
        loss = run.trainer.compute_loss(run.model, dict(batch))
    z1, z2 = z.chunk(2)
    assert torch.allclose(z1, z2, atol=1e-6), "without dropout the two views are the same"
    unit = torch.nn.functional.normalize(z1, dim=-1)
    sim = unit @ unit.T / 1.0
    by_hand = (torch.logsumexp(sim, dim=1) - sim.diagonal()).mean()
    assert 0.1 < loss.item() < np.log(8)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    # mean pooling over the real tokens of each sentence, by hand (the class's forward: the stock one)
    with torch.no_grad():
        hidden = type(run.model).forward(run.model, input_ids=ids, attention_mask=mask).last_hidden_state
    for i in range(len(ids)):
        n = int(mask[i].sum())
        assert torch.allclose(z1[i], hidden[i, :n].mean(0), atol=1e-5)


def test_document_positives_are_the_other_sentence_of_each_pair(tmp_path, mlm_export, capsys):
    """simcse.positive=document: row i's positive is its pair's other sentence, from the same story."""
    from nlpssl.data import sentences, source_texts
    from nlpssl.pretrain import pretrain, setup

    over = _simcse(tmp_path, mlm_export, **{"simcse.positive": "document", "simcse.dropout": 0.0,
                                            "simcse.temperature": 1.0})
    recipe = load_recipe("simcse-tiny", over)
    run = setup(recipe, use_cpu=True)
    assert len(run.data.train[0]["input_ids"]) == 2 * 32
    batch = run.collator([run.data.train[i] for i in range(8)])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[0] == 16 and (ids[:, 0] == run.tokenizer.cls_token_id).all()
    stories = [set(sentences([t])) for t in source_texts(recipe, None)]
    for i in range(8):
        a, b = (run.tokenizer.decode(ids[j][mask[j].bool()], skip_special_tokens=True) for j in (i, 8 + i))
        assert a != b and any(_holds(s, a) and _holds(s, b) for s in stories), (a, b)
    run.model.train()
    with torch.no_grad():
        z1, z2 = run.model(input_ids=ids, attention_mask=mask)["embeddings"].chunk(2)
        loss = run.trainer.compute_loss(run.model, dict(batch))
    sim = torch.nn.functional.normalize(z1, dim=-1) @ torch.nn.functional.normalize(z2, dim=-1).T
    assert loss.item() == pytest.approx((torch.logsumexp(sim, 1) - sim.diagonal()).mean().item(), rel=1e-5)
    assert not torch.allclose(z1, z2, atol=1e-3), "the positives are other sentences, not the same one again"
    capsys.readouterr()
    result = pretrain(load_recipe("simcse-tiny", over + ["training.max_steps=4"]))
    assert re.search(r"data: \d+ train / \d+ eval blocks of 2 x 32 tokens \(sentence pairs\)", capsys.readouterr().out)
    assert (result.export_dir / "1_Pooling" / "config.json").is_file()
    assert "positives: two sentences of the same document" in (result.export_dir / "README.md").read_text()


def _holds(sentences: set[str], decoded: str) -> bool:
    """The WordPiece decoding of a sentence (perhaps cut to fit its row) begins one of ``sentences``
    (spaces and case aside)."""
    squash = decoded.replace(" ", "").casefold()
    return any(s.replace(" ", "").casefold().startswith(squash) for s in sentences)


def test_with_dropout_on_the_views_differ_and_training_lowers_the_loss(tmp_path, mlm_export):
    from nlpssl.pretrain import setup

    run = setup(load_recipe("simcse-tiny", _simcse(tmp_path, mlm_export, **{
        "training.learning_rate": 1e-3, "training.max_steps": 12})), use_cpu=True)
    batch = run.collator([run.data.train[i] for i in range(8)])
    run.model.train()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        z = run.model(input_ids=torch.cat([ids, ids]), attention_mask=torch.cat([mask, mask]))["embeddings"]
    assert not torch.allclose(*z.chunk(2)), "dropout makes two views"
    run.trainer.train()
    losses = [h["loss"] for h in run.trainer.state.log_history if "loss" in h]
    assert len(losses) >= 3 and losses[-1] < losses[0]


def test_cls_export_is_stock_drops_the_mlp_and_pools_as_trained(cls_run, mlm_export):
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModel

    from nlpssl.embeddings import Encoder, read_pooling
    from nlpssl.objectives.simcse import MLP

    folder, result = cls_run
    out = result.export_dir
    with safe_open(str(folder / "run" / "final" / "model.safetensors"), framework="pt") as f:
        assert any(k.startswith(MLP) for k in f.keys()), "cls pooling trains the MLP (SimCSE)"
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert not any(k.startswith(MLP) for k in f.keys()), "the export leaves it out"
    model = AutoModel.from_pretrained(out)
    assert type(model).__name__ == "ModernBertModel"
    config, encoder = AutoConfig.from_pretrained(out), AutoConfig.from_pretrained(mlm_export)
    assert config.mlp_dropout == encoder.mlp_dropout == 0.0, "the export keeps the encoder's dropout, not SimCSE's"
    assert read_pooling(out) == "cls"
    assert json.loads((out / "modules.json").read_text())[1]["path"] == "1_Pooling"
    assert result.metrics["eval_uniformity"] < 0 and result.metrics["eval_loss"] is not None
    vectors = Encoder(out).encode(["The cat sat on the mat.", "A dog ran."], progress=False)
    assert vectors.shape == (2, config.hidden_size)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embed_command_prints_vectors_and_nearest_neighbours(cls_run):
    out = cls_run[1].export_dir
    texts = ["The cat sat on the mat.", "The cat sat on a mat.", "Rain fell all night over the hills."]
    run = subprocess.run([sys.executable, "-m", "nlpssl", "embed", str(out), *texts, "--nearest", "1", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert [f["text"] for f in found] == texts
    assert all(len(f["nearest"]) == 1 and f["nearest"][0]["text"] != f["text"] for f in found)
    assert found[0]["nearest"][0]["text"] == texts[1], "the near-copy is the nearest"
    plain = subprocess.run([sys.executable, "-m", "nlpssl", "embed", str(out), texts[0]], capture_output=True,
                           text=True, timeout=120)
    vector = json.loads(plain.stdout)["vector"]
    assert len(vector) == 32 and abs(sum(x * x for x in vector) - 1.0) < 1e-4
    bad = subprocess.run([sys.executable, "-m", "nlpssl", "embed", str(out), texts[0], "--nearest", "3"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--nearest needs two texts or more" in bad.stderr, bad.stderr
    bad = subprocess.run([sys.executable, "-m", "nlpssl", "embed", str(out), *texts[:2], "--nearest", "3"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--nearest must be between 1 and the number of other texts, 1 (got 3)" in bad.stderr


def test_finetune_pools_as_the_export_declares(tmp_path, mlm_export):
    from nlpssl.embeddings import write_pooling_files
    from nlpssl.finetune import build_classifier
    from nlpssl.tokenizer import load_tokenizer

    recipe = load_recipe("finetune-tiny", [f"model={mlm_export}", f"training.output_dir={tmp_path / 'ft'}"])
    tok = load_tokenizer(mlm_export)
    assert build_classifier(mlm_export, recipe, ["a", "b"], tok).config.classifier_pooling == "mean"
    declared = tmp_path / "declared"
    import shutil

    shutil.copytree(mlm_export, declared)
    write_pooling_files(declared, "cls", 32, 32)
    assert build_classifier(declared, recipe, ["a", "b"], tok).config.classifier_pooling == "cls"


def test_bad_encoders_and_settings_are_refused(tmp_path, mlm_export):
    from nlpssl.pretrain import pretrain

    with pytest.raises(NlpsslError, match=r"not a model folder \(no config.json\)"):
        pretrain("simcse-tiny", _simcse(tmp_path / "a", tmp_path / "nowhere"))
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(NlpsslError, match=r"is a 'gpt2' model, not an encoder"):
        pretrain("simcse-tiny", _simcse(tmp_path / "b", gpt))
    with pytest.raises(RecipeError) as err:
        load_recipe("simcse-tiny", _simcse(tmp_path / "c", mlm_export, **{
            "simcse.temperature": 0, "simcse.dropout": 1.5, "training.per_device_train_batch_size": 1}))
    text = str(err.value)
    assert "simcse.temperature is out of range (got 0.0)" in text and "simcse.dropout is out of range" in text
    assert "too small for SimCSE (got 1)" in text
    with pytest.raises(RecipeError, match=r"distill and simcse are two objectives"):
        load_recipe("simcse-tiny", _simcse(tmp_path / "d", mlm_export, **{"distill.teacher": str(mlm_export)}))


def test_sentences_longer_than_a_row_are_counted_and_said(tmp_path, mlm_export, capsys):
    """One sentence a row: what does not fit is cut, so the run says how many were (was silent)."""
    from nlpssl.data import prepare_data, sentences, source_texts
    from nlpssl.pretrain import pretrain
    from nlpssl.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(mlm_export)
    recipe = load_recipe("simcse-tiny", _simcse(tmp_path, mlm_export, **{"data.block_size": 12}))
    stats = prepare_data(recipe, tokenizer).stats
    every = sentences(list(source_texts(recipe, None)))
    longer = sum(len(ids) > 10 for ids in tokenizer(every, add_special_tokens=False)["input_ids"])
    assert 0 < stats["train_cut_documents"] <= longer < len(every)
    assert stats["train_cut_documents"] > 0.8 * longer * stats["train_documents"] / len(every)  # ~all but the held-out
    wide = load_recipe("simcse-tiny", _simcse(tmp_path / "wide", mlm_export, **{"data.block_size": 256}))
    assert prepare_data(wide, tokenizer).stats["train_cut_documents"] == 0
    pretrain(load_recipe("simcse-tiny", _simcse(tmp_path / "run", mlm_export, **{"data.block_size": 12,
                                                                                  "training.max_steps": 1})))
    said = capsys.readouterr()
    assert re.search(rf"data: {stats['train_cut_documents']} of {stats['train_documents']} training sentences "
                     r"\(\d+\.\d%\) are longer than a row of data\.block_size=12 tokens and were cut to fit; raise "
                     r"data\.block_size", said.out + said.err)


def test_two_process_simcse_of_a_bert_encoder_whose_pooler_goes_unused(tmp_path):
    # DDP is told not to search for unused weights where the loss reaches them all; a BERT body's pooler
    # is one the sentence vector never reads, so there the search stays on, or the second step would fail.
    import os

    from nlpssl.pretrain import pretrain
    from test_pretrain import ROOT, launcher

    encoder = pretrain("bert-classic-tiny", tiny_overrides(tmp_path / "bert", **{"training.max_steps": 2})).export_dir
    over = _simcse(tmp_path / "simcse", encoder, **{"training.max_steps": 4})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launcher("torchrun"), "-m", "nlpssl", "pretrain", "simcse-tiny", *over], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    metrics = json.loads((tmp_path / "simcse" / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 4


def test_train_tokens_count_the_sentences_tokens_not_their_padding(tmp_path, mlm_export):
    # One sentence a row: metrics.json counted every row as data.block_size tokens, padding and all, so
    # train_tokens and tokens/s read several times what the model saw. Now the Trainer counts the real
    # ones; one step over the whole training set must count exactly its non-padding tokens.
    from nlpssl.data import prepare_data
    from nlpssl.pretrain import pretrain
    from nlpssl.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(mlm_export)
    over = {"data.builtin_stories": 30, "training.eval_strategy": "'no'", "training.save_strategy": "'no'",
            "export.enabled": False}
    recipe = load_recipe("simcse-tiny", _simcse(tmp_path, mlm_export, **over))
    rows = prepare_data(recipe, tokenizer).train["input_ids"]
    real = sum(int(i) != tokenizer.pad_token_id for row in rows for i in row)
    m = pretrain(load_recipe("simcse-tiny", _simcse(tmp_path, mlm_export, **over, **{
        "training.max_steps": 1, "training.per_device_train_batch_size": len(rows)}))).metrics
    assert m["train_tokens"] == real < len(rows) * recipe.data.block_size
    assert m["train_tokens_per_second"] == pytest.approx(real / m["train_runtime_s"], rel=1e-6)
