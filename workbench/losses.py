"""Losses and advantage estimators for SFT, outcome RL and on-policy distillation.

Every function here is a pure function on tensors: no models, no tokenizers,
no optimiser state. Each docstring names the paper or reference code whose
equation it implements (see ``METHODS.md`` for the equations side by side).

Shapes convention
-----------------
* ``logits``: ``[B, T, V]`` (batch, time, vocabulary). Position ``t`` of the
  logits is the distribution that *scored token t*: the caller has already
  shifted a causal LM's output by one (HF ``logits[:, :-1]`` against
  ``input_ids[:, 1:]``), so ``logits[:, t]`` and ``ids[:, t]`` line up.
* per-token tensors (log-probs, rewards, advantages, KLs): ``[B, T]``.
* ``mask``: ``[B, T]``, float or bool; 1 on completion tokens *including EOS*,
  0 on prompt and padding. Values at masked-out positions are never read
  (they may be ``-inf`` or ``nan``; they are replaced, not multiplied by 0).
  A float mask is used as per-token weights.
* sequence-level tensors (verifier rewards, GRPO advantages): ``[B]`` / ``[N]``.

Conventions
-----------
* All returned losses are to be *minimised*.
* Teacher / reference / sampler quantities are detached inside the functions
  (the teacher is frozen; a self-teacher scores tokens without gradient).
* Half-precision logits (fp16 / bf16) are upcast to float32 before any
  softmax; float64 stays float64 (used by the gradient checks).
* ``-inf`` logits (banned or padded vocabulary entries) are handled: a term
  ``p * (log p - log q)`` with ``p == 0`` counts as 0 and contributes no
  gradient, so no ``nan`` appears in the loss or in its gradient. A KL that is
  genuinely infinite (student mass on a token the teacher gives ``-inf``)
  stays ``inf``: clip or mask it upstream.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

# -inf teacher logits (a masked / banned vocabulary) are floored here: a token the teacher forbids then costs
# a very large but finite penalty, instead of an inf reward or KL whose gradient is nan.
TEACHER_LOGIT_FLOOR = -1e4

Tensor = torch.Tensor

REDUCTIONS = ("token_mean", "sum", "seq_mean")


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _upcast(x: Tensor) -> Tensor:
    """fp16/bf16 -> float32; every other dtype unchanged."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def _as_weights(mask: Optional[Tensor], like: Tensor) -> Tensor:
    """Mask as float weights with ``like``'s shape / dtype (None = all ones)."""
    if mask is None:
        return torch.ones_like(like)
    return mask.to(like.dtype).expand_as(like)


def masked_sum(x: Tensor, mask: Optional[Tensor], dim=None) -> Tensor:
    """``sum(x * mask)``, over everything or over ``dim``.

    Masked-out positions are replaced by 0 before weighting, so ``inf``/``nan``
    there cannot leak into the sum or its gradient.
    """
    if mask is None:
        return x.sum() if dim is None else x.sum(dim)
    w = _as_weights(mask, x)
    xs = torch.where(w != 0, x, torch.zeros_like(x)) * w
    return xs.sum() if dim is None else xs.sum(dim)


def masked_mean(x: Tensor, mask: Optional[Tensor], dim=None) -> Tensor:
    """``sum(x * mask) / sum(mask)``; 0 (not ``nan``) where the mask is empty."""
    if mask is None:
        return x.mean() if dim is None else x.mean(dim)
    w = _as_weights(mask, x)
    num = masked_sum(x, w, dim)
    den = w.sum() if dim is None else w.sum(dim)
    safe = torch.where(den != 0, den, torch.ones_like(den))
    return torch.where(den != 0, num / safe, torch.zeros_like(num))


def _reduce(per_token: Tensor, mask: Optional[Tensor], reduction: str) -> Tensor:
    """Shared reduction of a ``[B, T]`` per-token loss.

    * ``"token_mean"``: sum over valid tokens of the whole batch / number of
      valid tokens (every token weighs the same; DAPO / TRL "dapo"-style).
    * ``"sum"``: sum over the tokens of each sequence, then mean over the B
      sequences, i.e. total / B (tinker-cookbook sums per sequence; dividing by
      B keeps the scale independent of batch size).
    * ``"seq_mean"``: mean over the valid tokens of each sequence, then mean
      over all B sequences (GRPO paper; a sequence with an empty mask counts
      as 0 and still counts in the denominator B).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    if reduction == "token_mean":
        return masked_mean(per_token, mask)
    B = per_token.shape[0]
    if reduction == "sum":
        return masked_sum(per_token, mask) / B
    return masked_mean(per_token, mask, dim=-1).mean()


def _kl_terms(p: Tensor, logp: Tensor, logq: Tensor) -> Tensor:
    """Elementwise ``p * (logp - logq)`` with the convention ``0 * anything = 0``.

    Both the value and the gradient are 0 where ``p == 0`` (the difference is
    replaced *before* multiplying, so ``-inf - -inf`` never reaches autograd).
    """
    pos = p > 0
    diff = torch.where(pos, logp - logq, torch.zeros_like(logp))
    return p * diff


def _finite_floor(logp: Tensor) -> Tensor:
    """Replace ``-inf`` by the most negative finite number (gradient 0 there)."""
    return logp.clamp(min=torch.finfo(logp.dtype).min)


# --------------------------------------------------------------------------- #
# basic quantities
# --------------------------------------------------------------------------- #
def token_logprobs(logits: Tensor, ids: Tensor) -> Tensor:
    """``log softmax(logits)[ids]``: ``[B, T, V]`` x ``[B, T]`` -> ``[B, T]``.

    ``-inf`` entries in the vocabulary are fine (log_softmax is stable there);
    ids must be valid indices (replace ``-100`` by any id and mask it).
    """
    logp = torch.log_softmax(_upcast(logits), dim=-1)
    return logp.gather(-1, ids.long().unsqueeze(-1)).squeeze(-1)


def entropy(logits: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Shannon entropy ``H_t = -sum_v p log p`` of each position's softmax.

    Returns ``(masked mean over positions, per_token [B, T])``. Used for the
    REOPOLD high-entropy token selection and OmniOPD chunk choice.
    """
    logp = torch.log_softmax(_upcast(logits), dim=-1)
    p = logp.exp()
    per_token = -_kl_terms(p, logp, torch.zeros_like(logp)).sum(-1)
    return masked_mean(per_token, mask), per_token


def cross_entropy_loss(logits: Tensor, targets: Tensor,
                       mask: Optional[Tensor]) -> Tensor:
    """SFT / sequence-level KD loss: ``mean_t m_t * (-log pi(y*_t))``.

    Masked token mean over the batch. ``targets`` may hold ``-100`` (or any
    junk) where the mask is 0; ``mask=None`` means ``targets != -100``.
    """
    return _cross_entropy(logits, targets, mask, token_logprobs)


def _cross_entropy(logits: Tensor, targets: Tensor, mask: Optional[Tensor], logprobs_fn) -> Tensor:
    if mask is None:
        mask = targets != -100
    valid = mask.bool() if mask.dtype == torch.bool else mask != 0
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
    nll = -logprobs_fn(logits, safe_targets)
    return masked_mean(nll, mask)


def discounted_returns(rewards: Tensor, mask: Optional[Tensor],
                       gamma: float) -> Tensor:
    """``A_t = m_t * sum_{k>=0} gamma^k m_{t+k} r_{t+k}`` (tinker-cookbook OPD).

    Discounted reward-to-go computed inside each row. Rewards at masked-out
    positions are dropped (they may be ``-inf``) but do *not* reset the sum, so
    a masked token in the middle of a completion (e.g. a masked format token)
    is skipped while the discount still counts its step. ``gamma=0`` returns
    ``rewards * mask``, the Thinking Machines default.
    """
    if mask is None:
        mask = torch.ones_like(rewards)
    w = _as_weights(mask, rewards)
    r = torch.where(w != 0, rewards, torch.zeros_like(rewards)) * w
    if gamma == 0:
        return r
    T = r.shape[-1]
    out = torch.empty_like(r)
    running = torch.zeros_like(r[..., 0])
    for t in range(T - 1, -1, -1):
        running = r[..., t] + gamma * running
        out[..., t] = running
    return torch.where(w != 0, out, torch.zeros_like(out))


# --------------------------------------------------------------------------- #
# on-policy distillation: sampled-token (policy-gradient) form
# --------------------------------------------------------------------------- #
def opd_token_rewards(student_logprobs: Tensor, teacher_logprobs: Tensor) -> Tensor:
    """Per-token OPD reward ``r_t = log q(y_t) - log pi(y_t)``, detached.

    Thinking Machines "On-Policy Distillation" blog / tinker-cookbook: the
    reward is the negative per-token reverse KL, ``E_{y~pi}[r_t] = -KL(pi||q)``.
    """
    return (teacher_logprobs.detach() - student_logprobs.detach())


def sampled_token_opd_loss(student_logprobs: Tensor, advantages: Tensor,
                           mask: Optional[Tensor],
                           reduction: str = "token_mean",
                           sampler_logprobs: Optional[Tensor] = None) -> Tensor:
    """Policy-gradient surrogate for sampled-token reverse-KL OPD.

    Thinking Machines OPD blog / tinker-cookbook ``importance_sampling`` loss:
    ``L = -sum_t m_t * sg(A_t) * log pi(y_t)``, with ``A_t = r_t`` (or the
    discounted / baselined variants below). Its gradient is an unbiased
    estimate of ``grad KL(pi||q)`` when the tokens were sampled from ``pi``.

    With ``sampler_logprobs`` (tokens came from an older / different policy)
    the surrogate becomes ``-sum_t m_t * sg(A_t) * ratio_t`` with
    ``ratio_t = exp(log pi - sg(log pi_sampler))``; at ratio 1 both forms give
    the same gradient.

    ``reduction``: ``"token_mean"`` (divide by valid tokens in the batch),
    ``"sum"`` (sum over tokens, mean over sequences: total / B), or
    ``"seq_mean"`` (mean over tokens per sequence, then over sequences).
    """
    adv = advantages.detach()
    if adv.dim() == student_logprobs.dim() - 1:
        adv = adv.unsqueeze(-1)
    if sampler_logprobs is None:
        per_token = -adv * student_logprobs
    else:
        ratio = torch.exp(student_logprobs - sampler_logprobs.detach())
        per_token = -adv * ratio
    return _reduce(per_token, mask, reduction)


def vopd_advantages(token_rewards: Tensor, per_token_kl: Tensor) -> Tensor:
    """vOPD control-variate advantage ``A_t = r_t + sg(KL_t)`` (arXiv 2605.07865).

    ``KL_t = KL(pi||q)(s_t)`` from the same forward pass (e.g. the per-token
    output of :func:`full_reverse_kl`). Since ``E_{y~pi}[r_t] = -KL_t`` this
    subtracts the exact mean-reward state baseline: the estimator stays
    unbiased. Its variance usually drops (a spread-out student under a peaked
    teacher: about -40% on a 4-token toy), but the mean is not the
    variance-optimal baseline, and for a confident student on a token the
    teacher dislikes the variance can *rise* (see tests/test_losses.py).
    """
    return token_rewards.detach() + per_token_kl.detach()


def clip_rewards(rewards: Tensor, floor: float = -2.0) -> Tensor:
    """REOPOLD reward floor ``r^_t = max(sg(r_t), c)`` (arXiv 2603.11137).

    The floor ``c = -2`` is *unverified* (the paper's constant could not be
    read in full); expose it. Tokens where the floor is active can be found
    with ``rewards < floor`` (REOPOLD phase 1 drops them from the mask).
    """
    return rewards.detach().clamp(min=floor)


def gopd_advantages(student_logprobs: Tensor, teacher_logprobs: Tensor,
                    ref_logprobs: Tensor, lmbda_reward: float = 1.0) -> Tensor:
    """G-OPD / ExOPD advantage (arXiv 2602.12125), detached.

    ``A_t = lmbda * log q(y_t) + (1 - lmbda) * log pi_ref(y_t) - log pi(y_t)``,
    the per-token reward of ``J = E[lmbda log(q/pi_ref) - KL(pi||pi_ref)]``
    whose optimum is ``pi ∝ q^lmbda pi_ref^(1-lmbda)``. ``lmbda = 1`` returns
    exactly :func:`opd_token_rewards` (the reference cancels; it is not read,
    so a ``-inf`` there cannot leak); ``lmbda = 1.25`` is ExOPD.
    """
    if lmbda_reward == 1.0:
        return opd_token_rewards(student_logprobs, teacher_logprobs)
    q = teacher_logprobs.detach()
    ref = ref_logprobs.detach()
    return lmbda_reward * q + (1.0 - lmbda_reward) * ref - student_logprobs.detach()


# --------------------------------------------------------------------------- #
# on-policy distillation: full-distribution forms
# --------------------------------------------------------------------------- #
def full_reverse_kl(student_logits: Tensor, teacher_logits: Tensor,
                    mask: Optional[Tensor] = None,
                    temperature: float = 1.0) -> Tuple[Tensor, Tensor]:
    """Analytic full-vocabulary reverse KL ``sum_v p_S (log p_S - log p_T)``.

    METHODS "full-vocabulary reverse KL" (the dense counterpart of the
    Thinking Machines sampled-token estimator; GKD's beta=1 end point), at
    the student's own prefixes, backpropagated directly through the student
    (teacher detached, state distribution held fixed).

    Returns ``(masked mean over positions, per_token [B, T])``. Entries where
    the student has probability 0 contribute 0 (no ``nan`` even if the teacher
    is ``-inf`` there).
    """
    s = torch.log_softmax(_upcast(student_logits) / temperature, dim=-1)
    t = torch.log_softmax(_upcast(teacher_logits).detach() / temperature, dim=-1)
    per_token = _kl_terms(s.exp(), s, t).sum(-1)
    return masked_mean(per_token, mask), per_token


def gopd_full_kl(student_logits: Tensor, teacher_logits: Tensor,
                 ref_logits: Optional[Tensor], lmbda_reward: float = 1.0,
                 mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """G-OPD / ExOPD with a full-vocabulary target (Yang et al., arXiv 2602.12125).

    G-OPD maximises ``J = E[lmbda log(q / pi_ref) - KL(pi || pi_ref)]``, whose
    optimum is ``pi* ∝ pi_ref^(1 - lmbda) q^lmbda``: per position, the target
    ``log pi* = log_softmax(log pi_ref + lmbda (log q - log pi_ref))``, the
    teacher's log-probs extrapolated away from the reference (``lmbda > 1``,
    ExOPD: "going past the teacher") or interpolated towards it
    (``lmbda < 1``). This loss is the exact reverse KL ``KL(pi || pi*)`` over
    the vocabulary at the student's states, the dense counterpart of
    :func:`gopd_advantages` (whose per-token reward has expectation
    ``-KL(pi || pi*)`` up to the per-state log-normaliser of ``pi*``, which
    has no gradient). ``lmbda = 1`` is :func:`full_reverse_kl` to the teacher
    (the reference is not read; it may be None).

    Teacher and reference detached; their log-probs are floored at
    ``TEACHER_LOGIT_FLOOR`` before extrapolating (``-inf - -inf`` is nan).
    Returns ``(masked mean over positions, per_token [B, T])``.
    """
    if not lmbda_reward > 0:
        raise ValueError(f"lmbda_reward must be positive, got {lmbda_reward}")
    if lmbda_reward == 1.0:
        return full_reverse_kl(student_logits, teacher_logits, mask)
    if ref_logits is None:
        raise ValueError("gopd_full_kl with lmbda_reward != 1 needs the reference model's logits (ref_logits)")
    s = torch.log_softmax(_upcast(student_logits), dim=-1)
    # floored at TEACHER_LOGIT_FLOOR, not at the dtype's minimum: lmbda x (a finite log q - a minimal log ref)
    # would overflow to inf
    t = torch.log_softmax(_upcast(teacher_logits).detach(), dim=-1).clamp(min=TEACHER_LOGIT_FLOOR)
    r = torch.log_softmax(_upcast(ref_logits).detach(), dim=-1).clamp(min=TEACHER_LOGIT_FLOOR)
    target = torch.log_softmax(r + lmbda_reward * (t - r), dim=-1)
    per_token = _kl_terms(s.exp(), s, target).sum(-1)
    return masked_mean(per_token, mask), per_token


def kl_to_reference(student_logits: Tensor, ref_logits: Tensor,
                    mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """``KL(pi_theta || pi_ref)`` over the full vocabulary, masked token mean.

    The anchor term of Stable-OPD (Luo et al., 2604.08527) and the KL penalty
    of KL-regularised RL / G-OPD (2602.12125). Gradient flows through the
    student only. Returns ``(loss, per_token [B, T])``.
    """
    return full_reverse_kl(student_logits, ref_logits.detach(), mask=mask)


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor,
                    beta: float = 0.5, temperature: float = 1.0,
                    mask: Optional[Tensor] = None) -> Tensor:
    """Generalised JSD of GKD (Agarwal et al. 2023), TRL ``generalized_jsd_loss``.

    ``s = log_softmax(z_S / T)``, ``t = log_softmax(z_T / T)``:

    * ``beta == 0``: forward KL ``sum_v p_T (t - s)``;
    * ``beta == 1``: reverse KL ``sum_v p_S (s - t)``;
    * otherwise ``log m = logsumexp([s + log(1-beta), t + log beta])``
      (``m = (1-beta) p_S + beta p_T``) and
      ``JSD = beta KL(p_T || m) + (1-beta) KL(p_S || m)``.

    Reduction "batchmean" as in TRL: sum over valid positions / number of
    valid positions (``mask=None``: all ``B*T`` positions). No ``T^2`` factor.
    Teacher detached.

    Endpoint behaviour: the family is *discontinuous* at both ends. As
    ``beta -> 1`` the mixture tends to ``p_T`` and the value tends to 0 (beta
    0.99 is only about 1% of the reverse KL), yet ``beta == 1`` switches to the
    full reverse KL; likewise ``beta -> 0`` vs the forward KL at ``beta == 0``.
    """
    return masked_mean(_jsd_per_token(student_logits, teacher_logits, beta, temperature), mask)


def _jsd_per_token(student_logits: Tensor, teacher_logits: Tensor, beta: float, temperature: float) -> Tensor:
    """Per-position generalised JSD ``[B, T]`` of :func:`generalized_jsd` (before its reduction)."""
    s = torch.log_softmax(_upcast(student_logits) / temperature, dim=-1)
    t = torch.log_softmax(_upcast(teacher_logits).detach() / temperature, dim=-1)
    if beta == 0:
        per_elem = _kl_terms(t.exp(), t, s)
    elif beta == 1:
        per_elem = _kl_terms(s.exp(), s, t)
    else:
        if not 0.0 < beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        # clamp -inf to a finite floor so logsumexp's backward never sees -inf - -inf
        log_m = torch.logsumexp(torch.stack([
            _finite_floor(s) + math.log(1.0 - beta),
            _finite_floor(t) + math.log(beta),
        ]), dim=0)
        per_elem = (beta * _kl_terms(t.exp(), t, log_m)
                    + (1.0 - beta) * _kl_terms(s.exp(), s, log_m))
    return per_elem.sum(-1)


def topk_reverse_kl(student_logits: Tensor, teacher_logits: Tensor,
                    mask: Optional[Tensor] = None, k: int = 4,
                    renormalize: bool = True,
                    sampled_ids: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Teacher top-K local support matching (Fu et al. 2026, arXiv 2603.25562).

    At each position the support ``S`` is the teacher's top-``k`` token ids
    (entries with a ``-inf`` teacher logit are left out), united with the
    sampled token ``sampled_ids[b, t]`` when given. Implemented as a boolean
    support mask over the vocabulary, so ``|S|`` may be ``k`` or ``k+1``.

    * ``renormalize=True`` (the method): log_softmax of both models' logits
      restricted to ``S``, ``L_t = sum_{v in S} p^_S (log p^_S - log p^_T)``,
      a proper KL between two distributions on ``S`` (>= 0).
    * ``renormalize=False`` (the paper's ablation that collapses): the raw
      full-softmax log-probs restricted to ``S``,
      ``L_t = sum_{v in S} p_S (log p_S - log p_T)``; not a divergence, it
      can go negative.

    Teacher detached. Returns ``(masked mean, per_token [B, T])``.
    """
    zs = _upcast(student_logits)
    zt = _upcast(teacher_logits).detach()
    V = zt.shape[-1]
    k = min(k, V)
    top = zt.topk(k, dim=-1).indices
    support = torch.zeros(zt.shape, dtype=torch.bool, device=zt.device)
    support.scatter_(-1, top, True)
    support &= torch.isfinite(zt)
    if sampled_ids is not None:
        support.scatter_(-1, sampled_ids.long().unsqueeze(-1), True)
    neg_inf = torch.tensor(float("-inf"), dtype=zs.dtype, device=zs.device)
    if renormalize:
        s = torch.log_softmax(torch.where(support, zs, neg_inf), dim=-1)
        t = torch.log_softmax(torch.where(support, zt, neg_inf), dim=-1)
    else:
        s = torch.log_softmax(zs, dim=-1)
        t = torch.log_softmax(zt, dim=-1)
    p = torch.where(support, s.exp(), torch.zeros_like(s))
    per_token = _kl_terms(p, s, t).sum(-1)
    return masked_mean(per_token, mask), per_token


def topk_overlap(student_logits: Tensor, teacher_logits: Tensor, k: int,
                 mask: Optional[Tensor] = None) -> Tensor:
    """Top-k overlap ratio ``|topk_S ∩ topk_T| / k`` (Li et al., arXiv 2604.13016).

    Mean over valid positions (a diagnostic: no gradient). Rises from ~0.72 to
    > 0.91 in successful OPD runs. Ties are broken by ``torch.topk``.
    """
    with torch.no_grad():
        return masked_mean(_topk_overlap_per_token(_upcast(student_logits), _upcast(teacher_logits), k), mask)


def _topk_overlap_per_token(zs: Tensor, zt: Tensor, k: int) -> Tensor:
    """``|topk_S ∩ topk_T| / k`` at each position ``[B, T]`` (of :func:`topk_overlap`)."""
    k = min(k, zs.shape[-1])
    ms = torch.zeros(zs.shape, dtype=torch.bool, device=zs.device)
    mt = torch.zeros(zt.shape, dtype=torch.bool, device=zt.device)
    ms.scatter_(-1, zs.topk(k, dim=-1).indices, True)
    mt.scatter_(-1, zt.topk(k, dim=-1).indices, True)
    return (ms & mt).sum(-1).to(zs.dtype) / k


# --------------------------------------------------------------------------- #
# low-memory forms: the functions above over chunks of positions (issue 22)
# --------------------------------------------------------------------------- #
# At a real vocabulary (V = 151,936) one float32 [B, T, V] tensor is 2.5 GB at 16 x 256 positions, and each
# upcast, log_softmax, exp or where of the functions above makes another. The *_chunked forms run the same
# functions on chunks of positions, upcasting one chunk at a time, so the only [B, T, V] tensors they keep are
# the caller's logits (in the model's dtype) and, for a loss that needs a gradient, one gradient buffer.
# Each position's value comes from the same ops on the same row as the reference function; only the final
# sum over positions is added in another order, so they agree to float32 rounding (tests/test_losses.py).
CHUNK_BYTES = 16 * 2**20       # float32 bytes of one chunk's upcast logits (its transients are a few times this)


def _upcast_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def position_chunks(shape, chunk_bytes: Optional[int] = None):
    """Index tuples ``(batch slice, position slice)`` covering ``[B, T]`` of a ``[B, T, V]`` tensor, about
    ``chunk_bytes`` of float32 logits each: whole rows while a row fits, else slices of one row's positions,
    so indexing gives views, never copies (also of a strided view such as ``logits[:, :-1]``)."""
    if len(shape) != 3:
        raise ValueError(f"chunked losses take [B, T, V] logits, got shape {tuple(shape)}")
    B, T, V = shape
    rows = max(1, (chunk_bytes or CHUNK_BYTES) // (4 * max(V, 1)))
    if rows >= T:
        step = max(1, rows // max(T, 1))
        for b in range(0, B, step):
            yield slice(b, min(b + step, B)), slice(None)
    else:
        for b in range(B):
            for t in range(0, T, rows):
                yield slice(b, b + 1), slice(t, min(t + rows, T))


def chunk_positions(shape, chunk_bytes: Optional[int] = None) -> int:
    """The most positions one chunk of :func:`position_chunks` holds (the memory planner sizes chunks with it)."""
    B, T, V = shape
    rows = max(1, (chunk_bytes or CHUNK_BYTES) // (4 * max(V, 1)))
    return min(B, max(1, rows // max(T, 1))) * T if rows >= T else rows


def _per_position(fn, logits: Tensor, others: tuple, chunk_bytes: Optional[int]) -> Tensor:
    """``fn(logits, *others)`` -> ``[B, T]``, evaluated chunk by chunk (``others``: ``[B, T, ...]`` or None)."""
    out = torch.empty(logits.shape[:-1], dtype=_upcast_dtype(logits.dtype), device=logits.device)
    for i in position_chunks(logits.shape, chunk_bytes):
        out[i] = fn(logits[i], *(None if o is None else o[i] for o in others))
    return out


class _TokenLogprobs(torch.autograd.Function):
    """:func:`token_logprobs` chunk by chunk; backward rebuilds each chunk's softmax instead of keeping a
    ``[B, T, V]`` log-softmax alive between forward and backward."""

    @staticmethod
    def forward(ctx, logits, ids, chunk_bytes):
        ctx.save_for_backward(logits, ids)
        ctx.chunk_bytes = chunk_bytes
        return _per_position(token_logprobs, logits, (ids,), chunk_bytes)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        logits, ids = ctx.saved_tensors
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for i in position_chunks(logits.shape, ctx.chunk_bytes):
            # log_softmax's backward at a one-hot upstream gradient g: g * (onehot - softmax)
            gi = g[i].unsqueeze(-1)
            gc = torch.log_softmax(_upcast(logits[i]), dim=-1).exp().mul_(-gi)
            gc.scatter_add_(-1, ids[i].long().unsqueeze(-1), gi)
            grad[i] = gc
        return grad, None, None


def token_logprobs_chunked(logits: Tensor, ids: Tensor, chunk_bytes: Optional[int] = None) -> Tensor:
    """:func:`token_logprobs` over chunks of positions: same values and gradient, no ``[B, T, V]`` copy."""
    if logits.requires_grad and torch.is_grad_enabled():
        return _TokenLogprobs.apply(logits, ids, chunk_bytes)
    with torch.no_grad():
        return _per_position(token_logprobs, logits, (ids,), chunk_bytes)


def cross_entropy_loss_chunked(logits: Tensor, targets: Tensor, mask: Optional[Tensor]) -> Tensor:
    """:func:`cross_entropy_loss` with :func:`token_logprobs_chunked` (same value and gradient)."""
    return _cross_entropy(logits, targets, mask, token_logprobs_chunked)


class _ChunkedLoss(torch.autograd.Function):
    """``masked_mean(per_token_fn(student, *others), mask)`` whose gradient is computed in the forward, chunk
    by chunk (autograd through `per_token_fn` on each chunk), into one buffer; the backward scales it.

    So neither the per-chunk intermediates nor the teacher's logits need to live until the backward: the
    caller may free them as soon as the loss is computed. The gradient of each chunk is the reference's:
    the chain ``1/den -> * w -> where -> per_token_fn`` is the one `masked_mean` builds.
    """

    @staticmethod
    def forward(ctx, student_logits, per_token_fn, others, mask, chunk_bytes):
        per_token = torch.empty(student_logits.shape[:-1], dtype=_upcast_dtype(student_logits.dtype),
                                device=student_logits.device)
        w = _as_weights(mask, per_token)
        den = w.sum()
        safe = torch.where(den != 0, den, torch.ones_like(den))
        grad = torch.empty(student_logits.shape, dtype=student_logits.dtype, device=student_logits.device)
        for i in position_chunks(student_logits.shape, chunk_bytes):
            x = student_logits[i].detach().requires_grad_()
            with torch.enable_grad():
                pt = per_token_fn(x, *(None if o is None else o[i] for o in others))
                wi = w[i]
                part = (torch.where(wi != 0, pt, torch.zeros_like(pt)) * wi).sum() / safe
            grad[i] = torch.autograd.grad(part, x)[0]
            per_token[i] = pt.detach()
        ctx.grad = grad
        ctx.mark_non_differentiable(per_token)
        return masked_mean(per_token, mask), per_token

    @staticmethod
    @once_differentiable
    def backward(ctx, g_loss, _g_per_token):
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            raise RuntimeError("a chunked loss frees its gradient buffer in the first backward; "
                               "backward(retain_graph=True) twice through it is not supported")
        return grad.mul_(g_loss), None, None, None, None


def _chunked(per_token_fn, student_logits: Tensor, others: tuple, mask: Optional[Tensor],
             chunk_bytes: Optional[int]) -> Tuple[Tensor, Tensor]:
    """(masked mean, per_token) of ``per_token_fn`` over chunks; differentiable in ``student_logits`` only."""
    if student_logits.requires_grad and torch.is_grad_enabled():
        return _ChunkedLoss.apply(student_logits, per_token_fn, others, mask, chunk_bytes)
    with torch.no_grad():
        per_token = _per_position(per_token_fn, student_logits, others, chunk_bytes)
        return masked_mean(per_token, mask), per_token


def full_reverse_kl_chunked(student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None,
                            temperature: float = 1.0, chunk_bytes: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """:func:`full_reverse_kl` over chunks of positions (same value and gradient; the per-token output
    carries no gradient)."""
    return _chunked(lambda s, t: full_reverse_kl(s, t, temperature=temperature)[1], student_logits,
                    (teacher_logits.detach(),), mask, chunk_bytes)


def kl_to_reference_chunked(student_logits: Tensor, ref_logits: Tensor, mask: Optional[Tensor] = None,
                            chunk_bytes: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """:func:`kl_to_reference` over chunks of positions."""
    return full_reverse_kl_chunked(student_logits, ref_logits, mask, chunk_bytes=chunk_bytes)


def generalized_jsd_chunked(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5,
                            temperature: float = 1.0, mask: Optional[Tensor] = None,
                            chunk_bytes: Optional[int] = None) -> Tensor:
    """:func:`generalized_jsd` over chunks of positions (same value and gradient)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    return _chunked(lambda s, t: _jsd_per_token(s, t, beta, temperature), student_logits,
                    (teacher_logits.detach(),), mask, chunk_bytes)[0]


def topk_reverse_kl_chunked(student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None,
                            k: int = 4, renormalize: bool = True, sampled_ids: Optional[Tensor] = None,
                            chunk_bytes: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """:func:`topk_reverse_kl` over chunks of positions (same value and gradient)."""
    return _chunked(lambda s, t, ids: topk_reverse_kl(s, t, k=k, renormalize=renormalize, sampled_ids=ids)[1],
                    student_logits, (teacher_logits.detach(), sampled_ids), mask, chunk_bytes)


@torch.no_grad()
def step_statistics(student_logits: Tensor, teacher_logits: Optional[Tensor] = None,
                    mask: Optional[Tensor] = None, k: int = 4,
                    chunk_bytes: Optional[int] = None) -> dict:
    """The trainer's per-step diagnostics in one pass over chunks of positions (masked means, 0-dim tensors).

    ``entropy`` = :func:`entropy`; with a teacher also ``reverse_kl`` = :func:`full_reverse_kl`,
    ``topk_overlap`` = :func:`topk_overlap` at ``k`` and ``top1_overlap`` at 1. Each chunk is upcast once
    and its student log-softmax serves both the entropy and the KL (the same ops as those functions).
    """
    shape = student_logits.shape
    names = ("entropy",) + (("reverse_kl", "topk_overlap", "top1_overlap") if teacher_logits is not None else ())
    out = {n: torch.empty(shape[:-1], dtype=_upcast_dtype(student_logits.dtype), device=student_logits.device)
           for n in names}
    for i in position_chunks(shape, chunk_bytes):
        zs = _upcast(student_logits[i])
        s = torch.log_softmax(zs, dim=-1)
        p = s.exp()
        out["entropy"][i] = -_kl_terms(p, s, torch.zeros_like(s)).sum(-1)
        if teacher_logits is not None:
            zt = _upcast(teacher_logits[i])
            out["reverse_kl"][i] = _kl_terms(p, s, torch.log_softmax(zt, dim=-1)).sum(-1)
            out["topk_overlap"][i] = _topk_overlap_per_token(zs, zt, k)
            out["top1_overlap"][i] = _topk_overlap_per_token(zs, zt, 1)
    return {n: masked_mean(v, mask) for n, v in out.items()}


def horizon_mask(mask: Tensor, horizon: int) -> Tensor:
    """``mask`` with every completion position ``t >= horizon`` set to 0.

    The ablation of "the teacher's benefit decays with prefix length" (Li et al.,
    arXiv 2604.13016; Fu et al., arXiv 2603.25562): teacher supervision on the
    first ``horizon`` tokens of each response only. Position ``t`` is the
    index along the completion (completions start at column 0 of ``[B, T]``
    tensors: prompts are padded on the left, completions on the right).
    """
    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
        raise ValueError(f"horizon must be a positive integer (tokens of teacher supervision), got {horizon!r}")
    keep = torch.arange(mask.shape[-1], device=mask.device) < horizon
    return mask * keep.to(mask.dtype) if mask.dtype != torch.bool else mask & keep


# --------------------------------------------------------------------------- #
# outcome RL
# --------------------------------------------------------------------------- #
def grpo_advantages(rewards: Tensor, group_size: int, scale_rewards: bool = True,
                    eps: float = 1e-4) -> Tensor:
    """Group-relative advantages (GRPO, DeepSeekMath; Dr. GRPO, Liu et al. 2025).

    ``rewards``: ``[N]`` with the ``group_size`` rollouts of each prompt
    contiguous (``rewards.view(-1, group_size)``, TRL's layout).
    ``A_i = (R_i - mean_group R) / (std_group R + eps)`` with the *unbiased*
    (Bessel-corrected, ``n-1``) std like TRL's ``Tensor.std()``;
    ``scale_rewards=False`` is Dr. GRPO: ``A_i = R_i - mean_group R``.
    A group whose rewards are all equal gets advantage 0. ``group_size == 1``
    gives all zeros. Returns ``[N]`` (detached).
    """
    r = rewards.detach()
    if group_size < 1 or r.numel() % group_size != 0:
        raise ValueError(
            f"{r.numel()} rewards cannot be split into groups of {group_size}")
    g = r.reshape(-1, group_size).to(torch.promote_types(r.dtype, torch.float32))
    adv = g - g.mean(dim=1, keepdim=True)
    if scale_rewards and group_size > 1:
        adv = adv / (g.std(dim=1, keepdim=True) + eps)
    return adv.reshape(r.shape)


def zero_adv_frac(rewards: Tensor, group_size: int) -> float:
    """Fraction of groups whose rewards are all equal (no GRPO learning signal).

    The "sparse credit" diagnostic of METHODS (all right or all wrong).
    """
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"{rewards.numel()} rewards cannot be split into groups of {group_size}")
    g = rewards.detach().reshape(-1, group_size)
    same = (g.max(dim=1).values == g.min(dim=1).values)
    return same.float().mean().item()


def policy_gradient_loss(logprobs: Tensor, old_logprobs: Optional[Tensor],
                         advantages: Tensor, mask: Optional[Tensor],
                         clip_eps: Optional[float] = None,
                         reduction: str = "token_mean") -> Tensor:
    """REINFORCE / PPO-clip surrogate (Williams 1992; Schulman et al. 2017; GRPO).

    ``advantages``: ``[B]`` (one per rollout, broadcast over its tokens) or
    ``[B, T]``; detached. ``ratio = exp(log pi - sg(log pi_old))``
    (``old_logprobs=None``: on-policy, ratio == 1 with the right gradient).

    * ``clip_eps=None``: ``-A * ratio``; at ratio 1 its gradient equals the
      REINFORCE gradient ``-A grad log pi``.
    * ``clip_eps=eps``: PPO ``-min(ratio A, clip(ratio, 1-eps, 1+eps) A)``,
      zero gradient once the ratio leaves the trust region in the direction
      the advantage pushes.

    Reductions as in :func:`sampled_token_opd_loss`.
    """
    adv = advantages.detach()
    if adv.dim() == logprobs.dim() - 1:
        adv = adv.unsqueeze(-1)
    old = logprobs.detach() if old_logprobs is None else old_logprobs.detach()
    ratio = torch.exp(logprobs - old)
    if clip_eps is None:
        per_token = -adv * ratio
    else:
        clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
        per_token = -torch.minimum(ratio * adv, clipped * adv)
    return _reduce(per_token, mask, reduction)


# --------------------------------------------------------------------------- #
# agentic self-distillation
# --------------------------------------------------------------------------- #
def sdar_loss(student_logprobs: Tensor, teacher_logprobs: Tensor,
              mask: Optional[Tensor], beta_gate: float = 5.0) -> Tensor:
    """SDAR gated self-distillation term (arXiv 2605.15155).

    ``Delta_t = sg(log T) - sg(log S)``, gate ``g_t = sigmoid(beta_gate *
    Delta_t)`` (detached) and ``L = masked_mean(g_t * (sg(log T) - log S))``,
    so ``grad L = -mean_t g_t grad log S``: tokens the privileged teacher
    likes more than the student are pushed up hardest. Added to GRPO with a
    small coefficient (0.01..0.1). ``beta_gate = 0`` is the constant gate 0.5
    (naive GRPO + self-distillation, reported unstable).
    """
    t = teacher_logprobs.detach()
    gate = torch.sigmoid(beta_gate * (t - student_logprobs.detach()))
    return masked_mean(gate * (t - student_logprobs), mask)
