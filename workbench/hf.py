"""Real Hugging Face checkpoints on one device: a teacher/student pair by hub name or local path.

    report = compat.check_names(teacher, student)            # configs + tokenizers only, no weights
    plan = memory.plan(load_config(student), load_config(teacher), batch_size=8, ...)   # fits?
    pair = load_pair(teacher, student, lora=LoraSpec(r=16))  # checks, then loads
    trainer = trainer_for(pair, GSM8K(data_path), "opd", steps=50, batch_size=8)
    trainer.run(callbacks=[dashboard]); save_adapter(pair.student, run_dir / "adapter", pair.tokenizer)

What is done for you:
  * dtype: bf16 on GPUs that support it (else fp16), float32 on CPU (`models.pick_dtype`);
    weights go straight to the one device (`device_map={"": index}` on CUDA).
  * The teacher is frozen (`eval()`, no grads). It can stay on the CPU (`teacher_device="cpu"`:
    slow, but frees its weights from the GPU) — `TeacherView` moves inputs there and logits
    back. 8-bit teachers need `bitsandbytes` and CUDA; this project's stack does not install
    bitsandbytes, so `teacher_8bit=True` raises a ConfigError saying so unless you add it.
  * LoRA through peft (`LoraSpec`: rank, alpha, dropout, target modules; default all linear
    layers of the blocks). With a LoRA student, pi_ref (KL-to-reference, ExOPD) is the base
    model with the adapters switched off (`AdapterDisabledRef`) — no second copy in memory.
  * Gradient checkpointing (non-reentrant) on the student.
  * Chat templates: `chat_prompt_ids` renders a user turn with the generation prompt; tasks
    call it from `Task.encode_prompt` (see `tasks.gsm8k`).
  * `make_tiny_pair(dir)`: tiny random-weight Qwen2/Llama checkpoints with a locally trained
    byte-level BPE tokenizer and a ChatML template, saved to disk, for tests and for running
    the real-model notebook without a GPU or a download.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from .config import ConfigError
from .models import pick_device, pick_dtype

# --------------------------------------------------------------------------------------------
# names and paths
# --------------------------------------------------------------------------------------------


def is_local(name_or_path) -> bool:
    """A local directory (or something written like a path) rather than a hub id like `Qwen/Qwen2.5-0.5B`."""
    s = str(name_or_path)
    if Path(s).expanduser().exists():
        return True
    return s.startswith((".", "/", "~")) or s.count("/") > 1 or os.sep != "/" and os.sep in s


def resolve(name_or_path) -> str:
    """The string to hand to `from_pretrained`: a checked local directory, or a hub id unchanged.

    Hub ids need network access or a populated Hugging Face cache (HF_HOME); on a machine
    without either, from_pretrained fails with its own message.
    """
    s = str(name_or_path)
    if not is_local(s):
        return s
    p = Path(s).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(p)!r} does not exist; pass a directory written by "
                                "save_pretrained (config.json, weights, tokenizer) or a hub id such as "
                                "'Qwen/Qwen2.5-0.5B-Instruct'")
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"{str(p)!r} has no config.json: not a Hugging Face checkpoint directory")
    return str(p)


def load_config(name_or_path):
    """The model config only (a few KB): enough for the compatibility check and the memory plan."""
    return AutoConfig.from_pretrained(resolve(name_or_path))


def load_tokenizer(name_or_path):
    """AutoTokenizer, left padding (batched generation), PAD = EOS when the tokenizer has none."""
    tok = AutoTokenizer.from_pretrained(resolve(name_or_path))
    tok.padding_side = "left"
    if tok.pad_token_id is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def chat_prompt_ids(tokenizer, user: str, system: str | None = None) -> list[int]:
    """Ids of a one-turn chat prompt ending in the assistant's generation prompt.

    With a chat template: the rendered template, tokenized without adding specials again
    (templates write their own BOS). Without one: the plain text and a newline, with the
    tokenizer's usual specials (e.g. BOS).
    """
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = f"{system}\n\n{user}\n" if system else f"{user}\n"
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def load_model(name_or_path, *, device="auto", dtype="auto", trainable: bool = True, load_in_8bit: bool = False,
               attn_implementation: str | None = None):
    """AutoModelForCausalLM on one device in the chosen dtype; frozen and in eval mode unless trainable."""
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    kw: dict = {"dtype": dt}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    if dev.type == "cuda":
        kw["device_map"] = {"": dev.index if dev.index is not None else torch.cuda.current_device()}
    if load_in_8bit:
        if not has_bitsandbytes() or dev.type != "cuda":
            raise ConfigError("an 8-bit teacher needs the bitsandbytes package and a CUDA device; this stack has "
                              f"{'no bitsandbytes' if not has_bitsandbytes() else 'no CUDA device'}. Install it "
                              "(pip install bitsandbytes) on a GPU machine, or keep the teacher in bf16, or put "
                              "it on the CPU with teacher_device='cpu'")
        if trainable:
            raise ConfigError("load_in_8bit is for the frozen teacher only (train a LoRA on a bf16 student)")
        from transformers import BitsAndBytesConfig
        kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(resolve(name_or_path), **kw)
    if dev.type != "cuda":
        model.to(dev)
    if not trainable:
        model.eval().requires_grad_(False)
    return model


def enable_gradient_checkpointing(model) -> None:
    """Recompute each block's activations in the backward pass (non-reentrant checkpointing)."""
    base = model.get_base_model() if is_peft(model) else model
    if hasattr(base, "activation_checkpointing_enable"):        # transformers >= 5.2x name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.config.use_cache = False     # generation passes use_cache=True explicitly


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


@dataclass
class LoraSpec:
    """LoRA hyper-parameters. `target_modules="all-linear"`: every linear layer of the blocks (not lm_head)."""
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"

    def __post_init__(self):
        if self.r <= 0 or self.alpha <= 0:
            raise ConfigError(f"LoRA rank and alpha must be positive, got r={self.r}, alpha={self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    def peft_config(self):
        from peft import LoraConfig
        tm = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=tm,
                          task_type="CAUSAL_LM")


def add_lora(model, spec: LoraSpec | dict | None = None, *, adapter_name: str = "default"):
    """Wrap `model` with LoRA adapters (peft). The base weights are frozen; B = 0, so the initial
    student equals the base model. Adapter weights are kept in float32 (peft's default)."""
    from peft import get_peft_model
    spec = spec if isinstance(spec, LoraSpec) else LoraSpec(**(spec or {}))
    with warnings.catch_warnings():      # peft calls transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", category=FutureWarning)
        return get_peft_model(model, spec.peft_config(), adapter_name=adapter_name)


def use_new_adapter(model, name: str, spec: LoraSpec | dict | None = None):
    """Add a fresh LoRA adapter `name` (same settings as the active one unless `spec`) and train that one.

    The way to start a second run (e.g. GRPO after OPD) from the same base without reloading it.
    """
    if not is_peft(model):
        raise ConfigError("use_new_adapter needs a LoRA (peft) student; reload the model for full fine-tuning")
    from peft.tuners.lora import LoraLayer
    if name in model.peft_config:          # start it again from its initial value (A random, B = 0)
        for module in model.modules():
            if isinstance(module, LoraLayer) and name in module.lora_A:
                module.reset_lora_parameters(name, True)
    else:
        cfg = (spec if isinstance(spec, LoraSpec) else LoraSpec(**spec)).peft_config() if spec is not None \
            else copy.deepcopy(model.peft_config[model.active_adapter])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            model.add_adapter(name, cfg)
    model.set_adapter(name)
    for n, p in model.named_parameters():       # only the active adapter trains
        p.requires_grad_(f".{name}." in n and "lora_" in n)
    return model


class AdapterDisabledRef:
    """pi_ref for a LoRA student: the same module with its adapters switched off (the base model).

    Equals the *initial* student as long as the adapters started at B = 0 (peft's default
    initialisation). No weights are copied. Calls run in eval mode, without gradients.
    """

    def __init__(self, model):
        self.model = model
        active = getattr(model, "active_adapter", "default")
        for n, p in model.named_parameters():
            if f"lora_B.{active}." in n and p.detach().abs().max().item() != 0:
                warnings.warn("the LoRA student's adapters are not at their initial value (B != 0): pi_ref is the "
                              "base model without adapters, not the student you start from", RuntimeWarning,
                              stacklevel=2)
                break

    def __call__(self, *args, **kwargs):
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.model.disable_adapter():
                return self.model(*args, **kwargs)
        finally:
            self.model.train(was)

    def eval(self):
        return self

    def requires_grad_(self, flag: bool = True):
        return self

    def parameters(self):
        return self.model.parameters()


def reference_policy(student):
    """The frozen pi_ref: adapters disabled for a LoRA student, else a frozen copy of the initial student."""
    if is_peft(student):
        return AdapterDisabledRef(student)
    return copy.deepcopy(student).eval().requires_grad_(False)


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
        from .rollout import _cache_kwarg
        dev = self.device
        mv = lambda t: t.to(dev) if torch.is_tensor(t) else t      # noqa: E731
        extra = {_cache_kwarg(self.model): cache} if cache is not None else {}
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
# adapters on disk
# --------------------------------------------------------------------------------------------


def save_adapter(model, path, tokenizer=None, adapters: list[str] | None = None) -> Path:
    """Write the LoRA adapter(s) (adapter_config.json + adapter_model.safetensors), and the tokenizer if given.

    peft writes the adapter named "default" at `path` and any other adapter under `path/<name>/`;
    `adapters` selects which (default: all).
    """
    if not is_peft(model):
        raise ConfigError("save_adapter needs a LoRA (peft) model; save a full model with save_pretrained")
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(p, safe_serialization=True, selected_adapters=adapters)
    if tokenizer is not None:
        tokenizer.save_pretrained(p)
    return p


def load_adapter(base_model, path, *, trainable: bool = False, adapter_name: str = "default"):
    """Put a saved adapter on a base model (a PeftModel); frozen unless `trainable`.

    `path`: the directory save_adapter wrote (or its `<name>/` subdirectory for a non-default adapter).
    """
    from peft import PeftModel
    p = Path(path)
    if not (p / "adapter_config.json").exists():
        raise FileNotFoundError(f"{str(p)!r} has no adapter_config.json; write one with save_adapter(model, dir)")
    with warnings.catch_warnings():      # peft calls transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", category=FutureWarning)
        return PeftModel.from_pretrained(base_model, str(p), is_trainable=trainable, adapter_name=adapter_name)


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
        from .models import count_params
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
    from .compat import check_pair
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
    from .config import TrainConfig
    from .trainer import Trainer
    cfg = TrainConfig.for_method(method, **{"task": getattr(task, "name", str(task)), "teacher": pair.teacher_name,
                                            "student": pair.student_name, "device": str(pair.device), **overrides})
    uses_teacher = (cfg.loss in ("sampled_token", "full_kl", "jsd", "topk") or cfg.lmbda < 1
                    or (cfg.source == "teacher" and cfg.sft_data == "teacher"))
    if uses_teacher and pair.teacher is None:
        raise ConfigError(f"method {method!r} needs the teacher; load the pair with load_teacher=True")
    return Trainer(cfg, teacher=pair.teacher if uses_teacher else None, student=pair.student,
                   tokenizer=pair.tokenizer, task=task)


# --------------------------------------------------------------------------------------------
# tiny stand-ins (tests, and the notebook without a GPU)
# --------------------------------------------------------------------------------------------

CHATML_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                   "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TINY_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# role -> (hidden, layers, heads, kv_heads, intermediate)
TINY_SHAPES = {"student": (64, 2, 4, 2, 176), "teacher": (96, 3, 6, 2, 256)}


def _tiny_corpus() -> list[str]:
    from .tasks.gsm8k import SAMPLE_PATH, read_problems
    texts = [p.prompt + "\n" + p.solution for p in read_problems(SAMPLE_PATH)]
    texts += ["system", "user", "assistant", "Solve the problem step by step. Finish with a last line of the form "
              "`#### <number>`.", " ".join(str(i) for i in range(200)), "+ - * / = . , $ % ( ) ? !"]
    return texts


def make_tiny_tokenizer(vocab_size: int = 512, texts: list[str] | None = None, chat_template: str = CHATML_TEMPLATE,
                        pad_to: int | None = None):
    """A byte-level BPE tokenizer trained here (no download) with ChatML specials; EOS = `<|im_end|>`.

    Byte-level: any text encodes (no unknown token), as with real LLM tokenizers. `pad_to` appends
    never-produced `<unused{i}>` entries up to that many tokens (e.g. 151936, Qwen2.5's embedding
    size), so random-weight real-size models can sample any id and still decode it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(TINY_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts or _tiny_corpus(), trainer=trainer)
    if pad_to is not None and pad_to > tok.get_vocab_size():
        import json
        spec = json.loads(tok.to_str())
        vocab = spec["model"]["vocab"]
        i = 0
        while len(vocab) < pad_to:
            vocab.setdefault(f"<unused{i}>", len(vocab))
            i += 1
        tok = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left", clean_up_tokenization_spaces=False,
                                   chat_template=chat_template)


def tiny_config(tokenizer, role: str = "student", arch: str = "qwen2", shape=None, vocab_size: int | None = None,
                max_positions: int = 2048):
    """A Qwen2Config/LlamaConfig of a tiny shape (GQA, untied for the teacher, tied for the student)."""
    from transformers import LlamaConfig, Qwen2Config
    h, layers, heads, kv, inter = shape or TINY_SHAPES[role]
    common = dict(vocab_size=vocab_size or len(tokenizer), hidden_size=h, intermediate_size=inter,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                  max_position_embeddings=max_positions, tie_word_embeddings=(role == "student"),
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "llama":
        return LlamaConfig(**common)
    raise ConfigError(f"tiny checkpoints come in 'qwen2' or 'llama', not {arch!r}")


def make_tiny_model(config, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model


def make_tiny_pair(directory, *, arch: str = "qwen2", teacher_arch: str | None = None, seed: int = 0,
                   student_shape=None, teacher_shape=None, vocab_size: int = 512, tokenizer=None
                   ) -> tuple[Path, Path]:
    """Save a random-weight tiny (teacher, student) pair sharing one locally trained tokenizer.

    Returns (teacher_dir, student_dir), each a complete checkpoint (config, safetensors, tokenizer
    with chat template) loadable by path with `load_pair`. Reuses directories that already exist.
    """
    d = Path(directory)
    t_dir, s_dir = d / f"tiny-{teacher_arch or arch}-teacher", d / f"tiny-{arch}-student"
    tok = tokenizer or make_tiny_tokenizer(vocab_size)
    hf_logging.disable_progress_bar()
    for role, path, a, shape, s in (("teacher", t_dir, teacher_arch or arch, teacher_shape, seed + 1),
                                    ("student", s_dir, arch, student_shape, seed)):
        if (path / "config.json").exists():
            continue
        model = make_tiny_model(tiny_config(tok, role, a, shape), seed=s)
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
    return t_dir, s_dir


def lora_summary(model) -> dict:
    """Trainable / total parameter counts and the LoRA settings of a peft model."""
    from .models import count_params
    out = {"params": count_params(model), "trainable": count_params(model, trainable_only=True)}
    if is_peft(model):
        cfg = model.peft_config[model.active_adapter]
        out.update(r=cfg.r, alpha=cfg.lora_alpha, target_modules=sorted(cfg.target_modules)
                   if not isinstance(cfg.target_modules, str) else cfg.target_modules)
    return out


__all__ = ["AdapterDisabledRef", "LoraSpec", "Pair", "TeacherView", "add_lora", "chat_prompt_ids",
           "enable_gradient_checkpointing", "is_peft", "load_adapter", "load_config", "load_model", "load_pair",
           "load_tokenizer", "lora_summary", "make_tiny_pair", "make_tiny_tokenizer", "reference_policy", "resolve",
           "save_adapter", "trainer_for", "use_new_adapter"]
