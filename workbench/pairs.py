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


def _load_error(role: str, name: str, e: Exception) -> ConfigError:
    return ConfigError(f"could not load the {role} checkpoint {name!r} ({type(e).__name__}: {e}); it must be a "
                       "directory written by save_pretrained (config.json, weights, tokenizer files), a zoo "
                       "name, or a hub id in the local Hugging Face cache or reachable over the network")


def load_checkpoint(role: str, name: str, device: str, trainable: bool = True, dtype=None):
    """(model, tokenizer) of a zoo name, checkpoint directory or hub id: frozen unless `trainable`, in `dtype`
    (None: float32 on the CPU); errors name the fix. The one public way to load a single checkpoint;
    `models.load_checkpoint` does the loading."""
    where = checkpoint_location(role, name)
    try:
        return models.load_checkpoint(where, device=device, trainable=trainable, dtype=dtype)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise _load_error(role, name, e) from e


def _tokenizer_and_config(role: str, name: str):
    """A checkpoint reference's tokenizer and config (no weights), with load_checkpoint's error for a broken one."""
    where = checkpoint_location(role, name)
    try:
        return load_tokenizer(where), load_config(where)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise _load_error(role, name, e) from e


def check(teacher, student, tokenizer=None, *, alignment: str = "exact", uses_teacher: bool = True):
    """The compatibility report (`compat.check_pair`) of a pair given as names/paths or model objects, before
    any weights load: the one check the CLI, `Trainer`, `compare` and `load_named_pair` share.

    A name is read from disk (tokenizer + config). A model object is read from its `.config` with `tokenizer`
    (a teacher object is taken to use the student's tokenizer). `teacher=None`: the student alone.
    """
    def read(role, model, tok):
        if model is None:
            return None, None
        if isinstance(model, (str, Path)):
            return _tokenizer_and_config(role, str(model))
        if tok is None:
            raise ConfigError(f"a {role} model object needs its tokenizer: pass tokenizer=...")
        return tok, model.config

    s_tok, s_cfg = read("student", student, tokenizer)
    t_tok, t_cfg = read("teacher", teacher, tokenizer or s_tok)
    if t_tok is None:
        t_tok, t_cfg, uses_teacher = s_tok, s_cfg, False
    name = lambda m: str(m) if isinstance(m, (str, Path)) else f"<{type(m).__name__} object>"   # noqa: E731
    return check_pair(t_tok, s_tok, t_cfg, s_cfg, alignment=alignment, uses_teacher=uses_teacher,
                      teacher_name=name(teacher if teacher is not None else student), student_name=name(student))


def load_named_pair(teacher: str, student: str, device: str = "cpu", *, load_teacher: bool = True,
                    alignment: str = "exact", dtype=None, teacher_device=None) -> Pair:
    """A `Pair` (teacher frozen or None, student trainable, the student's tokenizer, the compatibility report)
    from zoo names, checkpoint directories or hub ids. Both references are checked before any weights load
    (`check`: each is a checkpoint, one vocabulary, EOS/PAD, embedding sizes, special ids; its errors raised, its
    warnings kept in `pair.report`). Full-weight models in `dtype` (None: float32 on the CPU) on `device`, the
    teacher on `teacher_device` (default `device`) and cut to the student's rows with alignment='truncate'; for
    LoRA, bf16 by default and 8-bit teachers, use `load_pair`."""
    report = check(teacher if load_teacher else None, student, alignment=alignment)
    report.raise_if_errors()
    s_model, s_tok = load_checkpoint("student", student, str(device), dtype=dtype)
    t_model, t_tok = None, s_tok
    if load_teacher:
        t_model, t_tok = load_teacher_model(teacher, device, dtype=dtype, teacher_device=teacher_device,
                                            alignment=alignment, student_config=s_model.config)
    info = {"teacher_device": str(t_model.device)} if t_model is not None else {}
    return Pair(teacher=t_model, student=s_model, tokenizer=s_tok, teacher_tokenizer=t_tok, report=report,
                teacher_name=str(teacher), student_name=str(student), device=next(s_model.parameters()).device,
                dtype=next(s_model.parameters()).dtype, info=info)


def load_teacher_model(teacher: str, device, *, dtype=None, teacher_device=None, alignment: str = "exact",
                       student_config=None):
    """(frozen teacher, its tokenizer) from a name/path on `teacher_device` (default `device`), the model seen
    through `TeacherView` when it runs elsewhere or its logits are cut to the student's embedding rows
    (alignment='truncate')."""
    t_dev = torch.device(teacher_device) if teacher_device else torch.device(device)
    t_model, t_tok = load_checkpoint("teacher", teacher, str(t_dev), trainable=False, dtype=dtype)
    return view_teacher(t_model, device, student_config, alignment=alignment), t_tok


def view_teacher(t_model, device, student_config, *, alignment: str = "exact"):
    """`t_model` as the student sees it: a TeacherView when it lives on another device or has more embedding
    rows than the student (alignment='truncate', which `check` has allowed); else unchanged."""
    if isinstance(t_model, TeacherView):
        return t_model
    t_rows = getattr(t_model.config, "vocab_size", None)
    s_rows = getattr(student_config, "vocab_size", None) if student_config is not None else None
    cut = s_rows if (alignment == "truncate" and t_rows and s_rows and t_rows > s_rows) else None
    t_dev = next(t_model.parameters()).device
    if cut is not None or t_dev != torch.device(device):
        return TeacherView(t_model, out_device=device, vocab_size=cut)
    return t_model
