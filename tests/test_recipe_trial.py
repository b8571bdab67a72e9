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
