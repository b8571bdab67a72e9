"""The bad inputs a new user hits: each gives an error that says where, what (with the value) and
how to fix it, before any heavy work, and leaves nothing half-written behind."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_overrides
from nlpssl.errors import NlpsslError
from nlpssl.recipe import RecipeError, load_recipe
from nlpssl.runs import owner_tag

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """One tiny finished masked-LM run and one causal-LM run, each with its export."""
    from nlpssl.pretrain import pretrain

    base = tmp_path_factory.mktemp("runs")
    runs = {}
    for name in ("bert-tiny", "gpt-tiny"):
        over = tiny_overrides(base / name, **{"training.max_steps": 5, "training.save_steps": 5,
                                              "training.eval_steps": 5})
        runs[name] = pretrain(load_recipe(name, over))
    return runs


def _copy_run(result, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(result.output_dir, run)
    saved = run / "recipe.yaml"  # the copy is a run of its own folder
    saved.write_text(saved.read_text().replace(str(result.output_dir), str(run)))
    return run


# ------------------------------------------------------------------------------------------------
# export never deletes what it did not create


def test_export_refuses_a_folder_it_did_not_write(finished_runs, tmp_path):
    from nlpssl.export import export_run

    run = finished_runs["bert-tiny"].output_dir
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(NlpsslError, match=r"exists and is not an earlier nlpssl export \(it holds thesis.tex"):
        export_run(run, mine)
    assert (mine / "thesis.tex").read_text() == "years of work"
    plain = tmp_path / "notes.txt"
    plain.write_text("x")
    with pytest.raises(NlpsslError, match="exists and is not a folder"):
        export_run(run, plain)
    assert plain.read_text() == "x"


def test_export_refuses_the_run_folder_and_its_parents(finished_runs, tmp_path):
    from nlpssl.export import export_run

    run = _copy_run(finished_runs["bert-tiny"], tmp_path)
    before = sorted(p.name for p in run.iterdir())
    for target in (run, run.parent, tmp_path / "run" / ".." / "run"):
        with pytest.raises(NlpsslError, match="is the run folder .* or holds it"):
            export_run(run, target)
    assert sorted(p.name for p in run.iterdir()) == before


def test_export_replaces_an_earlier_export_and_follows_the_umask(finished_runs, tmp_path):
    from nlpssl.export import export_run

    run = _copy_run(finished_runs["bert-tiny"], tmp_path)
    out = tmp_path / "exported"
    export_run(run, out)
    export_run(run, out)  # an earlier export is replaced
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes["model.safetensors"] == 0o666 & ~mask, modes
    assert len(set(modes.values())) == 1, modes
    (out / "extra.txt").write_text("mine")  # once the user adds a file it is theirs
    with pytest.raises(NlpsslError, match="not an earlier nlpssl export"):
        export_run(run, out)
    assert (out / "extra.txt").is_file()


def test_failed_export_leaves_no_temporary_folder_and_stale_ones_are_swept(finished_runs, tmp_path):
    from nlpssl.export import export_run

    run = _copy_run(finished_runs["bert-tiny"], tmp_path)
    out = tmp_path / "exported"
    host = owner_tag().rpartition("-")[0]
    stale = tmp_path / f".exported.tmp-{host}-999999999"  # a killed export's leftover (no such process)
    elsewhere = tmp_path / ".exported.tmp-otherhost-999999999"  # another machine's export, on a shared disk
    for folder in (stale, elsewhere):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"0" * 1000)
    (run / "tokenizer" / "tokenizer.json").write_text("{broken")  # the export fails half-way
    with pytest.raises(NlpsslError, match=r"load_tokenizer: the tokenizer in .* cannot be read"):  # the planted damage
        export_run(run, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".exported")] == [elsewhere.name]


# ------------------------------------------------------------------------------------------------
# runs: finished, locked, the wrong kind


def test_resuming_a_finished_run_trains_nothing(finished_runs, tmp_path, capsys):
    from nlpssl.pretrain import pretrain

    run = _copy_run(finished_runs["bert-tiny"], tmp_path)
    metrics_before = (run / "metrics.json").read_text()
    export_mtime = (run / "export" / "model.safetensors").stat().st_mtime_ns
    recipe = load_recipe(run / "recipe.yaml", [f"training.output_dir={run}", "training.resume=true"])
    result = pretrain(recipe)
    assert result.already_finished and result.metrics["steps"] == 5
    assert "already finished (step 5); nothing to train" in capsys.readouterr().out
    assert (run / "metrics.json").read_text() == metrics_before
    assert (run / "export" / "model.safetensors").stat().st_mtime_ns == export_mtime
    assert not (run / "checkpoint-6").exists()


def test_a_run_folder_in_use_is_refused_with_the_holder(tmp_path):
    from nlpssl.runs import run_lock

    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from nlpssl.runs import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)", str(folder)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(NlpsslError, match=rf"is in use by process {holder.pid} on .*Wait for it to finish"):
            with run_lock(folder):
                pass
        with pytest.raises(NlpsslError, match=f"in use by process {holder.pid}"):
            from nlpssl.pretrain import pretrain

            pretrain(load_recipe("bert-tiny", tiny_overrides(tmp_path, **{"training.resume": True})))
    finally:
        holder.kill()
        holder.wait()
    with run_lock(folder):  # released when its holder died
        pass


def test_each_command_checks_the_recipe_kind(tmp_path, capsys):
    from nlpssl.cli import main

    assert main(["pretrain", "finetune-tiny", "model=runs/x/export"]) == 2
    err = capsys.readouterr().err
    assert "this is a finetune recipe (kind: finetune), and `nlpssl pretrain` runs pretrain recipes" in err
    assert "Run it with `nlpssl finetune" in err
    assert main(["finetune", "bert-tiny", "model=runs/x/export"]) == 2
    err = capsys.readouterr().err
    assert "this is a pretrain recipe" in err and "Run it with `nlpssl pretrain" in err
    assert not Path("runs/x").exists()


# ------------------------------------------------------------------------------------------------
# values that would reach torch or transformers unchecked


@pytest.mark.parametrize("override, message", [
    ("training.learning_rate=-1", "training.learning_rate is out of range (got -1.0). Use a positive number"),
    ("training.per_device_train_batch_size=0", "training.per_device_train_batch_size is out of range (got 0)"),
    ("model.dropout=1.5", "model.dropout is out of range (got 1.5). Use a probability in [0, 1)"),
    ("model.hidden_size=-64", "model.hidden_size is out of range (got -64). Use 1 or more"),
    ("data.eval_max_blocks=0", "data.eval_max_blocks is out of range (got 0)"),
    ("training.output_dir=", "training.output_dir is out of range (got ''). Name a folder"),
    ("model.num_layers=0", "model.num_layers is out of range (got 0). Use 1 or more"),
    ("tokenizer.max_texts=0", "tokenizer.max_texts is out of range (got 0). Use 1 or more"),
    ("model.num_heads=3", "model.hidden_size must be divisible by model.num_heads (got 256 and 3)"),
    ("data.block_size=1024", "data.block_size is out of range (got 1024). It is larger than the model's 512"),
    ("training.budget_minutes=0", "training.budget_minutes is out of range (got 0.0)"),
    ("data.mix=[{source: a.txt, repeat: 0}]", "data.mix[0].repeat is out of range (got 0). Use 1 or more"),
    ("data.mix=[{source: ''}]", "data.mix[0].source is empty (got ''). Name a file"),
    ("data.mix=[{source: a.txt, repeats: 2}]", "data.mix[0].repeats: unknown key. Did you mean 'repeat'?"),
    ("data.mix=a.txt", "data.mix: expected a list of mappings (got 'a.txt'). Write one `- source: PATH`"),
])
def test_values_are_checked_when_the_recipe_loads(override, message, capsys):
    from nlpssl.cli import main

    with pytest.raises(RecipeError) as info:
        load_recipe("bert-tiny", [override])
    assert message in str(info.value)
    # and `recipe validate` (and `recipe show`) say the same before anything runs
    path = Path(load_recipe("bert-tiny").source_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["recipe", "validate", str(path), override])
    said = capsys.readouterr().out
    assert exit_info.value.code == 1 and f"invalid {path}" in said and message in said, said
    assert main(["recipe", "show", str(path), override]) == 2
    assert message in capsys.readouterr().err


def test_a_mix_with_streaming_is_refused_at_load():
    with pytest.raises(RecipeError) as info:
        load_recipe("bert-tiny", ["data.mix=[{source: a.txt}]", "data.streaming=true", "training.max_steps=10"])
    assert "data.mix is read by the prepared (cached) path only (got 1 entry with data.streaming=true)" in str(info.value)


def test_a_missing_mix_source_is_refused_before_the_run_folder_exists(tmp_path):
    from nlpssl.pretrain import pretrain

    missing = tmp_path / "nope.tsv"
    with pytest.raises(NlpsslError) as info:
        pretrain(load_recipe("bert-tiny", [f"training.output_dir={tmp_path / 'run'}", f"data.mix=[{{source: {missing}}}]"]))
    assert str(missing) in str(info.value)
    assert not (tmp_path / "run").exists()


def test_an_explicit_zero_is_never_a_default():
    from nlpssl.models import resolve_shape
    from nlpssl.recipe import ModelSection

    assert resolve_shape(ModelSection(num_layers=2)).layers == 2
    assert resolve_shape(ModelSection(num_layers=0)).layers == 0  # kept (the recipe loader refuses it)
    assert resolve_shape(ModelSection()).layers == 4


# ------------------------------------------------------------------------------------------------
# demos: the wrong model family, bad flags, checked before anything heavy loads


@pytest.mark.parametrize(
    ("architecture", "fix"),
    [
        ("ElectraForPreTraining", r"It has no language-model head: pass the export of a masked-LM run \(e\.g\. "
                                  r"runs/bert-tiny/export\), or use this model with `nlpssl embed` or `nlpssl finetune`"),
        ("ModernBertModel", r"It has no language-model head: .* `nlpssl embed` or `nlpssl finetune`"),  # a SimCSE export
        ("BertForSequenceClassification", r"Use `nlpssl classify` for this model"),
    ],
)
def test_fill_mask_on_an_encoder_says_what_to_use_instead(tmp_path, architecture, fix):
    # Checked from config.json alone, before any weights load (these are empty).
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    from nlpssl.demo import fill_mask

    with pytest.raises(NlpsslError, match=rf"holds {architecture}, and fill-mask needs a masked-LM .*\. {fix}\.$"):
        fill_mask(tmp_path, "The cat sat on the [MASK].")


def test_demos_refuse_the_wrong_model_family_and_bad_flags(finished_runs):
    from nlpssl.demo import fill_mask, generate

    mlm, causal = finished_runs["bert-tiny"].export_dir, finished_runs["gpt-tiny"].export_dir
    with pytest.raises(NlpsslError, match=r"holds GPT2LMHeadModel, and fill-mask needs a masked-LM.*"
                                          r"Use `nlpssl generate`"):
        fill_mask(causal, "The cat sat on the [MASK].")
    with pytest.raises(NlpsslError, match=r"holds ModernBertForMaskedLM, and generate needs a causal-LM.*"
                                          r"Use `nlpssl fill-mask`"):
        generate(mlm, "Once upon a time")
    vocab = json.loads((mlm / "config.json").read_text())["vocab_size"]
    for k in (0, -1, vocab + 1):
        with pytest.raises(NlpsslError, match=rf"--top-k must be between 1 and the vocabulary size {vocab} \(got {k}\)"):
            fill_mask(mlm, "The cat sat on the [MASK].", top_k=k)
    assert len(fill_mask(mlm, "The cat sat on the [MASK].", top_k=vocab)) == vocab
    positions = json.loads((causal / "config.json").read_text())["n_positions"]
    for n in (0, -3, positions):
        with pytest.raises(NlpsslError, match=rf"--max-new-tokens must be 1 or more and at most {positions - 1} "
                                              rf"\(the model has {positions} positions\) \(got {n}\)"):
            generate(causal, "Once", max_new_tokens=n)
    for p in (0, -0.5, 1.5):
        with pytest.raises(NlpsslError, match=rf"--top-p must be in \(0, 1\] \(got {p}\)"):
            generate(causal, "Once", top_p=p)
    with pytest.raises(NlpsslError, match=r"--top-k must be between 0 \(off\) and the vocabulary size"):
        generate(causal, "Once", top_k=-1)
    with pytest.raises(NlpsslError, match=r"prompt \(\d+ tokens\) plus --max-new-tokens 500 exceed the model's 512"):
        generate(causal, "Once upon a time " * 10, max_new_tokens=500)


def test_an_export_missing_its_weights_says_re_export(finished_runs, tmp_path):
    from nlpssl.demo import fill_mask

    broken = tmp_path / "export"
    shutil.copytree(finished_runs["bert-tiny"].export_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(NlpsslError, match=r"has a config.json but no weights .* Write it again with `nlpssl export"):
        fill_mask(broken, "The cat sat on the [MASK].")


# ------------------------------------------------------------------------------------------------
# file-system faults


def test_a_truncated_newest_checkpoint_is_skipped_for_the_one_before(finished_runs, tmp_path, capsys):
    from nlpssl.runs import newest_complete_checkpoint

    run = _copy_run(finished_runs["bert-tiny"], tmp_path)
    good = run / "checkpoint-5"
    for name, damage in (("model.safetensors", "model.safetensors: Error while deserializing header"),
                         ("optimizer.pt", "optimizer.pt is truncated")):
        newest = run / "checkpoint-9"
        shutil.rmtree(newest, ignore_errors=True)
        shutil.copytree(good, newest)
        data = (newest / name).read_bytes()
        (newest / name).write_bytes(data[: len(data) // 2])
        assert newest_complete_checkpoint(run) == good
        assert f"skipping {newest}, which was not completely saved ({damage}" in capsys.readouterr().out


def test_a_damaged_cache_entry_names_the_folder_to_delete(tmp_path, tiny_tokenizer):
    from nlpssl.data import prepare_data

    recipe = load_recipe("bert-tiny", tiny_overrides(tmp_path))
    entry = prepare_data(recipe, tiny_tokenizer).cache_path
    arrow = entry / "train.arrow"
    arrow.write_bytes(arrow.read_bytes()[:200])
    with pytest.raises(NlpsslError, match=rf"the cached data '{entry}' is damaged .* Delete that folder "
                                          rf"\(`rm -r {entry}`\) and rerun"):
        prepare_data(recipe, tiny_tokenizer)


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                                reason="mounting a small or read-only tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MiB file system (tmpfs) to fill up, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(where)]).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    yield where
    subprocess.run(["umount", "-l", str(where)])


@needs_root
def test_a_full_disk_says_which_path_and_what_to_do(small_disk, tmp_path):
    # hidden 128: one checkpoint (weights and optimizer state) is about 3 MiB, more than the disk holds
    over = tiny_overrides(tmp_path, **{"training.output_dir": str(small_disk / "run"), "training.max_steps": 4,
                                       "training.save_steps": 2, "model.hidden_size": 128})
    proc = subprocess.run([sys.executable, "-m", "nlpssl", "pretrain", "bert-tiny", *over], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr
    assert "nlpssl: error: no space left on the disk while writing" in err, err[-3000:]
    assert str(small_disk / "run") in err and "Free space on that disk" in err and "Traceback" not in err


@needs_root
def test_a_read_only_output_folder_says_so(tmp_path):
    where = tmp_path / "ro"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)]).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        over = tiny_overrides(tmp_path, **{"training.output_dir": str(where / "run")})
        proc = subprocess.run([sys.executable, "-m", "nlpssl", "pretrain", "bert-tiny", *over], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert f"cannot write '{where / 'run'}': the folder is read-only" in proc.stderr, proc.stderr[-3000:]
        assert "Choose a writable folder" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        subprocess.run(["umount", "-l", str(where)])


def test_tokenizer_train_never_writes_over_a_folder(tmp_path, capsys):
    from nlpssl.cli import main

    out = tmp_path / "tok"
    out.mkdir()
    (out / "vocab.txt").write_text("mine")
    assert main(["tokenizer", "train", "bert-tiny", "data.builtin_stories=50", "--out", str(out)]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert (out / "vocab.txt").read_text() == "mine"


def test_an_export_killed_between_its_renames_gets_the_old_export_back(finished_runs, tmp_path):
    from nlpssl.export import export_run

    run = _copy_run(finished_runs["bert-tiny"], tmp_path)
    out = tmp_path / "exported"
    export_run(run, out)
    os.replace(out, tmp_path / f".exported.old-{owner_tag().rpartition('-')[0]}-999999999")  # killed after moving
    # the old export aside
    (run / "tokenizer" / "tokenizer.json").write_text("{broken")  # and the next export fails
    with pytest.raises(NlpsslError, match=r"load_tokenizer: the tokenizer in .* cannot be read"):  # the planted damage
        export_run(run, out)
    assert (out / "model.safetensors").is_file(), "the earlier export must come back, not be swept"
    assert not list(tmp_path.glob(".exported.*"))


def test_gguf_conversion_refuses_what_llama_cpp_would_get_wrong(finished_runs, tmp_path):
    """Checked before llama.cpp's converter runs (tests/test_clients.py runs the converter itself)."""
    from nlpssl.cli import main

    converter = tmp_path / "convert_hf_to_gguf.py"
    converter.write_text("raise SystemExit('must not run')\n")
    bert, gpt = (finished_runs[n].export_dir for n in ("bert-tiny", "gpt-tiny"))
    with pytest.raises(NlpsslError, match="only causal-LM exports convert .*got 'modernbert'"):
        from nlpssl.gguf import convert

        convert(bert, tmp_path / "m.gguf", converter)
    with pytest.raises(NlpsslError, match="must be llama.cpp's convert_hf_to_gguf.py .*nope.py"):
        convert(gpt, tmp_path / "m.gguf", tmp_path / "nope.py")
    taken = tmp_path / "taken.gguf"
    taken.write_text("user data")
    assert main(["gguf", str(gpt), "--converter", str(converter), "--out", str(taken)]) == 2
    assert taken.read_text() == "user data"
    lowercase = tmp_path / "lower"
    shutil.copytree(gpt, lowercase)
    spec = json.loads((lowercase / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "Lowercase"}
    (lowercase / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(NlpsslError, match="not a GPT-2 byte-level BPE .*'Lowercase'.*tokenizer.lowercase=false"):
        convert(lowercase, tmp_path / "l.gguf", converter)
    classifier = tmp_path / "classifier"  # what `nlpssl finetune` of a gpt-tiny export declares
    shutil.copytree(gpt, classifier)
    config = json.loads((classifier / "config.json").read_text())
    (classifier / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2ForSequenceClassification"]}))
    with pytest.raises(NlpsslError, match="only language-model exports convert .*'GPT2ForSequenceClassification'"):
        convert(classifier, tmp_path / "c.gguf", converter)
    assert sorted(p.name for p in tmp_path.glob("*.gguf")) == ["taken.gguf"]


# ------------------------------------------------------------------------------------------------
# command-line overrides: a problem with one names the override, not the shipped recipe file


@pytest.mark.parametrize("override, message", [
    ("training.learnin_rate=1e-3",
     "override 'training.learnin_rate=1e-3': training.learnin_rate: unknown key; `training:` takes"),
    ("training.max_steps=abc", "override 'training.max_steps=abc': training.max_steps: expected an integer (got 'abc')"),
    ("trainin.max_steps=3", "override 'trainin.max_steps=3': trainin: unknown section. Did you mean 'training'?"),
    ("max_steps=3", "override 'max_steps=3': max_steps: unknown section. Did you mean 'training.max_steps'?"),
    ("seed=3", "Did you mean 'data.seed' or 'training.seed'?"),
    ("training.learning_rate=-1", "override 'training.learning_rate=-1': training.learning_rate is out of range"),
    ("data.mix=[{source: a.txt, repeat: 0}]", "override 'data.mix=[{source: a.txt, repeat: 0}]': data.mix[0].repeat"),
])
def test_a_bad_override_is_named_instead_of_the_recipe_file(override, message, capsys):
    from nlpssl.cli import main

    assert main(["pretrain", "bert-tiny", override]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "bert-tiny.yaml" not in err


def test_a_rule_on_two_keys_names_the_override_with_the_file(tmp_path):
    shipped = load_recipe("bert-tiny").source_path
    with pytest.raises(RecipeError) as info:
        load_recipe("bert-tiny", ["model.num_heads=3"])
    assert info.value.problems == [
        f"override 'model.num_heads=3' on top of {shipped}: model.hidden_size must be divisible by model.num_heads "
        "(got 256 and 3). Change model.hidden_size or model.num_heads."]
    with pytest.raises(RecipeError) as info:  # both keys overridden: both named
        load_recipe("bert-tiny", ["model.hidden_size=100", "model.num_heads=3"])
    assert info.value.problems[0].startswith(
        f"override 'model.hidden_size=100', 'model.num_heads=3' on top of {shipped}: model.hidden_size must be")
    with pytest.raises(RecipeError) as info:  # a rule written as 'key=value needs ...'
        load_recipe("bert-tiny", ["data.streaming=true", "training.max_steps=-1"])
    assert info.value.problems[0].startswith(
        f"override 'data.streaming=true', 'training.max_steps=-1' on top of {shipped}: data.streaming=true needs")
    mine = tmp_path / "mine.yaml"  # the file's own values alone: the file, as before
    mine.write_text(Path(shipped).read_text().replace("  size: tiny\n", "  size: tiny\n  num_heads: 3\n"))
    with pytest.raises(RecipeError) as info:
        load_recipe(mine, ["training.max_steps=3"])
    assert info.value.problems[0].startswith(f"{mine}: model.hidden_size must be divisible")


def test_the_recipe_file_is_still_named_for_its_own_problems(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(Path(load_recipe("bert-tiny").source_path).read_text() + "\nmax_steps: 3\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, ["collator.rat=0.2"])
    assert sorted(info.value.problems) == [
        f"{recipe}: max_steps: unknown section. Did you mean 'training.max_steps'? A key goes under its section: "
        "section.key=value.",
        "override 'collator.rat=0.2': collator.rat: unknown key. Did you mean 'rate'?",
    ]


def test_a_null_for_a_key_without_null_is_one_message_on_what_to_set(capsys):
    from nlpssl.cli import main

    assert main(["recipe", "show", "bert-tiny", "data.streaming=true", "training.max_steps=null"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "nlpssl: error: override 'training.max_steps=null': training.max_steps: cannot be null (got None). "
        "Set it to an integer, or leave the key out for its default (-1)."
    )
    with pytest.raises(RecipeError, match=r"model.size: cannot be null \(got None\). Set it to one of 'tiny', "
                                          r"'small', 'base', or leave the key out for its default \('tiny'\)"):
        load_recipe("bert-tiny", ["model.size=null"])


# ------------------------------------------------------------------------------------------------
# columns: named by the setting that picks them, as each command takes it; all missing ones at once


def test_a_missing_text_column_names_data_text_column(tmp_path, capsys):
    from nlpssl.cli import main

    (tmp_path / "t.csv").write_text("body,label\nhello there,1\n")
    assert main(["pretrain", "bert-tiny", f"data.source={tmp_path / 't.csv'}", *tiny_overrides(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "t.csv: no column 'text' (got columns ['body', 'label']). Set data.text_column=NAME" in err, err


def test_finetune_and_probe_report_every_missing_column_as_each_takes_it(finished_runs, tmp_path, capsys):
    from nlpssl.cli import main

    export = finished_runs["bert-tiny"].export_dir
    data = tmp_path / "reviews.tsv"
    data.write_text("sentence\tstars\nfine\t1\nbad\t0\n")
    missing = f"{data}: no text column 'text' and no label column 'label' (got columns ['sentence', 'stars'])."
    assert main(["finetune", "finetune-tiny", f"model={export}", f"task.source={data}",
                 f"training.output_dir={tmp_path / 'ft'}"]) == 2
    err = capsys.readouterr().err
    assert missing in err and ("Set task.text_column=NAME and task.label_column=NAME to the columns that hold the "
                               "text and the labels.") in err, err
    assert main(["probe", str(export), "--task", str(data), "--out", str(tmp_path / "probe")]) == 2
    err = capsys.readouterr().err
    assert missing in err and "Pass --set task.text_column=NAME task.label_column=NAME, naming the columns" in err, err
    assert "Set task." not in err


def test_embed_names_its_file_option(tmp_path, capsys):
    from nlpssl.cli import main

    assert main(["embed", "some-model", "--file", str(tmp_path / "missing.txt")]) == 2
    assert f"embed: --file '{tmp_path / 'missing.txt'}': file not found" in capsys.readouterr().err
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    assert main(["embed", "some-model", "--file", str(tmp_path / "latin1.txt")]) == 2
    assert "--file" in (err := capsys.readouterr().err) and "not UTF-8 text (got byte 0xe9 at offset 3)" in err


# ------------------------------------------------------------------------------------------------
# the command line itself


@pytest.mark.parametrize("one, other", [
    (["tokenizer", "train", "bert-tiny", "--out", "X", "data.builtin_stories=500"],
     ["tokenizer", "train", "bert-tiny", "data.builtin_stories=500", "--out", "X"]),
    (["embed", "M", "--nearest", "3", "a", "b"], ["embed", "M", "a", "b", "--nearest", "3"]),
    (["probe", "M", "--set", "task.seed=1", "--task", "t.tsv"], ["probe", "M", "--task", "t.tsv", "--set", "task.seed=1"]),
])
def test_options_may_come_before_or_after_free_arguments(one, other):
    from nlpssl.cli import build_parser

    parser = build_parser()
    assert vars(parser.parse_args(one)) == vars(parser.parse_args(other))
    assert parser.parse_args(one).command == one[0]


def test_version_and_help_texts(capsys):
    import nlpssl
    from nlpssl.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"nlpssl {nlpssl.__version__}"
    for argv, text in ((["export"], "the export folder to write"), (["fill-mask"], "how many fillings to print"),
                       (["recipe", "validate"], "recipe files or shipped recipe names")):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        assert text in capsys.readouterr().out


def test_recipe_list_ends_each_purpose_at_a_sentence_or_clause(capsys):
    from nlpssl.cli import main
    from nlpssl.recipe import list_recipes

    assert main(["recipe", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    recipes = list_recipes()
    assert len(lines) == len(recipes) >= 19
    for path, line in zip(recipes, lines):
        purpose = line[21:]
        header = " ".join(ln.lstrip("#").strip() for ln in path.read_text().splitlines()[:6])
        assert line.startswith(f"{path.stem} ") and purpose in header, line
        assert purpose.endswith(".") or f"{purpose}:" in header or f"{purpose};" in header, line
    assert "bert-classic-tiny    classic BERT (stock post-LayerNorm BertForMaskedLM, learned absolute positions) in " \
           "Google's BERT-Tiny shape (2 layers x 128, 2 heads; Turc et al. 2019) on the built-in story corpus." in lines
    assert "electra-tiny         ELECTRA replaced-token detection (Clark et al. 2020) on the built-in story corpus" in lines


def test_python_api_arguments_of_the_wrong_type_get_clear_errors():
    """The Python API checks its argument types and says what it takes, not a bare TypeError from pathlib."""
    import nlpssl
    from nlpssl.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"expected a recipe file's path or a shipped recipe's name, or a Recipe "
                                          r"\(got dict"):
        nlpssl.pretrain({"model": {}})
    with pytest.raises(RecipeError, match=r"overrides: expected a list of 'section.key=value' strings \(got str "
                                          r"'training.max_steps=5'\)"):
        nlpssl.load_recipe("bert-tiny", "training.max_steps=5")
    with pytest.raises(RecipeError, match=r"overrides: expected a list .* \(got int 5\)"):
        nlpssl.load_recipe("bert-tiny", ["training.max_steps=5", 5])
    with pytest.raises(RecipeError, match=r"overrides: expected a list .* \(got dict"):
        nlpssl.load_recipe("bert-tiny", {"training.max_steps": 5})
    assert nlpssl.load_recipe("bert-tiny", ["training.max_steps=5"]).training["max_steps"] == 5
    assert {"pretrain", "embed", "classify", "load_recipe"} <= set(dir(nlpssl))
    assert nlpssl.embed.__module__ == "nlpssl.demo"
