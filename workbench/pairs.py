"""A real teacher/student pair by hub name or local path, loaded on one device, and a Trainer on it.

    report = compat.check_names(teacher, student)            # configs + tokenizers only, no weights
    pair = load_pair(teacher, student, lora=LoraSpec(r=16))  # checks, then loads
    trainer = trainer_for(pair, GSM8K(data_path), "opd", steps=50, batch_size=8)

See `workbench.hf` for what is done for you (dtype, frozen teacher, LoRA, checkpointing).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from . import objectives
from .adapters import LoraSpec, add_lora, enable_gradient_checkpointing
from .compat import check_pair
from .config import ConfigError, TrainConfig
from .hub import load_config, load_model, load_tokenizer
from .models import count_params, pick_device, pick_dtype
from .sampling import cache_kwarg
from .trainer import Trainer

class TeacherView(torch.nn.Module):
    """A frozen teacher seen from the student's device and vocabulary.

    Runs the teacher where its weights are (e.g. the CPU), moves inputs there and logits back
    to `out_device`, and keeps only the first `vocab_size` logits (alignment="truncate").
    `.to()` is a no-op: where the teacher lives is decided when it is loaded.
    """

    def __init__(self, model, out_device=None, vocab_size: int | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.out_device = torch.device(out_device) if out_device is not None else None
        self.vocab_size = vocab_size
        self.config = copy.copy(model.config)
        if vocab_size is not None:
            self.config.vocab_size = vocab_size
        self.generation_config = getattr(model, "generation_config", None)

    def to(self, *args, **kwargs):
        return self

    @property
    def device(self):
        return next(self.model.parameters()).device

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=None,
                logits_to_keep=0, **kwargs):
        dev = self.device
        mv = lambda t: t.to(dev) if torch.is_tensor(t) else t      # noqa: E731
        extra = {cache_kwarg(self.model): cache} if cache is not None else {}
        out = self.model(input_ids=mv(input_ids), attention_mask=mv(attention_mask), position_ids=mv(position_ids),
                         use_cache=use_cache, logits_to_keep=logits_to_keep, **extra, **kwargs)
        logits = out.logits
        if self.vocab_size is not None:
            logits = logits[..., :self.vocab_size]
        if self.out_device is not None:
            logits = logits.to(self.out_device)
        out.logits = logits
        return out


# --------------------------------------------------------------------------------------------
# a pair
# --------------------------------------------------------------------------------------------


@dataclass
class Pair:
    teacher: object | None          # frozen module (maybe a TeacherView); None when not loaded
    student: object                 # trainable (a PeftModel with LoRA)
    tokenizer: object               # the student's: used for both models
    teacher_tokenizer: object
    report: object                  # compat.CompatReport
    teacher_name: str
    student_name: str
    device: torch.device
    dtype: torch.dtype
    lora: LoraSpec | None = None
    info: dict = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"student {self.student_name}: {count_params(self.student) / 1e6:.1f}M params "
                 f"({count_params(self.student, trainable_only=True) / 1e6:.2f}M trainable), {self.dtype}, "
                 f"{self.device}"]
        if self.teacher is not None:
            lines.append(f"teacher {self.teacher_name}: {count_params(self.teacher) / 1e6:.1f}M params, frozen, "
                         f"on {self.info.get('teacher_device', self.device)}")
        return "\n".join(lines)


def load_pair(teacher, student, *, device="auto", dtype="auto", lora: LoraSpec | dict | None = LoraSpec(),
              gradient_checkpointing: bool = True, teacher_device=None, teacher_dtype=None,
              teacher_8bit: bool = False, alignment: str = "exact", load_teacher: bool = True,
              attn_implementation: str | None = None) -> Pair:
    """Check the pair from configs + tokenizers, then load both (see the module docstring).

    `lora=None` trains the full student. `load_teacher=False` skips the teacher's weights (GRPO/SFT
    on gold data never use them). `teacher_device="cpu"` keeps the teacher off the GPU.
    """
    t_tok, s_tok = load_tokenizer(teacher), load_tokenizer(student)
    t_cfg, s_cfg = load_config(teacher), load_config(student)
    report = check_pair(t_tok, s_tok, t_cfg, s_cfg, alignment=alignment, uses_teacher=load_teacher,
                        teacher_name=str(teacher), student_name=str(student))
    report.raise_if_errors()
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    s_model = load_model(student, device=dev, dtype=dt, attn_implementation=attn_implementation)
    if gradient_checkpointing:
        enable_gradient_checkpointing(s_model)
    spec = None
    if lora is not None and lora is not False:
        spec = lora if isinstance(lora, LoraSpec) else LoraSpec(**lora)
        s_model = add_lora(s_model, spec)
    s_model.train()
    t_model = None
    info = {"gradient_checkpointing": bool(gradient_checkpointing)}
    if load_teacher:
        t_dev = pick_device(teacher_device) if teacher_device is not None else dev
        t_dt = pick_dtype(t_dev, teacher_dtype) if (teacher_dtype is not None or t_dev != dev) else dt
        t_model = load_model(teacher, device=t_dev, dtype=t_dt, trainable=False, load_in_8bit=teacher_8bit,
                             attn_implementation=attn_implementation)
        if t_dev != dev or report.teacher_logits_slice is not None:
            t_model = TeacherView(t_model, out_device=dev, vocab_size=report.teacher_logits_slice)
        info.update(teacher_device=str(t_dev), teacher_dtype=str(t_dt))
    return Pair(teacher=t_model, student=s_model, tokenizer=s_tok, teacher_tokenizer=t_tok, report=report,
                teacher_name=str(teacher), student_name=str(student), device=dev, dtype=dt, lora=spec, info=info)


def trainer_for(pair: Pair, task, method: str = "opd", **overrides):
    """A `Trainer` on the pair's objects (teacher left out for methods that never use it)."""
    cfg = TrainConfig.for_method(method, **{"task": getattr(task, "name", str(task)), "teacher": pair.teacher_name,
                                            "student": pair.student_name, "device": str(pair.device), **overrides})
    uses_teacher = objectives.needs_teacher_model(cfg)
    if uses_teacher and pair.teacher is None:
        raise ConfigError(f"method {method!r} needs the teacher; load the pair with load_teacher=True")
    return Trainer(cfg, teacher=pair.teacher if uses_teacher else None, student=pair.student,
                   tokenizer=pair.tokenizer, task=task)
