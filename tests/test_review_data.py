"""Review of the data and recipe side: each test pins a bug a user hit (it fails on the code before its fix)."""

import pytest

from nlpssl.recipe import RecipeError, load_recipe


@pytest.mark.parametrize("key", ["data.source", "data.cache_dir", "tokenizer.path"])
def test_an_empty_path_setting_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch, key):
    # `data.source=$DATA` with DATA unset: pathlib reads "" as ".", so every text file under the current
    # folder became the corpus (and an empty tokenizer.path trained a new tokenizer) without a word.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("private notes, not a corpus\n")
    with pytest.raises(RecipeError) as err:
        load_recipe("bert-tiny", [f"{key}="])
    message = str(err.value)
    assert f"{key} is empty (got '')" in message and "current folder" in message
