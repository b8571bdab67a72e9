"""Recipes: YAML files loaded into typed, frozen, validated sections.

A recipe is a YAML mapping of fixed sections. Every value is converted to the type its field is
annotated with (YAML 1.1 reads ``5e-5`` as a string; here it becomes a float), unknown keys are
rejected with a "did you mean", and all problems are collected and raised together as one
:class:`RecipeError` before any data is read or any model is built. ``key=value`` overrides from
the command line go through exactly the same conversion and checks.

The ``training`` section is passed verbatim to :class:`transformers.TrainingArguments` (plus the
nlpssl switches in :data:`TRAINING_EXTRAS`) and is validated by building it at load time.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from nlpssl.errors import NlpsslError

# Shipped inside the package, so a wheel install has them too (`recipes/` in the source tree links here).
RECIPES_DIR = Path(str(resources.files("nlpssl") / "recipes"))


class RecipeError(NlpsslError):
    """One or more problems in a recipe, all reported at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        # One problem reads as a sentence; several as a list under their count.
        super().__init__(problems[0] if len(problems) == 1 else
                         f"{len(problems)} problems:\n" + "\n".join(f"- {p}" for p in problems))


# --------------------------------------------------------------------------------------------
# Sections. One doc line per field: `nlpssl recipe show` and the README describe them.


@dataclass(frozen=True)
class TokenizerSection:
    """The shared tokenizer: trained once per run (or reused from ``path``)."""

    algorithm: Literal["bpe", "wordpiece", "unigram"] = "wordpiece"
    vocab_size: int = 8192  # including special tokens and sentinels
    min_frequency: int = 2
    num_sentinels: int = 100  # reserved <extra_id_i> block for T5 span corruption
    lowercase: bool = False
    max_texts: int | None = None  # train the tokenizer on at most this many texts
    path: str | None = None  # reuse a trained tokenizer folder instead of training one


@dataclass(frozen=True)
class MixSource:
    """One more source read beside ``data.source`` (``data.mix``): e.g. a task's own sentences, repeated."""

    source: str = ""  # a file, glob or folder (or "hub:NAME"), as data.source takes
    text_column: str | None = None  # None: data.text_column
    txt_unit: Literal["line", "paragraph", "file"] | None = None  # None: data.txt_unit
    clean: Literal["none", "html"] | None = None  # None: data.clean
    repeat: int = 1  # its texts are read this many times: raises a small source's share of the tokens


@dataclass(frozen=True)
class DataSection:
    """Where the text comes from and how it is packed into blocks."""

    source: str = "builtin"  # "builtin", a file/glob/folder, or "hub:NAME"
    text_column: str = "text"
    hub_config: str | None = None
    split: str = "train"
    txt_unit: Literal["line", "paragraph", "file"] = "paragraph"  # one document per ... (.txt files)
    unwrap: bool = False  # paragraph: join its lines with spaces (hard-wrapped prose); default keeps line breaks
    clean: Literal["none", "html"] = "none"  # html: <br /> -> newline, other tags dropped, &amp; decoded
    builtin_stories: int | None = None  # size of the built-in corpus (None: its default)
    max_texts: int | None = None
    seed: int = 0
    block_size: int = 128  # tokens per packed training row
    eval_fraction: float = 0.01  # share of documents held out for evaluation
    eval_max_blocks: int = 512  # cap on held-out blocks (keeps evaluation quick)
    num_proc: int = 1  # processes that tokenize chunks of the cached path (a stream tokenizes in the training process)
    cache_dir: str = ".cache/nlpssl"  # processed data cached here under a hash of the settings
    streaming: bool = False  # read, tokenize and pack on the fly: no preparation pass, no cache; needs max_steps
    mix: list[MixSource] = field(default_factory=list)  # more sources after data.source (- source: PATH, repeat: N)


@dataclass(frozen=True)
class CollatorSection:
    """How training examples are corrupted (masked-LM, causal-LM, T5 span corruption)."""

    kind: Literal["token", "word", "span", "causal", "t5"] = "token"
    rate: float = 0.15  # share of tokens masked (BERT, Devlin et al. 2019)
    mask_frac: float = 0.8  # of masked tokens: replaced by [MASK] (BERT 80/10/10)
    random_frac: float = 0.1  # ... replaced by a random token; the rest stay unchanged
    exact_budget: bool | None = None  # exactly round(rate * n) per row (ELECTRA, Cramming); None: only for span
    span_p: float = 0.2  # SpanBERT geometric span-length parameter (Joshi et al. 2020)
    span_max: int = 10  # SpanBERT clip on span length, in words
    noise_density: float = 0.15  # T5 span corruption (Raffel et al. 2020)
    mean_span_length: float = 3.0  # T5 mean noise span length
    reset_positions: bool = False  # causal: restart positions after [EOS] (no cross-document attention)
    span_boundary: bool = False  # span: SpanBERT's span boundary objective, a training-only head dropped at export


@dataclass(frozen=True)
class ModelSection:
    """A stock transformers architecture built from a size preset."""

    arch: Literal["bert", "roberta", "modernbert", "gpt2", "llama", "t5", "electra"] = "bert"
    size: Literal["tiny", "small", "base"] = "tiny"
    hidden_size: int | None = None  # override the preset
    num_layers: int | None = None  # t5: even, half in the encoder and half in the decoder
    num_heads: int | None = None  # llama, modernbert (rotary): hidden_size / num_heads must be even
    intermediate_size: int | None = None  # FFN width; llama, modernbert (GLU): 2/3 of it, rounded up to 64 (1024 -> 704)
    dropout: float | None = None  # None: 0 (pretraining does not overfit; Cramming); e.g. 0.1 for classic BERT
    max_positions: int | None = None
    init_std: float | None = None  # config.initializer_range (None: the architecture's, 0.02); see bert-classic-tiny


@dataclass(frozen=True)
class ElectraSection:
    """ELECTRA replaced-token detection (model.arch=electra; Clark et al. 2020)."""

    generator_fraction: float = 0.25  # generator width (and FFN, heads) as a share of the discriminator's
    discriminator_weight: float = 50.0  # lambda: loss = generator MLM + lambda x discriminator loss
    temperature: float = 1.0  # generator sampling temperature (1: sample from its softmax)


@dataclass(frozen=True)
class DistillSection:
    """Knowledge distillation into a smaller student (DistilBERT, Sanh et al. 2019); set ``teacher`` to use it."""

    teacher: str | None = None  # folder of a masked-LM or causal-LM teacher (an nlpssl export or any Hub-format model)
    init: Literal["teacher", "preset"] = "teacher"  # teacher: the student is the teacher with fewer layers; preset: model section
    layers: list[int] | None = None  # init=teacher: the teacher layers the student keeps (null: every other, 0, 2, 4, ...)
    temperature: float = 2.0  # soft targets: softmax(logits / T); the KL term is scaled by T^2
    kl_weight: float = 5.0  # loss = kl_weight x KL + lm_weight x the student's own loss + cosine_weight x cosine
    lm_weight: float = 2.0  # (DistilBERT's alpha_ce, alpha_mlm, alpha_cos: 5, 2, 1)
    cosine_weight: float = 1.0  # last hidden states; used only when student and teacher widths match
    soft_targets: Literal["masked", "all"] = "masked"  # masked-LM: KL on the masked positions only, or on every token


@dataclass(frozen=True)
class SimcseSection:
    """Unsupervised SimCSE sentence embeddings (Gao et al. 2021); set ``encoder`` to use it."""

    encoder: str | None = None  # the encoder folder to start from (an nlpssl masked-LM export or any Hub-format encoder)
    pooling: Literal["mean", "cls"] = "mean"  # how a sentence vector is read from the token states (export too)
    mlp: bool | None = None  # a training-only MLP on the pooled vector (null: on with cls pooling, as SimCSE)
    temperature: float = 0.05  # InfoNCE temperature on cosine similarities
    dropout: float = 0.1  # dropout of the two views (the only augmentation); the export keeps the encoder's own
    # the positive of a sentence: its own second view ("dropout", SimCSE), or another sentence of the same
    # document ("document", as DeCLUTR: documents are cut into pairs of their sentences, one pair a row)
    positive: Literal["dropout", "document"] = "dropout"


@dataclass(frozen=True)
class SpeedSection:
    """Speed options; each is on by default where it is safe, and each can be turned off."""

    bf16: Literal["auto", "on", "off"] = "auto"  # auto: on for CUDA with bf16, CPUs with AVX512-BF16/AMX
    sparse_mlm_head: bool = True  # masked-LM: run the vocabulary head on masked positions only
    chunked_lm_loss: bool = True  # causal-LM: vocabulary head + loss in row chunks, no full [B, L, V] logits
    sdpa: bool = True  # SDPA kernels (GPU, fp32 CPU); bf16 on CPU uses eager, measured faster there
    compile: bool = False  # torch.compile the model (long warm-up; pays off on long GPU runs)
    tf32: bool = True  # CUDA only: TF32 matmuls for fp32 work


@dataclass(frozen=True)
class ExportSection:
    """The Hub-format export written at the end of a run."""

    enabled: bool = True
    model_name: str | None = None  # name in the model card (default: the recipe name)
    license: str = "apache-2.0"


@dataclass(frozen=True)
class FinetuneSection:
    """A text-classification task for `nlpssl finetune`."""

    source: str = "builtin"  # "builtin" (labelled companion set), a .csv/.tsv/.jsonl/.parquet file, or "hub:NAME"
    hub_config: str | None = None
    train_split: str = "train"  # Hub split read as training data
    validation_source: str | None = None  # a file, or a Hub split name; else carved off train
    test_source: str | None = None  # a file, or a Hub split name; else carved off train (test_fraction)
    text_column: str = "text"
    text_pair_column: str | None = None  # second text of sentence-pair tasks (NLI, paraphrase)
    label_column: str = "label"  # string or integer labels
    label_names: list[str] | None = None  # names for integer labels 0..N-1 (default: the labels as found)
    validation_fraction: float = 0.1  # share of the training file's rows held out when there is no validation_source
    test_fraction: float = 0.0  # share of the training file's rows held out as test when there is no test_source
    max_train_examples: int | None = None  # seeded subsample of the training split
    builtin_train_size: int = 400  # source=builtin: training examples
    builtin_eval_size: int = 1000  # source=builtin: validation and test examples each
    max_length: int = 128  # tokens per input (longer texts are truncated)
    seed: int = 0  # data seed: built-in set, carving and subsampling
    metric_for_best_model: Literal["accuracy", "macro_f1"] = "accuracy"  # picks the checkpoint kept
    early_stopping_patience: int | None = 3  # evaluations without improvement before stopping (null: off)
    dropout: float | None = None  # dropout while fine-tuning, e.g. 0.1 (null: the export's own, 0 after nlpssl pretraining)


# nlpssl's own switches that live in the `training:` section beside TrainingArguments' fields.
TRAINING_EXTRAS: dict[str, Any] = {
    "resume": bool,
    # Wall-clock minutes of training (evaluations and checkpoints included; tokenizer, data, the final
    # evaluation and export not). The learning-rate schedule follows elapsed time, so the run ends on
    # time with a decayed rate on any machine; max_steps stays a cap.
    "budget_minutes": float | None,
}
BUDGET_SCHEDULES = ("linear", "cosine", "constant_with_warmup")
ROTARY_ARCHS = ("llama", "modernbert")  # rotary positions: an even number of dimensions per head

PRETRAIN_SECTIONS: dict[str, type] = {
    "tokenizer": TokenizerSection,
    "data": DataSection,
    "collator": CollatorSection,
    "model": ModelSection,
    "electra": ElectraSection,
    "distill": DistillSection,
    "simcse": SimcseSection,
    "speed": SpeedSection,
    "export": ExportSection,
}
# Sections of one objective's settings -> that objective (nlpssl.objectives.objective_name).
OBJECTIVE_SECTIONS = {"electra": "electra", "distill": "distill", "simcse": "simcse"}
FINETUNE_SECTIONS: dict[str, type] = {"task": FinetuneSection, "speed": SpeedSection}
FINETUNE_TOP: dict[str, type] = {"model": str, "init": Literal["pretrained", "scratch"]}


@dataclass(frozen=True)
class Recipe:
    """A fully resolved, validated recipe."""

    name: str
    kind: Literal["pretrain", "finetune"] = "pretrain"
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    data: DataSection = field(default_factory=DataSection)
    collator: CollatorSection = field(default_factory=CollatorSection)
    model: ModelSection = field(default_factory=ModelSection)
    electra: ElectraSection = field(default_factory=ElectraSection)
    distill: DistillSection = field(default_factory=DistillSection)
    simcse: SimcseSection = field(default_factory=SimcseSection)
    speed: SpeedSection = field(default_factory=SpeedSection)
    export: ExportSection = field(default_factory=ExportSection)
    task: FinetuneSection = field(default_factory=FinetuneSection)
    finetune_model: str | None = None  # finetune: the export or Hub-format folder to start from
    init: Literal["pretrained", "scratch"] = "pretrained"  # finetune: scratch = random weights
    training: dict[str, Any] = field(default_factory=dict)  # TrainingArguments kwargs + extras
    source_path: str | None = None

    @property
    def resume(self) -> bool:
        return bool(self.training.get("resume", False))

    @property
    def output_dir(self) -> Path:
        return Path(self.training["output_dir"])

    @property
    def budget_minutes(self) -> float | None:
        return self.training.get("budget_minutes")

    def training_arguments(self, **overrides: Any):
        """Build :class:`transformers.TrainingArguments` from the ``training`` section."""
        from transformers import TrainingArguments

        kwargs = {k: v for k, v in self.training.items() if k not in TRAINING_EXTRAS}
        kwargs.update(overrides)
        return TrainingArguments(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (what `recipe show` prints and runs save)."""
        out: dict[str, Any] = {"kind": self.kind}
        sections = PRETRAIN_SECTIONS if self.kind == "pretrain" else FINETUNE_SECTIONS
        if self.kind == "finetune":
            out["model"] = self.finetune_model
            out["init"] = self.init
        from nlpssl.objectives import objective_name

        trained = objective_name(self) if self.kind == "pretrain" else None
        for name in sections:
            if name in OBJECTIVE_SECTIONS and OBJECTIVE_SECTIONS[name] != trained:
                continue  # another objective's settings: neither used nor shown
            out[name] = dataclasses.asdict(getattr(self, name))
        out["training"] = dict(self.training)
        return out

    def to_yaml(self) -> str:
        import yaml

        header = f"# Resolved nlpssl recipe '{self.name}'"
        if self.source_path:
            header += f" (from {home_as_tilde(self.source_path)})"
        return header + "\n" + yaml.safe_dump(home_as_tilde(self.to_dict()), sort_keys=False)


# --------------------------------------------------------------------------------------------
# Type conversion


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if _is_union(tp):  # int | None reads "int or null", as a recipe writes it (not "int or NoneType")
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list and typing.get_args(tp):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def coerce(value: Any, tp: Any) -> Any:
    """Convert ``value`` to the annotated type ``tp``; raise ValueError with a short reason."""
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("null", "~") and type(None) in args:
            return None
        for arg in sorted((a for a in args if a is not type(None)), key=_union_rank):
            try:
                return coerce(value, arg)
            except ValueError as err:
                if str(err).startswith("item "):  # a list with a bad item: which one says more than the union
                    raise
                continue
        raise ValueError(f"expected {_type_name(tp)}")
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        value = _unbool(value, choices)
        for choice in choices:
            if value == choice or (isinstance(value, (bool, int, float)) and str(value).lower() == str(choice)):
                return choice
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        raise ValueError(
            f"expected {_type_name(tp)}" + (f"; did you mean {hint[0]!r}?" if hint else "")
        )
    if value is None:
        raise ValueError(f"expected {_type_name(tp)}, not null")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).lower() in _TRUE | _FALSE:
            return str(value).lower() in _TRUE
        raise ValueError("expected a boolean (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                as_float = float(value)
            except ValueError:
                raise ValueError("expected an integer") from None
            if as_float.is_integer():
                return int(as_float)
        raise ValueError("expected an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError("expected a number") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError("expected a string")
        if isinstance(value, bool):  # `source: on` is a folder named on, not True
            raise ValueError("expected a string, and YAML reads an unquoted on/off/yes/no/true/false as a "
                             "boolean: quote it, e.g. 'on'")
        return str(value)
    origin = typing.get_origin(tp) or tp
    if origin in (list, dict):
        if not isinstance(value, origin):
            raise ValueError(f"expected a {origin.__name__}")
        item = typing.get_args(tp)[0] if origin is list and typing.get_args(tp) else None
        if item not in (int, float, str, bool):
            return value
        # Each item as the field's item type (distill.layers: [0, two] failed later in a bare TypeError).
        items = []
        for i, v in enumerate(value):
            try:
                items.append(coerce(v, item))
            except ValueError as err:
                raise ValueError(f"item {i} ({v!r}): {err}") from None
        return items
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):  # SchedulerType, ...: validate, keep the string
        value = _unbool(value, [m.value for m in tp])  # eval_strategy: no
        try:
            tp(value)
        except ValueError:
            choices = [m.value for m in tp]
            hint = difflib.get_close_matches(str(value), choices, n=1)
            raise ValueError(
                f"expected one of {', '.join(map(repr, choices))}" + (f"; did you mean {hint[0]!r}?" if hint else "")
            ) from None
        return value
    return value


def _unbool(value: Any, choices: typing.Sequence[Any]) -> Any:
    """The choice a YAML 1.1 boolean stands for: a bare on/off/yes/no is read as true/false."""
    if not isinstance(value, bool):
        return value
    spelled = ("on", "true", "yes") if value else ("off", "false", "no")
    return next((c for c in choices if c in spelled), value)


def _union_rank(tp: Any) -> int:
    # Try the strictest types first so "3" becomes 3 for `int | str`, not "3".
    order = {bool: 0, int: 1, float: 2}
    return order.get(tp, 5 if tp is str else 3)


# --------------------------------------------------------------------------------------------
# Loading


# Names other tools give settings that nlpssl spells otherwise (closest by spelling is not always meant:
# per_device_batch_size is nearer per_device_eval_batch_size), with a word where the meaning differs.
ALIASES: dict[str, tuple[str, str]] = {
    "batch_size": ("per_device_train_batch_size", ""),
    "per_device_batch_size": ("per_device_train_batch_size", ""),
    "train_batch_size": ("per_device_train_batch_size", ""),
    "lr": ("learning_rate", ""),
    "epochs": ("num_train_epochs", ""),
    "num_epochs": ("num_train_epochs", ""),
    "warmup_ratio": ("warmup_steps", " transformers 5 has no warmup_ratio: a warmup_steps below 1 is a share of "
                                     "the run (e.g. warmup_steps=0.1)."),
    "grad_accum": ("gradient_accumulation_steps", ""),
    "gradient_accumulation": ("gradient_accumulation_steps", ""),
    "n_layer": ("num_layers", ""), "num_hidden_layers": ("num_layers", ""), "layers": ("num_layers", ""),
    "n_head": ("num_heads", ""), "num_attention_heads": ("num_heads", ""), "heads": ("num_heads", ""),
    "n_embd": ("hidden_size", ""), "d_model": ("hidden_size", ""),
    "n_positions": ("max_positions", ""), "max_position_embeddings": ("max_positions", ""),
    "mlm_probability": ("rate", ""),
}


def _did_you_mean(key: str, known: typing.Iterable[str]) -> str:
    known = list(known)
    alias, why = ALIASES.get(key.lower(), (None, ""))
    if alias in known:
        return f" Did you mean {alias!r}?{why}"
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else f" Known keys: {', '.join(sorted(known))}."


def _section_hint(key: str, sections: dict[str, type], known: list[str]) -> str:
    """For an unknown section: the section.key a bare key (max_steps=3) was meant as, else a close section."""
    owners = [f"{name}.{key}" for name, cls in sections.items() if key in {f.name for f in dataclasses.fields(cls)}]
    owners += [f"training.{key}"] if key in _training_types() else []
    if owners:
        return f" Did you mean {' or '.join(map(repr, owners))}? A key goes under its section: section.key=value."
    return _did_you_mean(key, known)


def _load_section(cls: type, raw: Any, where: str, problems: list[str]):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping of keys (got {raw!r}). Write it as `{where.rsplit(' ', 1)[-1]}:` with indented `key: value` lines.")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in names:
            problems.append(f"{where}.{key}: unknown key.{_did_you_mean(str(key), names)}")
            continue
        if (item_cls := _section_list(hints[key])) is not None:
            values[key] = _load_list(item_cls, value, f"{where}.{key}", problems)
            continue
        try:
            values[key] = coerce(value, hints[key])
        except ValueError as err:
            problems.append(_bad_value(f"{where}.{key}", value, hints[key], err, _field_default(cls, key)))
    return cls(**values)


def _bad_value(at: str, value: Any, tp: Any, err: ValueError, default: Any = dataclasses.MISSING) -> str:
    """The problem of a value that does not convert to ``tp``; a null says what the key takes instead."""
    if value is None:  # `key: null` or key=null on a key that has no null
        return (f"{at}: cannot be null (got None). Set it to {_a(tp)}, or leave the key out for its default"
                + ("." if default is dataclasses.MISSING else f" ({default!r})."))
    return f"{at}: {err} (got {value!r}). Set it to {_type_name(tp)}."


def _a(tp: Any) -> str:
    """A type in words: "an integer", "true or false", ..."""
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return words.get(tp, _type_name(tp))


def _field_default(cls: type, key: str) -> Any:
    """The default of dataclass field ``key`` (``dataclasses.MISSING`` if it has none)."""
    f = next((f for f in dataclasses.fields(cls) if f.name == key), None)
    if f is None:
        return dataclasses.MISSING
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _section_list(tp: Any) -> type | None:
    """The dataclass of a ``list[Section]`` field (``data.mix``), else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list and len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def _load_list(cls: type, raw: Any, where: str, problems: list[str]) -> list:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"{where}: expected a list of mappings (got {raw!r}). Write one `- source: PATH` "
                        "entry per line, with its other keys indented under it.")
        return []
    return [_load_section(cls, item, f"{where}[{i}]", problems) for i, item in enumerate(raw)]


def _training_types() -> dict[str, Any]:
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    names = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    out = {n: hints.get(n, Any) for n in names}
    out.update(TRAINING_EXTRAS)
    return out


def _load_training(raw: Any, where: str, name: str, problems: list[str]) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping of TrainingArguments keys (got {raw!r}).")
        return {}
    known = _training_types()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            problems.append(
                f"{where}.{key}: unknown key; `training:` takes transformers.TrainingArguments "
                f"fields and {sorted(TRAINING_EXTRAS)}.{_did_you_mean(str(key), known)}"
            )
            continue
        try:
            values[key] = coerce(value, known[key])
        except ValueError as err:
            from transformers import TrainingArguments

            default = _field_default(TrainingArguments, key)
            problems.append(_bad_value(f"{where}.{key}", value, known[key], err, default))
    values.setdefault("output_dir", f"runs/{name}")
    values.setdefault("report_to", "none")
    return values


def launched_world_size() -> int:
    """Processes started by torchrun / accelerate launch (``WORLD_SIZE``), 1 for a plain run."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _check_training_args(recipe: Recipe, where: str, problems: list[str]) -> None:
    """Build TrainingArguments once so that its own checks run at load time."""
    import torch

    # As pretrain sets it for a multi-process CPU launch; built without it, transformers warns that
    # the (correctly distributed) run is not ("launch your script with torch.distributed.launch").
    cpu_launch = {"use_cpu": True} if launched_world_size() > 1 and not torch.cuda.is_available() else {}
    try:
        recipe.training_arguments(**cpu_launch)
    except Exception as err:  # noqa: BLE001 - any failure here is a recipe problem
        # Every line: the first alone can stop at "but found", before the values it found.
        msg = " ".join(line.strip() for line in str(err).strip().splitlines()) or type(err).__name__
        problems.append(f"{where}: transformers.TrainingArguments rejected these settings: {msg}")


def _check_this_machine(recipe: Recipe, where: str) -> list[str]:
    """What this machine cannot run as the recipe asks. Checked when a recipe is loaded to run, not
    when a finished run's recipe is read (an FSDP run on GPUs exports on a laptop)."""
    import torch

    fsdp = recipe.training.get("fsdp") or (os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and "on")
    if not fsdp or torch.cuda.is_available():
        return []
    # accelerate sets up FSDP only for GPU-like devices; on CPUs its processes run DDP
    # (checked: the Trainer wraps the model in DistributedDataParallel), each holding it whole.
    return [
        f"{where}: training.fsdp: FSDP shards the model only across GPUs; on this machine, which has none, "
        f"the run would be plain DDP with the whole model in every process (got fsdp={fsdp!r}"
        + (", from ACCELERATE_USE_FSDP=true" if not recipe.training.get("fsdp") else "")
        + "). Leave training.fsdp unset (and accelerate's FSDP config off) on a CPU: a multi-process launch "
        "is DDP already; run FSDP on a machine with GPUs."
    ]


def _check_values(recipe: Recipe, where: str, problems: list[str]) -> None:
    """Cross-field and range checks that no type annotation can express."""
    def bad(key: str, value: Any, fix: str) -> None:
        problems.append(f"{where}: {key} is out of range (got {value!r}). {fix}.")

    t, d, c, m = recipe.tokenizer, recipe.data, recipe.collator, recipe.model
    for key, value in (("tokenizer.max_texts", t.max_texts), ("data.max_texts", d.max_texts),
                       ("data.builtin_stories", d.builtin_stories), ("model.hidden_size", m.hidden_size),
                       ("model.num_layers", m.num_layers), ("model.num_heads", m.num_heads),
                       ("model.intermediate_size", m.intermediate_size), ("model.max_positions", m.max_positions)):
        if value is not None and value < 1:
            bad(key, value, "Use 1 or more, or null for the default")
    if m.dropout is not None and not 0.0 <= m.dropout < 1.0:
        bad("model.dropout", m.dropout, "Use a probability in [0, 1), e.g. 0.1, or null for the preset's")
    if m.init_std is not None and not 0.0 < m.init_std <= 1.0:
        bad("model.init_std", m.init_std, "Use a standard deviation in (0, 1], e.g. 0.06, or null for 0.02")
    if m.init_std is not None and m.arch == "t5":
        problems.append(f"{where}: model.init_std has no effect on t5 (got {m.init_std!r}; T5 scales its own "
                        "initialisation by layer width). Leave it null.")
    if all(v is None or v >= 1 for v in (m.hidden_size, m.num_heads)):
        from nlpssl.models import PRESETS, max_positions

        hidden = m.hidden_size if m.hidden_size is not None else PRESETS[m.size].hidden
        heads = m.num_heads if m.num_heads is not None else PRESETS[m.size].heads
        if hidden % heads:
            problems.append(
                f"{where}: model.hidden_size must be divisible by model.num_heads (got {hidden} and {heads}). "
                "Change model.hidden_size or model.num_heads."
            )
        elif m.arch in ROTARY_ARCHS and (hidden // heads) % 2:
            # Rotary embeddings turn pairs of dimensions: transformers refuses Llama's config and
            # ModernBERT fails in its first forward pass, both after the tokenizer and data are built.
            problems.append(
                f"{where}: model.hidden_size / model.num_heads must be even for {m.arch}'s rotary positions "
                f"(got {hidden} / {heads} = {hidden // heads} dimensions per head). Use e.g. "
                f"model.hidden_size={heads * (hidden // heads + 1)} or another model.num_heads."
            )
        if (m.max_positions is None or m.max_positions >= 1) and d.block_size > max_positions(m):
            bad("data.block_size", d.block_size,
                f"It is larger than the model's {max_positions(m)} positions; lower data.block_size or raise "
                "model.max_positions")
    if d.eval_max_blocks < 1:
        bad("data.eval_max_blocks", d.eval_max_blocks, "Use 1 or more held-out blocks, e.g. 512")
    # An empty path is the current folder to pathlib: `data.source=$DATA` with DATA unset would train on
    # every text file under it, and an empty tokenizer.path would train a new tokenizer instead of reusing one.
    for key, value, fix in (("data.source", d.source, "Name a file, glob or folder, 'hub:NAME' or 'builtin'"),
                            ("data.cache_dir", d.cache_dir, "Name a folder, e.g. .cache/nlpssl"),
                            ("tokenizer.path", t.path, "Name a tokenizer folder, or null to train one")):
        if isinstance(value, str) and not value.strip():
            problems.append(f"{where}: {key} is empty (got {value!r}), which would mean the current folder. {fix} "
                            "(an unset shell variable in key=$VAR gives an empty value).")
    if not t.path:  # a reused tokenizer's vocabulary is what it is
        from nlpssl.tokenizer import MAX_VOCAB_SIZE, min_vocab_size

        least = max(64, min_vocab_size(t.algorithm, max(0, t.num_sentinels)))
        if not least <= t.vocab_size <= MAX_VOCAB_SIZE:
            bad("tokenizer.vocab_size", t.vocab_size,
                f"Use {least:,} to {MAX_VOCAB_SIZE:,} (a {t.algorithm} tokenizer with {t.num_sentinels} sentinels needs "
                f"at least {least} for its special tokens, sentinels and alphabet; 8192 or more is typical)")
        if t.min_frequency < 0:
            bad("tokenizer.min_frequency", t.min_frequency, "Use 0 or more (2 leaves out pieces seen once)")
    if t.num_sentinels < 0:
        bad("tokenizer.num_sentinels", t.num_sentinels, "Use 0 or more")
    if d.block_size < 8:
        bad("data.block_size", d.block_size, "Use at least 8 tokens")
    if not 0.0 < d.eval_fraction < 0.5:
        bad("data.eval_fraction", d.eval_fraction, "Use a share between 0 and 0.5, e.g. 0.01")
    if d.num_proc < 1:
        bad("data.num_proc", d.num_proc, "Use 1 or more processes")
    if not 0.0 < c.rate < 1.0:
        bad("collator.rate", c.rate, "Use a share between 0 and 1, e.g. 0.15")
    if c.mask_frac < 0 or c.random_frac < 0 or c.mask_frac + c.random_frac > 1.0:
        bad("collator.mask_frac + collator.random_frac", (c.mask_frac, c.random_frac),
            "Use non-negative shares that add up to at most 1 (BERT: 0.8 and 0.1)")
    if not 0.0 < c.span_p <= 1.0:
        bad("collator.span_p", c.span_p, "Use a probability in (0, 1], e.g. 0.2")
    if c.span_max < 1:
        bad("collator.span_max", c.span_max, "Use 1 or more words")
    if not 0.0 < c.noise_density < 1.0:
        bad("collator.noise_density", c.noise_density, "Use a share between 0 and 1, e.g. 0.15")
    if c.mean_span_length < 1.0:
        bad("collator.mean_span_length", c.mean_span_length, "Use 1.0 or more, e.g. 3.0")
    if c.span_boundary and c.kind != "span":
        problems.append(
            f"{where}: collator.span_boundary=true needs collator.kind='span' (got {c.kind!r}). "
            "Set collator.kind=span, or collator.span_boundary=false."
        )
    if d.unwrap and "paragraph" not in {d.txt_unit, *(m.txt_unit for m in d.mix)}:
        # _read_txt joins lines only within a paragraph: a book read with txt_unit=file kept its hard wraps.
        problems.append(f"{where}: data.unwrap=true joins the lines of a paragraph, and no source is read by paragraph "
                        f"(got data.txt_unit={d.txt_unit!r}), so it would do nothing. Set data.txt_unit=paragraph "
                        "(blank lines end a document), or data.unwrap=false.")
    for i, mix in enumerate(d.mix):
        if not mix.source.strip():
            problems.append(f"{where}: data.mix[{i}].source is empty (got {mix.source!r}). Name a file, glob or "
                            "folder, e.g. `- source: ../shared/data/sst2/train.tsv`.")
        if mix.repeat < 1:
            bad(f"data.mix[{i}].repeat", mix.repeat, "Use 1 or more (the number of times its texts are read)")
    if d.streaming:
        _check_streaming(recipe, where, problems)
    from nlpssl.objectives import objective_for

    objective_for(recipe).check(where, problems)


def _check_streaming(recipe: Recipe, where: str, problems: list[str]) -> None:
    """What ``data.streaming: true`` needs: a step count, reading in this process, no text cap."""
    t, d = recipe.training, recipe.data
    steps = t.get("max_steps")
    refused = "max_steps" not in t and any(p.startswith(f"{where}: training.max_steps:") for p in problems)
    if not refused and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        problems.append(f"{where}: data.streaming=true needs training.max_steps (got {steps!r}): a stream has no "
                        "length to count epochs by. Set training.max_steps=N, e.g. 10000.")
    if t.get("dataloader_num_workers", 0) not in (0, None):
        problems.append(f"{where}: data.streaming=true reads in the training process (got "
                        f"training.dataloader_num_workers={t['dataloader_num_workers']!r}), so its position can be "
                        "saved exactly. Set training.dataloader_num_workers=0.")
    if d.mix:
        problems.append(f"{where}: data.mix is read by the prepared (cached) path only (got {len(d.mix)} "
                        f"{'entry' if len(d.mix) == 1 else 'entries'} with data.streaming=true). Set data.streaming=false, or put the texts in "
                        "data.source's folder.")
    if d.max_texts is not None:
        problems.append(f"{where}: data.max_texts caps the cached path's corpus (got {d.max_texts!r}); a stream "
                        "runs for training.max_steps. Leave data.max_texts null with data.streaming=true.")


# What turns each objective section on (None: model.arch does).
SECTION_SWITCH = {"electra": None, "distill": "teacher", "simcse": "encoder"}


def _check_objective_sections(recipe: Recipe, raw: dict[str, Any], where: str, problems: list[str]) -> None:
    """An objective's section only where that objective trains, and the switch that turns it on."""
    from nlpssl.objectives import objective_name

    trained = objective_name(recipe)
    switched = [s for s, key in SECTION_SWITCH.items() if key and getattr(getattr(recipe, s), key)]
    if len(switched) > 1:
        problems.append(f"{where}: {' and '.join(switched)} are two objectives; a recipe trains one. "
                        f"Keep one of the sections.")
    for section, objective in OBJECTIVE_SECTIONS.items():
        if section not in raw or objective == trained:
            continue
        key = SECTION_SWITCH[section]
        if key is None:
            problems.append(f"{where}: {section}: these settings apply to model.arch={objective!r} only (got "
                            f"model.arch={recipe.model.arch!r}). Remove the {section} section, or set model.arch={objective}.")
        elif not getattr(getattr(recipe, section), key):
            problems.append(f"{where}: {section}.{key}: a {section} section needs it (got null). Set {section}.{key}=FOLDER, "
                            f"or remove the {section} section.")


def _check_training_values(recipe: Recipe, where: str, problems: list[str]) -> None:
    """Ranges of the ``training`` values that TrainingArguments accepts but torch later rejects."""
    t = recipe.training

    def bad(key: str, fix: str) -> None:
        problems.append(f"{where}: training.{key} is out of range (got {t[key]!r}). {fix}.")

    def number(key: str) -> float | None:
        value = t.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    if not str(t.get("output_dir", "")).strip():
        bad("output_dir", "Name a folder for the run, e.g. runs/my-run")
    if (lr := number("learning_rate")) is not None and not (lr > 0 and math.isfinite(lr)):
        bad("learning_rate", "Use a positive number, e.g. 1e-3")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if (value := number(key)) is not None and value < 1:
            bad(key, "Use 1 or more")
    if (value := number("max_steps")) is not None and (value == 0 or value < -1):
        bad("max_steps", "Use 1 or more steps (or -1 to train for num_train_epochs)")
    if (value := number("num_train_epochs")) is not None and value <= 0:
        bad("num_train_epochs", "Use a positive number of epochs")
    for key in ("warmup_steps", "weight_decay", "max_grad_norm"):
        if (value := number(key)) is not None and value < 0:
            bad(key, "Use 0 or more")
    if (value := number("warmup_steps")) is not None and value > 1 and not float(value).is_integer():
        # transformers reads a value below 1 as a share of the run and truncates any other (1.5 -> 1 step).
        bad("warmup_steps", "Use a share of the run below 1 (e.g. 0.1) or a whole number of steps (e.g. 100)")
    if (value := number("save_total_limit")) is not None and value < 1:
        # transformers deletes nothing at 0 or below: every checkpoint would be kept.
        bad("save_total_limit", "Use 1 or more checkpoints to keep, null to keep them all, or "
            "training.save_strategy=no to save none")
    if (value := number("budget_minutes")) is not None:
        if not (value > 0 and math.isfinite(value)):
            bad("budget_minutes", "Use a positive number of minutes, e.g. 7, or null for no budget")
        elif str(t.get("lr_scheduler_type", "linear")) not in BUDGET_SCHEDULES and _known_scheduler(t):
            problems.append(
                f"{where}: training.budget_minutes needs a schedule that can follow elapsed time "
                f"(got lr_scheduler_type={t.get('lr_scheduler_type')!r}). Use one of {', '.join(BUDGET_SCHEDULES)}."
            )


def training_notes(recipe: Recipe) -> list[str]:
    """Legal but suspicious ``training`` values, said before a run starts (nothing is refused)."""
    t, notes = recipe.training, []
    steps = t.get("max_steps", -1)
    if not isinstance(steps, int) or steps < 1:
        return notes  # epochs or a stream: the step count is not known here
    warmup = t.get("warmup_steps", 0)
    if isinstance(warmup, (int, float)) and warmup >= 1 and warmup >= steps:
        notes.append(f"training.warmup_steps={warmup:g} is not shorter than training.max_steps={steps}: the learning "
                     "rate never reaches training.learning_rate. Use fewer steps, or a share such as 0.1.")
    strategy = str(t.get("eval_strategy", "no"))
    every = t.get("eval_steps")
    if strategy == "steps" and isinstance(every, (int, float)) and every >= 1 and every > steps:
        notes.append(f"training.eval_steps={every:g} is larger than training.max_steps={steps}: no evaluation runs "
                     "before the final one. Lower training.eval_steps to see the held-out loss during training.")
    lr = t.get("learning_rate")
    if isinstance(lr, (int, float)) and lr >= 1:
        notes.append(f"training.learning_rate={lr:g} is far above what these models train at (1e-4 to 3e-3 with "
                     "AdamW); expect a diverging loss. Did you mean e.g. 1e-3?")
    return notes


def _known_scheduler(training: dict[str, Any]) -> bool:
    """True if lr_scheduler_type names a transformers schedule (else TrainingArguments reports it)."""
    from transformers import SchedulerType

    return str(training.get("lr_scheduler_type", "linear")) in {m.value for m in SchedulerType}


def find_recipe(name_or_path: str | Path) -> Path:
    """Resolve a recipe argument: a YAML path, or a bare name looked up in ``recipes/``."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise RecipeError([f"recipe: expected a recipe file's path or a shipped recipe's name, or a Recipe "
                           f"(got {type(name_or_path).__name__} {name_or_path!r:.60}). Load one with "
                           "nlpssl.load_recipe('bert-tiny', ['training.max_steps=100'])."])
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    for folder in (Path.cwd() / "recipes", RECIPES_DIR):
        for candidate in (folder / f"{name_or_path}.yaml", folder / f"{name_or_path}.yml"):
            if candidate.is_file():
                return candidate
    if path.is_file():
        return path
    names = [p.stem for p in list_recipes()]
    hint = difflib.get_close_matches(str(path.stem), names, n=1)
    raise NlpsslError(
        f"recipe: no recipe file or name {str(name_or_path)!r}. "
        + (f"Did you mean {hint[0]!r}? " if hint else "")
        + "Run `nlpssl recipe list` to see the shipped recipes, or pass a path to a .yaml file."
    )


def list_recipes() -> list[Path]:
    """The recipes shipped in ``recipes/`` (the current folder's first, then the package's)."""
    seen: dict[str, Path] = {}
    for folder in (Path.cwd() / "recipes", RECIPES_DIR):
        if folder.is_dir():
            for p in sorted(folder.glob("*.yaml")):
                seen.setdefault(p.stem, p)
    return sorted(seen.values(), key=lambda p: p.stem)


def describe(path: Path) -> str:
    """A recipe's purpose in one line, for `nlpssl recipe list`: the first sentence of its opening comment.

    The comment's first line and the indented lines that continue it are joined; a long first sentence
    ends at its first clause (a ':' or ';' outside parentheses), never mid-clause.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith("#"):
        return ""
    parts = [lines[0].lstrip("#").strip()]
    for line in lines[1:]:
        if not (line.startswith("#") and line[1:].startswith("  ")):  # not a continuation: `# Data:` etc.
            break
        parts.append(line.lstrip("#").strip())
    text = " ".join(parts).removeprefix(f"{path.stem}:").strip()
    depth, clause = 0, None
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and char == "." and (i + 1 == len(text) or text[i + 1] == " " and text[i + 2:i + 3].isupper()):
            text = text[: i + 1]
            break
        if depth == 0 and char in ":;" and text[i + 1:i + 2] == " " and clause is None:
            clause = i
    return text[:clause] if clause is not None and len(text) > 120 else text


# Settings that name a file or folder: an override's value is taken as typed unless it is a YAML null.
PATH_KEYS = {"data.source", "data.cache_dir", "tokenizer.path", "training.output_dir", "training.logging_dir",
             "distill.teacher", "simcse.encoder", "task.source", "task.validation_source", "task.test_source", "model"}
YAML_NULLS = {"null", "Null", "NULL", "~"}


def parse_overrides(overrides: typing.Sequence[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Parse ``section.key=value`` strings; values are read as YAML scalars."""
    import yaml

    if isinstance(overrides, (str, bytes, dict)) or not all(isinstance(item, str) for item in overrides):
        bad = overrides if isinstance(overrides, (str, bytes, dict)) else next(i for i in overrides if not isinstance(i, str))
        return {}, [f"overrides: expected a list of 'section.key=value' strings (got {type(bad).__name__} {bad!r:.60}). "
                    "Pass e.g. ['training.max_steps=100', 'data.block_size=64']."]
    nested: dict[str, dict[str, Any]] = {}
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r}: expected section.key=value (e.g. training.max_steps=100).")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if key.strip() in PATH_KEYS and not isinstance(value, str) and raw.strip() not in YAML_NULLS:
            value = raw  # a folder named `on`, `2024.10`, `a: b` or `#1` is that name, not True, a float, a mapping, null
        section, dot, sub = key.strip().partition(".")
        if dot:
            nested.setdefault(section, {})[sub] = value
        else:
            nested.setdefault("", {})[section] = value
    return nested, problems


COMMAND_FOR_KIND = {"pretrain": "nlpssl pretrain", "finetune": "nlpssl finetune"}


def check_kind(kind: str, expected: str | None, where: str) -> None:
    """Refuse a recipe of the wrong kind for the command, naming the command that runs it."""
    if expected is None or kind == expected:
        return
    if kind not in COMMAND_FOR_KIND:
        return  # recipe_from_dict reports the unknown kind with the other problems
    raise NlpsslError(
        f"{where}: this is a {kind} recipe (kind: {kind}), and `{COMMAND_FOR_KIND[expected]}` runs {expected} "
        f"recipes. Run it with `{COMMAND_FOR_KIND[kind]} {where}`, or pass a recipe with `kind: {expected}`."
    )


def load_recipe(path_or_name: str | Path, overrides: typing.Sequence[str] = (), kind: str | None = None) -> Recipe:
    """Load, convert and validate a recipe file with ``key=value`` overrides.

    Args:
        kind: the kind the caller runs ("pretrain" or "finetune"); a recipe of the other kind is
            refused before its overrides are read, with the command that runs it.

    Raises:
        RecipeError: listing every problem found, each with where, what and how to fix.
    """
    import yaml

    path = find_recipe(path_or_name)
    try:
        raw, duplicates = _load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError([f"{path}: not valid YAML: {err}"]) from err
    if duplicates:
        raise RecipeError([f"{path}:{second}: {key!r} is set twice in one mapping (lines {first} and {second}); YAML "
                           f"would keep line {second}'s value and drop line {first}'s without a word. Keep one (two "
                           "sections of the same name: merge their keys into one)."
                           for key, first, second in sorted(set(duplicates), key=lambda d: (d[2], d[1]))])
    if not isinstance(raw, dict):
        raise RecipeError([f"{path}: expected a mapping of sections at the top (got {type(raw).__name__})."])
    check_kind(raw.get("kind", "pretrain"), kind, str(path))
    in_file = set(raw)
    problems = apply_overrides(raw, overrides)
    try:
        recipe = recipe_from_dict(raw, name=path.stem, where=str(path), source_path=str(path), problems=problems)
        if machine := _check_this_machine(recipe, str(path)):
            raise RecipeError(machine)
        return recipe
    except RecipeError as err:
        raise RecipeError(blame_overrides(err.problems, str(path), overrides, in_file)) from None


def _load_yaml(text: str) -> tuple[Any, list[tuple[str, int, int]]]:
    """The YAML data of a recipe, and each key a mapping sets twice: (key, first line, second line).

    PyYAML keeps the last of two equal keys, so a second ``training:`` section at the end of a file
    dropped the first one's settings (max_steps, output_dir ...) without a word.
    """
    import yaml

    duplicates: list[tuple[str, int, int]] = []

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` then a key of its own overrides on purpose
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.setdefault(key, line)
                except TypeError:
                    continue  # an unhashable key: the base constructor reports it
                if first != line:
                    duplicates.append((str(key), first, line))
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=Loader) or {}, duplicates


def blame_overrides(problems: list[str], where: str, overrides: typing.Sequence[str], in_file: set[str]) -> list[str]:
    """Name the command-line override instead of the file ``where`` in each problem about a key it set.

    A problem is the override's when it opens with the key the override sets (``training.max_steps``
    for ``training.max_steps=abc``), or with a section that only overrides wrote (``trainin``).
    """
    keys: dict[str, str] = {}
    for item in overrides if not isinstance(overrides, (str, bytes, dict)) else ():
        if not isinstance(item, str):
            continue  # parse_overrides reported the list as a whole
        key, sep, _ = item.partition("=")
        if not (key := key.strip()) or not sep:
            continue  # malformed: parse_overrides reported it as itself
        keys[key] = item
        if (section := key.partition(".")[0]) not in in_file:
            keys.setdefault(section, item)
    longest_first = sorted(keys, key=len, reverse=True)
    blamed = []
    for problem in problems:
        rest = problem.removeprefix(f"{where}: ")
        # the key itself, then ':', ' ', '.', '[' (not 'data.streaming=true needs ...': a rule on two keys)
        item = next((keys[k] for k in longest_first if re.match(rf"{re.escape(k)}(?![\w=])", rest)), None)
        # A rule on two keys ('model.hidden_size must be divisible by model.num_heads') names each
        # override it mentions, and the file they were applied on.
        named = [keys[k] for k in keys if "." in k and re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", rest)]
        items = list(dict.fromkeys(([item] if item else []) + named))
        if rest == problem or not items:
            blamed.append(problem)
        elif items == [item]:
            blamed.append(f"override {item!r}: {rest}")
        else:
            blamed.append(f"override {', '.join(map(repr, items))} on top of {where}: {rest}")
    return blamed


def apply_overrides(raw: dict[str, Any], overrides: typing.Sequence[str]) -> list[str]:
    """Merge ``section.key=value`` strings into plain recipe data in place; returns the problems."""
    over, problems = parse_overrides(overrides)
    for section, values in over.items():
        if section == "":
            raw.update(values)
        elif isinstance(raw.get(section), dict) or raw.get(section) is None:
            raw[section] = {**(raw.get(section) or {}), **values}
        else:
            problems.append(f"override {section}.*: `{section}` is not a section.")
    return problems


def home_as_tilde(value: Any) -> Any:
    """``value`` (a string, or lists and dicts of them) with the home folder written as ``~``: the
    recipe.yaml a run saves, and an export publishes, does not carry the user's home path, and
    loading it expands ``~`` back (:func:`local_path`)."""
    home = str(Path.home())
    if isinstance(value, dict):
        return {k: home_as_tilde(v) for k, v in value.items()}
    if isinstance(value, list):
        return [home_as_tilde(v) for v in value]
    if isinstance(value, str) and home not in ("", os.sep) and (value == home or value.startswith(home + os.sep)):
        return "~" + value[len(home):]
    return value


def local_path(value: str | None, always: bool) -> str | None:
    """``value`` with ``~`` expanded and made absolute against the current folder, so the recipe.yaml a run
    saves names the same files from any folder (resume, export) and two projects' ``data.source: data`` do
    not share a cache entry. ``builtin``, ``hub:NAME`` and (unless ``always``) names that are no local path
    (a Hub model id) are kept as written."""
    if not isinstance(value, str) or not value.strip() or value == "builtin" or value.startswith("hub:"):
        return value
    path = Path(value).expanduser()
    if always or value.startswith("~") or path.exists():
        return str(path.absolute())
    return value


def _anchor_paths(recipe: Recipe) -> Recipe:
    """The recipe with every folder and file setting as an absolute path (see :func:`local_path`)."""
    replace = dataclasses.replace
    training = recipe.training
    for key in ("output_dir", "logging_dir"):
        if isinstance(training.get(key), str) and training[key].strip():
            training[key] = local_path(training[key], always=True)
    if recipe.kind == "finetune":
        task = {k: local_path(getattr(recipe.task, k), always=False)
                for k in ("source", "validation_source", "test_source")}
        return replace(recipe, finetune_model=local_path(recipe.finetune_model, always=False),
                       task=replace(recipe.task, **task))
    data = recipe.data
    mix = [replace(m, source=local_path(m.source, always=True)) if isinstance(m, MixSource) else m
           for m in data.mix or []]
    cache_dir = local_path(data.cache_dir, always=True) if isinstance(data.cache_dir, str) else data.cache_dir
    return replace(
        recipe,
        data=replace(data, source=local_path(data.source, always=True), cache_dir=cache_dir,
                     mix=mix if isinstance(data.mix, list) else data.mix),
        tokenizer=replace(recipe.tokenizer, path=local_path(recipe.tokenizer.path, always=True)),
        distill=replace(recipe.distill, teacher=local_path(recipe.distill.teacher, always=False)),
        simcse=replace(recipe.simcse, encoder=local_path(recipe.simcse.encoder, always=False)),
    )


def recipe_from_dict(
    raw: dict[str, Any],
    name: str = "recipe",
    where: str = "recipe",
    source_path: str | None = None,
    problems: list[str] | None = None,
) -> Recipe:
    """Build a validated :class:`Recipe` from plain data (what a YAML file holds)."""
    problems = list(problems or [])
    raw = dict(raw)
    kind = raw.pop("kind", "pretrain")
    if kind not in ("pretrain", "finetune"):
        problems.append(f"{where}: kind must be 'pretrain' or 'finetune' (got {kind!r}).")
        kind = "pretrain"
    sections = PRETRAIN_SECTIONS if kind == "pretrain" else FINETUNE_SECTIONS
    top = dict(FINETUNE_TOP) if kind == "finetune" else {}
    known = list(sections) + ["training"] + list(top)
    built: dict[str, Any] = {}
    for key, value in raw.items():
        if key in sections:
            built[key] = _load_section(sections[key], value, f"{where}: {key}", problems)
        elif key in top:
            try:
                built["finetune_model" if key == "model" else key] = coerce(value, top[key])
            except ValueError as err:
                problems.append(f"{where}: {key}: {err} (got {value!r}).")
        elif key != "training":
            problems.append(f"{where}: {key}: unknown section.{_section_hint(str(key), sections, known)}")
    training = _load_training(raw.get("training"), f"{where}: training", name, problems)
    recipe = Recipe(name=name, kind=kind, training=training, source_path=source_path, **built)
    recipe = _anchor_paths(recipe)
    if kind == "pretrain":
        _check_objective_sections(recipe, raw, where, problems)
    if kind == "pretrain":
        _check_values(recipe, where, problems)
    elif not recipe.finetune_model:
        problems.append(f"{where}: model: a finetune recipe needs the model folder to start from. Pass model=PATH.")
    if not any("training" in p for p in problems):
        _check_training_values(recipe, where, problems)
    if not any("training" in p for p in problems):
        _check_training_args(recipe, f"{where}: training", problems)
    if problems:
        raise RecipeError(problems)
    return recipe
