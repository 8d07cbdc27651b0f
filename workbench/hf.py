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

This module gathers the real-model API in one import; each piece has its own home:
`hub` (names, configs, tokenizers, chat prompts, one model), `adapters` (LoRA, pi_ref, checkpointing),
`pairs` (a checked pair, `trainer_for`), `standins` (tiny checkpoints).
"""
from __future__ import annotations

from .adapters import (AdapterDisabledRef, LoraSpec, add_lora, enable_gradient_checkpointing, is_peft,  # noqa: F401
                       load_adapter, lora_summary, reference_policy, save_adapter, use_new_adapter)
from .hub import (chat_prompt_ids, has_bitsandbytes, is_local, load_config, load_model, load_tokenizer,  # noqa: F401
                  resolve)
from .pairs import Pair, TeacherView, load_pair  # noqa: F401
from .standins import (CHATML_TEMPLATE, TINY_SHAPES, TINY_SPECIALS, make_tiny_model, make_tiny_pair,  # noqa: F401
                       make_tiny_tokenizer, tiny_config)
from .trainer import trainer_for  # noqa: F401

__all__ = ["AdapterDisabledRef", "LoraSpec", "Pair", "TeacherView", "add_lora", "chat_prompt_ids",
           "enable_gradient_checkpointing", "is_peft", "load_adapter", "load_config", "load_model", "load_pair",
           "load_tokenizer", "lora_summary", "make_tiny_pair", "make_tiny_tokenizer", "reference_policy", "resolve",
           "save_adapter", "trainer_for", "use_new_adapter"]
