"""Character-level tokenizer that *is* a `transformers.PreTrainedTokenizerFast`.

Every character of a task's character set is one token; three special tokens
(`<pad>`, `<bos>`, `<eos>`) come first, so ids are stable for a given
character set. Because it is a real Hugging Face tokenizer it saves and loads
with `save_pretrained` / `AutoTokenizer.from_pretrained` like any checkpoint's.

Simplification: no unknown-token handling beyond `<unk>`; a character outside
the set raises in `encode_text` rather than silently mapping to `<unk>`.
"""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


def build_tokenizer(charset: str) -> PreTrainedTokenizerFast:
    """Build the tokenizer for a character set (order-independent: chars are sorted)."""
    chars = sorted(set(charset))
    if not chars:
        raise ValueError("build_tokenizer: empty character set; a task must declare the characters it uses")
    bad = [c for c in chars if c.isspace() and c != " "]
    if bad:
        raise ValueError(f"build_tokenizer: whitespace other than ' ' is not supported in a charset: {bad!r}")
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for c in chars:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # An empty-pattern split isolates every character (spaces included).
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(""), behavior="isolated")
    tok.decoder = decoders.Fuse()
    # BOS is not added by the WordLevel model itself: a template adds it.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        padding_side="left", clean_up_tokenization_spaces=False,
    )


def encode_text(tokenizer, text: str, add_bos: bool = False) -> list[int]:
    """Encode without surprises: refuses characters the tokenizer does not know."""
    ids = tokenizer(text, add_special_tokens=add_bos)["input_ids"]
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        unknown = sorted({c for c in text if tokenizer.convert_tokens_to_ids(c) == tokenizer.unk_token_id})
        raise ValueError(f"text {text!r} has characters {unknown} outside the tokenizer's vocabulary; "
                         "add them to the task's charset")
    return ids


def token_strings(tokenizer, ids) -> list[str]:
    """One display string per id (specials as written, e.g. '<eos>')."""
    return tokenizer.convert_ids_to_tokens([int(i) for i in ids])


def vocab_mismatch(tok_a, tok_b) -> str | None:
    """Describe how two tokenizers' vocabularies or special tokens differ, or None if they match."""
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    problems = []
    if va != vb:
        only_a = sorted(set(va) - set(vb))[:8]
        only_b = sorted(set(vb) - set(va))[:8]
        moved = sorted(t for t in set(va) & set(vb) if va[t] != vb[t])[:8]
        problems.append(f"vocabularies differ (sizes {len(va)} vs {len(vb)}; only in first: {only_a}; "
                        f"only in second: {only_b}; different ids: {moved})")
    for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
        a, b = getattr(tok_a, name), getattr(tok_b, name)
        if a != b:
            problems.append(f"{name} differs ({a} vs {b})")
    return "; ".join(problems) or None


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
