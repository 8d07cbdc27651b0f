"""Diagnostics computed from a batch of completions: length, truncation, repetition.

Repetition follows Luo et al. (arXiv 2604.08527): a rollout is repetitive when
the tail of its text compresses well. The paper used the last 10,000
characters and a zlib ratio above 10; our completions are ~50 characters, so
both are rescaled: the last `tail_chars=48` characters and a ratio above
`threshold=2.2`. Calibration (tests/test_metrics.py): reference solutions of
every built-in task and split stay at or below 2.1 (the `short` split's runs
of `0+0+0=00,` columns are the most compressible clean text); a tail that
cycles one scratchpad column or a shorter pattern scores 2.4 or more.
"""
from __future__ import annotations

import zlib

import torch

from . import losses as L

TAIL_CHARS = 48
REPETITION_THRESHOLD = 2.2


def compression_ratio(text: str) -> float:
    """len(raw) / len(zlib(raw)); ~1 for varied text, large for repeated text. Empty text -> 0."""
    raw = text.encode()
    if not raw:
        return 0.0
    return len(raw) / len(zlib.compress(raw, 9))


def is_repetitive(text: str, tail_chars: int = TAIL_CHARS, threshold: float = REPETITION_THRESHOLD) -> bool:
    """Does the tail of `text` compress above `threshold`? Texts shorter than the tail window never do."""
    if len(text) < tail_chars:
        return False
    return compression_ratio(text[-tail_chars:]) > threshold


def repetition_rate(texts, tail_chars: int = TAIL_CHARS, threshold: float = REPETITION_THRESHOLD) -> float:
    texts = list(texts)
    if not texts:
        return 0.0
    return sum(is_repetitive(t, tail_chars, threshold) for t in texts) / len(texts)


class LengthAlarm:
    """Early warning for a length runaway, in either direction.

    Inflation (Luo et al. 2604.08527): fires when the truncated fraction or the repetition rate of a
    step's rollouts crosses a threshold, or rises by more than `rise` within the last `window` steps
    (the paper's signature: truncation jumping from ~0.45 to > 0.95 within ~30 steps).
    Collapse to short answers (notebook 06: a summed return over a mostly negative reward): fires when
    the mean rollout length falls to `shrink` x the first step's mean length or below (`shrink=0`
    turns it off). Each condition fires once at its onset and re-arms after it clears.
    """

    KEYS = {"truncation": "rollout/truncated_frac", "repetition": "rollout/repetition_rate"}
    LENGTH_KEY = "rollout/mean_length"

    def __init__(self, truncation: float = 0.5, repetition: float = 0.3, rise: float = 0.3, window: int = 10,
                 shrink: float = 0.5):
        if window < 2:
            raise ValueError(f"LengthAlarm window must be >= 2 steps, got {window}")
        if not 0.0 <= shrink < 1.0:
            raise ValueError(f"LengthAlarm shrink must be in [0, 1) (a fraction of the first step's length; "
                             f"0 turns it off), got {shrink}")
        self.limits = {"truncation": truncation, "repetition": repetition}
        self.rise, self.window, self.shrink = rise, window, shrink
        self.history = {k: [] for k in self.KEYS}
        self.active = {k: False for k in self.KEYS}
        self.first_length = None

    def update(self, record: dict) -> list[str]:
        messages = []
        for name, key in self.KEYS.items():
            v = record.get(key)
            if v is None:
                continue
            h = self.history[name]
            h.append(float(v))
            del h[:-self.window]
            over = v >= self.limits[name]
            jumped = len(h) >= 2 and v - min(h) >= self.rise
            if (over or jumped) and not self.active[name]:
                why = f"{v:.2f} >= {self.limits[name]:.2f}" if over else \
                      f"rose by {v - min(h):.2f} within {len(h)} steps"
                messages.append(f"{name} {why} at step {record.get('step')}")
            self.active[name] = over or jumped
        length = record.get(self.LENGTH_KEY)
        if length is not None and self.shrink > 0:
            if self.first_length is None:
                self.first_length = float(length)
            short = length <= self.shrink * self.first_length
            if short and not self.active.get("length", False):
                messages.append(f"length {length:.1f} <= {self.shrink:.2f} x the first step's "
                                f"{self.first_length:.1f} at step {record.get('step')}")
            self.active["length"] = short
        return messages


def repeated_token_mask(ids, mask=None, n: int = 9):
    """[B, T] bool: token t closes an n-gram of token ids that already occurred earlier in its row.

    The token-level view of repetition (for advantages, which live on tokens): with n = 9 on the
    addition scratchpad a token is "repeated" only when a whole `d+d+d=dd,` column (9 characters)
    is written a second time, which a correct solution never does. `mask` (1 = real completion
    token) limits both the n-grams and the flagged positions to real tokens.
    """

    ids = torch.as_tensor(ids)
    B, T = ids.shape
    m = torch.ones_like(ids, dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool()
    out = torch.zeros(B, T, dtype=torch.bool)
    rows, valid = ids.tolist(), m.tolist()
    for b in range(B):
        seen = set()
        for t in range(n - 1, T):
            if not all(valid[b][t - n + 1:t + 1]):
                continue
            g = tuple(rows[b][t - n + 1:t + 1])
            if g in seen:
                out[b, t] = True
            else:
                seen.add(g)
    return out


def advantage_by_repetition(advantages, ids, mask=None, n: int = 9) -> dict:
    """Mean advantage on repeated vs normal tokens (Luo et al.'s collapse signature: after the collapse
    repeated tokens get about -0.03 while normal tokens get about -0.16, i.e. repetition is penalised less).

    Returns {"repeated": mean or None, "normal": mean or None, "repeated_frac": share of real tokens}.
    """

    adv = torch.as_tensor(advantages, dtype=torch.float32)
    m = torch.ones_like(adv, dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool()
    rep = repeated_token_mask(ids, m, n) & m
    norm = m & ~rep
    total = int(m.sum())

    def mean(sel):
        return float(adv[sel].mean()) if bool(sel.any()) else None

    return {"repeated": mean(rep), "normal": mean(norm), "repeated_frac": int(rep.sum()) / total if total else 0.0}


def advantage_by_marker_samples(samples, marker, key: str = "token_reward") -> dict:
    """Mean per-token value on the tokens `marker` flags vs the rest, over record samples (docs/records.md).

    `marker(prompt, completion) -> [bool per character]` says which tokens belong to the failure being
    studied, e.g. `tasks.Repeat.loop_tokens` (the copies written after the asked-for count): the
    task-aware view of Luo et al.'s repeated-vs-normal split, for a task whose correct answers repeat
    themselves (an n-gram test would flag every correct answer). Character-level tokens only: the marker
    indexes characters. A special token the model wrote (`<unk>`, `<pad>`, ...) is one position the marker
    sees as a character of no meaning (NUL); EOS (`<eos>`) is never flagged. Returns
    {"marked", "normal": mean or None, "marked_frac"}.
    """
    marked, normal = [], []
    for s in samples:
        vals = s.get(key)
        if vals is None or not s.get("tokens"):
            continue
        toks = s["tokens"]
        odd = [t for t in toks if len(t) != 1 and not (t.startswith("<") and t.endswith(">"))]
        if odd:
            raise ValueError("advantage_by_marker_samples needs one character per token (a character-level "
                             f"tokenizer); got tokens {odd[:3]}")
        text = "".join(t if len(t) == 1 else "\0" for t in toks)
        flags = [f and t != "<eos>" for f, t in zip(marker(s["prompt"], text), toks)]
        for flag, v in zip(flags, vals):
            (marked if flag else normal).append(float(v))

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    total = len(marked) + len(normal)
    return {"marked": mean(marked), "normal": mean(normal), "marked_frac": len(marked) / total if total else 0.0}


def advantage_by_repetition_samples(samples, key: str = "token_reward", n: int = 9) -> dict:
    """`advantage_by_repetition` over record samples (docs/records.md): token strings and a per-token value."""

    rows = [s for s in samples if s.get(key) is not None and s.get("tokens")]
    if not rows:
        return {"repeated": None, "normal": None, "repeated_frac": 0.0}
    vocab: dict[str, int] = {}
    T = max(len(s["tokens"]) for s in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    adv = torch.zeros(len(rows), T)
    mask = torch.zeros(len(rows), T)
    for i, s in enumerate(rows):
        k = len(s["tokens"])
        ids[i, :k] = torch.tensor([vocab.setdefault(t, len(vocab) + 1) for t in s["tokens"]])
        adv[i, :k] = torch.tensor(s[key][:k], dtype=torch.float32)
        mask[i, :k] = 1
    return advantage_by_repetition(adv, ids, mask, n)


def position_profile(mask: torch.Tensor, **series: torch.Tensor) -> dict:
    """Per completion position t, over a batch: `n` — rollouts that reach t (mask weight), and each named
    `[B, N]` series' mean over those rollouts (None where none does). Trailing positions no rollout reaches
    are dropped. Profiles of several batches combine with `pool_position_profiles`."""
    m = mask.detach().double()
    n = m.sum(0)
    out = {"n": [float(x) for x in n]}
    for name, x in series.items():
        s = (torch.where(m != 0, x.detach().double(), torch.zeros_like(m)) * m).sum(0)
        out[name] = [float(a / c) if c > 0 else None for a, c in zip(s, n)]
    last = max((i + 1 for i, c in enumerate(out["n"]) if c > 0), default=0)
    return {k: v[:last] for k, v in out.items()}


def pool_position_profiles(profiles: list[dict]) -> dict:
    """Several `position_profile`s as one: per position, the mean of each series weighted by its `n`."""
    profiles = [p for p in profiles if p and p.get("n")]
    if not profiles:
        return {"n": []}
    width = max(len(p["n"]) for p in profiles)
    names = [k for k in profiles[0] if k != "n"]
    n = [sum(p["n"][t] for p in profiles if t < len(p["n"])) for t in range(width)]
    out = {"n": n}
    for name in names:
        out[name] = [sum(p["n"][t] * p[name][t] for p in profiles if t < len(p["n"]) and p[name][t] is not None)
                     / n[t] if n[t] > 0 else None for t in range(width)]
    return out


def teacher_position_profile(s_logits: torch.Tensor, t_logits: torch.Tensor, ids: torch.Tensor,
                             mask: torch.Tensor, chunked: bool = False) -> dict:
    """`position_profile` of one teacher-scored batch: per completion position, the sampled token's reward
    log q - log p (`reward`), whether student and teacher agree on the most likely token (`top1_overlap`) and
    the full-vocabulary KL(p || q) (`reverse_kl`). Where along the response the teacher's signal sits
    (Li et al., arXiv 2604.13016; Fu et al., arXiv 2603.25562: its benefit decays with prefix length)."""
    # chunked: the same quantities over slices of positions, never a float32 [B, N, V] copy (large vocabularies)
    lp, rkl = ((L.token_logprobs_chunked, L.full_reverse_kl_chunked) if chunked
               else (L.token_logprobs, L.full_reverse_kl))
    with torch.no_grad():
        rew = lp(t_logits, ids) - lp(s_logits, ids)
        agree = (s_logits.argmax(-1) == t_logits.argmax(-1)).float()
        kl = rkl(s_logits, t_logits, mask)[1]
    return position_profile(mask, reward=rew, top1_overlap=agree, reverse_kl=kl)
