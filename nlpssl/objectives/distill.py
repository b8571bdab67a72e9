"""Knowledge distillation (DistilBERT, Sanh et al. 2019): a smaller student learns from a frozen teacher.

- Teacher: any stock masked-LM or causal-LM folder (an nlpssl export or a Hub-format model),
  ``distill.teacher``; loaded once per process, frozen, in eval mode, in bf16 where the run is.
  It is not a submodule of the student: the optimizer, checkpoints and the export never see it.
- Student: the teacher with fewer layers (``distill.init: teacher``; ``distill.layers``, default
  every other one, 0, 2, 4, ... as DistilBERT took one layer of two), or a fresh model of the
  ``model`` section (``init: preset``). Same tokenizer as the teacher: the soft targets are over
  its vocabulary, so the run reuses the teacher's tokenizer and refuses another one.
- Rows, collator, export: the student objective's (masked-LM or causal-LM, picked by
  ``model.arch``); the export is a stock model of the student's class.
- Loss: ``kl_weight`` x KL(teacher || student) of the softmaxes at temperature T, times T^2
  (Hinton et al. 2015) + ``lm_weight`` x the student's own masked-LM / next-token loss
  + ``cosine_weight`` x (1 - cosine) between the last hidden states of every real token, when the
  widths match. Masked-LM soft targets on the masked positions (``soft_targets: masked``; with the
  sparse head the teacher computes logits only there) or on every token (``all``).
- Logged: the three terms and top-1 agreement with the teacher; evaluation reports the student's
  own loss as ``eval_loss`` (comparable with a student trained without a teacher) and
  ``eval_teacher_agreement``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F

from nlpssl.errors import NlpsslError
from nlpssl.objectives.base import check_positions, check_same_tokenizer
from nlpssl.objectives.causal import CausalLM, CausalLMTrainer
from nlpssl.objectives.mlm import MaskedLM, MaskedLMTrainer, all_ranks_sum, mlm_head

# Where stock models number their blocks: BERT/RoBERTa/ELECTRA ``encoder.layer.N``, ModernBERT and
# Llama ``layers.N``, GPT-2 ``h.N``.
LAYER_INDEX = re.compile(r"(\.(?:layer|layers|h)\.)(\d+)(\.)")
TEACHER_HEADS = {"mlm": ("ForMaskedLM",), "causal": ("ForCausalLM", "LMHeadModel")}


class Distillation:
    """What distillation adds to the student's objective (a mixin, first in the bases)."""

    family: str  # "mlm" or "causal": the teacher heads that fit
    outside_keys = ("distill.teacher",)

    def read_outside(self, key: str) -> dict:
        return teacher_config(self.recipe.distill.teacher)

    def tokenizer_path(self) -> str | None:
        return self.recipe.tokenizer.path or self.recipe.distill.teacher

    def preflight(self) -> None:
        """The teacher folder, its head, its architecture (init: teacher) and its tokenizer."""
        d, m = self.recipe.distill, self.recipe.model
        config = teacher_config(d.teacher)
        arch = (config.get("architectures") or ["?"])[0]
        if not arch.endswith(TEACHER_HEADS[self.family]):
            kind = "masked-LM" if self.family == "mlm" else "causal-LM"
            raise NlpsslError(
                f"distill.teacher: {d.teacher!r} is a {arch}, not a {kind} (model.arch={m.arch!r} makes the student a "
                f"{kind}). Point distill.teacher at a *{TEACHER_HEADS[self.family][0]} folder, or set model.arch to "
                "the teacher's family."
            )
        if d.init == "teacher":
            if config.get("model_type") != m.arch:
                raise NlpsslError(
                    f"distill: init=teacher copies the teacher's layers, so the student is a {config.get('model_type')!r} "
                    f"like the teacher (got model.arch={m.arch!r}). Set model.arch={config.get('model_type')}, or "
                    "distill.init=preset for a student built from the model section."
                )
            teacher_layers(config, d.layers)  # raises on indices out of range
            check_student_shape(self.recipe, config)
        check_positions(config, self.recipe.data.block_size, "distill.teacher", d.teacher)
        check_same_tokenizer(self.recipe.tokenizer.path, d.teacher, "distill", "the teacher")

    def build_model(self, tokenizer, attn: str = "sdpa"):
        d = self.recipe.distill
        if d.init == "preset":
            return super().build_model(tokenizer, attn)
        return student_from_teacher(d.teacher, d.layers, self.auto_class, attn)

    def trainer_kwargs(self) -> dict[str, Any]:
        d = self.recipe.distill
        return super().trainer_kwargs() | {
            "teacher": d.teacher, "temperature": d.temperature, "kl_weight": d.kl_weight, "lm_weight": d.lm_weight,
            "cosine_weight": d.cosine_weight, "soft_targets": d.soft_targets,
        }

    def headline(self, eval_metrics: dict[str, Any], stats: dict, trainer) -> dict[str, Any]:
        return super().headline(eval_metrics, stats, trainer) | {
            "eval_teacher_agreement": eval_metrics.get("eval_teacher_agreement")}

    def described(self) -> str:
        d = self.recipe.distill
        if d.init == "preset":
            return super().described()
        return f"{len(teacher_layers(self.outside_config('distill.teacher'), d.layers))}-layer {self.arch}"

    def origin(self) -> str:
        d = self.recipe.distill
        layers = None if d.init == "preset" else teacher_layers(self.outside_config("distill.teacher"), d.layers)
        start = "" if layers is None else f", initialised from its layers {layers}"
        return f"distilled from the teacher `{d.teacher}`{start}"

    def check(self, where: str, problems: list[str]) -> None:
        super().check(where, problems)
        d = self.recipe.distill
        if self.recipe.model.arch not in ("bert", "roberta", "modernbert", "gpt2", "llama"):
            problems.append(f"{where}: distill: the student must be a masked-LM or causal-LM (got model.arch="
                            f"{self.recipe.model.arch!r}). Use bert, roberta, modernbert, gpt2 or llama.")
        if not d.temperature > 0:
            problems.append(f"{where}: distill.temperature is out of range (got {d.temperature!r}). Use a positive "
                            "temperature, e.g. 2.0 (DistilBERT).")
        weights = (d.kl_weight, d.lm_weight, d.cosine_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            problems.append(f"{where}: distill.kl_weight, lm_weight, cosine_weight are out of range (got {weights}). "
                            "Use non-negative weights, not all 0, e.g. 5, 2, 1 (DistilBERT).")
        if d.layers is not None:
            if d.init != "teacher":
                problems.append(f"{where}: distill.layers picks teacher layers for init=teacher (got init={d.init!r}). "
                                "Set distill.init=teacher, or remove distill.layers.")
            elif not d.layers or min(d.layers) < 0 or len(set(d.layers)) != len(d.layers):
                problems.append(f"{where}: distill.layers must list distinct teacher layer indices from 0 (got "
                                f"{d.layers!r}). E.g. [0, 2] of a 4-layer teacher.")
        if self.recipe.collator.span_boundary:
            problems.append(f"{where}: collator.span_boundary has no place in distillation (got true). "
                            "Set collator.span_boundary=false.")
        if d.soft_targets == "all" and self.family == "causal":
            problems.append(f"{where}: distill.soft_targets=all is a masked-LM option; a causal-LM student learns "
                            "every next token from the teacher anyway. Remove it.")


def teacher_config(folder: str) -> dict:
    """The teacher's config.json as a dict, or a clear error naming the folder."""
    from nlpssl.objectives.base import folder_config

    return folder_config(folder, "distill.teacher", "an export, e.g. runs/bert-tiny/export after `nlpssl pretrain "
                         "bert-tiny`, or another Hub-format model folder")


def teacher_layers(config: dict, layers: list[int] | None) -> list[int]:
    """The teacher layers the student keeps: ``layers``, or every other one from 0."""
    n = int(config.get("num_hidden_layers") or config.get("n_layer") or 0)
    chosen = list(range(0, n, 2)) if layers is None else list(layers)
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise NlpsslError(f"distill.layers: the teacher has {n} layers (0 to {n - 1}), so {bad} do not exist "
                          f"(got {chosen}). Pick indices below {n}.")
    return chosen


def check_student_shape(recipe, config: dict) -> None:
    """With ``init: teacher`` the student is the teacher's config with fewer layers: refuse ``model``
    settings that would be silently ignored (a student of another width or depth than asked)."""
    from nlpssl.models import stock_intermediate

    m, d = recipe.model, recipe.distill
    hidden = config.get("hidden_size") or config.get("n_embd")
    heads = config.get("num_attention_heads") or config.get("n_head")
    ffn = config.get("intermediate_size") or config.get("n_inner") or 4 * (hidden or 0)
    asked = {"model.hidden_size": (m.hidden_size, hidden), "model.num_heads": (m.num_heads, heads),
             "model.intermediate_size": (None if m.intermediate_size is None
                                         else stock_intermediate(m.arch, m.intermediate_size), ffn)}
    if d.layers is None:  # distill.layers, when given, decides the depth
        asked["model.num_layers"] = (m.num_layers, len(teacher_layers(config, None)))
    wrong = [f"{key}={getattr(m, key.split('.')[1])} (the student's: {theirs})"
             for key, (mine, theirs) in asked.items() if mine is not None and mine != theirs]
    wrong += [f"model.{key}={getattr(m, key)} (the student keeps the teacher's)"
              for key in ("dropout", "max_positions", "init_std") if getattr(m, key) is not None]
    if wrong:
        layers = teacher_layers(config, d.layers)
        raise NlpsslError(
            f"distill: init=teacher builds the student from the teacher's layers {layers} (distill.layers), with "
            f"the teacher's shape, so these model settings would not be used: {', '.join(wrong)}. Remove them, "
            "pick the teacher layers with distill.layers (e.g. [0, 1]), or set distill.init=preset to build a "
            "fresh student from the model section."
        )


def student_from_teacher(teacher: str, layers: list[int] | None, auto_class: str, attn: str = "sdpa"):
    """A stock model of the teacher's class and config with only ``layers`` kept, every tensor copied.

    Student block ``j`` is teacher block ``layers[j]``; embeddings, final norms and the head are the
    teacher's. The copies are exact (a test compares them bit for bit).
    """
    import transformers

    auto = getattr(transformers, auto_class)
    source = auto.from_pretrained(teacher, dtype=torch.float32)
    config = source.config.__class__.from_dict(source.config.to_dict())
    keep = teacher_layers(source.config.to_dict(), layers)
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]
    student = auto.from_config(config, attn_implementation=attn)
    weights = source.state_dict()
    copied = {}
    for name in student.state_dict():
        found = LAYER_INDEX.search(name)
        origin = LAYER_INDEX.sub(lambda m: f"{m[1]}{keep[int(m[2])]}{m[3]}", name, count=1) if found else name
        if origin not in weights:
            raise NlpsslError(f"distill: the student's tensor {name!r} has no counterpart {origin!r} in the teacher "
                              f"{teacher!r}. Use distill.init=preset for this architecture.")
        copied[name] = weights[origin]
    student.load_state_dict(copied, strict=True)
    return student


class TeacherMixin:
    """The frozen teacher and the figures every distillation trainer logs (first in the bases)."""

    def _setup_teacher(self, teacher: str, temperature: float, kl_weight: float, lm_weight: float,
                       cosine_weight: float, soft_targets: str = "masked") -> None:
        import transformers

        dtype = torch.bfloat16 if self.args.bf16 else torch.float32
        auto = getattr(transformers, self.teacher_auto_class)
        attn = self.model.config._attn_implementation
        self.teacher = auto.from_pretrained(teacher, dtype=dtype, attn_implementation=attn).to(self.args.device)
        self.teacher.eval().requires_grad_(False)
        self.temperature, self.soft_targets = float(temperature), soft_targets
        self.weights = (float(kl_weight), float(lm_weight), float(cosine_weight))
        self.same_width = self.teacher.config.hidden_size == self.model.config.hidden_size
        self._teacher_state: dict[str, Any] = {"selected": None, "hidden": None}
        # [steps, kl, lm, cosine, agreement] since the last log, on the device: no host sync per step
        self._terms = torch.zeros(5, dtype=torch.float32, device=self.args.device)
        self._agree = torch.zeros(2, dtype=torch.float64)  # [agreeing, total] on eval batches

    def _wrap_teacher_head(self, head: torch.nn.Module, select: bool) -> None:
        """The teacher's head records its input and (``select``) sees only the positions the loss needs."""
        dense_forward, state = head.forward, self._teacher_state

        def forward(hidden):
            state["hidden"] = hidden
            if select and state["selected"] is not None:
                hidden = hidden[state["selected"]]
            return dense_forward(hidden)

        head.forward = forward

    def _teacher(self, inputs: dict, selected: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher logits at ``selected`` [N, V] or all [B, L, V], its final hidden states [B, L, H])."""
        self._teacher_state["selected"] = selected
        try:
            with torch.no_grad(), torch.autocast(self.args.device.type, dtype=torch.bfloat16, enabled=self.args.bf16):
                logits = self.teacher(**inputs).logits
            return logits, self._teacher_state["hidden"]
        finally:
            self._teacher_state["selected"] = self._teacher_state["hidden"] = None

    def _combine(self, model, student: torch.Tensor, teacher: torch.Tensor, lm_loss: torch.Tensor,
                 hidden: torch.Tensor | None, teacher_hidden: torch.Tensor | None, real: torch.Tensor) -> torch.Tensor:
        """The weighted loss from [N, V] student and teacher logits at the same positions."""
        t = self.temperature
        teacher = teacher[..., : student.shape[-1]].float()  # a teacher vocabulary padded past the tokenizer's
        kl = F.kl_div(F.log_softmax(student.float() / t, -1), F.log_softmax(teacher / t, -1),
                      log_target=True, reduction="batchmean") * t * t
        cosine = torch.zeros((), device=student.device)
        if self.same_width and self.weights[2] > 0 and hidden is not None and teacher_hidden is not None:
            cosine = 1.0 - F.cosine_similarity(hidden[real].float(), teacher_hidden[real].float(), dim=-1).mean()
        with torch.no_grad():
            agreement = (student.argmax(-1) == teacher.argmax(-1)).float()
        if model.training:
            self._terms += torch.stack([torch.ones((), device=kl.device), kl.detach(), lm_loss.detach(),
                                        cosine.detach(), agreement.mean()]).float().to(self._terms.device)
        else:
            self._agree += torch.tensor([float(agreement.sum()), float(agreement.numel())], dtype=torch.float64)
        kl_w, lm_w, cos_w = self.weights
        return kl_w * kl + lm_w * lm_loss + cos_w * cosine

    def evaluate(self, *args, **kwargs):
        self._agree.zero_()
        return super().evaluate(*args, **kwargs)

    def log(self, logs, *args, **kwargs):
        terms = self._terms.tolist() if "loss" in logs else [0.0]  # one host sync per log, not per step
        if terms[0] > 0:
            steps, kl, lm, cosine, agreement = terms
            logs |= {"distill/kl": round(kl / steps, 4), "distill/student_loss": round(lm / steps, 4),
                     "distill/cosine": round(cosine / steps, 4), "distill/agreement": round(agreement / steps, 4)}
            self._terms.zero_()
        super().log(logs, *args, **kwargs)

    def eval_logs(self, logs: dict) -> None:
        super().eval_logs(logs)
        if self._agree[1] > 0:
            counts = all_ranks_sum(self._agree, self.args.device)
            logs["eval_teacher_agreement"] = round(float(counts[0] / counts[1]), 4)


class DistilMaskedLMTrainer(TeacherMixin, MaskedLMTrainer):
    """Masked-LM student + frozen masked-LM teacher; soft targets on masked (or all) positions."""

    keep_hidden = True
    teacher_auto_class = "AutoModelForMaskedLM"

    def __init__(self, *args, teacher: str, temperature: float = 2.0, kl_weight: float = 5.0, lm_weight: float = 2.0,
                 cosine_weight: float = 1.0, soft_targets: str = "masked", **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_teacher(teacher, temperature, kl_weight, lm_weight, cosine_weight, soft_targets)
        self._wrap_teacher_head(mlm_head(self.teacher), select=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = self.model_inputs(inputs)
        labels = inputs.pop("labels")
        masked = labels != -100
        mask = inputs.get("attention_mask")
        real = mask.bool() if mask is not None else torch.ones_like(masked)
        where = masked if self.soft_targets == "masked" else real
        self._selected = where
        try:
            logits = model(**inputs).logits  # [N, V] with the sparse head, else [B, L, V]
            hidden = self._hidden
        finally:
            self._selected = self._hidden = None
        if logits.dim() == 3:
            logits = logits[where]
        teacher, teacher_hidden = self._teacher(inputs, where)
        if teacher.dim() == 3:
            teacher = teacher[where]
        target = labels[where]
        scored = target != -100
        lm_loss = F.cross_entropy(logits[scored].float(), target[scored])
        loss = self._combine(model, logits, teacher, lm_loss, hidden, teacher_hidden, real)
        if not model.training:
            with torch.no_grad():
                hits = (logits[scored].argmax(-1) == target[scored]).sum().item()
            self._correct += torch.tensor([hits, int(scored.sum())], dtype=torch.float64)
            loss = lm_loss  # eval_loss: the student's own masked-LM loss
        return (loss, {}) if return_outputs else loss


class DistilCausalLMTrainer(TeacherMixin, CausalLMTrainer):
    """Causal-LM student + frozen causal-LM teacher; soft targets on every predicted token."""

    teacher_auto_class = "AutoModelForCausalLM"

    def __init__(self, *args, teacher: str, temperature: float = 2.0, kl_weight: float = 5.0, lm_weight: float = 2.0,
                 cosine_weight: float = 1.0, soft_targets: str = "masked", **kwargs):
        kwargs["chunked_lm_loss"] = True  # the head passes states through; logits are made here
        super().__init__(*args, **kwargs)
        self._setup_teacher(teacher, temperature, kl_weight, lm_weight, cosine_weight, soft_targets)
        self._wrap_teacher_head(self.teacher.get_output_embeddings(), select=False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = self.model_inputs(inputs)
        labels = inputs.pop("labels")
        self._hidden_only = True
        try:
            hidden = model(**inputs).logits  # [B, L, H]: the head passed the states through
        finally:
            self._hidden_only = False
        target = labels[:, 1:]
        scored = target != -100  # [B, L - 1]
        logits = self.model.get_output_embeddings()(hidden[:, :-1][scored])  # [N, V]
        teacher, teacher_hidden = self._teacher(inputs, None)
        teacher = teacher[:, :-1][scored]
        lm_loss = F.cross_entropy(logits.float(), target[scored])
        mask = inputs.get("attention_mask")
        real = mask.bool() if mask is not None else torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        loss = self._combine(model, logits, teacher, lm_loss, hidden, teacher_hidden, real)
        if not model.training:
            loss = lm_loss  # eval_loss: the student's own next-token loss (perplexity)
        return (loss, {}) if return_outputs else loss


class DistilledMaskedLM(Distillation, MaskedLM):
    family = "mlm"

    def trainer_class(self):
        return DistilMaskedLMTrainer


class DistilledCausalLM(Distillation, CausalLM):
    family = "causal"

    def trainer_class(self):
        return DistilCausalLMTrainer
