"""Streaming (data.streaming: true): the cached path's blocks, exact resume after kill -9, disjoint ranks."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_overrides
from nlpssl.errors import NlpsslError
from nlpssl.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent


def _stories_in_files(folder: Path, texts: list[str], n_files: int, suffix: str = ".jsonl") -> Path:
    folder.mkdir()
    for i in range(n_files):
        part = texts[i::n_files]
        with open(folder / f"part-{i:02d}{suffix}", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in part)
    return folder


def _epoch(stream, n: int) -> list[dict]:
    return list(itertools.islice(iter(stream), n))


@pytest.mark.parametrize("name", ["bert-tiny-wwm", "gpt-tiny", "simcse-tiny", "simcse-tiny pairs"])
def test_stream_blocks_equal_the_cached_blocks(tmp_path, tiny_tokenizer, name):
    """One pass of a one-process stream is the cached training set, row for row; then it starts over."""
    from nlpssl.data import prepare_data
    from nlpssl.stream import BlockStream, held_out_blocks

    over = tiny_overrides(tmp_path)
    if name.startswith("simcse-tiny"):  # its model is the encoder's; only the data settings matter here
        over = [o for o in over if not o.startswith("model.")]
    if name.endswith("pairs"):  # two sentences of a document a row
        name, over = "simcse-tiny", [*over, "simcse.positive=document", "data.eval_fraction=0.2"]
    recipe = load_recipe(name, over)
    cached = prepare_data(recipe, tiny_tokenizer)
    n = len(cached.train)
    rows = _epoch(BlockStream(recipe, tiny_tokenizer, chunk_bytes=5_000), n + 1)  # many small chunks
    assert [r["row"] for r in rows] == list(range(n + 1))
    assert np.array_equal(np.array([r["input_ids"] for r in rows[:n]]), np.asarray(cached.train["input_ids"]))
    assert np.array_equal(np.array([r["word_starts"] for r in rows[:n]]), np.asarray(cached.train["word_starts"]))
    assert rows[n]["input_ids"] == rows[0]["input_ids"], "the second epoch starts from the top"
    held, stats = held_out_blocks(recipe, tiny_tokenizer, chunk_bytes=5_000)
    assert held["input_ids"] == cached.eval["input_ids"]
    assert stats == {k: cached.stats[k] for k in stats}


def test_stream_of_many_files_equals_the_cached_path_on_the_same_files(tmp_path, tiny_tokenizer, story_texts):
    from nlpssl.data import prepare_data
    from nlpssl.stream import BlockStream

    folder = _stories_in_files(tmp_path / "corpus", story_texts[:300], 5)
    recipe = load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.source": str(folder)}))
    cached = prepare_data(recipe, tiny_tokenizer)
    rows = _epoch(BlockStream(recipe, tiny_tokenizer, chunk_bytes=3_000), len(cached.train))
    assert [r["input_ids"] for r in rows] == cached.train["input_ids"]


@pytest.mark.parametrize("n_files", [1, 3, 4])
def test_two_ranks_read_disjoint_parts_that_cover_the_corpus(tmp_path, tiny_tokenizer, story_texts, n_files):
    """Files split between ranks when there are enough, documents otherwise; never the same text twice."""
    from nlpssl.data import held_out
    from nlpssl.stream import BlockStream

    texts = story_texts[:200]
    folder = _stories_in_files(tmp_path / "corpus", texts, n_files)
    recipe = load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.source": str(folder)}))
    parts = []
    for rank in (0, 1):
        stream = BlockStream(recipe, tiny_tokenizer, rank=rank, world=2)
        chunks = list(stream._chunks(0, 0))
        parts.append([doc for _, docs in chunks for doc in docs])
        assert len(stream.units) == (n_files // 2 + (rank < n_files % 2) if n_files >= 2 else 1)
    training = [t for t, out in zip(texts, held_out(texts, 0.05, 0)) if not out]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(training)
    assert all(parts)


def _probe_run(tmp_path, over, probe, *extra, wait_for=None, kill=False):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "NLPSSL_PROBE_DIR": str(probe)}
    probe.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ddp_probe.py"), "pretrain", "bert-tiny-wwm",
                             *over, *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if kill:
        deadline = time.time() + 300
        while not (wait_for / "trainer_state.json").exists():
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.time() < deadline, f"{wait_for} never appeared"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    out = proc.communicate(timeout=600)[0]
    return proc.returncode, out


def _batches(probe: Path) -> dict[int, list[str]]:
    steps: dict[int, list[str]] = {}
    for line in (probe / "batches0.txt").read_text().split("\n"):
        if line:
            step, digest = line.split()
            steps.setdefault(int(step), []).append(digest)
    return steps


def test_kill_9_then_resume_trains_on_the_same_batches(tmp_path, story_texts):
    """Every batch (masks included) of an interrupted and resumed stream equals the uninterrupted run's."""
    folder = _stories_in_files(tmp_path / "corpus", story_texts[:400], 3)
    base = {"data.source": str(folder), "data.streaming": "true", "training.max_steps": 30,
            "training.save_steps": 10, "training.eval_steps": 30, "tokenizer.vocab_size": 300}
    whole = tmp_path / "whole"
    code, out = _probe_run(tmp_path, tiny_overrides(whole, **base), whole / "probe")
    assert code == 0, out[-3000:]
    cut = tmp_path / "cut"
    over = tiny_overrides(cut, **base, **{"tokenizer.path": str(whole / "run" / "tokenizer")})
    code, out = _probe_run(tmp_path, over, cut / "probe", wait_for=cut / "run" / "checkpoint-20", kill=True)
    assert code == -signal.SIGKILL, out[-3000:]
    state = json.loads((cut / "run" / "checkpoint-20" / "data_state-rank0.json").read_text())
    assert state["row"] + state["skip"] == 20 * 8 and state["world_size"] == 1
    before = _batches(cut / "probe")
    code, out = _probe_run(tmp_path, over, cut / "probe", "training.resume=true")
    assert code == 0, out[-3000:]
    assert "resuming at row 160" in out
    expected, got = _batches(whole / "probe"), _batches(cut / "probe")
    assert sorted(expected) == list(range(1, 31))
    # Steps 21.. were trained twice in the cut run when the kill came late: the resumed run's come last.
    resumed = {step: digests[-1:] for step, digests in got.items()}
    assert all(before[s][:1] == expected[s] for s in range(1, 21))
    assert {s: resumed[s] for s in range(21, 31)} == {s: expected[s] for s in range(21, 31)}
    for run in (whole, cut):
        assert json.loads((run / "run" / "metrics.json").read_text())["steps"] == 30


def test_resume_with_another_number_of_processes_is_refused(tmp_path):
    from nlpssl.stream import load_state, state_file

    ckpt = tmp_path / "checkpoint-10"
    ckpt.mkdir()
    for rank in (0, 1):
        (ckpt / state_file(rank)).write_text(json.dumps({"world_size": 2, "rank": rank, "row": 0, "skip": 0}))
    with pytest.raises(NlpsslError, match=r"streamed with 2 process\(es\), this one has 1 .* resume with 2"):
        load_state(ckpt, 0, 1)
    with pytest.raises(NlpsslError, match=r"data_state-rank2.json cannot be read .* run with 2 process\(es\), this one has 3"):
        load_state(ckpt, 2, 3)
    assert load_state(ckpt, 1, 2)["rank"] == 1


def test_changed_data_settings_on_resume_are_refused(tmp_path, tiny_tokenizer):
    from nlpssl.stream import BlockStream, state_file, streaming_data

    recipe = load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.streaming": "true"}))
    ckpt = tmp_path / "checkpoint-6"
    ckpt.mkdir()
    stream = BlockStream(recipe, tiny_tokenizer)
    _epoch(stream, 3)
    (ckpt / state_file(0)).write_text(json.dumps(stream.state_at(3)))
    assert streaming_data(recipe, tiny_tokenizer, 0, 1, str(ckpt)).train.consumed == 3
    changed = load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.streaming": "true", "data.block_size": 48}))
    with pytest.raises(NlpsslError, match=r"data settings changed .*\(block_size: 32 -> 48\)"):
        streaming_data(changed, tiny_tokenizer, 0, 1, str(ckpt))


def test_a_resumed_stream_continues_where_the_state_says(tmp_path, tiny_tokenizer):
    """Restored from the state at row k, the stream yields rows k, k+1, ... of the uninterrupted one."""
    from nlpssl.stream import BlockStream

    recipe = load_recipe("gpt-tiny", tiny_overrides(tmp_path))
    whole = _epoch(BlockStream(recipe, tiny_tokenizer, chunk_bytes=4_000), 2500)  # past the end of one pass
    for k in (0, 7, 333, 1964, 2001):
        first = BlockStream(recipe, tiny_tokenizer, chunk_bytes=4_000)
        _epoch(first, k + 5)  # read ahead, as a loader may
        state = json.loads(json.dumps(first.state_at(k)))
        again = _epoch(BlockStream(recipe, tiny_tokenizer, state=state, chunk_bytes=4_000), 2500 - k)
        assert [r["input_ids"] for r in again] == [r["input_ids"] for r in whole[k:]], k
        assert again[0]["row"] == k


def test_a_malformed_file_in_the_middle_of_a_stream_names_the_file(tmp_path, tiny_tokenizer, story_texts):
    """The same error as the cached path gives, naming the file and line, raised when the stream reaches it."""
    from nlpssl.data import prepare_data
    from nlpssl.stream import BlockStream

    folder = _stories_in_files(tmp_path / "corpus", story_texts[:60], 3)
    bad = folder / "part-01.jsonl"
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join(lines[:5] + ['{"text": "cut off'] + lines[5:]) + "\n")
    recipe = load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.source": str(folder)}))
    with pytest.raises(NlpsslError) as cached:
        prepare_data(recipe, tiny_tokenizer)
    stream = iter(BlockStream(recipe, tiny_tokenizer, chunk_bytes=1_000))
    next(stream)  # part-00 reads fine
    with pytest.raises(NlpsslError) as streamed:
        list(itertools.islice(stream, 10_000))
    assert str(streamed.value) == str(cached.value)
    assert "part-01.jsonl:6: line is not valid JSON" in str(streamed.value)


def test_streaming_settings_are_checked_before_any_work(tmp_path):
    with pytest.raises(NlpsslError, match=r"data.streaming=true needs training.max_steps \(got -1\)"):
        load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.streaming": "true", "training.max_steps": -1}))
    with pytest.raises(NlpsslError, match=r"training.dataloader_num_workers=2.*Set training.dataloader_num_workers=0"):
        load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.streaming": "true",
                                                             "training.dataloader_num_workers": 2}))
    with pytest.raises(NlpsslError, match=r"Leave data.max_texts null with data.streaming=true"):
        load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.streaming": "true", "data.max_texts": 10}))


def test_a_streaming_run_logs_documents_and_tokens_per_second(tmp_path):
    from nlpssl.pretrain import pretrain

    result = pretrain(load_recipe("gpt-tiny", tiny_overrides(tmp_path, **{"data.streaming": "true"})))
    history = json.loads((result.output_dir / "log_history.json").read_text())
    logged = [h for h in history if "loss" in h]
    assert logged and all(h["stream_documents"] > 0 and h["stream_tokens_per_s"] > 0 for h in logged)
    assert result.metrics["steps"] == 12 and (result.export_dir / "model.safetensors").is_file()
    assert not (tmp_path / "cache").exists(), "streaming writes no cache"


def test_two_process_stream_reads_disjoint_uneven_parts_without_hanging(tmp_path, story_texts):
    """torchrun, 2 ranks, 3 files: rank 0 reads two, rank 1 one (and loops over it sooner); both finish."""
    from test_pretrain import launcher

    folder = _stories_in_files(tmp_path / "corpus", story_texts[:60], 3)  # ~140 rows a file: both ranks loop
    over = tiny_overrides(tmp_path, **{"data.source": str(folder), "data.streaming": "true",
                                       "training.max_steps": 40, "training.save_steps": 20, "training.eval_steps": 40})
    probe = tmp_path / "probe"
    probe.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "NLPSSL_PROBE_DIR": str(probe)}
    proc = subprocess.run([*launcher("torchrun"), str(ROOT / "tests" / "ddp_probe.py"), "pretrain", "bert-tiny", *over],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "(2 of 3 file(s) on this process)" in out  # rank 0's log line
    seen = [(probe / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert [len(rows) for rows in seen] == [40 * 8, 40 * 8]
    assert not set(seen[0]) & set(seen[1]), "the ranks must read disjoint text"
    assert len(set(seen[1])) < len(set(seen[0])) < len(seen[0]), "rank 1's part is the smaller, both loop over theirs"
    states = [json.loads((tmp_path / "run" / "checkpoint-20" / f"data_state-rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["world_size"] for s in states] == [2, 2] and [s["row"] + s["skip"] for s in states] == [160, 160]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["world_size"] == 2


def test_a_one_document_corpus_is_refused_in_streaming_with_the_ways_out(tmp_path, tiny_tokenizer, story_texts):
    """The cached path holds out the end of a lone document; a stream cannot, and says what to change."""
    from nlpssl.data import prepare_data
    from nlpssl.stream import held_out_blocks

    book = tmp_path / "book.txt"
    book.write_text(" ".join(story_texts[:100]), encoding="utf-8")  # one paragraph: one document
    overrides = {"data.source": str(book), "data.eval_fraction": 0.1}
    cached = prepare_data(load_recipe("gpt-tiny", tiny_overrides(tmp_path, **overrides)), tiny_tokenizer)
    assert cached.stats["eval_blocks"] > 0 and cached.stats["train_blocks"] > 0
    recipe = load_recipe("gpt-tiny", tiny_overrides(tmp_path, **overrides, **{"data.streaming": "true"}))
    with pytest.raises(NlpsslError, match=r"data\.streaming: the source .*book\.txt' is a single document \(data\.txt_unit="
                                          r"'paragraph'\).*\(got 1 document\)\. Train without data\.streaming \(the "
                                          r"cached path holds out .*data\.txt_unit=line"):
        held_out_blocks(recipe, tiny_tokenizer)


def test_a_bad_file_met_mid_stream_keeps_the_steps_before_it_and_the_resume_loses_nothing(tmp_path):
    """A file the stream cannot parse stops the run with its error and a checkpoint of the steps taken
    (not of the batches read for the next step: 2 accumulation steps, so one may be read before the
    error); fixed under the same name and resumed, every batch equals the uninterrupted run's."""
    from nlpssl.corpus import generate_stories

    texts = list(generate_stories(1000, seed=2))  # ~600 KB: the bad line is in the stream's second chunk
    base = {"data.streaming": "true", "data.eval_max_blocks": 16, "training.max_steps": 60,
            "training.per_device_train_batch_size": 32, "training.gradient_accumulation_steps": 2,
            "training.save_steps": 1000, "training.eval_steps": 60, "tokenizer.vocab_size": 300}
    good = _stories_in_files(tmp_path / "good", texts, 2)
    whole = tmp_path / "whole"
    code, out = _probe_run(tmp_path, tiny_overrides(whole, **base, **{"data.source": str(good)}), whole / "probe")
    assert code == 0, out[-3000:]
    folder = _stories_in_files(tmp_path / "corpus", texts, 2)
    bad = folder / "part-01.jsonl"
    fixed = bad.read_text()
    lines = fixed.splitlines()
    bad.write_text("\n".join(lines[:2] + ['{"text": "cut off'] + lines[2:]) + "\n")
    cut = tmp_path / "cut"
    over = tiny_overrides(cut, **base, **{"data.source": str(folder), "tokenizer.path": str(whole / "run" / "tokenizer")})
    code, out = _probe_run(tmp_path, over, cut / "probe")
    assert code != 0 and "part-01.jsonl:3: line is not valid JSON" in out, out[-3000:]
    saved = list((cut / "run").glob("checkpoint-*"))
    assert len(saved) == 1, out[-3000:]
    step = int(saved[0].name.split("-")[1])
    assert 0 < step < 60 and f"The {step} steps trained before it are saved in {saved[0]}" in out
    state = json.loads((saved[0] / "data_state-rank0.json").read_text())
    assert state["row"] + state["skip"] == step * 64
    # Resumed before the fix, it stops again at once: the checkpoint it resumed from is named, not saved over.
    written = {p.name: p.stat().st_mtime_ns for p in saved[0].iterdir()}
    code, again = _probe_run(tmp_path, over, cut / "probe-unfixed", "training.resume=true")
    assert code != 0 and f"The {step} steps trained before it are saved in {saved[0]}" in again, again[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in saved[0].iterdir()} == written
    bad.write_text(fixed)  # fixed under the same name
    code, out = _probe_run(tmp_path, over, cut / "probe", "training.resume=true")
    assert code == 0, out[-3000:]
    assert f"resuming at row {step * 64}" in out
    expected, got = _batches(whole / "probe"), _batches(cut / "probe")
    assert sorted(expected) == list(range(1, 61))
    # A step whose first batch was read when the error came appears twice: the resumed run's come last.
    assert {s: got[s][-2:] for s in got} == expected
    assert json.loads((cut / "run" / "metrics.json").read_text())["steps"] == 60


def test_a_stream_resume_after_its_files_were_renamed_is_refused(tmp_path, tiny_tokenizer, story_texts):
    from nlpssl.stream import BlockStream, state_file, streaming_data

    folder = _stories_in_files(tmp_path / "corpus", story_texts[:100], 2)
    recipe = load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.source": str(folder), "data.streaming": "true"}))
    ckpt = tmp_path / "checkpoint-6"
    ckpt.mkdir()
    stream = BlockStream(recipe, tiny_tokenizer)
    _epoch(stream, 3)
    (ckpt / state_file(0)).write_text(json.dumps(stream.state_at(3)))
    (folder / "part-00.jsonl").rename(folder / "part-02.jsonl")  # the same count, another order
    with pytest.raises(NlpsslError, match=r"file names of data.source .* changed .*\(as many files, 2, but renamed or "
                                          r"replaced\).*Give the files their old names"):
        streaming_data(recipe, tiny_tokenizer, 0, 1, str(ckpt))
    wider = load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.source": str(folder), "data.streaming": "true",
                                                                 "data.block_size": 48}))
    with pytest.raises(NlpsslError, match=r"data settings changed .*\(block_size: 32 -> 48\)"):
        streaming_data(wider, tiny_tokenizer, 0, 1, str(ckpt))  # other changes beside a rename are listed
    (folder / "part-02.jsonl").rename(folder / "part-00.jsonl")
    assert streaming_data(recipe, tiny_tokenizer, 0, 1, str(ckpt)).train.consumed == 3
    legacy = {k: v for k, v in stream.state_at(3).items() if k != "file_names"}  # a checkpoint of an older nlpssl
    (ckpt / state_file(0)).write_text(json.dumps(legacy))
    assert streaming_data(recipe, tiny_tokenizer, 0, 1, str(ckpt)).train.consumed == 3


def test_a_stream_that_stops_with_no_file_to_blame_is_not_told_to_fix_one(tmp_path, monkeypatch, capsys):
    """A Hub (or built-in) stream that fails mid-run (a dropped connection) keeps its steps too, and the
    advice is to resume once it reads again: there is no file to fix in place."""
    from nlpssl.pretrain import pretrain
    from nlpssl.stream import BlockStream

    chunks = BlockStream._chunks

    def dropped(self, unit, record):  # a few documents, then the connection goes
        for at, docs in chunks(self, unit, record):
            yield at, docs[:20]
            raise ConnectionError("the Hub stopped answering")

    monkeypatch.setattr(BlockStream, "_chunks", dropped)
    recipe = load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.streaming": "true", "training.max_steps": 60,
                                                             "training.save_steps": 1000}))
    with pytest.raises(ConnectionError):
        pretrain(recipe)
    said = capsys.readouterr().out
    saved = list((tmp_path / "run").glob("checkpoint-*"))
    assert len(saved) == 1 and f"steps trained before it are saved in {saved[0]}" in said, said[-3000:]
    assert "fix the file" not in said and "'builtin' reads again" in said and "training.resume=true" in said


def test_a_checkpoint_that_saved_its_source_as_a_relative_path_still_resumes(tmp_path, tiny_tokenizer, story_texts,
                                                                            monkeypatch):
    """Older checkpoints hold data.source as written ('corpus'); recipes now hold it absolute."""
    from nlpssl.stream import BlockStream, state_file, streaming_data

    monkeypatch.chdir(tmp_path)
    folder = _stories_in_files(tmp_path / "corpus", story_texts[:100], 2)
    recipe = load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"data.source": "corpus", "data.streaming": "true"}))
    assert recipe.data.source == str(folder)
    ckpt = tmp_path / "checkpoint-6"
    ckpt.mkdir()
    stream = BlockStream(recipe, tiny_tokenizer)
    _epoch(stream, 3)
    old = {k: v for k, v in stream.state_at(3).items() if k != "file_names"} | {"source": "corpus"}
    (ckpt / state_file(0)).write_text(json.dumps(old))
    assert streaming_data(recipe, tiny_tokenizer, 0, 1, str(ckpt)).train.consumed == 3
