"""What every pretraining objective answers; the pipeline asks, it never branches on names.

An objective is built from a recipe and owns: how rows are framed (``framing``, ``row_length``,
the columns its collator reads), its collator and model, its Trainer (loss and metrics), the
headline figures of a run, and its export facts (stock class, Hub tags, tokenizer template,
training-only weights, the model card's usage and notes). The defaults below are a masked-LM's
framing and a plain Trainer's loss; each objective module overrides what differs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from nlpssl.errors import NlpsslError

if TYPE_CHECKING:
    from nlpssl.recipe import Recipe

# In a run folder: the config.json of each model folder outside the run that it trains from (a SimCSE
# encoder, a distillation teacher), as it was when the run began (see Objective.outside_config).
OUTSIDE_FILE = "outside.json"


class Objective:
    framing: ClassVar[str]  # packed-row layout (nlpssl.data.Packer): "mlm" [CLS] ... [SEP]; "causal"/"t5": [EOS]-separated;
    # "sentence" one sentence a row; "pair" two sentences of a document a row (SimCSE: a property of the recipe)
    template: ClassVar[str]  # tokenizer post-processor of the export (nlpssl.tokenizer.set_template)
    collators: ClassVar[tuple[str, ...]]  # collator.kind values that fit
    auto_class: ClassVar[str]  # the transformers Auto class that builds the trained model from its config
    tag: ClassVar[str]  # Hub tag naming the objective
    pipeline_tag: ClassVar[str | None] = None  # the Hub task the export serves (None: no pipeline runs it)
    task_type: ClassVar[str] = "text-generation"  # model-index task type when there is no pipeline tag
    generative: ClassVar[bool] = False  # writes generation_config.json
    decoder_only: ClassVar[bool] = False  # export BOS = [EOS] (the document separator) and pads on the left
    metric: ClassVar[tuple[str, str]] = ("perplexity", "eval_perplexity")  # (model-index name, metrics key)
    training_only: ClassVar[tuple[str, ...]] = ()  # weight-name prefixes that the export drops
    usage: ClassVar[str] = ""  # model card: Python that uses the export (``model`` is its folder)
    every_weight_used: ClassVar[bool] = True  # each step's loss reaches every trainable weight (DDP skips its search)
    outside_keys: ClassVar[tuple[str, ...]] = ()  # recipe keys naming model folders the run trains from
    padded_rows: ClassVar[bool] = False  # rows end in padding: train_tokens counts the real ones the Trainer saw

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.run_dir: Path | None = None  # set by the export: outside facts come from the run's record

    def read_outside(self, key: str) -> dict:
        """The config.json of the folder under recipe key ``key`` (one of ``outside_keys``) as it is now."""
        raise NotImplementedError(key)

    def outside_config(self, key: str) -> dict:
        """The config.json of the folder under ``key`` as the run recorded it at its start (``OUTSIDE_FILE``
        in ``run_dir``), else as the folder holds it now. The export's card and config read it this way, so
        a teacher or encoder deleted or trained again after the run began changes neither."""
        if self.run_dir is not None and (self.run_dir / OUTSIDE_FILE).is_file():
            recorded = json.loads((self.run_dir / OUTSIDE_FILE).read_text()).get(key)
            if recorded is not None:
                return recorded
        return self.read_outside(key)

    @property
    def arch(self) -> str:
        """The architecture trained and exported (``model.arch``; a SimCSE encoder's own)."""
        return self.recipe.model.arch

    def tokenizer_path(self) -> str | None:
        """A tokenizer folder to reuse (``tokenizer.path``; a teacher's or encoder's), else None: train one."""
        return self.recipe.tokenizer.path or None

    def preflight(self) -> None:
        """Checks that read files the recipe names (a teacher, an encoder), run before any data is read."""

    # -- data ---------------------------------------------------------------------------------
    def row_length(self) -> int:
        """Tokens per packed row (the collator may shorten it, as T5's span corruption does)."""
        return self.recipe.data.block_size

    def columns(self) -> list[str]:
        """The packed columns the collator reads."""
        return ["input_ids", "word_starts"] if self.recipe.collator.kind in ("word", "span") else ["input_ids"]

    # -- training -----------------------------------------------------------------------------
    def build_collator(self, tokenizer):
        raise NotImplementedError

    def build_model(self, tokenizer, attn: str = "sdpa"):
        """A freshly initialised stock model of ``auto_class`` for the recipe's model section."""
        import transformers

        from nlpssl.models import build_config

        auto = getattr(transformers, self.auto_class)
        return auto.from_config(build_config(self.recipe.model, tokenizer, attn), attn_implementation=attn)

    def make_trainer(self, args, model, data, collator, callbacks: list):
        """A Trainer for this objective over the packed blocks."""
        return self.trainer_class()(
            model=model, args=args, data_collator=collator,
            train_dataset=data.train.select_columns(self.columns()),
            eval_dataset=data.eval.select_columns(self.columns()),
            callbacks=callbacks, **self.trainer_kwargs(),
        )

    def trainer_class(self):
        from nlpssl.training import PretrainTrainer

        return PretrainTrainer

    def trainer_kwargs(self) -> dict[str, Any]:
        return {}

    def headline(self, eval_metrics: dict[str, Any], stats: dict, trainer) -> dict[str, Any]:
        """Objective-specific figures of a finished run for metrics.json and the card."""
        loss = eval_metrics.get("eval_loss")
        m: dict[str, Any] = {"eval_perplexity": math.exp(loss) if loss is not None and loss < 50 else None}
        if stats.get("eval_bytes") and loss is not None:
            # bits per byte compares models across tokenizers: NLL in bits over UTF-8 bytes.
            m["eval_bits_per_byte"] = loss / math.log(2) * stats["eval_tokens"] / stats["eval_bytes"]
        return m

    # -- export -------------------------------------------------------------------------------
    def write_extra(self, out_dir, config: dict) -> None:
        """Files the export holds beside the stock ones (``config`` is its config.json)."""

    def described(self) -> str:
        """Model card: what the model is (size and architecture)."""
        return f"{self.recipe.model.size} {self.arch}"

    def origin(self) -> str:
        """Model card: how the weights came about."""
        return "pretrained from scratch"

    def card_notes(self, arch: str) -> str:
        """Model card: what a user of the export should know."""
        return ""

    def check(self, where: str, problems: list[str]) -> None:
        """Recipe checks only this objective knows (appended to ``problems``)."""
        c = self.recipe.collator
        if self.recipe.kind == "pretrain" and c.kind not in self.collators:
            problems.append(
                f"{where}: collator.kind does not fit model.arch={self.recipe.model.arch!r} "
                f"(got {c.kind!r}). Use one of {', '.join(map(repr, self.collators))}."
            )


def folder_config(folder: str, where: str, example: str) -> dict:
    """The config.json of a model folder named by recipe key ``where``, or a clear error naming the folder."""
    path = Path(folder).expanduser() / "config.json"
    if not path.is_file():
        raise NlpsslError(f"{where}: {folder!r} is not a model folder (no config.json). Point it at {example}.")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise NlpsslError(f"{where}: {str(path)!r} is not valid JSON ({err}). Re-export that model.") from err


def check_same_tokenizer(path: str | None, reference: str, where: str, whose: str) -> None:
    """Refuse a ``tokenizer.path`` whose vocabulary differs from the tokenizer in ``reference``.

    Distillation's soft targets are over the teacher's vocabulary, and an encoder's embeddings are
    rows of its own: either run with another tokenizer would read every id as a different token.
    """
    if not path:
        return
    from pathlib import Path

    from nlpssl.tokenizer import load_tokenizer

    if Path(path).expanduser().resolve() == Path(reference).expanduser().resolve():
        return
    mine, theirs = load_tokenizer(path).get_vocab(), load_tokenizer(reference).get_vocab()
    if mine != theirs:
        # Two tokenizers trained to one vocab_size have the same count and other tokens: say what differs.
        moved = sum(theirs.get(token) != i for token, i in mine.items())
        sizes = (f"{len(mine)} tokens" if len(mine) != len(theirs) else
                 f"the same {len(mine)} tokens in number, {moved} of them missing or at other ids")
        raise NlpsslError(
            f"{where}: tokenizer.path={path!r} ({sizes}) differs from the tokenizer of {whose} "
            f"{reference!r}" + (f" ({len(theirs)} tokens)" if len(mine) != len(theirs) else "")
            + f", whose ids the model was trained on. Use {whose}'s tokenizer: remove tokenizer.path (nlpssl then uses it)."
        )


# Models with a table of absolute positions, which an index past its end crashes (rotary and relative
# positions have no such table).
ABSOLUTE_POSITIONS = ("bert", "electra", "distilbert", "roberta", "xlm-roberta", "gpt2")


def check_positions(config: dict, block_size: int, where: str, folder: str) -> None:
    """Refuse rows of ``data.block_size`` tokens longer than the position table of the model in ``folder``.

    Found only in the first batch otherwise, after the data is built, as an index error inside torch.
    """
    from nlpssl.models import config_positions

    positions = config_positions(config) if config.get("model_type") in ABSOLUTE_POSITIONS else None
    if positions is not None and block_size > positions:
        raise NlpsslError(
            f"data.block_size is larger than the positions of {where} {folder!r} (got {block_size}; its "
            f"{config.get('model_type')} has {positions}). Set data.block_size={positions} or less."
        )
