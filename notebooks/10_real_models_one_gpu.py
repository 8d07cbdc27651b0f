# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 10 · Real checkpoints on one GPU: a Hugging Face pair, LoRA, bf16, a memory plan
#
# **The question.** Everything so far ran on toy models with an 18-token vocabulary. What changes
# when the student is `Qwen2.5-0.5B-Instruct`, the teacher `Qwen2.5-1.5B-Instruct`, the vocabulary
# 151,936 tokens and the task grade-school math word problems? The *algorithm* does not change —
# the same trainer runs OPD and GRPO — but three practical things do:
#
# 1. **Can this pair be distilled at all?** OPD compares the two models' log-probabilities token by
#    token, so they must share a tokenizer, EOS and PAD. We check that from configs and tokenizers
#    before loading a single weight.
# 2. **Does it fit?** With a 150k vocabulary the float32 logits, not the weights, dominate memory:
#    one `[batch, new tokens, vocabulary]` tensor at batch 16 × 256 tokens is 2.5 GB, and a step holds
#    several. The planner estimates the peak from the configs alone.
# 3. **What trains?** A LoRA adapter on the student (a few million parameters), in bf16, with
#    gradient checkpointing; pi_ref (for KL-regularised variants) is the same model with its adapter
#    switched off — no second copy.
#
# Without a GPU (or at `size="smoke"`) the notebook says so and runs the same code on tiny stand-in
# checkpoints built on the spot; the named models are then only *planned*, never downloaded.

# %% tags=["parameters"]
size: str = "full"          # "smoke": a few steps on tiny stand-ins (seconds, the tests); "full": the named pair on a GPU (minutes; tiny stand-ins without one)
run_dir: str = "../runs/notebooks/10_real_models_one_gpu"   # where the dashboard HTML, adapters and results.json go
mode: str = "live"          # "live": the dashboard redraws while training; "static": final figures only (headless runs)
device: str = "auto"        # "auto": CUDA when present, else CPU; or "cpu" / "cuda"
student: str = "Qwen/Qwen2.5-0.5B-Instruct"   # hub name or local path of the student (hub names need the HF cache or network)
teacher: str = "Qwen/Qwen2.5-1.5B-Instruct"   # hub name or local path of the teacher (must share the student's tokenizer)
data_path: str = ""         # GSM8K-format JSONL or parquet file (question, worked answer ending in #### N); empty: the 12 shipped sample problems
lora_r: int = 16            # LoRA rank of the student adapter (alpha is twice the rank; all linear layers of the blocks)

# %%
import time
t_start = time.time()
from pathlib import Path

import pandas as pd

from workbench import compat, hf, memcheck, memory, real
from workbench import experiments as X
from workbench.claims import Claims, write_results
from workbench.tasks.gsm8k import GSM8K
from widgets import TrainingDashboard

out = Path(run_dir)
out.mkdir(parents=True, exist_ok=True)
C = real.choose_checkpoints(student, teacher, size=size, device=device, stand_in_dir=out / "stand_ins")
S = X.pick_size("full" if (size == "full" and C.real) else ("cpu" if size == "full" else "smoke"),
                smoke=dict(steps=2, batch_size=4, num_generations=2, max_new_tokens=12, eval_every=2,
                           eval_problems=2, lr=1e-3),
                cpu=dict(steps=6, batch_size=8, num_generations=4, max_new_tokens=24, eval_every=3,
                         eval_problems=3, lr=1e-3),
                full=dict(steps=40, batch_size=16, num_generations=4, max_new_tokens=256, eval_every=10,
                          eval_problems=128, lr=1e-4))
task = GSM8K(data_path or None, max_new_tokens=S.max_new_tokens)
claims = Claims(size if C.real else f"{size} on stand-ins", evaluated_sizes=("full",))
task

# %% [markdown]
# ## The data: GSM8K format, a numeric verifier
#
# Each row has a `question` and a worked `answer` whose last line is `#### N`. The prompt is the
# question plus one instruction line, rendered as a user turn through the student's **chat
# template** with the assistant's generation prompt. The verifier reads the number after the last
# `####` in the completion (or, failing that, the last number in it), so `1,250`, `$1250.00` and
# `1250` all count. Pass `data_path` to use GSM8K's own `train.jsonl` (a quarter is held out).

# %%
tok = hf.load_tokenizer(C.student)
p0 = task.train[0]
print(tok.decode(task.encode_prompt(tok, p0.prompt)))
print("reference answer:", p0.answer, "| verifier on the reference solution:", task.verify(p0, p0.solution))

# %% [markdown]
# ## 1 · Compatibility, from configs and tokenizers only
#
# `compat.check_names` reads `config.json` and the tokenizer files — no weights. It refuses a pair
# whose vocabularies, EOS or PAD differ (each with its fix), and accepts one whose embedding
# matrices are merely padded to different sizes only if you ask for `alignment="truncate"`
# (Qwen2.5-7B pads to 152,064 rows, the 0.5B and 1.5B to 151,936).

# %%
report = compat.check_names(C.teacher, C.student)
report

# %% [markdown]
# ## 2 · The memory plan, before loading
#
# Weights of both models, the LoRA adapter with its gradients and AdamW moments, the KV cache while
# sampling, the activations the backward pass needs (with checkpointing: one block's input per
# layer), and the float32 logits the losses work on. The step's peak is the static part plus its
# largest phase; "largest batch that fits" searches over the batch size. First the pair we run, then
# the named Qwen pair on an 80 GB GPU (planned from its shapes even here).

# %%
P = memcheck.max_prompt_len(task, tok)
s_cfg, t_cfg = hf.load_config(C.student), hf.load_config(C.teacher)
plan_kw = dict(batch_size=S.batch_size, prompt_len=P, max_new_tokens=S.max_new_tokens, lora_r=lora_r,
               dtype="bf16" if C.device.type == "cuda" else "fp32", gradient_checkpointing=True, device=C.device)
plan_opd = memory.plan(s_cfg, t_cfg, method="opd", **plan_kw)
plan_grpo = memory.plan(s_cfg, t_cfg, method="grpo", num_generations=S.num_generations, **plan_kw)
print(plan_opd.table())
print()
qwen = real.real_pair_plan(batch_size=16, prompt_len=max(P, 160), max_new_tokens=256, lora_r=lora_r)
print("Qwen2.5-1.5B-Instruct -> 0.5B-Instruct shapes, bf16, on an 80 GiB GPU:\n" + qwen.table())

# %% [markdown]
# ## 3 · Load: bf16 on the GPU, frozen teacher, LoRA student
#
# `hf.load_pair` repeats the compatibility check, then loads both models in one dtype on one device
# (`device_map={"": 0}` on CUDA), freezes the teacher, turns on gradient checkpointing and wraps the
# student with a LoRA adapter (`peft`). `teacher_device="cpu"` would keep the teacher off the GPU;
# 8-bit teachers need `bitsandbytes`, which this project does not install (`load_model` says so).

# %%
pair = hf.load_pair(C.teacher, C.student, device=C.device, lora=hf.LoraSpec(r=lora_r, alpha=2 * lora_r),
                    gradient_checkpointing=True)
print(pair.describe())
hf.lora_summary(pair.student)

# %% [markdown]
# ## 4 · OPD vs GRPO, one dashboard
#
# Two fresh adapters on the same frozen base: OPD (the teacher scores every sampled token) and GRPO
# (one verifier reward per completion, `num_generations` samples per prompt). Same steps, same batch
# size, same learning rate. The dashboard is the one of the earlier notebooks; its heatmap colours
# each sampled token of the OPD run by the teacher's reward.

# %%
dash = TrainingDashboard(mode=mode)
common = dict(steps=S.steps, batch_size=S.batch_size, max_new_tokens=S.max_new_tokens, eval_every=S.eval_every,
              eval_problems=S.eval_problems, eval_sampled=False, lr=S.lr, warmup_steps=0)
opd, row_opd = real.run_one(pair, task, "opd", adapter="opd", name="OPD", callbacks=[dash], plan=plan_opd, **common)
grpo, row_grpo = real.run_one(pair, task, "grpo", adapter="grpo", name="GRPO", callbacks=[dash], plan=plan_grpo,
                              num_generations=S.num_generations, **common)
saved = dash.save(out / "dashboard.html", png=False)
rows = pd.DataFrame([row_opd, row_grpo]).set_index("run")
rows

# %% [markdown]
# ## 5 · Adapters on disk
#
# Only the adapters are saved (a few MB for rank 16): `adapter_config.json` + safetensors, next to
# the tokenizer. Reloading one onto a fresh base model gives the trained student back.

# %%
adapter_dir = hf.save_adapter(pair.student, out / "adapters", pair.tokenizer, adapters=["opd", "grpo"])
print(sorted(str(p.relative_to(out)) for p in adapter_dir.rglob("adapter_config.json")))
reloaded = hf.load_adapter(hf.load_model(C.student, device=C.device), adapter_dir / "opd")
print("reloaded OPD adapter, held-out accuracy:", opd.evaluate(model=reloaded)["eval/accuracy"])

# %% [markdown]
# ## What this run showed

# %%
numbers = {"real_models": C.real, "pair": {"teacher": C.teacher, "student": C.student}, "prompt_len": P,
           "plan_opd_peak_mib": plan_opd.peak / 2**20, "plan_grpo_peak_mib": plan_grpo.peak / 2**20,
           "plan_largest_batch_opd": plan_opd.largest_batch, "qwen_plan_80gib_largest_batch": qwen.largest_batch,
           "runs": rows.reset_index().to_dict("records")}
for r in (row_opd, row_grpo):
    claims(f"The memory planner's estimate is within 25% of the measured peak ({r['run']})",
           None if r.get("plan_error") is None else abs(r["plan_error"]) < 0.25,
           {"planned MiB": r["peak_planned_mib"], "measured MiB": r["peak_measured_mib"]})
claims("After the same number of steps OPD's held-out accuracy is at least GRPO's",
       None if row_opd["eval_accuracy"] is None else row_opd["eval_accuracy"] >= row_grpo["eval_accuracy"],
       {"OPD": row_opd["eval_accuracy"], "GRPO": row_grpo["eval_accuracy"]})
write_results(out, "10_real_models_one_gpu", size, numbers, claims=claims, started=t_start, device=str(C.device),
              config={"student": student, "teacher": teacher, "data_path": data_path, "lora_r": lora_r, **vars(S)})
print("\n" + claims.summary(), "| dashboard:", saved["html"])

# %% [markdown]
# ## What to scale for a real run
#
# * **Data.** Point `data_path` at GSM8K's `train.jsonl` (7,473 problems); a quarter is held out
#   for evaluation unless you pass a separate test file to `GSM8K(..., test_path=...)`.
# * **Steps and batch.** Tens of steps show the curves move; a real run is a few hundred steps at
#   batch 32-64 prompts. Use the plan's "largest batch that fits" rather than guessing, and raise
#   `max_new_tokens` to 512 if many completions end truncated (`rollout/truncated_frac`).
# * **Memory.** At 150k tokens the float32 logits dominate: the peak grows with batch × new tokens ×
#   vocabulary, not with the student's size. Gradient checkpointing removes most activation memory;
#   a teacher on the CPU (`teacher_device="cpu"`) frees its weights but makes scoring slow.
# * **Learning rate.** LoRA tolerates 1e-4–5e-4; GRPO usually wants more samples per prompt
#   (`num_generations` 8-16) before it sees any reward signal on hard problems.
# * **Bigger pairs.** Any same-tokenizer pair works by name or path; for a 7B teacher of the same
#   family pass `alignment="truncate"` (its embedding is padded to a different size).
