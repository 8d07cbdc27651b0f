"""Tiny stand-in checkpoints: random-weight Qwen2/Llama pairs with a locally trained byte-level BPE
tokenizer and a ChatML template, saved to disk, for tests and for running the real-model notebook
without a GPU or a download.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config
from transformers.utils import logging as hf_logging

from .config import ConfigError
from .tasks.gsm8k import SAMPLE_PATH, read_problems

# --------------------------------------------------------------------------------------------
# tiny stand-ins (tests, and the notebook without a GPU)
# --------------------------------------------------------------------------------------------

CHATML_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                   "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TINY_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# role -> (hidden, layers, heads, kv_heads, intermediate)
TINY_SHAPES = {"student": (64, 2, 4, 2, 176), "teacher": (96, 3, 6, 2, 256)}


def _tiny_corpus() -> list[str]:
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
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(TINY_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts or _tiny_corpus(), trainer=trainer)
    if pad_to is not None and pad_to > tok.get_vocab_size():
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
