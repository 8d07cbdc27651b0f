"""Export a run to the engines a run moves to when it outgrows one machine: TRL and verl.

    ex = export_run("runs/opd", to="trl")          # or python -m workbench export --to trl runs/opd
    print(ex.report())                             # files, launch command, and every setting not carried over

From a run directory's `config.json` this writes a config file, the training prompts and the
launch command for the target engine. Every `TrainConfig` field ends in exactly one bucket:

  * mapped        -- the target has the same setting (name -> name, value converted);
  * approximated  -- exported as the target's nearest setting, which means something else (said why);
  * unmapped      -- no counterpart: dropped, said why (e.g. GKD's lambda mixing in TRL's stable trainer);
  * inert         -- has no effect on this run (e.g. `beta` when the loss is not JSD), not listed;
  * run-local     -- workbench bookkeeping (device, run directory, evaluation, alarms), not listed.

so nothing is dropped silently; `Export.unclassified` (fields no rule knows, e.g. a new option)
is reported as unmapped and must stay empty (tests/test_export.py checks every field).

Names were checked against, not copied from:
  * TRL 1.16.0 (the installed package): trl/trainer/distillation_config.py (`DistillationConfig`:
    beta 0 = forward KL .. 1 = reverse KL, temperature, max_completion_length, ...),
    trl/scripts/distillation.py (its `TrlParser` reads ScriptArguments, DistillationConfig,
    ModelConfig, DatasetMixtureConfig from one `--config` YAML), trl/experimental/gkd/gkd_config.py
    (`lmbda`), trl/experimental/iw_opd/ (the sampled-token objective).
  * verl 0.9.1 (the PyPI wheel, read, not installed: it pins transformers 5.10): 
    verl/trainer/config/distillation/distillation.yaml, verl/workers/config/distillation.py
    (`DistillationLossConfig`: loss_mode, topk, use_task_rewards, use_policy_gradient,
    loss_max_clamp, log_prob_min_clamp), verl/trainer/distillation/losses.py (estimator modes
    k1/k3/..., `forward_kl_topk`; with use_policy_gradient the advantage is -loss),
    verl/trainer/ppo/core_algos.py (`kl_penalty_forward`, `agg_loss`), and
    verl/trainer/config/_generated_ppo_trainer.yaml for every other override path.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path

from . import zoo
from .config import ConfigError, TrainConfig, apply_preset
from .hub import chat_prompt_ids, load_tokenizer
from .runs import load_config
from .tasks.jsonl import task_with_data

TARGETS = ("trl", "verl")

# workbench bookkeeping: how this machine runs and watches a run, not what is trained
RUN_LOCAL = frozenset({
    "method", "source", "signal", "name", "device", "out", "overwrite", "save_every",
    "eval_every", "eval_problems", "eval_split", "eval_sampled", "num_samples", "student_samples_every", "max_nonfinite",
    "warn_truncation", "warn_repetition", "warn_rise", "warn_window", "warn_shrink", "on_warning",
    "dtype", "teacher_device",
})

# settings this export does not carry over yet although the engines have their own (set them there by hand),
# with the value at which nothing is lost
NOT_EXPORTED = {"lora_r": 0, "lora_alpha": None, "lora_targets": None, "alignment": "exact"}

# settings of the loss / advantage that have no counterpart in either engine, with the value at
# which they do nothing (a run at that value loses nothing by the export)
NEUTRAL = {"gamma": 0.0, "vopd": False, "reward_clip": None, "mask_special_tokens": False, "reward_scale": 1.0,
           "sft_coef": 0.0, "kl_coef": 0.0, "lmbda": 1.0, "clip_eps": None, "teacher_horizon": None,
           "teacher_score_temperature": 1.0}

WHY = {
    "gamma": "discounted per-token returns (A_t = sum gamma^k r_t+k)",
    "vopd": "the vOPD control-variate baseline",
    "reward_clip": "the REOPOLD floor on the per-token reward",
    "mask_special_tokens": "dropping the teacher's signal at the student's EOS",
    "reward_scale": "the G-OPD / ExOPD reward extrapolation against the initial student",
    "sft_coef": "the Stable-OPD gold-solution SFT mixture",
    "kl_coef": "the KL-to-initial-student anchor",
    "lmbda": "GKD's mixing of teacher-generated batches (lmbda < 1)",
    "clip_eps": "PPO clipping (only active with several updates per batch)",
    "teacher_horizon": "a cut of the teacher's supervision after the first k completion tokens",
    "teacher_score_temperature": "a temperature on the teacher's logits alone when it scores (its temperature "
                                 "is the sampling one)",
}


class ExportError(ConfigError):
    """A run that cannot be exported (toy checkpoints, a method outside OPD); raised before writing."""


@dataclass
class Export:
    target: str
    out_dir: Path
    files: dict = field(default_factory=dict)          # role -> path written
    command: str = ""
    mapped: dict = field(default_factory=dict)         # workbench field -> "target key = value"
    approximated: dict = field(default_factory=dict)   # workbench field -> why it is not the same thing
    unmapped: dict = field(default_factory=dict)       # workbench field -> why it is dropped
    overrides: dict = field(default_factory=dict)     # verl: Hydra key -> value
    notes: list = field(default_factory=list)
    unclassified: list = field(default_factory=list)

    def report(self) -> str:
        lines = [f"export to {self.target}: {self.out_dir}"]
        lines += [f"  wrote {role}: {p}" for role, p in self.files.items()]
        lines += ["launch:", "  " + self.command.replace("\n", "\n  ")]
        lines += ["mapped:"] + [f"  {k} -> {v}" for k, v in self.mapped.items()]
        lines += ["approximated (exported as the nearest setting, NOT the same):"]
        lines += [f"  {k}: {v}" for k, v in self.approximated.items()] or ["  (none)"]
        lines += ["unmapped (no counterpart; dropped):"]
        lines += [f"  {k}: {v}" for k, v in self.unmapped.items()] or ["  (none)"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"target": self.target, "out_dir": str(self.out_dir), "files": {k: str(v) for k, v in self.files.items()},
                "command": self.command, "mapped": self.mapped, "approximated": self.approximated,
                "unmapped": self.unmapped, "overrides": self.overrides, "notes": self.notes, "unclassified": self.unclassified}


# ------------------------------------------------------------------------------------------
# checks before anything is written
# ------------------------------------------------------------------------------------------
def _toy_reason(role: str, name: str | None) -> str | None:
    """Why checkpoint `name` only makes sense on this machine (None: it can be exported)."""
    if name is None or name == "<object>":
        return (f"the {role} was passed as a Python object, so config.json does not say which checkpoint it was; "
                f"train with --{role} DIR (a saved checkpoint directory or a hub id)")
    if name in zoo.RECIPES:
        return f"the {role} {name!r} is a zoo checkpoint (a toy with a character tokenizer)"
    p = Path(name).expanduser()
    if p.exists():
        if zoo.ZOO_DIR.resolve() in p.resolve().parents:
            return f"the {role} {name!r} is a zoo checkpoint (a toy with a character tokenizer)"
        tok = p / "tokenizer.json"
        if tok.exists() and json.loads(tok.read_text()).get("model", {}).get("type") == "WordLevel":
            return f"the {role} {name!r} has the workbench's character tokenizer (one token per character)"
    return None


def _check(cfg: TrainConfig) -> None:
    if (cfg.source, cfg.signal) != ("student", "dense"):
        raise ExportError(
            f"export covers on-policy distillation runs (source='student', signal='dense': opd, opd_full, gkd, "
            f"exopd, stable_opd); this run is {cfg.method!r} (source={cfg.source!r}, signal={cfg.signal!r}). "
            "For SFT use TRL's SFTTrainer; for GRPO TRL's GRPOTrainer or verl with algorithm.adv_estimator=grpo")
    for role in ("student", "teacher"):
        why = _toy_reason(role, getattr(cfg, role))
        if why:
            raise ExportError(f"cannot export: {why}. The engines train real Hugging Face checkpoints; rerun with "
                              f"--teacher/--student set to checkpoint directories or hub ids (see "
                              f"notebooks/10_real_models_one_gpu, workbench.hf)")


def _load(run_dir) -> TrainConfig:
    raw = load_config(run_dir)
    return apply_preset(TrainConfig.from_dict(raw.get("config", raw)))


def _inert(cfg: TrainConfig, name: str) -> bool:
    """Fields that do not change what this run trains (its loss never reads them)."""
    return {
        "scale_rewards": True,                       # GRPO only; export covers student/dense
        "sft_data": True,                            # source='teacher' only
        "teacher_temperature": cfg.lmbda == 1.0,     # samples teacher batches only when lmbda < 1
        "beta": cfg.loss != "jsd",
        "jsd_temperature": cfg.loss != "jsd",
        "teacher_topk": cfg.loss != "topk",          # else only the topk_overlap diagnostic
        "topk_renormalize": cfg.loss != "topk",
        "topk_include_sampled": cfg.loss != "topk",
        "sdar_coef": cfg.loss != "sdar",
        "sdar_beta_gate": cfg.loss != "sdar",
    }.get(name, False)


def _prompts(cfg: TrainConfig) -> tuple[list[dict], list[dict], bool]:
    """(train rows, test rows, conversational?) as {"prompt", "answer"} from the run's task / data file."""
    _, task = task_with_data(cfg.task, cfg.data)
    chat = hasattr(task, "user_message")
    train = getattr(task, "rows", None) or getattr(task, "train", None) or \
        task.problems(min(cfg.steps * cfg.batch_size // cfg.num_generations, 20000), seed=cfg.seed, split="train")
    test = task.problems(min(cfg.eval_problems, 512), seed=0, split=cfg.eval_split)

    def row(p):
        if chat:
            msgs = ([{"role": "system", "content": task.system_prompt}] if getattr(task, "system_prompt", None)
                    else []) + [{"role": "user", "content": task.user_message(p.prompt)}]
            return {"prompt": msgs, "answer": p.answer}
        return {"prompt": p.prompt, "answer": p.answer}
    return [row(p) for p in train], [row(p) for p in test], chat


def _longest_prompt(student: str, rows: list[dict], chat: bool) -> int | None:
    """Tokens in the longest prompt under the student's tokenizer (chat template applied, as the engines do);
    None when the student is not a local directory (a hub id: no download here)."""
    if not Path(student).expanduser().is_dir():
        return None
    tok = load_tokenizer(student)

    def n(p):
        if not chat:
            return len(tok(p, add_special_tokens=True)["input_ids"])
        system = p[0]["content"] if p[0]["role"] == "system" else None
        return len(chat_prompt_ids(tok, p[-1]["content"], system=system))
    return max(n(r["prompt"]) for r in rows)


def _leftovers(cfg: TrainConfig, ex: Export, handled: set) -> None:
    """Put every field no target rule handled into unmapped / inert / run-local; nothing silent."""
    for f in fields(TrainConfig):
        n = f.name
        if n in handled or n in ex.mapped or n in ex.approximated or n in ex.unmapped:
            continue
        if n in RUN_LOCAL or _inert(cfg, n):
            continue
        if n in NOT_EXPORTED:
            v = getattr(cfg, n)
            if v != NOT_EXPORTED[n]:
                ex.unmapped[n] = (f"{n}={v!r}: not exported yet; set {ex.target}'s own option by hand (TRL: its "
                                  "peft / ModelConfig LoRA settings; the vocabulary alignment has no setting there)")
            continue
        if n in NEUTRAL:
            v = getattr(cfg, n)
            if v != NEUTRAL[n]:
                ex.unmapped[n] = f"{n}={v!r}: {ex.target} has no {WHY[n]}"
            continue
        ex.unclassified.append(n)
        ex.unmapped[n] = f"{n}={getattr(cfg, n)!r}: no export rule knows this setting"


def _loss_temperature(cfg: TrainConfig, ex: Export, engine_does: str) -> None:
    """Workbench scores its loss at T=1 (JSD: jsd_temperature) whatever the sampling temperature; the engines
    use the sampling temperature for both, so a run that samples at another temperature is approximated."""
    loss_t = cfg.jsd_temperature if cfg.loss == "jsd" else 1.0
    if cfg.temperature != loss_t:
        ex.mapped.pop("temperature", None)
        ex.approximated["temperature"] = (f"temperature={cfg.temperature}: workbench samples at it but scores the "
                                          f"loss at {loss_t}; {engine_does} (exported: {cfg.temperature})")


# ------------------------------------------------------------------------------------------
# TRL: DistillationTrainer from one YAML read by trl/scripts/distillation.py
# ------------------------------------------------------------------------------------------
def _to_trl(cfg: TrainConfig, out: Path, num_processes: int) -> Export:
    import yaml   # optional-import: PyYAML (arrives with huggingface_hub); only the TRL export writes YAML
    ex = Export("trl", out)
    y, handled = {}, set()

    def put(wb: str, key: str, value):
        y[key] = value
        ex.mapped[wb] = f"{key} = {value!r}"
        handled.add(wb)

    put("student", "model_name_or_path", cfg.student)
    put("teacher", "teacher_model_name_or_path", cfg.teacher)
    if cfg.loss == "full_kl":
        put("loss", "beta", 1.0)
    elif cfg.loss == "jsd":
        put("beta", "beta", float(cfg.beta))
        handled.add("loss")
        ex.mapped["loss"] = "generalized JSD (TRL's beta; same convention: mixture (1-beta) p_S + beta p_T)"
    else:
        y["beta"] = 1.0
        handled.add("loss")
        why = {"sampled_token": "TRL's DistillationTrainer has no sampled-token estimator; exported as beta=1.0, "
                                "the exact full-vocabulary reverse KL whose gradient the estimator samples (same "
                                "objective, no sampling noise). The estimator itself: trl.experimental.iw_opd "
                                "(distillation_objective='iw_opd', iw_opd_gamma=0)",
               "gopd_full": "TRL's DistillationTrainer has no G-OPD target extrapolated from a reference model; "
                            "exported as beta=1.0, the full-vocabulary reverse KL to the teacher (G-OPD at "
                            "reward_scale=1)",
               "topk": f"TRL's DistillationTrainer has no teacher top-K support (workbench: reverse KL on the "
                       f"teacher's top-{cfg.teacher_topk}{', renormalised' if cfg.topk_renormalize else ''}); exported as "
                       "beta=1.0, the full-vocabulary reverse KL"}[cfg.loss]
        ex.approximated["loss"] = f"loss={cfg.loss!r}: {why}"
        if cfg.loss == "topk":
            for n in ("teacher_topk", "topk_renormalize", "topk_include_sampled"):
                ex.unmapped[n] = f"{n}={getattr(cfg, n)!r}: a setting of the top-K loss, which TRL's trainer lacks"
    # TRL uses one temperature for sampling and for the loss; workbench samples at `temperature` and scores
    # the loss at 1 (JSD: at jsd_temperature)
    put("temperature", "temperature", float(cfg.temperature))
    _loss_temperature(cfg, ex, "TRL divides the logits in its loss by `temperature` too")
    if cfg.loss == "jsd":
        handled.add("jsd_temperature")
        if cfg.jsd_temperature != cfg.temperature:
            ex.approximated["jsd_temperature"] = (f"jsd_temperature={cfg.jsd_temperature} differs from the sampling "
                                                  f"temperature {cfg.temperature}; TRL has one `temperature` for "
                                                  "both (exported: the sampling temperature)")
        else:
            ex.mapped["jsd_temperature"] = "temperature (TRL's one temperature, sampling and loss)"
    put("top_p", "top_p", 1.0 if cfg.top_p is None else float(cfg.top_p))
    put("top_k", "top_k", 0 if cfg.top_k is None else int(cfg.top_k))
    put("max_new_tokens", "max_completion_length", int(cfg.max_new_tokens))
    put("lr", "learning_rate", float(cfg.lr))
    put("warmup_steps", "warmup_steps", int(cfg.warmup_steps))
    y["lr_scheduler_type"] = "constant_with_warmup"     # workbench: linear warmup, then constant
    y["adam_beta1"], y["adam_beta2"] = 0.9, 0.99         # workbench's AdamW betas (trainer.py)
    put("weight_decay", "weight_decay", float(cfg.weight_decay))
    put("max_grad_norm", "max_grad_norm", float(cfg.max_grad_norm))
    put("steps", "max_steps", int(cfg.steps))
    put("seed", "seed", int(cfg.seed))
    if cfg.batch_size % num_processes:
        raise ExportError(f"batch_size {cfg.batch_size} is not divisible by num_processes={num_processes}")
    put("batch_size", "per_device_train_batch_size", cfg.batch_size // num_processes)
    y["gradient_accumulation_steps"] = 1
    ex.mapped["batch_size"] += f" x {num_processes} processes x gradient_accumulation_steps 1"
    if cfg.num_generations != 1:
        ex.unmapped["num_generations"] = (f"num_generations={cfg.num_generations}: TRL's DistillationTrainer "
                                          "samples one completion per prompt")
    handled.add("num_generations")
    if cfg.reduction != "token_mean":
        ex.unmapped["reduction"] = (f"reduction={cfg.reduction!r}: TRL divides the summed per-token divergence by "
                                    "the number of completion tokens (token_mean)")
    else:
        ex.mapped["reduction"] = "token_mean (TRL's only reduction: sum / number of completion tokens)"
    handled.add("reduction")

    rows, _, chat = _prompts(cfg)
    data = out / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows))
    y["datasets"] = [{"path": "json", "data_files": str(data.resolve()), "split": "train"}]
    handled |= {"task", "data"}
    ex.mapped["task"] = f"datasets = {data.name} ({len(rows)} {'chat' if chat else 'text'} prompts of {cfg.task!r})"
    y["output_dir"] = str((out / "trl-output").resolve())
    y["logging_steps"] = 1
    y["report_to"] = "none"
    y["use_peft"] = False
    ex.notes.append("LoRA is not exported: a LoRA set on a loaded pair (workbench.hf.LoraSpec) is not in config.json, "
                    "and lora_r (--lora) is listed as unmapped; for a LoRA student set use_peft: true, lora_r, "
                    "lora_alpha, lora_target_modules in the YAML")
    ex.notes.append("TRL trains in bf16 by default; on a CPU add --bf16 false")
    _leftovers(cfg, ex, handled)

    path = out / "trl_distillation.yaml"
    head = (f"# TRL DistillationTrainer config, written by `python -m workbench export --to trl`\n"
            f"# from {cfg.out or 'a run directory'} (method {cfg.method!r}, loss {cfg.loss!r}).\n"
            f"# Not carried over: {', '.join(sorted(ex.unmapped)) or 'nothing'}; "
            f"approximated: {', '.join(sorted(ex.approximated)) or 'nothing'} (see the export report).\n")
    path.write_text(head + yaml.safe_dump(y, sort_keys=False))
    ex.files = {"config": path, "prompts": data}
    cfg_arg = shlex.quote(str(path.resolve()))
    ex.command = (f"accelerate launch --num_processes {num_processes} -m trl.scripts.distillation --config {cfg_arg}"
                  if num_processes > 1 else f"python -m trl.scripts.distillation --config {cfg_arg}")
    ex.notes.append("ZeRO-3 / FSDP2: trl ships accelerate configs (trl/accelerate_configs/zero3.yaml, fsdp2.yaml); "
                    "add --config_file <that file> after `accelerate launch`")
    return ex


# ------------------------------------------------------------------------------------------
# verl: Hydra overrides for verl.trainer.main_ppo with distillation enabled
# ------------------------------------------------------------------------------------------
def _to_verl(cfg: TrainConfig, out: Path, num_processes: int) -> Export:
    ex = Export("verl", out)
    o, handled = {}, set()

    def put(wb: str, key: str, value):
        o[key] = value
        ex.mapped[wb] = f"{key}={value}"
        handled.add(wb)

    loss = "distillation.distillation_loss."
    o["distillation.enabled"] = True
    put("student", "actor_rollout_ref.model.path", cfg.student)
    put("teacher", "distillation.teacher_models.teacher_model.model_path", cfg.teacher)
    handled.add("loss")
    if cfg.loss == "sampled_token":
        # verl's k1 = log pi - log q; with use_policy_gradient the advantage is -k1 = log q - log pi, the OPD reward
        o |= {loss + "loss_mode": "k1", loss + "use_policy_gradient": True}
        ex.mapped["loss"] = ("loss_mode=k1, use_policy_gradient=True (advantage -k1 = log q - log pi: the same "
                             "per-token reward and surrogate)")
    elif cfg.loss == "topk":
        o |= {loss + "loss_mode": "forward_kl_topk", loss + "topk": int(cfg.teacher_topk),
              loss + "use_policy_gradient": False}
        handled |= {"teacher_topk", "topk_renormalize", "topk_include_sampled"}
        ex.approximated["loss"] = (f"loss='topk' (reverse KL on the teacher's top-{cfg.teacher_topk}"
                                   f"{', renormalised' if cfg.topk_renormalize else ''}): verl 0.9.1 has only "
                                   f"forward_kl_topk (forward KL on the teacher's top-K, not renormalised); "
                                   f"exported as that, topk={cfg.teacher_topk}")
    else:
        o |= {loss + "loss_mode": "k1", loss + "use_policy_gradient": True}
        what = {"full_kl": "the full-vocabulary reverse KL",
                "gopd_full": f"G-OPD target (reward_scale={cfg.reward_scale}, extrapolated from pi_ref)"}.get(
            cfg.loss, f"the generalized JSD (beta={cfg.beta})")
        if cfg.loss == "jsd":
            for n in ("beta", "jsd_temperature"):
                ex.unmapped[n] = f"{n}={getattr(cfg, n)!r}: a setting of the generalized JSD, which verl 0.9.1 lacks"
        ex.approximated["loss"] = (f"loss={cfg.loss!r}: verl 0.9.1 has no full-distribution {what}; exported as "
                                   "k1 with use_policy_gradient (the sampled-token estimator of the reverse KL)"
                                   + ("" if cfg.loss == "full_kl" else ", a different divergence"))
    o[loss + "use_task_rewards"] = False           # OPD: the teacher is the only signal
    o[loss + "loss_max_clamp"] = "null"            # workbench clips nothing unless reward_clip is set
    o[loss + "log_prob_min_clamp"] = "null"
    put("num_generations", "actor_rollout_ref.rollout.n", int(cfg.num_generations))
    prompts = cfg.batch_size // cfg.num_generations
    put("batch_size", "data.train_batch_size", prompts)
    o["actor_rollout_ref.actor.ppo_mini_batch_size"] = prompts     # one update per batch, as here
    o["actor_rollout_ref.actor.ppo_epochs"] = 1
    ex.mapped["batch_size"] += f" prompts x rollout.n {cfg.num_generations} = {cfg.batch_size} sequences"
    put("max_new_tokens", "data.max_response_length", int(cfg.max_new_tokens))
    put("lr", "actor_rollout_ref.actor.optim.lr", float(cfg.lr))
    put("warmup_steps", "actor_rollout_ref.actor.optim.lr_warmup_steps", int(cfg.warmup_steps))
    put("weight_decay", "actor_rollout_ref.actor.optim.weight_decay", float(cfg.weight_decay))
    o["actor_rollout_ref.actor.optim.betas"] = "[0.9,0.99]"
    put("max_grad_norm", "actor_rollout_ref.actor.grad_clip", float(cfg.max_grad_norm))
    put("temperature", "actor_rollout_ref.rollout.temperature", float(cfg.temperature))
    _loss_temperature(cfg, ex, "verl computes the student's and the teacher's log-probs at the rollout temperature")
    put("top_p", "actor_rollout_ref.rollout.top_p", 1.0 if cfg.top_p is None else float(cfg.top_p))
    put("top_k", "actor_rollout_ref.rollout.top_k", -1 if cfg.top_k is None else int(cfg.top_k))
    put("steps", "trainer.total_training_steps", int(cfg.steps))
    put("seed", "data.seed", int(cfg.seed))
    agg = {"token_mean": "token-mean", "sum": "seq-mean-token-sum", "seq_mean": "seq-mean-token-mean"}
    put("reduction", "actor_rollout_ref.actor.loss_agg_mode", agg[cfg.reduction])
    if cfg.kl_coef:
        o |= {"actor_rollout_ref.actor.use_kl_loss": True, "actor_rollout_ref.actor.kl_loss_coef": cfg.kl_coef,
              "actor_rollout_ref.actor.kl_loss_type": "low_var_kl"}
        handled.add("kl_coef")
        ex.approximated["kl_coef"] = (f"kl_coef={cfg.kl_coef}: workbench adds the full-vocabulary KL to the "
                                      "initial student; verl's use_kl_loss uses the sampled k3 (low_var_kl) estimate")
    if cfg.reward_clip is not None:
        ex.unmapped["reward_clip"] = (f"reward_clip={cfg.reward_clip}: a floor on r_t only; verl's loss_max_clamp "
                                      "clamps both sides (it would also cap r_t at +|c|); left null")
        handled.add("reward_clip")
    if cfg.clip_eps is not None:
        put("clip_eps", loss + "clip_ratio", float(cfg.clip_eps))

    import pandas as pd   # optional-import: pandas costs ~1 s to import; only the parquet writer needs it
    rows, test, chat = _prompts(cfg)
    source = "openai/gsm8k" if cfg.task == "gsm8k" else cfg.task      # verl picks its reward function by it

    def frame(rs, split):
        return pd.DataFrame([{"data_source": source,
                              "prompt": r["prompt"] if chat else [{"role": "user", "content": r["prompt"]}],
                              "reward_model": {"style": "rule", "ground_truth": r["answer"]},
                              "extra_info": {"split": split, "index": i}} for i, r in enumerate(rs)])
    train_p, test_p = out / "train.parquet", out / "test.parquet"
    frame(rows, "train").to_parquet(train_p)
    frame(test, "test").to_parquet(test_p)
    longest = _longest_prompt(cfg.student, rows + test, chat)
    if longest is None:
        longest = 1024
        ex.notes.append("the student's tokenizer is not local, so data.max_prompt_length=1024 is a guess: verl "
                        "refuses longer prompts (data.truncation=error)")
    o |= {"data.train_files": str(train_p.resolve()), "data.val_files": str(test_p.resolve()),
          "data.max_prompt_length": longest, "algorithm.adv_estimator": "grpo", "algorithm.use_kl_in_reward": False}
    handled |= {"task", "data"}
    ex.mapped["task"] = f"data.train_files = {train_p.name} ({len(rows)} prompts of {cfg.task!r})"
    if not chat:
        ex.notes.append("the task's prompts are plain text; verl applies the student's chat template to them")
    if source != "openai/gsm8k":
        ex.notes.append(f"verl scores every rollout with the reward function of data_source {source!r} even with "
                        "use_task_rewards=False; point custom_reward_function.path at one")
    ex.notes.append("LoRA is not exported (a LoRA set on a loaded pair is not in config.json; lora_r is listed as "
                    "unmapped); for a LoRA student add actor_rollout_ref.model.lora_rank=R "
                    "actor_rollout_ref.model.lora_alpha=A")
    _leftovers(cfg, ex, handled)

    def val(v):
        return str(v).lower() if isinstance(v, bool) else str(v)
    # resources: the student's GPUs and the teacher's pool are the launcher's choice; defaults fit one node
    o |= {"actor_rollout_ref.rollout.name": "${ROLLOUT:-vllm}", "trainer.nnodes": "${NNODES:-1}",
          "trainer.n_gpus_per_node": f"${{GPUS:-{num_processes}}}", "distillation.nnodes": 1,
          "distillation.n_gpus_per_node": "${TEACHER_GPUS:-1}",
          "distillation.teacher_models.teacher_model.inference.tensor_model_parallel_size": 1,
          "trainer.logger": "[console]", "trainer.default_local_dir": str((out / "verl-output").resolve())}
    args = " \\\n    ".join(f"{k}={shlex.quote(val(v)) if '$' not in val(v) else val(v)}" for k, v in o.items())
    script = out / "verl_launch.sh"
    script.write_text("#!/usr/bin/env bash\n# verl on-policy distillation, written by `python -m workbench export "
                      f"--to verl` (method {cfg.method!r}, loss {cfg.loss!r}).\n# Not carried over: "
                      f"{', '.join(sorted(ex.unmapped)) or 'nothing'}; approximated: "
                      f"{', '.join(sorted(ex.approximated)) or 'nothing'}.\nset -euo pipefail\n"
                      f"python3 -m verl.trainer.main_ppo \\\n    {args} \"$@\"\n")
    script.chmod(0o755)
    ex.files = {"launch": script, "train": train_p, "val": test_p}
    ex.command = f"GPUS=8 TEACHER_GPUS=2 bash {shlex.quote(str(script.resolve()))}"
    ex.overrides = o
    return ex


def export_run(run_dir, to: str, out: str | Path | None = None, num_processes: int = 1) -> Export:
    """Write `to`'s config + prompts + launch command for the run in `run_dir` (default out: RUN_DIR/export-<to>)."""
    if to not in TARGETS:
        raise ExportError(f"unknown export target {to!r}; choose one of {TARGETS}")
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ExportError(f"num_processes must be a positive integer, got {num_processes!r}")
    cfg = _load(run_dir)
    _check(cfg)
    if cfg.max_new_tokens is None:
        raise ExportError(f"{run_dir}/config.json has no max_new_tokens; export a run directory written by the "
                          "trainer (it records the value it used)")
    out = Path(out) if out is not None else Path(run_dir) / f"export-{to}"
    out.mkdir(parents=True, exist_ok=True)
    return (_to_trl if to == "trl" else _to_verl)(cfg, out, num_processes)
