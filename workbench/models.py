"""Tiny causal LMs from `transformers` configs, and a loader for any local HF checkpoint.

Presets are small enough to train on a laptop CPU in minutes. They are plain
Hugging Face models (`LlamaForCausalLM` by default; Qwen2 and GPT-2 configs are
accepted too), so everything downstream — rollouts, losses, LoRA — is the code
path a real 0.5B checkpoint takes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM)

# name -> (hidden size, layers, heads). Intermediate (MLP) size is 4x hidden.
PRESETS = {
    "nano": (32, 1, 2),
    "tiny-student": (64, 2, 4),
    "tiny-teacher": (128, 4, 4),
    "small": (256, 6, 8),
}
ARCHS = ("llama", "qwen2", "gpt2")


def pick_device(device: str | None = None) -> torch.device:
    """`cuda` when present, else `cpu`; an explicit choice is checked, not trusted."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; use device='cpu' or 'auto'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available; use device='cpu' or 'auto'")
    return dev


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """float32 on CPU; bf16 on GPUs that support it (else fp16) unless told otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(table)} or 'auto'")
    return table[dtype]


def make_config(preset: str, vocab_size: int, tokenizer=None, arch: str = "llama", max_positions: int = 256):
    """A transformers config for a preset (see PRESETS) and architecture family."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {list(ARCHS)}")
    d, layers, heads = PRESETS[preset]
    special = {}
    if tokenizer is not None:
        special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=d, n_layer=layers, n_head=heads, n_positions=max_positions,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **special)
    common = dict(vocab_size=vocab_size, hidden_size=d, intermediate_size=4 * d, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
                  tie_word_embeddings=True, **special)
    return LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)


def build_model(preset: str, tokenizer, arch: str = "llama", seed: int = 0, max_positions: int = 256):
    """A freshly initialised tiny causal LM (deterministic for a seed)."""
    cfg = make_config(preset, len(tokenizer), tokenizer, arch, max_positions)
    cls = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM, "gpt2": GPT2LMHeadModel}[arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def count_params(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def load_checkpoint(path: str | os.PathLike, device: str | None = None, dtype=None, trainable: bool = True):
    """(model, tokenizer) from a local Hugging Face checkpoint directory, or a hub name.

    A directory must hold a model config, weights and a tokenizer. Names that are
    not local directories are passed to `from_pretrained` unchanged (a hub id):
    that needs network access or a populated HF cache.
    """
    p = Path(path)
    looks_local = p.exists() or str(path).startswith((".", "/", "~")) or os.sep in str(path) and not _hub_like(str(path))
    if looks_local:
        p = p.expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"checkpoint directory {str(p)!r} does not exist; pass a directory made by "
                                    "save_pretrained (config.json + weights + tokenizer) or a zoo name "
                                    "(`python -m workbench zoo list`)")
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"{str(p)!r} has no config.json: not a Hugging Face checkpoint directory; "
                                    "save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir)")
        if not (p / "tokenizer.json").exists() and not (p / "tokenizer_config.json").exists():
            raise FileNotFoundError(f"{str(p)!r} has no tokenizer files; save the tokenizer into the same "
                                    "directory with tokenizer.save_pretrained(dir)")
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    hf_logging.disable_progress_bar()     # a bar per tiny checkpoint load drowns the notebook output
    tokenizer = AutoTokenizer.from_pretrained(str(p if looks_local else path))
    model = AutoModelForCausalLM.from_pretrained(str(p if looks_local else path), dtype=dt)
    model.to(dev)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not trainable:
        model.eval().requires_grad_(False)
    return model, tokenizer


def _hub_like(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not Path(s).exists()


def save_checkpoint(model, tokenizer, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """save_pretrained of model + tokenizer (safetensors), plus an optional `workbench.json` of metadata."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    model.save_pretrained(p, safe_serialization=True)
    tokenizer.save_pretrained(p)
    if extra is not None:
        (p / "workbench.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
    return p
