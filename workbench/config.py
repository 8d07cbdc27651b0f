"""Training configuration: one dataclass, and methods as named presets of it.

The essay's two axes are the first two fields after `method`:
  `source` — where the training text comes from: "teacher" (someone else's
             traces) or "student" (the student's own rollouts);
  `signal` — how dense the supervision is: "dense" (the teacher scores every
             token) or "sparse" (one verifier reward per trajectory).
A method is a small preset of (source, signal, loss, defaults); every field
can be overridden, and `validate()` refuses combinations that make no sense
before any model is loaded.
"""
from __future__ import annotations

import importlib.util
import inspect
import math
import warnings
from dataclasses import FrozenInstanceError, asdict, dataclass, field, fields, replace

import torch

from . import objectives
from .losses import REDUCTIONS
from .objectives import SIGNALS, SOURCES  # noqa: F401  (re-exported: the 2x2 table's axes)

# old field names, accepted with a DeprecationWarning for one release (TrainConfig keyword arguments,
# TrainConfig.for_method options, config.json of older run directories, CLI flags)
RENAMED = {"topk": "teacher_topk", "lmbda_reward": "reward_scale"}
# keys that older run directories' config.json hold and that mean nothing now: ignored when read
LEGACY_KEYS = frozenset({"preset_applied"})     # the preset is applied by apply_preset, which is idempotent

ALIGNMENTS = ("exact", "truncate")        # how a pair's vocabularies are matched (compat.check_pair)
DTYPES = ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16")


def renamed_fields(options: dict, where: str = "TrainConfig") -> dict:
    """`options` with old field names replaced by their new names (a DeprecationWarning per old name)."""
    out = dict(options)
    for old, new in RENAMED.items():
        if old in out:
            if new in out:
                raise ConfigError(f"{where}: both {old!r} and its new name {new!r} are given; keep only {new!r}")
            warnings.warn(f"{where}: {old!r} is renamed {new!r}; the old name is accepted for one release",
                          DeprecationWarning, stacklevel=3)
            out[new] = out.pop(old)
    return out


PRESETS: dict[str, dict] = {
    # off-policy, dense: cross-entropy on teacher-written traces (sequence-level KD)
    # learning rates: the best of a small sweep at a 1.2M-student-token budget (docs/results.md)
    "sft": dict(source="teacher", signal="dense", loss="ce", lr=1e-3),
    # off-policy, sparse: teacher traces kept only when the verifier accepts them
    "filtered_sft": dict(source="teacher", signal="sparse", loss="ce", lr=3e-4),
    # on-policy, sparse: GRPO with a verifier
    "grpo": dict(source="student", signal="sparse", loss="pg", num_generations=8, lr=3e-5),
    # on-policy, dense: on-policy distillation (sampled-token reverse KL as a per-token reward)
    "opd": dict(source="student", signal="dense", loss="sampled_token", lr=3e-4),
    # the same corner with the analytic full-vocabulary reverse KL instead of the sampled-token estimator
    "opd_full": dict(source="student", signal="dense", loss="full_kl", lr=1e-3),
    # GKD (Agarwal et al. 2023): generalised JSD, half the batches on-policy
    "gkd": dict(source="student", signal="dense", loss="jsd", beta=0.5, lmbda=0.5, lr=3e-4),
    # ExOPD (2602.12125): reward extrapolated past the teacher, pi_ref = initial student
    "exopd": dict(source="student", signal="dense", loss="sampled_token", reward_scale=1.25, lr=3e-4),
    # Stable-OPD (Luo et al. 2604.08527): KL to the initial student + gold-solution SFT mixture
    "stable_opd": dict(source="student", signal="dense", loss="sampled_token", kl_coef=0.01, sft_coef=0.1,
                       lr=3e-4),
}


@dataclass
class TrainConfig:
    method: str = "opd"                 # a preset of the fields below: sft, filtered_sft, grpo, opd, opd_full, gkd,
                                        #   exopd, stable_opd
    source: str | None = None           # where the training text comes from: teacher | student (default: the preset's)
    signal: str | None = None           # supervision: dense (teacher scores every token) | sparse (one reward)
    loss: str | None = None             # a registered objective (objectives.py; default: the preset's)
    task: str = "addition"              # addition | multiply | gsm8k | qa | your own as package.module:ClassName
                                        #   (or an entry point of group opd_workbench.tasks)
    data: str | None = None             # training problems from a file: JSONL {"prompt","solution","answer"} rows
                                        #   graded by the task (held-out evaluation stays on its generator); for
                                        #   gsm8k/qa the task's own file (question/answer rows, JSONL or parquet)
    teacher: str | None = None          # zoo name or checkpoint directory; default: the task's zoo teacher
    student: str | None = None          # zoo name or checkpoint directory; default: the task's zoo student
    steps: int = 200                    # optimiser updates (>= 1)
    batch_size: int = 64                # sequences per step (GRPO: prompts x num_generations)
    num_generations: int | None = None  # G rollouts per prompt (GRPO groups); 1 for the other methods
    lr: float | None = None             # peak learning rate of AdamW (> 0; default: the preset's)
    warmup_steps: int = 10              # linear warm-up of the learning rate over this many steps (>= 0)
    weight_decay: float = 0.0           # AdamW weight decay (>= 0)
    max_grad_norm: float = 1.0          # gradient clipping norm (> 0)
    temperature: float = 1.0            # student sampling temperature (> 0)
    top_p: float | None = None          # nucleus sampling of rollouts, in (0, 1] (off by default)
    top_k: int | None = None            # sample rollouts from the k likeliest tokens (>= 1; off by default)
    max_new_tokens: int | None = None   # longest completion in tokens (>= 1; default: the task's)
    reduction: str = "token_mean"       # token_mean | sum | seq_mean (policy-gradient style losses)
    gamma: float = 0.0                  # OPD discount in [0, 1]: A_t = sum_k gamma^k r_{t+k} (0: each token's own)
    vopd: bool = False                  # control-variate baseline A_t = r_t + KL_t (2605.07865)
    reward_clip: float | None = None    # floor (< 0) on the per-token reward (REOPOLD-style; off by default)
    mask_special_tokens: bool = False   # drop the teacher's signal where the student wrote EOS (the fix for a
                                        #   teacher whose EOS/format token differs, Fu et al.; compat.check_special_tokens)
    teacher_horizon: int | None = None  # teacher supervision on the first k completion tokens only (the OPD loss
                                        #   is masked from position k on; Li et al., Fu et al.: the teacher's
                                        #   benefit decays with prefix length). None: every token
    reward_scale: float = 1.0           # G-OPD reward scale lambda > 0 (1 = OPD, 1.25 = ExOPD); needs pi_ref
                                        #   (was `lmbda_reward`: not GKD's `lmbda`, the on-policy fraction)
    kl_coef: float = 0.0                # beta_KL * KL(pi_theta || pi_ref), pi_ref = initial student
    sft_coef: float = 0.0               # weight of a gold-solution SFT term (Stable-OPD mixture)
    lmbda: float = 1.0                  # GKD: probability in [0, 1] a batch is student-generated (else teacher)
    beta: float = 0.5                   # generalised JSD interpolation in [0, 1] (0 forward KL, 1 reverse KL)
    jsd_temperature: float = 1.0        # loss="jsd": temperature of both distributions in the JSD (> 0)
    teacher_topk: int = 4               # teacher top-K support size (Fu et al.); also for topk_overlap
                                        #   (was `topk`: not the sampler's `top_k`)
    topk_renormalize: bool = True       # loss="topk": renormalise the teacher's top-K probabilities to sum to 1
    topk_include_sampled: bool = False  # loss="topk": add the sampled token to the teacher's top-K support
    scale_rewards: bool = True          # GRPO: divide by group std (False = Dr. GRPO)
    clip_eps: float | None = None       # PPO clipping (only matters with several updates per batch)
    sdar_coef: float = 0.05             # loss="sdar": weight of SDAR's gated self-distillation term next to GRPO
    sdar_beta_gate: float = 5.0         # loss="sdar": gate sharpness (0 = constant gate 0.5, naive self-distillation)
    sft_data: str = "teacher"           # source=teacher: "teacher" (sampled traces) or "reference" (gold)
    teacher_temperature: float = 1.0    # sampling temperature of teacher-written traces (> 0)
    teacher_score_temperature: float = 1.0  # the teacher's logits are divided by this wherever it scores the
                                        #   student (OPD reward, KL/JSD targets): > 1 softens a near-deterministic
                                        #   teacher to a stated entropy (docs/testbed.md); its argmax is unchanged
    eval_every: int = 25                # held-out evaluation every N steps (0: only at the end)
    eval_problems: int = 256            # held-out problems per evaluation (>= 1)
    eval_split: str = "test"            # held-out split evaluated every eval_every steps ("val" when choosing
                                        #   learning rates, so the reported "test" numbers are not selected on)
    eval_sampled: bool = True           # also evaluate sampling at temperature 1, next to greedy
    num_samples: int = 4                # token-level samples per record
    student_samples_every: int = 10     # source="teacher": sample the student on the step's prompts every
                                        #   N steps, teacher-scored, as evaluation (0: off; student_samples.py)
    lora_r: int = 0                     # train LoRA adapters of this rank on a Hugging Face student instead of all
                                        #   its weights (0: full fine-tuning; needs peft)
    lora_alpha: float | None = None     # LoRA scaling alpha (default: 2 x lora_r)
    lora_targets: str | None = None     # comma-separated module names the adapters go on, e.g. q_proj,v_proj
                                        #   (default: every linear layer of the blocks)
    alignment: str = "exact"            # exact | truncate: truncate cuts the teacher's logits to the student's
                                        #   embedding rows when the pair shares a tokenizer but pads it differently
    dtype: str = "auto"                 # auto (bf16 on GPUs that support it, else fp16; fp32 on CPU) | float32 |
                                        #   bfloat16 | float16: the weights' dtype of both models
    teacher_device: str | None = None   # where the frozen teacher runs, e.g. cpu to keep it off the GPU (default:
                                        #   the student's device)
    seed: int = 0                       # problems and sampling of step k are a function of (seed, k)
    device: str = "auto"                # auto (cuda when visible, else cpu) | cpu | cuda | cuda:N | mps
    out: str | None = None              # run directory (None: nothing written)
    overwrite: bool = False             # replace an existing run directory `out`
    save_every: int = 0                 # checkpoint every N steps (0: only at the end / on stop)
    max_nonfinite: int = 5              # consecutive skipped non-finite updates before stopping
    warn_truncation: float = 0.5        # early warning: truncated fraction threshold (LengthAlarm)
    warn_repetition: float = 0.3        # early warning: repetition rate threshold
    warn_rise: float = 0.3              # early warning: rise within warn_window steps
    warn_window: int = 10               # early warning: steps the rise is measured over (>= 2)
    warn_shrink: float = 0.5            # early warning: mean length <= this x the first step's (0: off)
    on_warning: str = "none"            # "none" | "checkpoint" | "stop" when the early warning fires
    name: str | None = None             # label of the run in dashboards and tables

    @classmethod
    def for_method(cls, method: str, **overrides) -> "TrainConfig":
        """The preset of `method`, then your overrides on top (the unambiguous way to build a config)."""
        if method not in PRESETS:
            raise ConfigError(f"unknown method {method!r}; choose one of {sorted(PRESETS)}")
        overrides = renamed_fields(overrides, "TrainConfig.for_method")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown config options {unknown}; valid options are {sorted(known)}")
        cfg = replace(cls(method=method), **PRESETS[method])
        return replace(cfg, **overrides)._fill_defaults()

    def explicit_fields(self) -> frozenset:
        """Names of the fields given to the constructor or assigned since (never a guess from their values)."""
        return frozenset(self.__dict__.get("_explicit", ()))

    def __setattr__(self, name, value):
        if self.__dict__.get("_frozen"):
            raise FrozenInstanceError(f"cannot assign {name}: this config was resolved for a run and is not edited "
                                      f"afterwards; build a new one with dataclasses.replace(cfg, {name}=...)")
        given = self.__dict__.get("_explicit")
        if given is not None:       # after __init__: an assignment is an explicit choice
            given.add(name)
        object.__setattr__(self, name, value)

    def _fill_defaults(self) -> "TrainConfig":
        cfg = replace(self)
        if cfg.num_generations is None:
            cfg.num_generations = 1
        if cfg.name is None:
            cfg.name = cfg.method
        return cfg

    def frozen(self) -> "TrainConfig":
        """This config, refusing assignments from now on (what `trainer.resolve_config` returns)."""
        object.__setattr__(self, "_frozen", True)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = renamed_fields(d, "config")          # config.json of a run written before the renames
        d = {k: v for k, v in d.items() if k not in LEGACY_KEYS}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys are {sorted(known)}")
        return cls(**d)


_dataclass_init = TrainConfig.__init__


def _init_recording_explicit(self, *args, **kwargs):
    """The dataclass __init__ (old field names accepted, with a DeprecationWarning), then remember which fields
    the caller passed (positionally or by name)."""
    kwargs = renamed_fields(kwargs)
    _dataclass_init(self, *args, **kwargs)
    names = [f.name for f in fields(TrainConfig)]
    object.__setattr__(self, "_explicit", set(names[:len(args)]) | set(kwargs))


_init_recording_explicit.__signature__ = inspect.signature(_dataclass_init)
_init_recording_explicit.__doc__ = _dataclass_init.__doc__
TrainConfig.__init__ = _init_recording_explicit


def field_docs() -> dict[str, str]:
    """Each TrainConfig field's documentation: the comment written beside it in this file (its continuation
    lines included). The one place fields are documented; `python -m workbench train --help` shows these."""
    src = inspect.getsource(TrainConfig).split("\n    @classmethod")[0]
    docs, current = {}, None
    for line in src.splitlines()[1:]:
        code, _, comment = line.partition("#")
        name = code.strip().split(":")[0] if ":" in code and code.startswith("    ") and code.strip() else None
        if name and name.isidentifier():
            current = name
            docs[name] = comment.strip()
        elif current and not code.strip() and comment:
            docs[current] += " " + comment.strip()
    return docs


class ConfigError(ValueError):
    """A configuration that cannot run; raised before any compute."""


def apply_preset(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its method's preset filled in (a new config; `cfg` is not changed). Called by
    `trainer.resolve_config`, the one place a run's config is completed.

    Preset values fill only the fields you did not give: a field passed to the constructor or assigned
    afterwards is yours, even when it equals the dataclass default (`TrainConfig(method="gkd", lmbda=1.0)`
    keeps lmbda=1.0); None means "not set" and is filled. Idempotent: a config whose preset is applied
    (from `TrainConfig.for_method`, or a run's config.json) has every field given, so applying again
    changes nothing. `dataclasses.replace` builds a new config from every field, so a replaced config
    counts all of its fields as given: apply first, or use `TrainConfig.for_method`.
    """
    if cfg.method not in PRESETS:
        raise ConfigError(f"unknown method {cfg.method!r}; choose one of {sorted(PRESETS)}")
    given = cfg.explicit_fields()
    # None is the "not set" value of the fields whose default is None (source, loss, lr, ...): the preset fills it
    updates = {k: v for k, v in PRESETS[cfg.method].items() if k not in given or getattr(cfg, k) is None}
    return replace(cfg, **updates)._fill_defaults()


def generation_length(task, requested: int | None = None) -> int:
    """The one rule for how many tokens a completion may have: `requested` if given, else the task's
    `max_new_tokens`. Training (`trainer.resolve_config`), evaluation and the experiments all ask here."""
    return requested or task.max_new_tokens


def validate(cfg: TrainConfig) -> None:
    """Check every field that can be checked without loading a model. Raises ConfigError."""
    def need(cond, msg):
        if not cond:
            raise ConfigError(msg)

    for name in ("steps", "batch_size", "eval_problems", "teacher_topk", "warmup_steps", "eval_every", "save_every",
                 "num_samples", "student_samples_every", "max_nonfinite", "seed"):
        v = getattr(cfg, name)
        need(isinstance(v, int) and not isinstance(v, bool), f"{name} must be an integer, got {v!r}")
    for name in ("lr", "weight_decay", "max_grad_norm", "temperature", "gamma", "lmbda", "beta", "reward_scale",
                 "kl_coef", "sft_coef", "sdar_coef", "sdar_beta_gate", "jsd_temperature", "teacher_temperature",
                 "teacher_score_temperature",
                 "top_p", "reward_clip", "clip_eps", "num_generations", "top_k", "max_new_tokens"):
        v = getattr(cfg, name)
        need(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
             f"{name} must be a finite number, got {v!r}")
    need(cfg.source in SOURCES, f"source must be one of {SOURCES}, got {cfg.source!r}")
    need(cfg.signal in SIGNALS, f"signal must be one of {SIGNALS}, got {cfg.signal!r}")
    ok = objectives.losses_for(cfg.source, cfg.signal)     # the registry says which losses fit which corner
    need(cfg.loss in ok, f"loss {cfg.loss!r} is not valid for source={cfg.source}, signal={cfg.signal}; "
                         f"choose one of {list(ok)}")
    for name in ("steps", "batch_size", "num_generations", "eval_problems", "teacher_topk"):
        v = getattr(cfg, name)
        need(isinstance(v, int) and v > 0, f"{name} must be a positive integer, got {v!r}")
    need(cfg.batch_size % cfg.num_generations == 0,
         f"batch_size ({cfg.batch_size}) must be a multiple of num_generations ({cfg.num_generations})")
    need(cfg.signal != "sparse" or cfg.source != "student" or cfg.num_generations > 1,
         "GRPO needs num_generations >= 2 (advantages are relative within a group of rollouts of one prompt)")
    need(cfg.lr is not None and cfg.lr > 0, f"lr must be positive, got {cfg.lr!r}")
    for name in ("warmup_steps", "eval_every", "save_every", "num_samples", "student_samples_every",
                 "weight_decay", "kl_coef", "sft_coef", "sdar_coef", "sdar_beta_gate", "max_nonfinite"):
        v = getattr(cfg, name)
        need(v >= 0, f"{name} must be >= 0, got {v!r}")
    need(cfg.max_grad_norm > 0, f"max_grad_norm must be positive, got {cfg.max_grad_norm}")
    need(cfg.temperature > 0, f"temperature must be > 0 for training rollouts, got {cfg.temperature} "
                              "(greedy rollouts have no exploration; use evaluation for greedy)")
    need(cfg.teacher_temperature > 0, f"teacher_temperature must be > 0, got {cfg.teacher_temperature}")
    need(cfg.teacher_score_temperature > 0,
         f"teacher_score_temperature must be > 0, got {cfg.teacher_score_temperature}")
    need(cfg.jsd_temperature > 0, f"jsd_temperature must be > 0, got {cfg.jsd_temperature}")
    need(cfg.top_p is None or 0 < cfg.top_p <= 1, f"top_p must be in (0, 1], got {cfg.top_p}")
    need(cfg.top_k is None or cfg.top_k > 0, f"top_k must be positive, got {cfg.top_k}")
    need(cfg.max_new_tokens is None or cfg.max_new_tokens > 0,
         f"max_new_tokens must be positive, got {cfg.max_new_tokens}")
    need(cfg.reduction in REDUCTIONS, f"reduction must be one of {REDUCTIONS}, got {cfg.reduction!r}")
    need(0.0 <= cfg.gamma <= 1.0, f"gamma must be in [0, 1], got {cfg.gamma}")
    need(0.0 <= cfg.beta <= 1.0, f"beta must be in [0, 1], got {cfg.beta}")
    need(0.0 <= cfg.lmbda <= 1.0, f"lmbda (GKD on-policy fraction) must be in [0, 1], got {cfg.lmbda}")
    need(cfg.reward_scale > 0, f"reward_scale must be positive, got {cfg.reward_scale}")
    need(cfg.reward_scale == 1.0 or cfg.loss in ("sampled_token", "gopd_full"),
         "reward_scale != 1 (G-OPD / ExOPD) is defined for loss='sampled_token' (sampled-token reward) and "
         "loss='gopd_full' (full-vocabulary target) only")
    need(cfg.reward_clip is None or cfg.reward_clip < 0,
         f"reward_clip is a floor on log q - log p and must be negative, got {cfg.reward_clip}")
    need(cfg.clip_eps is None or cfg.clip_eps > 0, f"clip_eps must be positive, got {cfg.clip_eps}")
    need(isinstance(cfg.eval_split, str) and cfg.eval_split != "train",
         f"eval_split must name a held-out split such as 'test' or 'val', got {cfg.eval_split!r}")
    need(cfg.sft_data in ("teacher", "reference"), f"sft_data must be 'teacher' or 'reference', got {cfg.sft_data!r}")
    need(cfg.lmbda == 1.0 or cfg.source == "student",
         "lmbda < 1 mixes teacher batches into on-policy training; it needs source='student'")
    need(cfg.on_warning in ("none", "checkpoint", "stop"),
         f"on_warning must be 'none', 'checkpoint' or 'stop', got {cfg.on_warning!r}")
    need(cfg.warn_window >= 2, f"warn_window must be >= 2, got {cfg.warn_window}")
    need(0.0 <= cfg.warn_shrink < 1.0, f"warn_shrink must be in [0, 1) (a fraction of the first step's mean "
                                        f"length; 0 turns the short-answer alarm off), got {cfg.warn_shrink}")
    need(not cfg.mask_special_tokens or (cfg.source == "student" and cfg.signal == "dense"),
         "mask_special_tokens masks the teacher's per-token signal on student rollouts; it needs source='student', "
         "signal='dense'")
    h = cfg.teacher_horizon
    need(h is None or (isinstance(h, int) and not isinstance(h, bool) and h > 0),
         f"teacher_horizon must be None (every token) or a positive number of tokens, got {cfg.teacher_horizon!r}")
    need(cfg.teacher_horizon is None or (cfg.source == "student" and cfg.signal == "dense"),
         "teacher_horizon cuts the teacher's per-token signal on student rollouts; it needs source='student', "
         "signal='dense'")
    need(not (cfg.vopd and cfg.loss != "sampled_token"), "vopd is a baseline for loss='sampled_token' only")
    need(cfg.data is None or (isinstance(cfg.data, str) and cfg.data.strip() != ""),
         f"data must be the path of a JSONL file of problems, got {cfg.data!r}")
    need(isinstance(cfg.lora_r, int) and not isinstance(cfg.lora_r, bool) and cfg.lora_r >= 0,
         f"lora_r must be a LoRA rank >= 1 (or 0 for full fine-tuning), got {cfg.lora_r!r}")
    need(cfg.lora_alpha is None or (isinstance(cfg.lora_alpha, (int, float)) and cfg.lora_alpha > 0),
         f"lora_alpha must be positive, got {cfg.lora_alpha!r}")
    need(cfg.lora_r > 0 or (cfg.lora_alpha is None and cfg.lora_targets is None),
         "lora_alpha / lora_targets configure LoRA adapters; also pass lora_r (--lora R), the adapters' rank")
    if cfg.lora_r:
        need(importlib.util.find_spec("peft") is not None,
             "lora_r > 0 trains LoRA adapters, which needs the peft package: pip install peft")
    need(cfg.alignment in ALIGNMENTS, f"alignment must be one of {ALIGNMENTS}, got {cfg.alignment!r}")
    need(cfg.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {cfg.dtype!r}")
    need(isinstance(cfg.device, str), f"device must be a string such as 'auto', 'cpu' or 'cuda', got {cfg.device!r}")
    for name in ("device", "teacher_device"):
        v = getattr(cfg, name)
        if v is None or v == "auto":
            continue
        try:
            torch.device(v)
        except (RuntimeError, ValueError, TypeError):
            raise ConfigError(f"{name} {v!r} is not a device name; use 'auto', 'cpu', 'cuda', "
                              "'cuda:0' or 'mps'") from None
