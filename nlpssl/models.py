"""Size presets for stock transformers architectures.

Every model is a stock class built from a config (which class: the objective's, in
``nlpssl.objectives``); the vocabulary size and the special-token ids come from the shared
tokenizer, never from the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nlpssl.errors import NlpsslError

if TYPE_CHECKING:
    from nlpssl.recipe import ModelSection


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    intermediate: int


# tiny: ~5M parameters with an 8k vocabulary (CPU minutes); small: ~30M; base: BERT-base shape.
PRESETS: dict[str, Shape] = {
    "tiny": Shape(hidden=256, layers=4, heads=4, intermediate=1024),
    "small": Shape(hidden=512, layers=8, heads=8, intermediate=2048),
    "base": Shape(hidden=768, layers=12, heads=12, intermediate=3072),
}
MAX_POSITIONS = 512


def resolve_shape(section: ModelSection) -> Shape:
    """The preset shape with the recipe's per-field overrides applied."""
    base = PRESETS[section.size]

    def pick(value: int | None, default: int) -> int:  # an explicit value, zero included, is never replaced
        return default if value is None else value

    shape = Shape(
        hidden=pick(section.hidden_size, base.hidden),
        layers=pick(section.num_layers, base.layers),
        heads=pick(section.num_heads, base.heads),
        intermediate=pick(section.intermediate_size, base.intermediate),
    )
    if shape.hidden % shape.heads:
        raise NlpsslError(
            f"model: hidden_size must be divisible by num_heads (got {shape.hidden} and {shape.heads}). "
            "Change model.hidden_size or model.num_heads."
        )
    return shape


def stock_intermediate(arch: str, intermediate: int) -> int:
    """The FFN width the stock config gets for ``model.intermediate_size``.

    Llama's SwiGLU and ModernBERT's GeGLU have three matrices, not two: 2/3 of the width, rounded up
    to a multiple of 64, keeps the parameter count (1024 -> 704, 512 -> 384, 64 -> 64).
    """
    return (intermediate * 2 // 3 + 63) // 64 * 64 if arch in ("llama", "modernbert") else intermediate


def max_positions(section: ModelSection) -> int:
    return MAX_POSITIONS if section.max_positions is None else section.max_positions


def config_positions(config: dict) -> int | None:
    """The longest input a model's ``config.json`` admits, or None where positions are relative (T5)."""
    positions = config.get("n_positions") or config.get("max_position_embeddings")
    if not isinstance(positions, int) or not positions:
        return None
    # RoBERTa numbers positions from pad_token_id + 1: two of its slots hold no token.
    return positions - (2 if config.get("model_type") in ("roberta", "xlm-roberta") else 0)


def build_config(section: ModelSection, tokenizer, attn: str = "sdpa"):
    """A transformers config for ``section`` sized to ``tokenizer``."""
    from transformers import BertConfig, GPT2Config, LlamaConfig, RobertaConfig, T5Config

    s = resolve_shape(section)
    ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    positions = max_positions(section)
    # No dropout unless asked: pretraining sees most text about once and does not overfit, so dropout
    # only slows learning (Cramming, Geiping & Goldstein 2022; T5 v1.1; ModernBERT) and its random
    # masks cost 16% of a BERT-tiny fp32 CPU step (BENCHMARKS.md). model.dropout=0.1 gives it back.
    drop = 0.0 if section.dropout is None else section.dropout
    match section.arch:
        case "bert" | "roberta":
            cls = BertConfig if section.arch == "bert" else RobertaConfig
            config = cls(
                hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                intermediate_size=s.intermediate,
                # RoBERTa numbers positions from pad_token_id + 1, so it needs two more slots.
                max_position_embeddings=positions + (2 if section.arch == "roberta" else 0),
                type_vocab_size=2 if section.arch == "bert" else 1,
                hidden_dropout_prob=drop,
                attention_probs_dropout_prob=drop,
                **ids,
            )
        case "electra":
            # The discriminator: BERT's post-LN body (Clark et al. 2020); the generator is derived
            # from this config by nlpssl.objectives.electra.
            from transformers import ElectraConfig

            config = ElectraConfig(
                embedding_size=s.hidden, hidden_size=s.hidden, num_hidden_layers=s.layers,
                num_attention_heads=s.heads, intermediate_size=s.intermediate, max_position_embeddings=positions,
                type_vocab_size=2, hidden_dropout_prob=drop, attention_probs_dropout_prob=drop, **ids,
            )
        case "modernbert":
            # Pre-LN encoder with rotary positions (Warner et al. 2024). On tiny budgets it leaves
            # the unigram plateau that post-LN BERT with learned positions sits on for thousands
            # of steps (BENCHMARKS.md). All layers global: blocks here are short.
            from transformers import ModernBertConfig

            config = ModernBertConfig(
                hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                intermediate_size=stock_intermediate(section.arch, s.intermediate),
                max_position_embeddings=positions, layer_types=["full_attention"] * s.layers,
                cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                attention_dropout=drop, mlp_dropout=drop,
                embedding_dropout=drop, **ids,
            )
        case "gpt2":
            config = GPT2Config(
                n_embd=s.hidden, n_layer=s.layers, n_head=s.heads, n_inner=s.intermediate,
                n_positions=positions, resid_pdrop=drop, embd_pdrop=drop, attn_pdrop=drop,
                # Exact (erf) GELU instead of GPT-2's tanh approximation "gelu_new": one fused kernel,
                # and on CPUs 1.3x (AVX-512) to 2.2x (AVX2) faster forward + backward than the fused
                # tanh form (BENCHMARKS.md); the two curves differ by under 1e-3.
                activation_function="gelu", **ids,
            )
        case "llama":
            config = LlamaConfig(
                hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                num_key_value_heads=s.heads,
                intermediate_size=stock_intermediate(section.arch, s.intermediate),
                max_position_embeddings=positions, tie_word_embeddings=True,
                attention_dropout=drop, **ids,
            )
        case "t5":
            config = T5Config(
                d_model=s.hidden, d_ff=s.intermediate, num_layers=max(1, s.layers // 2),
                num_decoder_layers=max(1, s.layers // 2), num_heads=s.heads, d_kv=s.hidden // s.heads,
                dropout_rate=drop, decoder_start_token_id=tokenizer.pad_token_id,
                feed_forward_proj="gated-gelu", tie_word_embeddings=True, **ids,
            )
        case _:  # pragma: no cover - the recipe loader only admits the names above
            raise NlpsslError(f"model.arch: unknown architecture (got {section.arch!r}).")
    if section.init_std is not None:
        config.initializer_range = section.init_std
    config._attn_implementation = attn
    return config


# Dropout fields of the stock configs (BERT/RoBERTa, ModernBERT, GPT-2, Llama, T5).
DROPOUT_FIELDS = (
    "hidden_dropout_prob", "attention_probs_dropout_prob", "embedding_dropout", "mlp_dropout",
    "attention_dropout", "classifier_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop",
    "summary_first_dropout", "dropout_rate",
)


def set_dropout(config, rate: float | None) -> None:
    """Set every dropout rate the config has to ``rate`` (None: keep the export's own).

    Exports carry pretraining's dropout, 0 by default (it does not overfit there); ``task.dropout``
    sets it for fine-tuning only (off by default: BENCHMARKS.md "Fine-tuning search"), and
    ``simcse.dropout`` for SimCSE's two views.
    """
    if rate is None:
        return
    for name in DROPOUT_FIELDS:
        if hasattr(config, name):
            setattr(config, name, float(rate))


def count_parameters(model) -> int:
    """Parameters counted once (tied embeddings are shared)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
