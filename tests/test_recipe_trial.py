"""A new user's own recipes: shapes, T5 settings and training values that stock classes reject or
silently mangle are refused when the recipe loads (before the tokenizer and data), with the key."""

import pytest

from nlpssl.recipe import RecipeError, load_recipe


def problems(name: str, *overrides: str) -> str:
    with pytest.raises(RecipeError) as err:
        load_recipe(name, list(overrides))
    return str(err.value)


@pytest.mark.parametrize("name", ["llama-small", "bert-tiny"])  # llama, modernbert
def test_rotary_models_refuse_an_odd_head_dim(name):
    # 36 / 4 = 9 dimensions per head: LlamaConfig raises after the data is built, ModernBERT in its
    # first forward pass ("size of tensor a (9) must match ... (10)").
    msg = problems(name, "model.hidden_size=36", "model.num_heads=4")
    assert "model.hidden_size / model.num_heads must be even" in msg and "= 9 dimensions" in msg
    assert "model.hidden_size=40" in msg
    # absolute positions take any head width
    assert load_recipe(name, ["model.arch=bert" if name == "bert-tiny" else "model.arch=gpt2",
                              "collator.kind=token" if name == "bert-tiny" else "collator.kind=causal",
                              "model.hidden_size=36", "model.num_heads=4"]).model.hidden_size == 36


@pytest.mark.parametrize("overrides, expected", [
    # Trained before: the collator then stopped after the tokenizer and data with
    # "T5SpanCorruptionCollator.from_tokenizer: the tokenizer lacks <extra_id_0> ...".
    (["tokenizer.num_sentinels=0"], "tokenizer.num_sentinels is too small for t5 (got 0): a row of "
                                    "data.block_size=128 makes 7 noise spans"),
    (["collator.noise_density=0.5", "data.block_size=512"], "makes 128 noise spans"),
    # Trained before on rows of 9,549 raw tokens with 9,487-token targets for 128 inputs.
    (["collator.noise_density=0.99"], "collator.noise_density is out of range for t5 (got 0.99)"),
    (["collator.noise_density=0.5", "collator.mean_span_length=1"], "no raw row length corrupts to exactly"),
])
def test_t5_settings_that_cannot_corrupt_rows_are_refused(overrides, expected):
    assert expected in problems("t5-tiny", *overrides)


def test_t5_refuses_a_reused_tokenizer_without_enough_sentinels_before_data(tmp_path, story_texts):
    from conftest import tiny_overrides

    from nlpssl.errors import NlpsslError
    from nlpssl.pretrain import pretrain
    from nlpssl.tokenizer import train_tokenizer

    train_tokenizer(story_texts[:100], tmp_path / "tok", algorithm="bpe", vocab_size=300, num_sentinels=1)
    recipe = load_recipe("t5-tiny", tiny_overrides(tmp_path, **{"tokenizer.path": str(tmp_path / "tok")}))
    with pytest.raises(NlpsslError, match=r"holds 1 T5 sentinels .* makes 2 noise spans"):
        pretrain(recipe)
    assert not (tmp_path / "cache").exists()  # refused before any data was read


@pytest.mark.parametrize("override, fix", [
    # transformers keeps every checkpoint at 0 or below: the opposite of what 0 reads as
    ("training.save_total_limit=0", "null to keep them all, or training.save_strategy=no to save none"),
    ("training.save_total_limit=-1", "Use 1 or more checkpoints to keep"),
    # transformers truncates it to 1 step
    ("training.warmup_steps=1.5", "Use a share of the run below 1 (e.g. 0.1) or a whole number of steps"),
])
def test_training_values_transformers_would_misread_are_refused(override, fix):
    msg = problems("gpt-tiny", override)
    assert f"override {override!r}: training.{override.split('.')[1].split('=')[0]} is out of range" in msg
    assert fix in msg


def test_warmup_share_and_whole_steps_still_load():
    for value in (0.1, 1, 100, 100.0):
        assert load_recipe("gpt-tiny", [f"training.warmup_steps={value}"]).training["warmup_steps"] == value
    assert load_recipe("gpt-tiny", ["training.save_total_limit=null"]).training["save_total_limit"] is None


def test_distill_from_teacher_refuses_model_settings_it_would_ignore(tmp_path, mlm_export):
    # The student was the teacher's layers [0, 2] at width 32, whatever the model section said, and the
    # recipe.yaml of its export claimed hidden_size 64 and 3 layers.
    from conftest import tiny_overrides

    from nlpssl.errors import NlpsslError
    from nlpssl.pretrain import pretrain

    def run(**extra):
        return pretrain("distil-tiny", tiny_overrides(tmp_path, **{"distill.teacher": str(mlm_export), **extra}))

    with pytest.raises(NlpsslError) as err:
        run(**{"model.hidden_size": 64, "model.num_layers": 3, "model.dropout": 0.1})
    msg = str(err.value)
    assert "init=teacher builds the student from the teacher's layers [0, 2]" in msg
    assert "model.hidden_size=64 (the student's: 32)" in msg and "model.num_layers=3 (the student's: 2)" in msg
    assert "model.dropout=0.1" in msg and "distill.init=preset" in msg
    assert not (tmp_path / "cache").exists()  # before any data


def test_glu_ffn_width_is_the_documented_two_thirds():
    from nlpssl.models import stock_intermediate

    assert [stock_intermediate("llama", n) for n in (1024, 512, 64)] == [704, 384, 64]
    assert stock_intermediate("modernbert", 16) == 64 and stock_intermediate("gpt2", 16) == 16


@pytest.mark.parametrize("layers, built", [(3, "1 + 1"), (1, "1 + 1"), (5, "2 + 2")])
def test_t5_refuses_an_odd_layer_count_it_would_round(layers, built):
    # 3 layers exported an encoder and a decoder of 1 layer each, and 1 layer made 2.
    msg = problems("t5-tiny", f"model.num_layers={layers}")
    assert "model.num_layers must be even for t5" in msg and f"that would build {built}" in msg
    assert load_recipe("t5-tiny", ["model.num_layers=2"]).model.num_layers == 2


def test_a_wrong_type_for_an_optional_key_reads_as_yaml_not_python():
    msg = problems("bert-tiny", "model.hidden_size=[64]")
    assert "model.hidden_size: expected int or null (got [64]). Set it to int or null." in msg
    assert "NoneType" not in problems("bert-tiny", "model.dropout=high", "data.max_texts=1.5")


SHAPE = dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64)


@pytest.mark.parametrize("recipe, key, cls, kwargs", [
    ("distil-gpt-tiny", "distill.teacher", "GPT2Config",
     dict(n_positions=32, n_embd=32, n_layer=4, n_head=2, n_inner=64, architectures=["GPT2LMHeadModel"])),
    ("simcse-tiny", "simcse.encoder", "BertConfig", dict(max_position_embeddings=32, **SHAPE)),
    ("simcse-tiny", "simcse.encoder", "RobertaConfig", dict(max_position_embeddings=34, **SHAPE)),  # 2 not positions
])
def test_rows_longer_than_a_teacher_or_encoders_positions_are_refused_before_data(tmp_path, recipe, key, cls, kwargs):
    # Found in the first batch before, after the data was built: "IndexError: index out of range in
    # self" (GPT-2) or "The expanded size of the tensor (35) must match the existing size (32)" (BERT).
    import transformers
    from conftest import tiny_overrides

    from nlpssl.errors import NlpsslError
    from nlpssl.pretrain import pretrain

    getattr(transformers, cls)(**kwargs).save_pretrained(tmp_path / "model")  # its config.json: what preflight reads
    with pytest.raises(NlpsslError, match=rf"data.block_size is larger than the positions of {key} .* \(got 64; its "
                                          r"\w+ has 32\)\. Set data.block_size=32 or less\."):
        pretrain(recipe, tiny_overrides(tmp_path, **{key: str(tmp_path / "model"), "data.block_size": 64}))
    assert not (tmp_path / "cache").exists()


def test_a_reused_tokenizer_says_which_tokenizer_settings_it_does_not_use(tmp_path, story_texts, capsys):
    # The run trained on a 300-token WordPiece while its recipe.yaml (and the export's) said bpe, 4096.
    from nlpssl.pretrain import get_tokenizer
    from nlpssl.tokenizer import train_tokenizer

    path = str(tmp_path / "tok")
    tiny_tokenizer = train_tokenizer(story_texts[:100], path, algorithm="wordpiece", vocab_size=300, num_sentinels=4)
    recipe = load_recipe("gpt-tiny", [f"tokenizer.path={path}", f"training.output_dir={tmp_path}"])
    assert len(get_tokenizer(recipe)) == len(tiny_tokenizer)
    out = capsys.readouterr().out
    assert f"tokenizer: reusing {path} ({len(tiny_tokenizer)} tokens, wordpiece); tokenizer.vocab_size=4096 and " \
           "tokenizer.algorithm='bpe' are not used" in out
    same = load_recipe("gpt-tiny", [f"tokenizer.path={path}", f"training.output_dir={tmp_path}",
                                    "tokenizer.algorithm=wordpiece", f"tokenizer.vocab_size={len(tiny_tokenizer)}"])
    get_tokenizer(same)
    assert "reusing" not in capsys.readouterr().out


def test_suspicious_training_values_are_noted_before_the_run(tmp_path, capsys):
    from nlpssl.recipe import training_notes

    base = ["training.budget_minutes=null", "training.max_steps=8"]
    recipe = load_recipe("gpt-tiny", base + ["training.warmup_steps=500", "training.eval_steps=5000",
                                             "training.learning_rate=10"])
    notes = "\n".join(training_notes(recipe))
    assert "training.warmup_steps=500 is not shorter than training.max_steps=8" in notes
    assert "training.eval_steps=5000 is larger than training.max_steps=8: no evaluation runs" in notes
    assert "training.learning_rate=10 is far above" in notes
    # a share of the run, evaluations inside it, a usual rate: nothing to say
    assert training_notes(load_recipe("gpt-tiny", base + ["training.warmup_steps=0.5", "training.eval_steps=4"])) == []


def test_a_same_size_tokenizer_mismatch_says_what_differs(tmp_path, story_texts):
    # Read "(300 tokens) differs from ... (300 tokens)": a difference the message did not show.
    from nlpssl.errors import NlpsslError
    from nlpssl.objectives.base import check_same_tokenizer
    from nlpssl.tokenizer import train_tokenizer

    for algorithm in ("bpe", "wordpiece"):
        train_tokenizer(story_texts[:100], tmp_path / algorithm, algorithm=algorithm, vocab_size=300, num_sentinels=4)
    with pytest.raises(NlpsslError, match=r"\(the same 300 tokens in number, \d+ of them missing or at other ids\) "
                                          r"differs from the tokenizer of the teacher '[^']+', whose ids"):
        check_same_tokenizer(str(tmp_path / "bpe"), str(tmp_path / "wordpiece"), "distill", "the teacher")


def test_a_transformers_refusal_keeps_the_values_it_found():
    # The message stopped at its first line: "... except when --save_strategy="best", but found".
    msg = problems("gpt-tiny", "training.eval_strategy=no", "training.load_best_model_at_end=true")
    assert "but found - Evaluation strategy: IntervalStrategy.NO - Save strategy: SaveStrategy.STEPS" in msg


def test_recipe_validate_takes_overrides_and_says_the_notes_pretrain_would(capsys):
    # README: every RECIPE argument takes key=value overrides; validate read one as a recipe name
    # ("no recipe file or name 'model.hidden_size=36'") and did not show pretrain's notes.
    from nlpssl.cli import main

    with pytest.raises(SystemExit):
        main(["recipe", "validate", "bert-tiny", "gpt-tiny", "model.hidden_size=36", "model.num_heads=4"])
    said = capsys.readouterr().out
    assert "invalid bert-tiny" in said and "model.hidden_size / model.num_heads must be even" in said
    assert "ok      gpt-tiny" in said  # GPT-2's absolute positions take any head width
    assert main(["recipe", "validate", "bert-tiny", "training.max_steps=8", "training.warmup_steps=500"]) == 0
    assert "note: training.warmup_steps=500 is not shorter than training.max_steps=8" in capsys.readouterr().out
    assert main(["recipe", "validate", "training.max_steps=8"]) == 2
    assert "no recipe given, only overrides" in capsys.readouterr().err


def test_tokenizer_sizes_are_checked_when_the_recipe_loads():
    # validate passed both; the run then stopped in train_tokenizer (vocab) or inside the Rust trainer (-1).
    msg = problems("t5-tiny", "tokenizer.algorithm=bpe", "tokenizer.vocab_size=100", "tokenizer.min_frequency=-1")
    assert "tokenizer.vocab_size is out of range (got 100). Use 363 to 2,097,152" in msg
    assert "tokenizer.min_frequency is out of range (got -1)" in msg
    assert "tokenizer.vocab_size" in problems("bert-tiny", "tokenizer.vocab_size=10000000")


def test_other_tools_names_for_a_setting_point_to_ours():
    # Closest by spelling was not what was meant: per_device_batch_size got 'per_device_eval_batch_size',
    # warmup_ratio (transformers 4) a bare 'warmup_steps', n_layer (GPT-2's config) nothing close.
    msg = problems("bert-tiny", "training.per_device_batch_size=8", "training.warmup_ratio=0.1", "model.n_layer=2",
                   "collator.mlm_probability=0.2")
    assert "training.per_device_batch_size: unknown key" in msg and "Did you mean 'per_device_train_batch_size'?" in msg
    assert "Did you mean 'warmup_steps'? transformers 5 has no warmup_ratio: a warmup_steps below 1 is a share" in msg
    assert "model.n_layer: unknown key. Did you mean 'num_layers'?" in msg
    assert "collator.mlm_probability: unknown key. Did you mean 'rate'?" in msg
