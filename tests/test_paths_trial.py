"""Paths and files as new users have them: tildes, relative paths from another folder, symlinks, junk files."""

from pathlib import Path

import pytest
import yaml

from nlpssl.recipe import load_recipe


def test_tilde_paths_are_expanded(tmp_path, monkeypatch):
    """`training.output_dir=~/runs/x` wrote into a folder literally named '~' under the current folder,
    and `data.source=~/corpus` was not found."""
    home = tmp_path / "home"
    (home / "corpus").mkdir(parents=True)
    (home / "corpus" / "a.txt").write_text("One story.\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    r = load_recipe("bert-tiny", ["training.output_dir=~/runs/x", "data.source=~/corpus",
                                  "data.cache_dir=~/cache", "tokenizer.path=~/tok"])
    assert r.output_dir == home / "runs" / "x"
    assert r.data.source == str(home / "corpus")
    assert r.data.cache_dir == str(home / "cache")
    assert r.tokenizer.path == str(home / "tok")


def test_saved_recipe_names_the_same_files_from_another_folder(tmp_path, monkeypatch):
    """A run's recipe.yaml kept `data.source: data` and `output_dir: runs/rel` as typed, so resuming or
    reusing it from another folder looked for the data (and the run) there."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data").mkdir(parents=True)
    (project / "data" / "a.txt").write_text("One story.\n")
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    r = load_recipe("bert-tiny", ["data.source=data", "training.output_dir=runs/rel",
                                  "data.mix=[{source: data/a.txt}]"])
    saved = yaml.safe_load(r.to_yaml())
    assert saved["data"]["source"] == str(project / "data")
    assert saved["data"]["mix"][0]["source"] == str(project / "data" / "a.txt")
    assert saved["training"]["output_dir"] == str(project / "runs" / "rel")
    assert saved["data"]["cache_dir"] == str(project / ".cache" / "nlpssl")
    (project / "recipe.yaml").write_text(r.to_yaml())
    monkeypatch.chdir(elsewhere)
    again = load_recipe(str(project / "recipe.yaml"))
    assert again.to_dict() == r.to_dict()


def test_same_relative_source_in_two_projects_is_not_one_cache_entry(tmp_path, monkeypatch, tiny_tokenizer):
    """Two projects each with `data.source=data` and a shared cache and tokenizer got one cache key: the
    second trained on the first project's text (a cache hit), silently."""
    from nlpssl.data import cache_key

    keys = []
    for name in ("a", "b"):
        (tmp_path / name / "data").mkdir(parents=True)
        (tmp_path / name / "data" / "t.txt").write_text(f"Text of project {name}.\n")
        monkeypatch.chdir(tmp_path / name)
        keys.append(cache_key(load_recipe("bert-tiny", ["data.source=data",
                                                        f"data.cache_dir={tmp_path / 'shared'}"]), tiny_tokenizer))
    assert keys[0] != keys[1]


def test_hub_names_and_builtin_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_recipe("bert-tiny", ["data.source=hub:someone/set"]).data.source == "hub:someone/set"
    assert load_recipe("bert-tiny").data.source == "builtin"


def test_symlinked_subfolder_is_read_and_a_link_loop_ends(tmp_path):
    """A folder symlinked into the data folder was skipped without a word (rglob does not follow links)."""
    from nlpssl.sources import resolve_files

    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "b.txt").write_text("Linked text.\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("Own text.\n")
    (data / "linked").symlink_to(other)
    (data / "loop").symlink_to(data)
    assert [p.relative_to(data).as_posix() for p in resolve_files(str(data))] == ["a.txt", "linked/b.txt"]


def test_editor_backups_and_os_files_are_skipped_quietly(tmp_path, recwarn):
    """foo.txt~ and #foo.txt# were named as 'unsupported types' with advice to rename them (reading them
    would read a text twice); Thumbs.db and desktop.ini likewise."""
    from nlpssl.sources import resolve_files

    for name in ("a.txt", "a.txt~", "#a.txt#", "Thumbs.db", "desktop.ini", ".DS_Store", "._a.txt", "B.TXT",
                 "C.JSONL"):
        (tmp_path / name).write_text('{"text": "x"}\n')
    assert sorted(p.name for p in resolve_files(str(tmp_path))) == ["B.TXT", "C.JSONL", "a.txt"]
    assert not [w for w in recwarn if "skipping" in str(w.message)]


def test_run_and_export_folders_inside_the_source_are_not_read(tmp_path, recwarn):
    """A run whose output_dir lies inside its data folder listed its own checkpoints and export among the
    data (a warning of 30 unsupported files on a rerun; a .txt there would be trained on)."""
    from nlpssl.sources import resolve_files

    (tmp_path / "data.txt").write_text("Text.\n")
    run = tmp_path / "runs" / "a"
    (run / "export").mkdir(parents=True)
    (run / ".nlpssl.lock").write_text("")
    (run / "notes.txt").write_text("not data\n")
    export = tmp_path / "my-export"
    export.mkdir()
    for name in ("recipe.yaml", "config.json", "vocab.txt"):
        (export / name).write_text("x\n")
    assert [p.name for p in resolve_files(str(tmp_path))] == ["data.txt"]
    assert not [w for w in recwarn if "skipping" in str(w.message)]


@pytest.mark.parametrize("key", ["training.output_dir", "data.cache_dir"])
def test_a_file_where_a_parent_folder_should_be_is_named(tmp_path, key):
    """output_dir=afile/run ended after setup in a bare "nlpssl: error: Not a directory ('afile/run')"."""
    from nlpssl.errors import NlpsslError
    from nlpssl.runs import check_output_dir

    (tmp_path / "afile").write_text("mine\n")
    overrides = {"training.output_dir": str(tmp_path / "run"), "data.cache_dir": str(tmp_path / "cache")}
    overrides[key] = str(tmp_path / "afile" / "sub")
    with pytest.raises(NlpsslError, match=rf"{key}=.*afile.* is a file, not a folder.*Choose another {key}"):
        check_output_dir(load_recipe("bert-tiny", [f"{k}={v}" for k, v in overrides.items()]))
    assert (tmp_path / "afile").read_text() == "mine\n"


def _fake_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("kind: pretrain\n")
    export = run / "export"
    export.mkdir()
    for name in ("recipe.yaml", "config.json", "model.safetensors"):
        (export / name).write_text("x")
    return run


def test_export_named_like_a_checkpoint_of_the_run_is_refused(tmp_path):
    """`nlpssl export RUN RUN/checkpoint-9` wrote an export the Trainer takes for its newest checkpoint."""
    from nlpssl.errors import NlpsslError
    from nlpssl.export import check_export_target

    run = _fake_run(tmp_path)
    with pytest.raises(NlpsslError, match=r"named like one of the run's checkpoints.*export-checkpoint-9"):
        check_export_target(run, run / "checkpoint-9")
    check_export_target(run, run / "export-2")  # another folder inside the run is fine


def test_export_inside_an_earlier_export_is_refused(tmp_path):
    """`nlpssl export RUN RUN/export/x` nested an export in the export, which `nlpssl export RUN RUN/export`
    then refused to replace ('it holds x, which no export has')."""
    from nlpssl.errors import NlpsslError
    from nlpssl.export import check_export_target

    run = _fake_run(tmp_path)
    with pytest.raises(NlpsslError, match=r"lies inside the earlier export .*export'.*outside it"):
        check_export_target(run, run / "export" / "x")
    assert not (run / "export" / "x").exists()


def test_cli_path_arguments_expand_the_tilde(tmp_path, monkeypatch, capsys):
    """`nlpssl tokenizer train R --out=~/tok` wrote into a folder literally named '~' (bash leaves a tilde after
    `=` and in quotes as typed); `nlpssl export '~/run' ...` said the run was not there."""
    from nlpssl.cli import main

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert main(["export", "~/no-run", "~/out"]) == 2
    assert str(home / "no-run") in capsys.readouterr().err
    assert main(["tokenizer", "train", "bert-tiny", "data.builtin_stories=50", "--out=~/tok"]) == 0
    assert (home / "tok" / "tokenizer.json").is_file()
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("name", ["on", "no", "2024.10", "0123", "a: b", "#1", "[x]", "{y}"])
def test_a_path_override_is_the_name_as_typed(tmp_path, monkeypatch, name):
    """`data.source=on` looked for a folder named 'True'; `a: b`, `#1` and `[x]` were refused as mappings,
    null or lists, though they are folder names."""
    monkeypatch.chdir(tmp_path)
    r = load_recipe("bert-tiny", [f"data.source={name}", f"training.output_dir={name}/run",
                                  f"tokenizer.path={name}/tok", f"data.cache_dir={name}"])
    assert r.data.source == str(tmp_path / name)
    assert r.output_dir == tmp_path / name / "run"
    assert r.tokenizer.path == str(tmp_path / name / "tok")
    assert r.data.cache_dir == str(tmp_path / name)
    assert load_recipe("bert-tiny", ["tokenizer.path=null"]).tokenizer.path is None
