"""Hugging Face checkpoints by hub id or local path: configs, tokenizers, chat prompts, one model on one device.

The lowest layer of the real-model side: `compat` reads configs and tokenizers, `pairs` loads models.
`chat_prompt_ids` (tasks render chat prompts with it) lives in `tokenizer`, below the tasks; it is
importable from here too.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from transformers.utils import logging as hf_logging

from .config import ConfigError
from .models import pick_device, pick_dtype
from .tokenizer import chat_prompt_ids  # noqa: F401  (public here too: the real-model API)

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
        kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(resolve(name_or_path), **kw)
    if dev.type != "cuda":
        model.to(dev)
    if not trainable:
        model.eval().requires_grad_(False)
    return model
