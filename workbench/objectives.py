"""The training objectives, one entry each: where in the 2x2 table it is allowed, what models it needs,
and how it turns a scored batch into a loss and its per-step statistics.

    register(Objective("my_loss", corners=(("student", "dense"),), needs_teacher=True,
                       compute=lambda b, cfg, stats: ...))
    TrainConfig(method="opd", loss="my_loss")          # validated, trained, selectable from the CLI

The config's validation (`config.validate`), the trainer (which models to load, what to score, which
loss to call), the pair loader (`pairs.trainer_for`: load the teacher or not) and the CLI (`--loss`)
all read this registry; adding an objective is one `register` call. The losses themselves stay small
pure functions in `losses.py` (each with its paper); an entry only wires one to the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import losses as L

SOURCES = ("teacher", "student")
SIGNALS = ("dense", "sparse")


@dataclass
class LossInputs:
    """What the trainer has for one batch when it asks an objective for its loss.

    Log-prob and logit tensors are over the completion tokens ([B, N] and [B, N, V]); `mask` is the
    loss mask (the completion mask, less EOS positions under `mask_special_tokens`); `t_*` are None
    unless the objective `needs_teacher`, `ref_logits` None unless a reference model is loaded;
    `sampler_lp` holds log mu of a tempered / truncated sampler (None: the samples are the student's own).
    `chunked`: the logits may be in the model's dtype and the objective must use the `losses.*_chunked` forms
    (same values and gradients, no [B, N, V] float32 copies; the trainer's default, issue 22).
    """
    rollout: object                 # rollout.Rollout
    mask: torch.Tensor
    rewards: torch.Tensor           # [B] verifier rewards
    s_logits: torch.Tensor
    s_lp: torch.Tensor
    t_logits: torch.Tensor | None
    t_lp: torch.Tensor | None
    ref_logits: torch.Tensor | None
    sampler_lp: torch.Tensor | None = None
    chunked: bool = False


@dataclass(frozen=True)
class Objective:
    name: str
    corners: tuple[tuple[str, str], ...]      # (source, signal) pairs of the 2x2 table that allow it
    compute: Callable                          # (LossInputs, cfg, stats: dict) -> scalar loss; may add to stats
    needs_teacher: bool = False                # the teacher scores every token of every batch
    needs_reference: Callable = lambda cfg: False   # does this config need pi_ref (the frozen initial student)?
    doc: str = ""


OBJECTIVES: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    bad = [c for c in objective.corners if c[0] not in SOURCES or c[1] not in SIGNALS]
    if bad or not objective.corners:
        raise ValueError(f"objective {objective.name!r}: corners must be (source, signal) pairs with source in "
                         f"{SOURCES} and signal in {SIGNALS}, got {objective.corners!r}")
    OBJECTIVES[objective.name] = objective
    return objective


def unregister(name: str) -> None:
    OBJECTIVES.pop(name, None)


def get(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise KeyError(f"unknown loss {name!r}; registered objectives: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def losses_for(source: str, signal: str) -> tuple[str, ...]:
    """The objectives allowed in one corner of the 2x2 table, in registration order."""
    return tuple(o.name for o in OBJECTIVES.values() if (source, signal) in o.corners)


def teacher_scores(cfg) -> bool:
    """Does the teacher score every batch (the objective reads its logits)?"""
    return get(cfg.loss).needs_teacher


def needs_teacher_model(cfg) -> bool:
    """Must the teacher be loaded? When it scores batches, writes traces (SFT on teacher data) or writes the
    off-policy share of GKD's batches (lmbda < 1)."""
    return teacher_scores(cfg) or cfg.lmbda < 1 or (cfg.source == "teacher" and cfg.sft_data == "teacher")


def needs_reference(cfg) -> bool:
    """Must pi_ref (the frozen initial student) be kept? For the KL anchor, or when the objective uses it."""
    return cfg.kl_coef > 0 or get(cfg.loss).needs_reference(cfg)


def _frac(x: torch.Tensor, mask: torch.Tensor) -> float:
    return (x.float() * mask).sum().item() / max(1.0, mask.sum().item())


# ---- the entries ---------------------------------------------------------------------------------

def _ce(b: LossInputs, cfg, stats):
    weights = b.mask if cfg.signal == "dense" else b.mask * b.rewards[:, None]   # reward-filtered traces
    if cfg.signal == "sparse":
        stats["filter/kept_frac"] = (b.rewards > 0).float().mean().item()
    if b.chunked:       # s_lp is log pi of exactly these targets: the same masked mean, no second log-softmax
        return L.masked_mean(-b.s_lp, weights)
    return L.cross_entropy_loss(b.s_logits, b.rollout.completion_ids, weights)


def _pg(b: LossInputs, cfg, stats):
    adv = L.grpo_advantages(b.rewards, cfg.num_generations, scale_rewards=cfg.scale_rewards)
    stats["grpo/zero_adv_frac"] = L.zero_adv_frac(b.rewards, cfg.num_generations)
    stats["grpo/credited_token_frac"] = _frac((adv != 0)[:, None], b.mask)
    return L.policy_gradient_loss(b.s_lp, b.s_lp.detach() if b.sampler_lp is None else b.sampler_lp, adv, b.mask,
                                  clip_eps=cfg.clip_eps, reduction=cfg.reduction)


def _sampled_token(b: LossInputs, cfg, stats):
    if cfg.reward_scale != 1.0:
        ref_lp = (L.token_logprobs_chunked if b.chunked else L.token_logprobs)(b.ref_logits, b.rollout.completion_ids)
        adv = L.gopd_advantages(b.s_lp, b.t_lp, ref_lp, cfg.reward_scale)
    else:
        adv = L.opd_token_rewards(b.s_lp, b.t_lp)
    if cfg.reward_clip is not None:
        stats["reward/clipped_frac"] = _frac(adv < cfg.reward_clip, b.mask)
        adv = L.clip_rewards(adv, cfg.reward_clip)
    if cfg.vopd:
        _, kl_t = (L.full_reverse_kl_chunked if b.chunked else L.full_reverse_kl)(b.s_logits.detach(), b.t_logits,
                                                                                   b.mask)
        adv = L.vopd_advantages(adv, kl_t)
    adv = L.discounted_returns(adv, b.mask, cfg.gamma)
    stats["opd/advantage_mean"] = L.masked_mean(adv, b.mask).item()
    return L.sampled_token_opd_loss(b.s_lp, adv, b.mask, reduction=cfg.reduction, sampler_logprobs=b.sampler_lp)


def _topk(b: LossInputs, cfg, stats):
    k = min(cfg.teacher_topk, b.s_logits.shape[-1])
    fn = L.topk_reverse_kl_chunked if b.chunked else L.topk_reverse_kl
    return fn(b.s_logits, b.t_logits, b.mask, k=k, renormalize=cfg.topk_renormalize,
              sampled_ids=b.rollout.completion_ids if cfg.topk_include_sampled else None)[0]


def _sdar(b: LossInputs, cfg, stats):
    pg = _pg(b, cfg, stats)
    term = L.sdar_loss(b.s_lp, b.t_lp, b.mask, beta_gate=cfg.sdar_beta_gate)
    stats["sdar/term"] = term.item()
    return pg + cfg.sdar_coef * term


OFF_DENSE, OFF_SPARSE, ON_DENSE, ON_SPARSE = (("teacher", "dense"), ("teacher", "sparse"), ("student", "dense"),
                                              ("student", "sparse"))

register(Objective("ce", (OFF_DENSE, OFF_SPARSE), _ce,
                   doc="cross-entropy on given traces; sparse: weighted by the verifier's reward (filtered SFT)"))
register(Objective("sampled_token", (ON_DENSE,), _sampled_token, needs_teacher=True,
                   needs_reference=lambda cfg: cfg.reward_scale != 1.0,
                   doc="on-policy distillation: log q - log p of each sampled token as its reward "
                       "(G-OPD / ExOPD with reward_scale != 1, vOPD, clipping, discounting)"))
register(Objective("full_kl", (OFF_DENSE, ON_DENSE), lambda b, cfg, stats: (
    L.full_reverse_kl_chunked if b.chunked else L.full_reverse_kl)(b.s_logits, b.t_logits, b.mask)[0],
    needs_teacher=True, doc="analytic full-vocabulary reverse KL"))
register(Objective("jsd", (OFF_DENSE, ON_DENSE), lambda b, cfg, stats: (
    L.generalized_jsd_chunked if b.chunked else L.generalized_jsd)(
    b.s_logits, b.t_logits, beta=cfg.beta, temperature=cfg.jsd_temperature, mask=b.mask), needs_teacher=True,
    doc="GKD's generalised Jensen-Shannon divergence"))
register(Objective("topk", (OFF_DENSE, ON_DENSE), _topk, needs_teacher=True,
                   doc="reverse KL over the teacher's top-K tokens"))
register(Objective("gopd_full", (ON_DENSE,), lambda b, cfg, stats: L.gopd_full_kl(
    b.s_logits, b.t_logits, b.ref_logits, cfg.reward_scale, b.mask)[0], needs_teacher=True,
    needs_reference=lambda cfg: cfg.reward_scale != 1.0,
    doc="G-OPD / ExOPD with a full-vocabulary target: reverse KL to softmax(log pi_ref + reward_scale x "
        "(log q - log pi_ref)); reward_scale 1 is full_kl (arXiv 2602.12125)"))
register(Objective("pg", (ON_SPARSE,), _pg, doc="GRPO: group-relative verifier advantages"))
register(Objective("sdar", (ON_SPARSE,), _sdar, needs_teacher=True,
                   doc="GRPO plus SDAR's gated self-distillation term (sdar_coef x losses.sdar_loss, "
                       "gate sharpness sdar_beta_gate; arXiv 2605.15155)"))
