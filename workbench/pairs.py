"""A teacher/student pair by zoo name, local path or hub id, loaded on one device, and a Trainer on it.

    pair = load_named_pair("addition-teacher", "addition-student")   # toy pair: full weights, float32
    report = compat.check_names(teacher, student)            # configs + tokenizers only, no weights
    pair = load_pair(teacher, student, lora=LoraSpec(r=16))  # real models: checks, then loads (LoRA, bf16, ...)
    trainer = trainer_for(pair, GSM8K(data_path), "opd", steps=50, batch_size=8)

Both return a `Pair` carrying its `compat.CompatReport`. `load_checkpoint` is the one way to load a single
checkpoint by name (zoo entry, directory, hub id); `load_named_pair` and the trainer use it.

See `workbench.hf` for what is done for you (dtype, frozen teacher, LoRA, checkpointing).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import hub, models, zoo
from .adapters import LoraSpec, add_lora, enable_gradient_checkpointing
from .compat import check_pair
from .config import ConfigError
from .hub import load_config, load_model, load_tokenizer
from .models import count_params, pick_device, pick_dtype
from .sampling import cache_kwarg
from .tokenizer import vocab_mismatch

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


# --------------------------------------------------------------------------------------------
# checkpoints by name (zoo entries, local directories, hub ids): the one way the trainer, compare,
# experiments, notebooks and benchmarks load a model
# --------------------------------------------------------------------------------------------


def checkpoint_location(role: str, name: str) -> str:
    """What `name` refers to, checked before anything loads: a zoo entry's directory, a checked local checkpoint
    directory, or a hub id (`owner/name`, passed on unchanged: `from_pretrained` resolves it from the network or
    the local Hugging Face cache). Errors name the fix."""
    name = str(name)
    if name in zoo.RECIPES:
        return str(zoo.path(name))   # FileNotFoundError naming the rebuild command when the entry is not built
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise FileNotFoundError(f"{role} checkpoint {name!r} is a file; pass a checkpoint directory (written "
                                    "by save_pretrained) or a zoo name")
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"{role} checkpoint {name!r} has no config.json: not a Hugging Face checkpoint "
                                    "directory; save one with model.save_pretrained(dir)")
        if not ((p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()):
            raise FileNotFoundError(f"{role} checkpoint {name!r} has no tokenizer files; save the tokenizer into "
                                    "the same directory with tokenizer.save_pretrained(dir)")
        return hub.resolve(p)
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and not hub.is_local(name):
        return hub.resolve(name)     # a hub id: unchanged
    raise FileNotFoundError(f"{role} checkpoint {name!r} does not exist: it is neither a zoo entry "
                            f"({sorted(zoo.RECIPES)}), a checkpoint directory nor a hub id (owner/name)")


def check_checkpoint(role: str, name: str) -> None:
    """Fail before loading anything when a teacher/student reference cannot be a checkpoint."""
    checkpoint_location(role, name)


def load_checkpoint(role: str, name: str, device: str, trainable: bool = True):
    """(model, tokenizer) of a zoo name, checkpoint directory or hub id: frozen unless `trainable`; errors name the
    fix. The one public way to load a single checkpoint; `models.load_checkpoint` does the loading."""
    where = checkpoint_location(role, name)
    try:
        return models.load_checkpoint(where, device=device, trainable=trainable)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ConfigError(f"could not load the {role} checkpoint {name!r} ({type(e).__name__}: {e}); it must be a "
                          "directory written by save_pretrained (config.json, weights, tokenizer files), a zoo "
                          "name, or a hub id in the local Hugging Face cache or reachable over the network") from e


def check_vocab(t_tok, s_tok, t_name: str, s_name: str) -> None:
    problem = vocab_mismatch(t_tok, s_tok)
    if problem:
        raise ConfigError(f"teacher {t_name!r} and student {s_name!r} tokenizers differ: {problem}. "
                          "On-policy distillation compares log-probs token by token, so both must "
                          "share one vocabulary; use a pair built for the same task/tokenizer")


def load_named_pair(teacher: str, student: str, device: str = "cpu", *, load_teacher: bool = True) -> Pair:
    """A `Pair` (teacher frozen or None, student trainable, the student's tokenizer, the compatibility report)
    from zoo names, checkpoint directories or hub ids: both references checked before loading
    (`checkpoint_location`), one shared vocabulary and `compat.check_pair` after (its errors raised, its
    warnings kept in `pair.report`). Full-weight models in float32 on `device`; for LoRA, bf16 and a teacher
    on another device, use `load_pair`."""
    check_checkpoint("student", student)
    if load_teacher:
        check_checkpoint("teacher", teacher)
    s_model, s_tok = load_checkpoint("student", student, str(device))
    t_model, t_tok = None, s_tok
    if load_teacher:
        t_model, t_tok = load_checkpoint("teacher", teacher, str(device), trainable=False)
        check_vocab(t_tok, s_tok, teacher, student)
    report = check_pair(t_tok, s_tok, (t_model or s_model).config, s_model.config, uses_teacher=load_teacher,
                        teacher_name=str(teacher), student_name=str(student))
    report.raise_if_errors()
    dev = next(s_model.parameters()).device
    return Pair(teacher=t_model, student=s_model, tokenizer=s_tok, teacher_tokenizer=t_tok, report=report,
                teacher_name=str(teacher), student_name=str(student), device=dev,
                dtype=next(s_model.parameters()).dtype)
