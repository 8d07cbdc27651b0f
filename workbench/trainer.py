"""One trainer, four corners: SFT, reward-filtered SFT, outcome RL (GRPO) and on-policy distillation.

    trainer = Trainer(TrainConfig.for_method("opd", steps=200))
    record = trainer.step()                       # one update -> one flat dict (docs/records.md)
    summary = trainer.run(callbacks=[dashboard])  # loop; watchers are callbacks on the records

Each step:
  1. data     source="student": the student samples G completions per prompt;
              source="teacher": the teacher samples traces (or gold solutions).
  2. signal   the verifier grades every completion; when signal="dense" (or the
              loss needs it) the frozen teacher scores every token in one forward.
  3. loss     a pure function from `losses.py`, chosen by `cfg.loss`.
  4. update   AdamW, gradient clipping; a non-finite loss or gradient skips the
              update and is recorded (after `max_nonfinite` in a row, training stops).

Randomness is per step and stateless: step k draws its problems from
`Random(f"{seed}:{k}")` and samples with a generator seeded from (seed, k), so a
resumed run replays exactly what an uninterrupted one would have done.

Sampling with temperature != 1, top_p or top_k draws tokens from a distribution mu other than the
student's pi; the sampled-token OPD and GRPO losses then weight each token by pi/mu, using the log-probs
the sampler stored (`Rollout.sampler_logprobs`), while the OPD reward stays log q - log pi at temperature 1
(see `rollout.py` for what a per-token ratio and a nucleus cannot correct).

Simplifications (said plainly): one optimiser update per batch, so with the default sampler GRPO's
importance ratio is 1 and PPO clipping never binds unless you add epochs; the student's log-probs are
recomputed in the training forward (the sampler's are used only for that ratio); evaluation compute is not
counted in `cost/*`.
"""
from __future__ import annotations

import copy
import math
import random
import shutil
import signal as signal_mod
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

from . import losses as L
from . import objectives, pairs
from . import zoo
from .adapters import add_lora, is_peft, load_adapter, lora_spec, reference_policy
from .batching import decode_completions, forced_rollout, prompt_batch
from .config import ConfigError, TrainConfig, apply_preset, generation_length, validate
from .costs import CostMeter
from .evaluation import evaluate
from .losses import TEACHER_LOGIT_FLOOR
from .metrics import LengthAlarm, repetition_rate, teacher_position_profile
from .models import count_params, pick_device
from .objectives import LossInputs
from .rollout import completion_logits, sample
from .runs import RunDir, RunDirError, RunDirLocked, latest_checkpoint, load_config, preflight
from .sampling import seed_for
from .student_samples import student_samples
from .tasks import TaskSpecError, get_task, rebuildable, task_ref, task_spec
from .tasks.jsonl import task_with_data
from .tokenizer import token_strings

EVAL_SEED = 0


class TrainingError(RuntimeError):
    pass


class StopTraining(Exception):
    """Raise from a callback to end training after the current step."""


class RunDirWriter:
    """Callback: append each record to the run directory (metrics flushed every step)."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir

    def on_step(self, record):
        self.run_dir.log_step(record)


def _task_for(cfg: TrainConfig, task=None):
    """(the task as named, the task trained on: with `cfg.data`'s problems, `tasks.jsonl.task_with_data`); checks the
    eval split. `task` (an object, name, import path or recorded spec) overrides `cfg.task`. The config is checked
    with its preset (a bad config fails before a data file is read); `resolve_config` decides the run's config."""
    validate(apply_preset(cfg))
    # bad rows fail here, naming file and line
    base, task_obj = task_with_data(task if task is not None else cfg.task, cfg.data)
    if cfg.eval_split not in task_obj.splits:
        raise ConfigError(f"eval_split {cfg.eval_split!r} is not a split of task {task_obj.name!r}; choose one "
                          f"of {[s for s in task_obj.splits if s != 'train']}")
    return base, task_obj


def resolve_config(cfg: TrainConfig, task, *, teacher_given: bool = False, student_given: bool = False,
                   task_name: str | None = None) -> TrainConfig:
    """The complete config a run uses, decided once: the method's preset applied, every field validated,
    teacher/student named (the task's zoo pair by default; "<object>" for a model passed in without a
    name), the generation length decided (`config.generation_length`, at least the task's longest
    reference solution + EOS), `task` recorded as `task_name` when given (`tasks.task_ref`: a built-in name
    or the class's import path). Pure: `cfg` is not changed; the result is frozen.
    """
    cfg = apply_preset(cfg)
    validate(cfg)
    t_name, s_name = cfg.teacher, cfg.student
    if (t_name is None and not teacher_given) or (s_name is None and not student_given):
        dt, ds = zoo.default_pair(task.name)
        t_name, s_name = t_name or dt, s_name or ds
    min_new = task.min_new_tokens()
    max_new = generation_length(task, cfg.max_new_tokens)
    if max_new < min_new:
        raise ConfigError(f"max_new_tokens={max_new} is below what task {task.name!r} needs "
                          f"({min_new} tokens for its longest reference solution + EOS); raise it")
    return replace(cfg, teacher=t_name if not teacher_given else (cfg.teacher or "<object>"),
                   student=s_name if not student_given else (cfg.student or "<object>"),
                   max_new_tokens=max_new, task=task_name or cfg.task).frozen()


class Trainer:
    # How a step treats [B, N, V] logits. True (the default): in the model's dtype, exactly the N scoring
    # positions projected (`completion_logits(low_memory=True)`), the teacher's clamped in place, every loss
    # and statistic computed chunk by chunk over positions (`losses.*_chunked`,
    # `losses.step_statistics`), the statistics taken before the backward so the teacher's logits are freed
    # first (issue 22). False: the path before it (float32 copies, a clamped copy, full-size log-softmaxes,
    # statistics after the update), the same numbers to float32 rounding; kept as the baseline that
    # `python -m benchmarks memory` measures in the same run.
    chunked_logits = True

    def __init__(self, cfg: TrainConfig | None = None, *, teacher=None, student=None, tokenizer=None, task=None,
                 _resume_dir: str | None = None, _student_from: str | None = None, **overrides):
        """Build from a config (or keyword overrides of one). Everything is validated before models load.

        `teacher`/`student`/`tokenizer`/`task` may be passed as ready-made objects (models built in a notebook,
        `pairs.load_named_pair`, `pairs.load_pair`); otherwise they are loaded from `cfg.teacher`/`cfg.student`
        (zoo names or checkpoint directories) by `pairs.load_checkpoint`. A student passed in is trained
        in place: its weights change with every step (pass a copy to keep the original).
        """
        if cfg is None:
            cfg = TrainConfig.for_method(overrides.pop("method", "opd"), **overrides)
        elif overrides:
            raise ConfigError("pass either a TrainConfig or keyword options, not both")
        base, self.task = _task_for(cfg, task)
        cfg = resolve_config(cfg, self.task, teacher_given=teacher is not None, student_given=student is not None,
                             task_name=task_ref(base))
        # what a run directory records to rebuild the task on --resume: class import path + constructor params
        self.task_spec = task_spec(self.task) if cfg.out is not None else None
        self.device = pick_device(cfg.device)
        self.teacher_scores = objectives.teacher_scores(cfg)
        need_teacher = objectives.needs_teacher_model(cfg)
        t_name, s_name = cfg.teacher, (_student_from or cfg.student)
        if cfg.out is not None:
            try:
                preflight(cfg.out, overwrite=cfg.overwrite, resume=_resume_dir is not None)
            except RunDirLocked:
                raise
            except RunDirError as e:
                raise ConfigError(str(e)) from None
        adapter_from = None
        if student is None and cfg.lora_r and _student_from:   # a LoRA run's checkpoints hold only its adapter
            adapter_from, s_name = _student_from, cfg.student
        if student is not None and tokenizer is None:
            raise ConfigError("a student model object needs its tokenizer: pass tokenizer=...")
        # one compatibility check for every way in (CLI, Python, compare), before any weights load
        uses_teacher = need_teacher or teacher is not None
        self.compat = pairs.check(teacher if teacher is not None else (t_name if need_teacher else None),
                                  student if student is not None else s_name, tokenizer,
                                  alignment=cfg.alignment, uses_teacher=uses_teacher)
        self.compat.raise_if_errors()
        self.cfg = cfg

        # ---- models -----------------------------------------------------------------------
        if student is None:
            student, s_tok = pairs.load_checkpoint("student", s_name, str(self.device), dtype=cfg.dtype)
        else:
            s_tok = tokenizer
            student = student.to(self.device)
        if cfg.lora_r and not is_peft(student):
            student = (load_adapter(student, adapter_from, trainable=True) if adapter_from
                       else add_lora(student, lora_spec(cfg)))
        self.tokenizer = s_tok
        self.teacher = None
        if uses_teacher:
            if teacher is None:
                teacher, _ = pairs.load_teacher_model(t_name, self.device, dtype=cfg.dtype, alignment=cfg.alignment,
                                                      teacher_device=cfg.teacher_device,
                                                      student_config=student.config)
            else:
                teacher = pairs.view_teacher(teacher if cfg.teacher_device else teacher.to(self.device), self.device,
                                             student.config, alignment=cfg.alignment)
            self.teacher = teacher.eval().requires_grad_(False)
        bad = [c for c in self.task.charset if s_tok.convert_tokens_to_ids(c) in (None, s_tok.unk_token_id)]
        if bad:
            raise ConfigError(f"the student's tokenizer lacks characters of task {self.task.name!r}: {bad}; "
                              "use a checkpoint built for this task")
        self.student = student.train()
        self.ref = None
        if objectives.needs_reference(cfg):
            # pi_ref = the initial student, frozen (G-OPD / Stable-OPD)
            # (a LoRA student: the base model with its adapters disabled, no copy; see adapters.reference_policy)
            self.ref = reference_policy(student)
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     betas=(0.9, 0.99))
        self.costs = CostMeter(count_params(self.student), count_params(self.teacher) if self.teacher else 0)
        self.step_count = 0
        self.nonfinite_in_row = 0
        self._good = (0, self.costs.state_dict())    # (step, costs) after the last applied (finite) update
        self._interruptible = False                  # may a SIGINT raise KeyboardInterrupt right now?
        self._interrupt_pending = False              # a SIGINT arrived while it could not
        self._sigint_installed = False
        self.start_time = None
        self.eval_problems = self.task.problems(cfg.eval_problems, seed=EVAL_SEED, split=cfg.eval_split)
        self._stop = threading.Event()
        self._stop_reason = None
        self.alarm = LengthAlarm(cfg.warn_truncation, cfg.warn_repetition, cfg.warn_rise, cfg.warn_window,
                                 cfg.warn_shrink)
        torch.manual_seed(cfg.seed)

        # ---- run directory ------------------------------------------------------------------
        self.run_dir = None
        if cfg.out is not None:
            self.run_dir = RunDir(cfg.out, {"config": cfg.to_dict(), "task": self.task_spec},
                                  overwrite=cfg.overwrite, resume=_resume_dir is not None)

    # =========================================================================================
    # one step
    # =========================================================================================
    def _lr(self, step: int) -> float:
        w = self.cfg.warmup_steps
        return self.cfg.lr * min(1.0, step / w) if w else self.cfg.lr

    def _sample(self, model, problems, generator, temperature, top_p=None, top_k=None):
        ids, mask = prompt_batch(self.tokenizer, problems, self.device, task=self.task)
        return sample(model, ids, mask, max_new_tokens=self.cfg.max_new_tokens,
                      eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                      temperature=temperature, top_p=top_p, top_k=top_k, generator=generator)

    def _batch(self, k: int):
        """(problems, rollout, on_policy) for step k."""
        cfg = self.cfg
        rng = random.Random(f"{cfg.seed}:{k}:problems")
        gen = torch.Generator(device=self.device).manual_seed(seed_for(cfg.seed, k, 1))
        n_prompts = cfg.batch_size // cfg.num_generations
        unique = [self.task.make_problem(rng, "train") for _ in range(n_prompts)]
        problems = [p for p in unique for _ in range(cfg.num_generations)]   # groups contiguous
        on_policy = cfg.source == "student" and (cfg.lmbda >= 1.0 or rng.random() < cfg.lmbda)
        if on_policy:
            r = self._sample(self.student, problems, gen, cfg.temperature, cfg.top_p, cfg.top_k)
            self.costs.student_generate(int(r.completion_mask.sum()) + int(r.prompt_mask.sum()))
        elif cfg.source == "teacher" and cfg.sft_data == "reference":
            r = forced_rollout(self.tokenizer, problems, device=self.device, task=self.task)
            self.costs.student_read(int(r.completion_mask.sum()) + int(r.prompt_mask.sum()))
        else:   # teacher-written traces (sequence-level KD data, or GKD's off-policy batches)
            r = self._sample(self.teacher, problems, gen, cfg.teacher_temperature)
            self.costs.teacher_generate(int(r.completion_mask.sum()) + int(r.prompt_mask.sum()))
            self.costs.student_read(int(r.completion_mask.sum()) + int(r.prompt_mask.sum()))
        return unique, problems, r, on_policy

    def step(self) -> dict:
        """Run one update and return its record.

        A step is all-or-nothing. An exception before the update is applied (a Ctrl-C / kernel interrupt
        included) leaves the trainer as it was: no update, step counter and costs rolled back, no record.
        The update and the counters then change together while the record is built (interrupts are held
        for that stretch); an interrupt during the step's evaluation ends the evaluation early, the step
        still counts, its record carries `eval/interrupted`, and `run()` stops after logging it (a direct
        `step()` call raises KeyboardInterrupt after the step instead).
        """
        own = self._install_sigint()        # None inside run(), which installed it already
        try:
            return self._step(self.step_count + 1)
        finally:
            if own is not None:
                self._restore_sigint(own)
                if self._interrupt_pending:
                    self._interrupt_pending = False
                    raise KeyboardInterrupt

    # ---- interrupts: SIGINT raises only where nothing is half-done ---------------------------
    def _on_sigint(self, signum, frame):
        if self._interruptible:
            raise KeyboardInterrupt
        self._interrupt_pending = True

    def _install_sigint(self):
        """Route SIGINT through `_on_sigint` (main thread, default Python handler only). Returns [old] or None."""
        if self._sigint_installed or threading.current_thread() is not threading.main_thread():
            return None
        old = signal_mod.getsignal(signal_mod.SIGINT)
        if not callable(old):           # SIG_IGN / SIG_DFL / set from C: leave it alone
            return None
        signal_mod.signal(signal_mod.SIGINT, self._on_sigint)
        self._sigint_installed = True
        return [old]

    def _restore_sigint(self, saved) -> None:
        signal_mod.signal(signal_mod.SIGINT, saved[0])
        self._sigint_installed = False

    def _step(self, k: int) -> dict:
        cfg = self.cfg
        if self.start_time is None:
            self.start_time = time.time()
        costs_before = self.costs.state_dict()
        self._interruptible = True
        try:
            t0 = time.time()
            unique, problems, r, on_policy = self._batch(k)
            t_gen = time.time() - t0

            # ---- signal: verifier on every completion, teacher on every token when needed --------
            texts = decode_completions(self.tokenizer, r)
            verdicts = [self.task.verify(p, t, truncated=tr)
                        for p, t, tr in zip(problems, texts, r.truncated.tolist())]
            rewards = torch.tensor([v.reward for v in verdicts], device=self.device)
            mask = r.completion_mask
            tokens_in_batch = int(r.prompt_mask.sum() + mask.sum())
            t1 = time.time()
            chunked = self.chunked_logits
            lp_of = L.token_logprobs_chunked if chunked else L.token_logprobs
            ids = r.completion_ids
            teacher_logits = t_lp = None
            if self.teacher_scores:
                with torch.no_grad():
                    teacher_logits = completion_logits(self.teacher, r, temperature=cfg.teacher_score_temperature,
                                                       low_memory=chunked)
                    # chunked: floored in place, no copy (in half precision the floor is the dtype's value nearest
                    # TEACHER_LOGIT_FLOOR, e.g. -9984 in bfloat16; only -inf / banned entries are that low)
                    teacher_logits = (teacher_logits.clamp_(min=TEACHER_LOGIT_FLOOR) if chunked
                                      else teacher_logits.clamp(min=TEACHER_LOGIT_FLOOR))
                    t_lp = lp_of(teacher_logits, ids)
                self.costs.teacher_score(tokens_in_batch)
            t_teacher = time.time() - t1

            # ---- loss --------------------------------------------------------------------------
            t2 = time.time()
            s_logits = completion_logits(self.student, r, low_memory=chunked)
            self.costs.student_train(tokens_in_batch)
            s_lp = lp_of(s_logits, ids)
            ref_logits = None
            if self.ref is not None:
                with torch.no_grad():
                    ref_logits = completion_logits(self.ref, r, low_memory=chunked)
                self.costs.student_forward(tokens_in_batch)
            stats = {}
            loss_mask = mask
            if cfg.mask_special_tokens:     # special-token mismatch fix: no teacher signal at EOS positions
                loss_mask = mask * (ids != self.tokenizer.eos_token_id).to(mask.dtype)
                stats["mask/special_masked_frac"] = 1.0 - loss_mask.sum().item() / max(1.0, mask.sum().item())
            if cfg.teacher_horizon is not None:     # teacher supervision on the first k completion tokens only
                loss_mask = L.horizon_mask(loss_mask, cfg.teacher_horizon)
            # tokens drawn from a tempered / truncated sampler: the ratio pi/mu reweights them to the student
            sampler_lp = r.sampler_logprobs if on_policy and self._tempered_sampler() else None
            loss = self._loss(cfg, r, loss_mask, rewards, s_logits, s_lp, teacher_logits, t_lp, ref_logits, stats,
                              sampler_lp)
            if cfg.kl_coef > 0:
                kl_ref, _ = (L.kl_to_reference_chunked if chunked else L.kl_to_reference)(s_logits, ref_logits, mask)
                loss = loss + cfg.kl_coef * kl_ref
                stats["ref/kl"] = kl_ref.item()
            if cfg.sft_coef > 0:
                gold = forced_rollout(self.tokenizer, unique, device=self.device, task=self.task)
                g_tokens = int(gold.prompt_mask.sum() + gold.completion_mask.sum())
                self.costs.student_read(g_tokens)
                self.costs.student_train(g_tokens)
                sft = (L.cross_entropy_loss_chunked if chunked else L.cross_entropy_loss)(
                    completion_logits(self.student, gold, low_memory=chunked), gold.completion_ids,
                    gold.completion_mask)
                loss = loss + cfg.sft_coef * sft
                stats["gold/sft_loss"] = sft.item()
            by_position = None
            if teacher_logits is not None and cfg.eval_every and (k % cfg.eval_every == 0 or k == cfg.steps):
                # where along the response the teacher's signal sits, on this step's batch (lists by position;
                # on evaluation steps only, to keep records small)
                by_position = teacher_position_profile(s_logits.detach(), teacher_logits, ids, mask, chunked=chunked)
            logit_stats = None
            if chunked:     # now, so that the teacher's and pi_ref's logits are freed before the backward
                logit_stats = self._logit_statistics(s_logits, teacher_logits, mask)
                teacher_logits = ref_logits = None

            # ---- gradient (guarded: a non-finite loss or gradient skips the update) ---------------
            for g in self.opt.param_groups:
                g["lr"] = self._lr(k)
            self.opt.zero_grad(set_to_none=True)
            skipped, gnorm = None, None
            if not torch.isfinite(loss):
                skipped = "non-finite loss"
            else:
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.max_grad_norm)
                if not torch.isfinite(gnorm):
                    skipped = "non-finite gradient"
        except BaseException:
            self._interruptible = False
            self.costs.load_state_dict(costs_before)        # nothing of this step happened
            self.opt.zero_grad(set_to_none=True)
            self.student.train()
            raise
        self._interruptible = False

        # ---- commit: the update and the counters change together --------------------------------
        if skipped is None:
            self.opt.step()
            stats["grad/norm"] = gnorm.item()
        self.opt.zero_grad(set_to_none=True)
        self.step_count = k
        if skipped is None:
            self.nonfinite_in_row = 0
            self._good = (k, self.costs.state_dict())
        else:
            self.nonfinite_in_row += 1
        t_update = time.time() - t2

        # ---- record ---------------------------------------------------------------------------
        lengths = r.lengths.float()
        rec = {"step": k, "run": cfg.name, "method": cfg.method, "total_steps": cfg.steps,
               "max_new_tokens": cfg.max_new_tokens, "lr": self._lr(k), "loss": loss.item(),
               "batch/on_policy": on_policy,
               "rollout/mean_length": lengths.mean().item(), "rollout/max_length": lengths.max().item(),
               "rollout/truncated_frac": r.truncated.float().mean().item(),
               "rollout/repetition_rate": repetition_rate(texts),
               "reward/mean": rewards.mean().item(), "train/accuracy": sum(v.correct for v in verdicts) / len(verdicts)}
        if logit_stats is None:
            logit_stats = self._logit_statistics(s_logits, teacher_logits, mask)
        rec["policy/entropy"] = logit_stats["entropy"].item()
        if t_lp is not None:
            with torch.no_grad():
                tok_r = (t_lp - s_lp.detach())
                m = mask.bool()
                rec["teacher/token_reward_mean"] = tok_r[m].mean().item()
                rec["teacher/token_reward_neg_frac"] = (tok_r[m] < 0).float().mean().item()
            rec["teacher/reverse_kl"] = logit_stats["reverse_kl"].item()
            rec["teacher/topk_overlap"] = logit_stats["topk_overlap"].item()
            # k = 1: do student and teacher agree on the most likely next token? In a small vocabulary
            # top-4 overlap is mostly the order of near-zero tail tokens; top-1 is not.
            rec["teacher/top1_overlap"] = logit_stats["top1_overlap"].item()
            if by_position is not None:
                rec["teacher/by_position"] = by_position
        rec.update(stats)
        rec.update(self.costs.as_metrics())
        rec.update({"time/generate_s": t_gen, "time/teacher_s": t_teacher, "time/update_s": t_update})
        if skipped:
            rec["nonfinite/skipped"] = 1
            rec["nonfinite/reason"] = skipped
            rec["nonfinite/consecutive"] = self.nonfinite_in_row
            if gnorm is not None:
                rec["grad/norm"] = gnorm.item()
            if self.run_dir:
                self.run_dir.log_event("skipped_update", why=skipped,
                                       **{kk: v for kk, v in rec.items() if not kk.startswith("time/")})
            if self.nonfinite_in_row >= cfg.max_nonfinite > 0:
                self._stop_reason = (f"stopped after {self.nonfinite_in_row} consecutive non-finite updates "
                                     f"(last: {skipped} at step {k}); the weights are those of step "
                                     f"{self._good[0]}, the last good update, kept as the run's checkpoint. "
                                     "Lower lr, check the teacher's logits, or raise max_nonfinite")
                self._stop.set()
        rec["samples"] = self._samples(problems, r, texts, verdicts, s_lp, t_lp)
        if cfg.source == "teacher" and cfg.student_samples_every and k % cfg.student_samples_every == 0:
            rec.update(student_samples(self, k, unique))   # SFT: the student's own text (evaluation cost)
        warnings = self.alarm.update(rec)
        if warnings:
            rec["warning"] = "; ".join(warnings)
            if self.run_dir:
                self.run_dir.log_event("early_warning", step=k, message=rec["warning"])
            if cfg.on_warning == "checkpoint" and self.run_dir:
                self.save()
            elif cfg.on_warning == "stop":
                self.request_stop(f"early warning: {rec['warning']}")
        if cfg.eval_every and (k % cfg.eval_every == 0 or k == cfg.steps):
            self._interruptible = True
            try:
                rec.update(self.evaluate(step=k))
            except KeyboardInterrupt:           # the step is done; only its evaluation is cut short
                rec["eval/interrupted"] = 1
                self._interrupt_pending = True
                self.student.train()
            finally:
                self._interruptible = False
        rec["time/step_s"] = time.time() - t0
        rec["time/elapsed_s"] = time.time() - self.start_time
        return rec

    def _tempered_sampler(self) -> bool:
        """Do the student's rollouts come from a distribution other than its own (temperature 1, unfiltered)?"""
        cfg = self.cfg
        return cfg.temperature != 1.0 or (cfg.top_p is not None and cfg.top_p < 1.0) or cfg.top_k is not None

    @torch.no_grad()
    def _logit_statistics(self, s_logits, t_logits, mask) -> dict:
        """Entropy and, with the teacher's logits, reverse KL and top-k / top-1 overlap (masked means)."""
        k = min(self.cfg.teacher_topk, s_logits.shape[-1])
        if self.chunked_logits:
            return L.step_statistics(s_logits.detach(), t_logits, mask, k=k)
        s = s_logits.detach()
        out = {"entropy": L.entropy(s, mask)[0]}
        if t_logits is not None:
            out.update(reverse_kl=L.full_reverse_kl(s, t_logits, mask)[0], topk_overlap=L.topk_overlap(
                s, t_logits, k, mask), top1_overlap=L.topk_overlap(s, t_logits, 1, mask))
        return out

    def _loss(self, cfg, r, mask, rewards, s_logits, s_lp, t_logits, t_lp, ref_logits, stats, sampler_lp=None):
        """The configured objective's loss (`objectives.OBJECTIVES[cfg.loss]`); it may add statistics to `stats`."""
        inputs = LossInputs(rollout=r, mask=mask, rewards=rewards, s_logits=s_logits, s_lp=s_lp, t_logits=t_logits,
                            t_lp=t_lp, ref_logits=ref_logits, sampler_lp=sampler_lp, chunked=self.chunked_logits)
        return objectives.get(cfg.loss).compute(inputs, cfg, stats)

    def _samples(self, problems, r, texts, verdicts, s_lp, t_lp) -> list[dict]:
        out = []
        n = min(self.cfg.num_samples, len(problems))
        stride = max(1, len(problems) // max(n, 1))   # spread over groups rather than one prompt's G copies
        for i in list(range(0, len(problems), stride))[:n]:
            length = int(r.lengths[i])
            ids = r.completion_ids[i, :length].tolist()
            out.append({"prompt": problems[i].prompt, "tokens": token_strings(self.tokenizer, ids),
                        "token_reward": None if t_lp is None else
                        [round(float(x), 4) for x in (t_lp[i, :length] - s_lp[i, :length].detach()).tolist()],
                        "student_logprob": [round(float(x), 4) for x in s_lp[i, :length].detach().tolist()],
                        "correct": bool(verdicts[i].correct), "reward": float(verdicts[i].reward),
                        "truncated": bool(r.truncated[i])})
        return out

    # =========================================================================================
    # evaluation
    # =========================================================================================
    def evaluate(self, step: int | None = None, problems=None, model=None) -> dict:
        """Held-out greedy accuracy (+ sampled accuracy at T=1), mean length, truncated fraction."""
        model = model or self.student
        probs = problems or self.eval_problems
        g = evaluate(model, self.tokenizer, self.task, probs, max_new_tokens=self.cfg.max_new_tokens)
        out = {"eval/accuracy": g["accuracy"], "eval/mean_length": g["mean_length"],
               "eval/truncated_frac": g["truncated_frac"]}
        if self.cfg.eval_sampled:
            gen = torch.Generator(device=self.device).manual_seed(seed_for(self.cfg.seed, step or 0, 2))
            s = evaluate(model, self.tokenizer, self.task, probs, max_new_tokens=self.cfg.max_new_tokens,
                         temperature=1.0, generator=gen)
            out["eval/sampled_accuracy"] = s["accuracy"]
        self.student.train()
        return out

    # =========================================================================================
    # the loop
    # =========================================================================================
    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to end after the current step (thread-safe)."""
        self._stop_reason = reason
        self._stop.set()

    def run(self, steps: int | None = None, callbacks=(), progress: bool = False) -> dict:
        """Train until `cfg.steps` (or `steps` more), feeding each record to the callbacks.

        Ends cleanly — metrics flushed, a checkpoint of the last completed step written, the reason in
        status.json, on_end called — on completion, on a callback asking to stop (the dashboard's Stop
        button), on Ctrl-C / kernel interrupt, on SIGTERM, and on an error (re-raised afterwards). After
        `max_nonfinite` consecutive skipped updates it raises TrainingError, keeping the last good
        checkpoint. Returns a summary.
        """
        cfg = self.cfg
        target = cfg.steps if steps is None else min(cfg.steps, self.step_count + steps)
        callbacks = list(callbacks)
        writer = None
        if self.run_dir is not None:
            writer = RunDirWriter(self.run_dir)
            callbacks.insert(0, writer)
        if progress:
            callbacks.append(ProgressPrinter())
        info = {"run": cfg.name, "method": cfg.method, "total_steps": cfg.steps, "max_new_tokens": cfg.max_new_tokens,
                "start_step": self.step_count, "config": cfg.to_dict()}
        self._stop.clear()
        self._stop_reason = None
        self._interrupt_pending = False
        old_term = old_int = None
        if threading.current_thread() is threading.main_thread():
            old_term = signal_mod.signal(signal_mod.SIGTERM, lambda *_: self.request_stop("SIGTERM"))
            old_int = self._install_sigint()
        reason, error, last = "completed", None, None
        try:
            try:
                for cb in callbacks:
                    if hasattr(cb, "on_start"):
                        cb.on_start(info)
                if self.run_dir:
                    self.run_dir.write_status("running", step=self.step_count)
                while self.step_count < target:
                    rec = self.step()
                    last = rec
                    for cb in callbacks:
                        if not hasattr(cb, "on_step"):
                            continue
                        self._interruptible = cb is not writer      # the record is logged whole or not at all
                        try:
                            if cb.on_step(rec):
                                self.request_stop(f"stopped by {type(cb).__name__}")
                        except StopTraining as e:
                            self.request_stop(str(e) or f"stopped by {type(cb).__name__}")
                        finally:
                            self._interruptible = False
                    if (cfg.save_every and self.step_count % cfg.save_every == 0 and self.run_dir
                            and self.nonfinite_in_row == 0):
                        self.save()
                    if self._interrupt_pending:
                        reason = "interrupted"
                        break
                    if self._stop.is_set():
                        reason = "stopped"
                        break
            except KeyboardInterrupt:
                reason = "interrupted"
            except BaseException as e:          # record why, keep what we have, then re-raise
                reason, error = "error", e
            self._interruptible = False
            if reason == "stopped" and self.nonfinite_in_row >= cfg.max_nonfinite > 0:
                reason = "nonfinite"
            if reason == "interrupted":
                self._stop_reason = f"interrupted (KeyboardInterrupt) after step {self.step_count}"
            summary = self.summary(last)
            summary.update({"reason": reason, "message": self._stop_reason or (repr(error) if error else reason)})
            if self.run_dir:
                ck = None
                try:
                    ck = self._save_last_good() if reason == "nonfinite" else self.save()
                except Exception as e:
                    if error is None:
                        error, reason = e, "error"
                        summary.update({"reason": reason, "message": repr(e)})
                self.run_dir.write_status(reason, step=self.step_count, message=summary["message"],
                                          checkpoint=ck.name if ck is not None else None)
                self.run_dir.log_event("ended", reason=reason, step=self.step_count, message=summary["message"])
            for cb in callbacks:
                if hasattr(cb, "on_end"):
                    try:
                        cb.on_end(summary)
                    except Exception:
                        pass
        finally:
            self._interruptible = False
            if self.run_dir is not None:
                self.run_dir.close()            # release the lock: the directory can be resumed now
            if old_int is not None:
                self._restore_sigint(old_int)
            if old_term is not None:
                signal_mod.signal(signal_mod.SIGTERM, old_term)
            self._interrupt_pending = False
        if error is not None:
            raise error
        if reason == "nonfinite":
            raise TrainingError(summary["message"])
        return summary

    def summary(self, last: dict | None = None) -> dict:
        s = {"run": self.cfg.name, "method": self.cfg.method, "step": self.step_count,
             "student_tokens": self.costs.student_tokens, "teacher_tokens": self.costs.teacher_tokens,
             "flops": self.costs.flops, "wall_s": (time.time() - self.start_time) if self.start_time else 0.0}
        if last is not None and "eval/accuracy" in last:
            s["final_eval_accuracy"] = last["eval/accuracy"]
        return s

    # =========================================================================================
    # checkpoints and resume
    # =========================================================================================
    def save(self) -> Path | None:
        """Checkpoint the current step into the run directory, atomically (temp dir, then rename).

        Holds the student (safetensors) and tokenizer, the optimizer state, costs, counters and the RNG
        states; the learning-rate schedule is a pure function of the step, so the step restores it.
        """
        if self.run_dir is None:
            return None
        was_open = self.run_dir.is_open
        try:
            return self._save(self.step_count, self.costs.state_dict(), self.nonfinite_in_row, self._good)
        finally:
            if not was_open:
                self.run_dir.close()

    def _save_last_good(self) -> Path | None:
        """After a run of skipped updates the weights and optimizer are still those of the last good step:
        make sure a checkpoint of that step exists (never one of a skipped step)."""
        g_step, g_costs = self._good
        ck = latest_checkpoint(self.run_dir.path)
        if ck is not None and int(ck.name.split("_")[-1]) >= g_step:
            return ck
        return self._save(g_step, g_costs, 0, self._good)

    def _save(self, step: int, costs: dict, nonfinite_in_row: int, good) -> Path:
        tmp = self.run_dir.path / "checkpoints" / f".tmp_step_{step:06d}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self.student.save_pretrained(tmp, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        alarm = getattr(self, "alarm", None)      # watchers with memory resume too (the early-warning window)
        torch.save({"step": step, "optimizer": self.opt.state_dict(), "costs": costs,
                    "alarm": copy.deepcopy(vars(alarm)) if alarm is not None else None,
                    "nonfinite_in_row": nonfinite_in_row, "good_step": good[0], "good_costs": good[1],
                    "elapsed_s": (time.time() - self.start_time) if self.start_time else 0.0, "rng": rng},
                   tmp / "trainer_state.pt")
        return self.run_dir.commit_checkpoint(tmp, step)

    def close(self) -> None:
        """Release the run directory (files and lock); a later write re-acquires it."""
        if self.run_dir is not None:
            self.run_dir.close()

    @classmethod
    def resume(cls, run_dir, steps: int | None = None, task=None) -> "Trainer":
        """Rebuild a trainer from a run directory's config and its latest checkpoint.

        Model, optimizer, costs, counters and RNG states come back; the per-step randomness is a function
        of (seed, step), so the resumed run repeats exactly what an uninterrupted one would have done.
        Steps logged after the checkpoint are dropped from metrics.jsonl / samples.jsonl (they are re-run).
        The task is rebuilt from the directory's record (its class's import path and parameters); `task`
        passes it instead (needed for a task class defined in a notebook, which no other process can import).
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"cannot resume {str(run_dir)!r}: no such run directory")
        record = load_config(run_dir)
        cfg = TrainConfig.from_dict(record["config"])
        if task is None and record.get("task"):
            spec = record["task"]
            if not rebuildable(spec):
                raise ConfigError(f"cannot resume {str(run_dir)!r}: its task {spec['class']} was defined in a "
                                  "notebook or script, which this process cannot import; pass it "
                                  "(Trainer.resume(dir, task=MyTask(...))) or move the class into a module")
            try:
                task = get_task(spec)
            except (TaskSpecError, ValueError, FileNotFoundError) as e:
                raise ConfigError(f"cannot resume {str(run_dir)!r}: its task could not be rebuilt from the "
                                  f"record {spec}: {e}") from None
        if steps is not None:
            cfg = replace(cfg, steps=steps)
        for role in ("student", "teacher"):
            if getattr(cfg, role) == "<object>":
                raise ConfigError(f"cannot resume {str(run_dir)!r}: its {role} was passed as a model object, which "
                                  "a run directory cannot rebuild; train from checkpoint directories or zoo names "
                                  "to make a run resumable")
        ck = latest_checkpoint(run_dir)
        if ck is None:
            raise FileNotFoundError(f"{str(run_dir)!r} has no checkpoint to resume from; start a new run instead")
        # the student's weights come from the checkpoint; its name in the config stays the run's starting point
        trainer = cls(replace(cfg, out=str(run_dir)), task=task, _resume_dir=str(run_dir), _student_from=str(ck))
        state = torch.load(ck / "trainer_state.pt", map_location=trainer.device, weights_only=False)
        trainer.opt.load_state_dict(state["optimizer"])
        trainer.costs.load_state_dict(state["costs"])
        trainer.step_count = state["step"]
        trainer.nonfinite_in_row = state["nonfinite_in_row"]
        trainer._good = (state.get("good_step", state["step"]), state.get("good_costs", state["costs"]))
        trainer.start_time = time.time() - state.get("elapsed_s", 0.0)
        if state.get("alarm") is not None and getattr(trainer, "alarm", None) is not None:
            vars(trainer.alarm).update(state["alarm"])
        rng = state.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if "python" in rng:
            random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in rng["cuda"]])
        if trainer.ref is not None:
            # pi_ref is the *initial* student, not the checkpoint
            init, _ = pairs.load_checkpoint("reference (initial student)", cfg.student, str(trainer.device), trainable=False)
            trainer.ref = init
        trainer.run_dir.truncate_after(trainer.step_count)
        trainer.run_dir.log_event("resumed", step=trainer.step_count, checkpoint=ck.name)
        return trainer


class ProgressPrinter:
    """Callback: one line per step (or every `every` steps) with the headline numbers."""

    def __init__(self, every: int = 10):
        self.every = every

    def on_step(self, rec):
        if rec["step"] % self.every and rec["step"] != rec["total_steps"] and "eval/accuracy" not in rec:
            return
        parts = [f"[{rec['run']}] step {rec['step']}/{rec['total_steps']}", f"loss {rec['loss']:.4f}",
                 f"len {rec['rollout/mean_length']:.1f}", f"train_acc {rec['train/accuracy']:.2f}"]
        if "teacher/reverse_kl" in rec:
            parts.append(f"rkl {rec['teacher/reverse_kl']:.3f}")
        if "eval/accuracy" in rec:
            parts.append(f"EVAL {rec['eval/accuracy']:.3f}")
        parts.append(f"{rec['time/elapsed_s']:.0f}s")
        print("  ".join(parts), flush=True)


def trainer_for(pair: "pairs.Pair", task, method: str = "opd", **overrides):
    """A `Trainer` on the pair's objects (teacher left out for methods that never use it)."""
    # what the pair was loaded with, recorded (LoRA set on the pair is not: its adapters live on the objects)
    t_dev = pair.info.get("teacher_device")
    loaded = {"alignment": pair.report.alignment, "dtype": str(pair.dtype).replace("torch.", ""),
              **({"teacher_device": t_dev} if t_dev and t_dev != str(pair.device) else {})}
    cfg = TrainConfig.for_method(method, **{"task": getattr(task, "name", str(task)), "teacher": pair.teacher_name,
                                            "student": pair.student_name, "device": str(pair.device), **loaded,
                                            **overrides})
    uses_teacher = objectives.needs_teacher_model(cfg)
    if uses_teacher and pair.teacher is None:
        raise ConfigError(f"method {method!r} needs the teacher; load the pair with load_teacher=True")
    return Trainer(cfg, teacher=pair.teacher if uses_teacher else None, student=pair.student,
                   tokenizer=pair.tokenizer, task=task)
