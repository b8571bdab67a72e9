"""nlpssl: self-supervised pretraining of language models on Hugging Face parts.

The Python API mirrors the command line::

    import nlpssl
    recipe = nlpssl.load_recipe("bert-tiny", ["training.max_steps=100"])
    result = nlpssl.pretrain(recipe)
    nlpssl.fill_mask(result.export_dir, "The cat sat on the [MASK].")

Names are imported on first use, so `import nlpssl` stays instant.
"""

import sys
import types

__version__ = "0.1.0"

_API = {
    "load_recipe": "nlpssl.recipe",
    "Recipe": "nlpssl.recipe",
    "RecipeError": "nlpssl.recipe",
    "NlpsslError": "nlpssl.errors",
    "train_tokenizer": "nlpssl.tokenizer",
    "load_tokenizer": "nlpssl.tokenizer",
    "load_texts": "nlpssl.sources",
    "generate_stories": "nlpssl.corpus",
    "labelled_examples": "nlpssl.corpus",
    "prepare_data": "nlpssl.data",
    "pretrain": "nlpssl.pretrain",
    "export_run": "nlpssl.export",
    "fill_mask": "nlpssl.demo",
    "generate": "nlpssl.demo",
    "finetune": "nlpssl.finetune",
    "classify": "nlpssl.demo",
    "probe": "nlpssl.probe",
    "embed": "nlpssl.demo",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'nlpssl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))  # the API names too, for completion in notebooks


class _Package(types.ModuleType):
    """Keeps ``nlpssl.pretrain`` (and the like) the function, not the submodule of that name.

    Importing a submodule binds it on its package; for the API names that share a submodule's
    name (pretrain, finetune) that would shadow the function after its first use.
    """

    def __setattr__(self, name, value):
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
