"""Recipe loading: type conversion, unknown keys, overrides, all errors at once, every shipped recipe."""

from pathlib import Path

import pytest

from nlpssl.recipe import RecipeError, find_recipe, list_recipes, load_recipe, recipe_from_dict

SHIPPED = [p.stem for p in list_recipes()]


PACKAGED = Path(__file__).resolve().parent.parent / "nlpssl" / "recipes"
EXPECTED = {
    "bert-classic-tiny", "bert-imdb", "bert-imdb-sst2", "bert-small", "bert-tiny", "bert-tiny-span", "bert-tiny-wwm", "finetune-sst2", "finetune-tiny",
    "electra-small", "electra-tiny", "gpt-small", "gpt-tiny", "llama-small", "roberta-small", "t5-tiny",
    "distil-tiny", "distil-gpt-tiny", "simcse-tiny", "simcse-imdb-pairs",
}


def test_shipped_recipes_found():
    # A glob bug must not make the parametrised test below pass on nothing: the exact set shipped.
    assert set(SHIPPED) == EXPECTED == {p.stem for p in PACKAGED.glob("*.yaml")}
    assert len(SHIPPED) == len(EXPECTED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_validates_and_has_a_header(name):
    recipe = load_recipe(name)
    text = recipe.source_path and open(recipe.source_path).read()
    assert text.startswith("# "), "every recipe opens with a comment saying what it trains"
    assert "nlpssl " in text.split("\n\n")[0], "the header gives the exact command"
    assert recipe.training["output_dir"]


def test_values_converted_to_annotated_types(tmp_path):
    path = tmp_path / "r.yaml"
    # PyYAML reads 5e-5 as a string; the recipe must make it a float.
    path.write_text("training:\n  learning_rate: 5e-5\n  max_steps: '20'\ncollator:\n  exact_budget: 'yes'\n")
    r = load_recipe(path)
    assert r.training["learning_rate"] == pytest.approx(5e-5) and isinstance(r.training["learning_rate"], float)
    assert r.training["max_steps"] == 20
    assert r.collator.exact_budget is True


def test_overrides_go_through_the_same_conversion():
    r = load_recipe("bert-tiny", ["training.learning_rate=2e-4", "data.block_size=64", "model.size=small"])
    assert r.training["learning_rate"] == pytest.approx(2e-4)
    assert r.data.block_size == 64 and r.model.size == "small"


def test_unknown_keys_get_did_you_mean_and_all_errors_come_together():
    with pytest.raises(RecipeError) as info:
        load_recipe("bert-tiny", ["collator.rat=0.2", "training.max_step=3", "model.arch=gpt", "trainig.x=1"])
    msg = str(info.value)
    assert len(info.value.problems) == 4
    assert "collator.rat: unknown key. Did you mean 'rate'?" in msg
    assert "Did you mean 'max_steps'?" in msg
    assert "did you mean 'gpt2'?" in msg and "(got 'gpt')" in msg
    assert "trainig: unknown section. Did you mean 'training'?" in msg


def test_bad_value_says_where_what_and_how():
    with pytest.raises(RecipeError) as info:
        load_recipe("bert-tiny", ["training.learning_rate=fast"])
    assert "training.learning_rate: expected a number (got 'fast'). Set it to float." in str(info.value)


def test_ranges_and_cross_field_checks():
    with pytest.raises(RecipeError) as info:
        load_recipe("bert-tiny", ["collator.rate=1.5", "collator.kind=causal", "data.eval_fraction=0"])
    msg = str(info.value)
    assert "collator.rate is out of range (got 1.5)" in msg
    assert "collator.kind does not fit model.arch='modernbert' (got 'causal')" in msg
    assert "data.eval_fraction is out of range (got 0.0)" in msg


def test_init_std_is_the_stock_initializer_range_and_checked(tiny_tokenizer):
    from nlpssl.models import build_config

    recipe = load_recipe("bert-classic-tiny")
    config = build_config(recipe.model, tiny_tokenizer)
    assert type(config).__name__ == "BertConfig" and config.initializer_range == 0.06
    assert build_config(load_recipe("bert-tiny").model, tiny_tokenizer).initializer_range == 0.02
    with pytest.raises(RecipeError) as info:
        load_recipe("bert-tiny", ["model.init_std=0"])
    assert "model.init_std is out of range (got 0.0)" in str(info.value)
    with pytest.raises(RecipeError, match="model.init_std has no effect on t5"):
        load_recipe("t5-tiny", ["model.init_std=0.05"])


def test_training_arguments_checked_at_load_time():
    with pytest.raises(RecipeError) as info:
        load_recipe("bert-tiny", ["training.lr_scheduler_type=cosin"])
    assert "TrainingArguments rejected" in str(info.value)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="FSDP is refused only without a GPU")
def test_fsdp_on_a_cpu_is_refused_not_run_as_ddp(monkeypatch):
    """accelerate wraps the model in DDP, not FSDP, on CPUs (seen under torchrun): refuse at load time."""
    with pytest.raises(RecipeError, match=r"override 'training.fsdp=full_shard': training.fsdp: FSDP shards the model only across GPUs.*got "
                                          r"fsdp='full_shard'\).*Leave training.fsdp unset"):
        load_recipe("bert-tiny", ["training.fsdp=full_shard"])
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate launch with an FSDP config
    with pytest.raises(RecipeError, match=r"from ACCELERATE_USE_FSDP=true"):
        load_recipe("bert-tiny")
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    assert not load_recipe("bert-tiny").training.get("fsdp")
    # A run trained with FSDP on GPUs still reads here (to export it, say): only running it is refused.
    saved = load_recipe("bert-tiny").to_dict()
    saved["training"]["fsdp"] = "full_shard"
    assert recipe_from_dict(saved).training["fsdp"] == "full_shard"


def test_malformed_override_and_yaml(tmp_path):
    with pytest.raises(RecipeError, match="expected section.key=value"):
        load_recipe("bert-tiny", ["training.max_steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [1, 2\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="expected a mapping of sections"):
        load_recipe(lst)


def test_unknown_recipe_name_suggests():
    from nlpssl.errors import NlpsslError

    with pytest.raises(NlpsslError, match="Did you mean 'bert-tiny'"):
        load_recipe("bert-tiyn")


def test_resolved_recipe_round_trips_through_yaml():
    import yaml

    r = load_recipe("bert-tiny", ["training.max_steps=7"])
    again = recipe_from_dict(yaml.safe_load(r.to_yaml()), name=r.name)
    assert again.to_dict() == r.to_dict()


def test_cli_recipe_commands(capsys):
    from nlpssl.cli import main

    assert main(["recipe", "list"]) == 0
    assert "bert-tiny" in capsys.readouterr().out
    assert main(["recipe", "show", "bert-tiny", "training.max_steps=9"]) == 0
    assert "max_steps: 9" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["recipe", "validate", "bert-tiny", "no-such-recipe"])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "ok      bert-tiny" in out and "invalid no-such-recipe" in out
    assert main(["recipe", "show", "bert-tiny", "collator.rat=1"]) == 2
    assert "Did you mean 'rate'" in capsys.readouterr().err


def test_recipe_validate_runs_the_finetune_task_checks(tmp_path, capsys):
    from nlpssl.cli import main

    bad = tmp_path / "ft.yaml"
    bad.write_text(Path(find_recipe("finetune-tiny")).read_text().replace("max_length: 128", "max_length: 4"))
    with pytest.raises(SystemExit):
        main(["recipe", "validate", "finetune-tiny", str(bad)])
    out = capsys.readouterr().out
    assert "ok      finetune-tiny" in out
    assert "task.max_length is out of range (got 4)" in out


def _finetune_recipe(path: Path, **sections) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"kind": "finetune", **sections}))
    return path


def test_recipe_validate_reports_what_finetune_found_only_after_reading_data(tmp_path, capsys):
    """Resuming, TrainingArguments that refuse keeping the best checkpoint, and the task's files were
    reported by `nlpssl finetune` only after it had read the data (and built the model)."""
    from nlpssl.cli import main

    (tmp_path / "train.txt").write_text("text\tlabel\nhi\t1\n")
    bad = _finetune_recipe(
        tmp_path / "ft.yaml", model=str(tmp_path / "model"),
        task={"source": str(tmp_path / "train.txt"), "test_source": str(tmp_path / "dev.tsv")},
        training={"output_dir": str(tmp_path / "run"), "resume": True, "eval_strategy": "steps",
                  "eval_steps": 3, "save_strategy": "steps", "save_steps": 5},
    )
    expected = [
        "training.resume: fine-tuning runs do not resume (got True)",
        "TrainingArguments rejected the fine-tuning settings (got --load_best_model_at_end requires",
        "train.txt: unsupported file type for labelled data (got '.txt'). Use one of .csv, .tsv, .jsonl, .parquet",
        "dev.tsv: file not found (got",
        "Check task.test_source",
    ]
    with pytest.raises(SystemExit):
        main(["recipe", "validate", str(bad)])
    out = capsys.readouterr().out
    assert f"invalid {bad}" in out and all(message in out for message in expected), out
    # `nlpssl finetune` stops with the same messages, before it reads data or looks for the model.
    assert main(["finetune", str(bad)]) == 2
    err = capsys.readouterr().err
    assert all(message in err for message in expected), err
    assert not (tmp_path / "run").exists()


def test_recipe_validate_checks_the_model_folder_once_it_exists(tmp_path, capsys):
    from nlpssl.cli import main

    model = tmp_path / "model"
    recipe = _finetune_recipe(tmp_path / "ft.yaml", model=str(model), training={"output_dir": str(tmp_path / "run")})
    assert main(["recipe", "validate", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert f"ok      {recipe}" in out and f"note: model: {str(model)!r} does not exist yet" in out
    model.mkdir()
    (model / "notes.txt").write_text("hi")
    with pytest.raises(SystemExit):
        main(["recipe", "validate", str(recipe)])
    message = "is not an export or Hub-format model folder: no config.json (got files ['notes.txt'])"
    assert message in capsys.readouterr().out
    assert main(["finetune", str(recipe)]) == 2
    assert message in capsys.readouterr().err


def test_yaml_booleans_read_as_on_off_choices():
    # YAML 1.1 reads `off` as False; a Literal["auto", "on", "off"] field must still accept it.
    assert load_recipe("bert-tiny", ["speed.bf16=off"]).speed.bf16 == "off"
    assert load_recipe("bert-tiny", ["speed.bf16=on"]).speed.bf16 == "on"
    # The same for TrainingArguments' strategy enums: `save_strategy: no` used to reach it as "False".
    r = load_recipe("bert-tiny", ["training.eval_strategy=no", "training.save_strategy=no"])
    assert r.training["eval_strategy"] == "no" and r.training["save_strategy"] == "no"
    assert r.training_arguments().save_strategy.value == "no"


def test_api_names_stay_functions_after_first_use():
    import nlpssl
    import nlpssl.finetune  # noqa: F401 - binding the submodule must not shadow the function
    import nlpssl.pretrain  # noqa: F401

    assert callable(nlpssl.pretrain) and callable(nlpssl.finetune)
    assert nlpssl.pretrain.__module__ == "nlpssl.pretrain"


def test_saved_recipes_write_the_home_folder_as_tilde_and_read_it_back(tmp_path, monkeypatch):
    """A run's recipe.yaml (and so an export's) does not publish the user's home path; loading expands it."""
    import yaml

    monkeypatch.setenv("HOME", str(tmp_path / "home" / "alice"))
    data = tmp_path / "home" / "alice" / "corpus"
    data.mkdir(parents=True)
    (data / "a.txt").write_text("some text\n", encoding="utf-8")
    recipe = load_recipe("bert-tiny", ["data.source=~/corpus", "training.output_dir=~/runs/x"])
    assert recipe.data.source == str(data) and str(recipe.output_dir) == str(tmp_path / "home/alice/runs/x")
    text = recipe.to_yaml()
    assert "alice" not in text and "source: ~/corpus" in text and "output_dir: ~/runs/x" in text
    again = recipe_from_dict(yaml.safe_load(text))
    assert again.data.source == recipe.data.source and again.output_dir == recipe.output_dir


def test_a_classifier_card_names_local_paths_without_the_home_folder(tmp_path, monkeypatch):
    from nlpssl.cards import classifier_card

    monkeypatch.setenv("HOME", str(tmp_path / "home" / "alice"))
    model = tmp_path / "home" / "alice" / "runs" / "export"
    model.mkdir(parents=True)
    task = model.parent / "labelled.tsv"
    task.write_text("text\tlabel\na\t0\nb\t1\n", encoding="utf-8")
    recipe = load_recipe("finetune-tiny", [f"model={model}", f"task.source={task}"])
    metrics = {"train_examples": 2, "steps": 1, "train_runtime_s": 1.0, "labels": ["0", "1"], "model": str(model)}
    card = classifier_card(recipe, metrics, "bert", tmp_path / "out")
    assert "alice" not in card and "`~/runs/labelled.tsv`" in card and "`~/runs/export`" in card


def test_an_unquoted_yaml_boolean_for_a_text_setting_is_refused(tmp_path):
    """`source: on` in a recipe file is YAML's True: it named a folder 'True' instead of 'on'."""
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  source: on\n  text_column: yes\n", encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "data.source: expected a string, and YAML reads an unquoted on/off/yes/no/true/false as a boolean: " \
           "quote it, e.g. 'on' (got True)" in message and "data.text_column: expected a string" in message
    path.write_text("data:\n  source: 'on'\n", encoding="utf-8")
    assert Path(load_recipe(path).data.source).name == "on"  # quoted: the folder named on
