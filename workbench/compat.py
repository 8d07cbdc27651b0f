"""Can this teacher distil into this student? Checked from configs and tokenizers, before any weights load.

On-policy distillation compares the two models' log-probabilities token by token on
the *same* ids (the student's samples, tokenized once with the student's tokenizer),
so the pair must agree on:

  * the vocabulary: the same token -> id map (identical tokenizers);
  * the embedding size (config.vocab_size): models of one family often pad their
    embedding matrices differently (Qwen2.5-0.5B/1.5B: 151936; Qwen2.5-7B: 152064)
    although their tokenizers are identical. `alignment="truncate"` compares the
    distributions over the student's ids (the teacher's extra, never-tokenized rows are
    dropped); `alignment="exact"` (default) refuses the pair;
  * EOS (where a completion ends; the sampler stops there) and PAD (padding id);
  * the chat template: prompts are rendered with the student's template, so the
    teacher sees the student's format; a template whose assistant turn does not end
    with EOS would never stop.

Pairs with different tokenizers are refused: cross-tokenizer alignment (ULD / GOLD-style
sequence alignment) is not implemented. Every problem comes with its fix.

    report = check_names("Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct")
    print(report); report.raise_if_errors()
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

import torch

from . import losses as L
from .batching import forced_rollout
from .config import ALIGNMENTS, ConfigError
from .hub import load_config, load_tokenizer
from .rollout import completion_logits

PROBE_USER, PROBE_REPLY = "What is 2 + 3?", "2 + 3 = 5\n#### 5"


@dataclass
class Finding:
    level: str      # "error" (refuses to run), "warning" (runs, but read it), "fixed" (applied automatically)
    what: str
    fix: str = ""

    def __str__(self) -> str:
        return f"[{self.level}] {self.what}" + (f"\n    fix: {self.fix}" if self.fix else "")


@dataclass(repr=False)
class CompatReport:
    teacher: str
    student: str
    alignment: str
    findings: list[Finding] = field(default_factory=list)
    tokenizer_size: int | None = None            # len(student tokenizer)
    teacher_vocab: int | None = None             # config.vocab_size (embedding rows)
    student_vocab: int | None = None
    teacher_logits_slice: int | None = None      # alignment="truncate": keep the teacher's first N logits
    special: dict | None = None                  # check_special_tokens: the teacher's EOS log-prob and more

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, level: str, what: str, fix: str = "") -> None:
        self.findings.append(Finding(level, what, fix))

    def raise_if_errors(self) -> None:
        if self.errors:
            lines = "\n".join(f"  - {f.what}\n    fix: {f.fix}" for f in self.errors)
            raise ConfigError(f"teacher {self.teacher!r} and student {self.student!r} cannot be distilled "
                              f"as they are:\n{lines}")

    def __str__(self) -> str:
        head = (f"compatibility of teacher {self.teacher!r} -> student {self.student!r} "
                f"(alignment={self.alignment!r}): {'OK' if self.ok else 'REFUSED'}\n"
                f"  tokenizer: {self.tokenizer_size} tokens; embedding rows: teacher {self.teacher_vocab}, "
                f"student {self.student_vocab}")
        if self.teacher_logits_slice is not None:
            head += f"; teacher logits cut to the first {self.teacher_logits_slice}"
        return "\n".join([head] + [f"  {f}".replace("\n", "\n  ") for f in self.findings])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"


def _vocab_size(config) -> int | None:
    v = getattr(config, "vocab_size", None)
    if v is None and hasattr(config, "get_text_config"):
        v = getattr(config.get_text_config(), "vocab_size", None)
    return v


def _render(tok, messages, generation_prompt: bool) -> str | None:
    if not getattr(tok, "chat_template", None):
        return None
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def check_pair(teacher_tok, student_tok, teacher_config, student_config, *, alignment: str = "exact",
               uses_teacher: bool = True, teacher_name: str = "teacher", student_name: str = "student"
               ) -> CompatReport:
    """Compare a pair's tokenizers and configs (no weights needed). See the module docstring.

    `uses_teacher=False` (e.g. GRPO, which never asks the teacher) turns teacher mismatches into warnings.
    """
    if alignment not in ALIGNMENTS:
        raise ConfigError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    rep = CompatReport(teacher_name, student_name, alignment, tokenizer_size=len(student_tok),
                       teacher_vocab=_vocab_size(teacher_config), student_vocab=_vocab_size(student_config))
    hard = "error" if uses_teacher else "warning"

    # ---- each model against its own tokenizer ---------------------------------------------
    for role, tok, cfg, name in (("teacher", teacher_tok, teacher_config, teacher_name),
                                 ("student", student_tok, student_config, student_name)):
        v = _vocab_size(cfg)
        if v is not None and len(tok) > v:
            rep.add("error", f"the {role} tokenizer has {len(tok)} tokens but {name!r} has only {v} embedding "
                             f"rows: ids >= {v} would index past the embedding matrix",
                    f"resize the embeddings after loading (model.resize_token_embeddings({len(tok)})) and "
                    "fine-tune them, or use the tokenizer the checkpoint was trained with")
        for sid in ("eos_token_id", "bos_token_id", "pad_token_id"):
            ids = getattr(cfg, sid, None)
            for i in (ids if isinstance(ids, (list, tuple)) else [ids]):
                if isinstance(i, int) and not 0 <= i < len(tok):
                    want = getattr(tok, sid)
                    rep.add("error", f"the {role} config ({name!r}) has {sid}={i}, outside its tokenizer's "
                                     f"{len(tok)} tokens (ids 0..{len(tok) - 1}): no text the tokenizer writes or "
                                     "reads has that id",
                            f"set it to the tokenizer's {sid} ({want}): model.config.{sid} = "
                            f"model.generation_config.{sid} = tokenizer.{sid}, then model.save_pretrained(dir); "
                            "or use the tokenizer the checkpoint was trained with")
        if tok.eos_token_id is None:
            rep.add("error", f"the {role} tokenizer has no EOS token: the sampler cannot tell where a "
                             "completion ends",
                    f"set it, e.g. tokenizer.eos_token = '<|im_end|>' (the token that ends an assistant turn "
                    f"in {name!r}'s chat template)")
        if tok.pad_token_id is None:
            rep.add("error", f"the {role} tokenizer has no PAD token (prompts are left-padded in batches)",
                    "tokenizer.pad_token = tokenizer.eos_token (padding is masked out, any id works; "
                    "workbench.hf.load_tokenizer does this for you)")

    # ---- the pair ---------------------------------------------------------------------------
    vt, vs = teacher_tok.get_vocab(), student_tok.get_vocab()
    same_tokenizer = vt == vs
    if not same_tokenizer:
        only_t = sorted(set(vt) - set(vs))[:5]
        only_s = sorted(set(vs) - set(vt))[:5]
        moved = sorted(t for t in set(vt) & set(vs) if vt[t] != vs[t])[:5]
        rep.add(hard, f"the tokenizers differ ({len(vt)} vs {len(vs)} tokens; only in the teacher's: {only_t}; "
                      f"only in the student's: {only_s}; same token, different id: {moved}). Distillation "
                      "compares log-probs of the same ids, so they must share one vocabulary",
                "choose a teacher and student of one family that share a tokenizer (e.g. "
                "Qwen/Qwen2.5-1.5B-Instruct -> Qwen/Qwen2.5-0.5B-Instruct); cross-tokenizer alignment "
                "(ULD/GOLD-style) is not supported here, and no `alignment` setting fixes this")
    t_rows, s_rows = rep.teacher_vocab, rep.student_vocab
    if same_tokenizer and t_rows is not None and s_rows is not None and t_rows != s_rows:
        if alignment == "truncate" and t_rows > s_rows:
            rep.teacher_logits_slice = s_rows
            rep.add("fixed", f"the embedding sizes differ (teacher {t_rows}, student {s_rows}) but the tokenizer "
                             f"({len(student_tok)} tokens) is shared: the teacher's logits are cut to the "
                             f"student's first {s_rows} (alignment='truncate'; the cut rows are padding that "
                             "no text tokenizes to)")
        elif alignment == "truncate":
            rep.add(hard, f"the teacher has fewer embedding rows ({t_rows}) than the student ({s_rows}): the "
                          "student could sample ids the teacher cannot score",
                    "resize the student to the teacher's size, or pick a pair where the teacher's embedding "
                    "is at least as large (alignment='truncate' only cuts the teacher)")
        else:
            rep.add(hard, f"the embedding sizes differ (teacher vocab_size {t_rows}, student {s_rows}) although "
                          f"both use the same {len(student_tok)}-token tokenizer (the models pad their embedding "
                          "matrices differently)",
                    "pass alignment='truncate' (command line: --alignment truncate) to compare the distributions "
                    "over the shared ids (the extra rows are padding no text maps to)")
    for name in ("eos_token", "pad_token", "bos_token"):
        a, b = getattr(teacher_tok, name + "_id"), getattr(student_tok, name + "_id")
        if a == b or (a is None and b is None):
            continue
        ta, tb = getattr(teacher_tok, name), getattr(student_tok, name)
        if name == "eos_token":
            rep.add(hard, f"EOS differs: teacher {ta!r} (id {a}), student {tb!r} (id {b}). Completions end at the "
                          "student's EOS; a teacher that ends its turns with another token scores the ending "
                          "as unlikely and never stops when it samples",
                    f"if {tb!r} also ends assistant turns for the teacher, set teacher_tokenizer.eos_token = {tb!r}; "
                    "otherwise choose a pair with one chat format")
        elif name == "pad_token":
            rep.add(hard, f"PAD differs: teacher {ta!r} (id {a}), student {tb!r} (id {b}); batches are padded "
                          "once, with one id, for both models",
                    f"teacher_tokenizer.pad_token = {tb!r} (padding is masked, so any shared id is right)")
        else:
            rep.add("warning", f"BOS differs: teacher {ta!r} (id {a}), student {tb!r} (id {b}); prompts are "
                               "encoded with the student's tokenizer, so the teacher sees the student's BOS",
                    "usually harmless inside one family; otherwise choose a pair with one tokenizer")

    # ---- chat templates -----------------------------------------------------------------------
    probe = [{"role": "user", "content": PROBE_USER}]
    s_prompt = _render(student_tok, probe, True)
    t_prompt = _render(teacher_tok, probe, True)
    if s_prompt is None:
        rep.add("warning", "the student tokenizer has no chat template: prompts are encoded as plain text",
                "fine for base models; for instruct models load the tokenizer that ships the template")
    else:
        if t_prompt is None:
            rep.add("warning", "the teacher tokenizer has no chat template; it will score prompts in the "
                               "student's chat format", "prefer an instruct teacher of the student's family")
        elif t_prompt != s_prompt:
            rep.add("warning", "the chat templates render the same prompt differently; the teacher scores the "
                               "student's format (what it sees is the student's template)",
                    "prefer a pair with one chat format (compare tokenizer.apply_chat_template outputs)")
        turn = _render(student_tok, probe + [{"role": "assistant", "content": PROBE_REPLY}], False)
        eos = student_tok.eos_token
        if turn is not None and eos and PROBE_REPLY in turn:
            tail = turn.rsplit(PROBE_REPLY, 1)[1]
            if not tail.lstrip(" ").startswith(eos):
                rep.add("warning", f"the student's chat template ends an assistant turn with {tail[:20]!r}, not "
                                   f"with EOS {eos!r}: sampling stops only at EOS, so completions may run to "
                                   "max_new_tokens",
                        "set tokenizer.eos_token to the template's end-of-turn token (e.g. '<|im_end|>' or "
                        "'<|eot_id|>') on both tokenizers")
    return rep


def check_names(teacher: str, student: str, *, alignment: str = "exact", uses_teacher: bool = True
                ) -> CompatReport:
    """check_pair from hub names / local paths: reads only configs and tokenizers (no weights)."""
    return check_pair(load_tokenizer(teacher), load_tokenizer(student), load_config(teacher), load_config(student),
                      alignment=alignment, uses_teacher=uses_teacher, teacher_name=str(teacher),
                      student_name=str(student))


def check_special_tokens(teacher, tokenizer, problems, *, task=None, threshold: float = -5.0,
                         apply_fix: bool = False, teacher_name: str = "teacher", student_name: str = "student"
                         ) -> CompatReport:
    """Does the teacher *behave* as if it ends answers with the student's EOS? Checked with weights, before training.

    The tokenizer check (`check_pair`) cannot see a teacher that was trained to end with another token
    while sharing the ids (a different chat format, a renamed end-of-turn token). Here the teacher scores
    the gold solutions of `problems` followed by the student's EOS; if its mean log-prob of that EOS is
    below `threshold` nats, OPD would charge the student that many nats for every correct ending (Fu et al.:
    19-59 nats per mismatched token, enough to dominate the loss). The report says which token the teacher
    prefers there. `apply_fix=True` reports the documented fix as applied (the caller then trains with
    `mask_special_tokens=True`: no teacher signal at the student's EOS positions) instead of an error.
    The report's `special` dict holds the numbers.
    """
    dev = next(teacher.parameters()).device
    r = forced_rollout(tokenizer, problems, device=dev, task=task)
    with torch.no_grad():
        logits = completion_logits(teacher, r)
    lp = L.token_logprobs(logits, r.completion_ids)
    m = r.completion_mask.bool()
    eos = tokenizer.eos_token_id
    at = m & (r.completion_ids == eos)
    other = m & ~at
    eos_lp = float(lp[at].mean()) if bool(at.any()) else None
    other_lp = float(lp[other].mean()) if bool(other.any()) else None
    preferred = logits.argmax(-1)[at]
    top_id = int(preferred.mode().values) if preferred.numel() else None
    rep = CompatReport(teacher_name, student_name, "exact", tokenizer_size=len(tokenizer))
    rep.special = {"eos_logprob": eos_lp, "other_logprob": other_lp, "teacher_prefers_id": top_id,
                   "teacher_prefers": tokenizer.convert_ids_to_tokens(top_id) if top_id is not None else None,
                   "positions": int(at.sum())}
    if eos_lp is not None and eos_lp < threshold:
        what = (f"at the end of {int(at.sum())} gold solutions the teacher gives the student's EOS "
                f"{tokenizer.eos_token!r} (id {eos}) a mean log-prob of {eos_lp:.1f} nats (other gold tokens: "
                f"{other_lp:.2f}); it ends answers with {rep.special['teacher_prefers']!r} (id {top_id}) instead. "
                "OPD would charge every ending that many nats")
        fix = ("train with mask_special_tokens=True (no teacher signal at the student's EOS positions), or "
               "make the pair agree on one end-of-answer token")
        if apply_fix:
            rep.add("fixed", what + "; masked: the trainer drops the teacher's signal at EOS positions", fix)
        else:
            rep.add("error", what, fix)
    return rep
