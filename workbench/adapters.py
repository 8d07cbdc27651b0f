"""LoRA through peft: detection, adapters, pi_ref with adapters off, gradient checkpointing, adapters on disk.

`is_peft` is what the samplers (`sampling`, `fast_rollout`) need to look through a peft
wrapper; it lives here, below them, so the engine never imports the pair-loading code.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ConfigError
from .models import count_params
from .sampling import is_peft  # noqa: F401  (public here too: the engine, below this module, needs it)

def enable_gradient_checkpointing(model) -> None:
    """Recompute each block's activations in the backward pass (non-reentrant checkpointing)."""
    base = model.get_base_model() if is_peft(model) else model
    if hasattr(base, "activation_checkpointing_enable"):        # transformers >= 5.2x name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.config.use_cache = False     # generation passes use_cache=True explicitly


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
        from peft import LoraConfig   # optional-import: peft costs seconds to import; only LoRA paths need it
        tm = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=tm,
                          task_type="CAUSAL_LM")


def lora_spec(cfg) -> LoraSpec:
    """The LoraSpec of a TrainConfig's `lora_r`, `lora_alpha` (default 2 x r) and `lora_targets` (comma-separated)."""
    targets = tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip()) if cfg.lora_targets else "all-linear"
    return LoraSpec(r=cfg.lora_r, alpha=cfg.lora_alpha or 2 * cfg.lora_r, target_modules=targets)


def add_lora(model, spec: LoraSpec | dict | None = None, *, adapter_name: str = "default"):
    """Wrap `model` with LoRA adapters (peft). The base weights are frozen; B = 0, so the initial
    student equals the base model. Adapter weights are kept in float32 (peft's default)."""
    from peft import get_peft_model   # optional-import: peft is slow to import (LoRA paths only)
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
    from peft.tuners.lora import LoraLayer   # optional-import: peft is slow to import (LoRA paths only)
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
    from peft import PeftModel   # optional-import: peft is slow to import (LoRA paths only)
    p = Path(path)
    if not (p / "adapter_config.json").exists():
        raise FileNotFoundError(f"{str(p)!r} has no adapter_config.json; write one with save_adapter(model, dir)")
    with warnings.catch_warnings():      # peft calls transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", category=FutureWarning)
        return PeftModel.from_pretrained(base_model, str(p), is_trainable=trainable, adapter_name=adapter_name)


def lora_summary(model) -> dict:
    """Trainable / total parameter counts and the LoRA settings of a peft model."""
    out = {"params": count_params(model), "trainable": count_params(model, trainable_only=True)}
    if is_peft(model):
        cfg = model.peft_config[model.active_adapter]
        out.update(r=cfg.r, alpha=cfg.lora_alpha, target_modules=sorted(cfg.target_modules)
                   if not isinstance(cfg.target_modules, str) else cfg.target_modules)
    return out
