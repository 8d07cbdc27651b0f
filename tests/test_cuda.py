"""The rollout engine on a CUDA GPU (skipped without one; scripts/gpu_check.sh runs these on a lent GPU).

On CUDA, `rollout.sample(engine="auto")` runs the fast engine with its decode step replayed as a CUDA graph.
These tests check, on the GPU, what tests/test_fast_rollout.py checks on the CPU for that path: greedy
output equal to `model.generate`, sampled frequencies equal to the model's exact distribution (chi-square
at a fixed seed, with a control that the bound can fail), weights read afresh on every call (a graph is
captured per call, so an optimiser step is seen), and training steps of each method running on it.
"""
import pytest
import torch

from workbench import fast_rollout as fr
from workbench.config import TrainConfig
from workbench.models import build_model
from workbench.rollout import pad_prompts, sample, sequence_logprobs
from workbench.tasks import get_task
from workbench.tokenizer import build_tokenizer

from f32 import assert_greedy_agrees, assert_logprobs_close
from test_fast_rollout import (BOS, EOS, MODELS, PAD, PROMPTS, _chi2_999, _chi2_joint, _exact_joint, _generate,
                               _lora, _scramble, check_weights_are_live, random_lora_b)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(get_task("addition").charset)


@pytest.fixture
def graph_calls(monkeypatch):
    """Counts replays of the CUDA-graph decode step (so a test knows the graph path ran)."""
    calls = []
    orig = fr._CudaGraphStep.__call__

    def counted(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)
    monkeypatch.setattr(fr._CudaGraphStep, "__call__", counted)
    return calls


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen2-gqa"])
def test_auto_engine_replays_a_graph_and_equals_generate(tok, name, graph_calls):
    model = _scramble(MODELS[name](tok), 3.0).cuda()
    prompts = PROMPTS * 7 + [[BOS, 3, 3, 3, 3, 3, 3, 3, 3]]            # 43 rows, left padding
    ids, mask = pad_prompts(prompts, PAD, device="cuda")
    for B in (1, 43):
        r = sample(model, ids[:B], mask[:B], max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
        assert_greedy_agrees(model, ids[:B], mask[:B], r.completion_ids, _generate(model, ids[:B], mask[:B], 20))
        assert_logprobs_close(model, r, sequence_logprobs(model, r), r.logprobs)
    assert graph_calls, "the CUDA-graph step did not run"
    assert len(set(r.lengths.tolist())) >= 3                            # rows ended at different steps


def test_bfloat16_greedy_agrees_with_generate(tok, graph_calls):
    """In bf16 two attention kernels (SDPA over the whole masked cache vs over the filled prefix) may round a
    near-tie differently; on the GPU check of 2026-11-26 every row agreed on the zoo models."""
    model = _scramble(MODELS["llama"](tok), 3.0).cuda().to(torch.bfloat16)
    ids, mask = pad_prompts(PROMPTS * 7, PAD, device="cuda")
    r = sample(model, ids, mask, max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    gen = _generate(model, ids, mask, 20)
    w = min(r.completion_ids.shape[1], gen.shape[1])
    same = (r.completion_ids[:, :w] == gen[:, :w]).all(-1).float().mean().item()
    assert same >= 0.95, same
    assert graph_calls


def test_sampled_frequencies_match_the_model_on_cuda(tok, graph_calls):
    peaked = _scramble(build_model("nano", tok, "llama", seed=6), eos_scale=1.0, seed=8, std=0.6)
    model = build_model("nano", tok, "llama", seed=6)
    model.load_state_dict(peaked.state_dict())
    model = model.cuda().eval()
    prompts = [[BOS, 5, 6, 7, 8], [BOS, 9]]
    n = 3000
    ids, mask = pad_prompts([p for p in prompts for _ in range(n)], PAD, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(11)
    r = sample(model, ids, mask, max_new_tokens=2, eos_token_id=EOS, pad_token_id=PAD, temperature=1.0, generator=g)
    assert graph_calls
    comp = r.completion_ids.cpu()
    for i, prompt in enumerate(prompts):
        joint = _exact_joint(peaked, prompt)                          # float64 on the CPU copy
        stat, dof = _chi2_joint(comp[i * n:(i + 1) * n], joint)
        assert dof >= 10 and stat < _chi2_999(dof), (prompt, stat, dof)
        stat_wrong, _ = _chi2_joint(comp[i * n:(i + 1) * n], _exact_joint(peaked, prompt, temperature=1.15))
        assert stat_wrong > _chi2_999(dof), (prompt, stat_wrong, dof)


def test_weights_are_live_between_calls(tok, graph_calls):
    check_weights_are_live(tok, "cuda")                 # a graph is captured per call: an update is seen
    assert graph_calls


@pytest.mark.parametrize("method", ["opd", "sft", "grpo"])
def test_training_steps_on_cuda(method, graph_calls):
    """Three steps of each method on the zoo pair, rollouts through the CUDA graph: finite records, the
    student's weights move, lengths within bounds."""
    from workbench.trainer import Trainer
    extra = {"num_generations": 4} if method == "grpo" else {}
    tr = Trainer(TrainConfig.for_method(method, batch_size=16, steps=3, eval_every=0, device="cuda", **extra))
    w0 = [p.detach().clone() for p in tr.student.parameters() if p.requires_grad]
    recs = [tr.step() for _ in range(3)]
    assert graph_calls
    for rec in recs:
        assert torch.isfinite(torch.tensor(rec["loss"])), rec
        assert 0 < rec["rollout/mean_length"] <= tr.cfg.max_new_tokens
        assert rec["time/generate_s"] > 0
    moved = any(not torch.equal(a, b) for a, b in zip(w0, (p for p in tr.student.parameters() if p.requires_grad)))
    assert moved


def test_lora_student_through_the_graph_equals_generate(tok, graph_calls):
    """A peft LoRA student (the real-checkpoint setting) decodes through the CUDA graph with its adapters:
    greedy output equals the wrapped model's `generate` in float32; in bf16 with float32 adapters
    (workbench.hf.add_lora) rows agree >= 95%."""
    from workbench import hf
    model = _lora(_scramble(MODELS["qwen2-gqa"](tok), 3.0)).cuda()
    ids, mask = pad_prompts(PROMPTS * 7, PAD, device="cuda")
    r = sample(model, ids, mask, max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    assert_greedy_agrees(model, ids, mask, r.completion_ids, _generate(model, ids, mask, 20))
    assert graph_calls
    base = _scramble(MODELS["llama"](tok), 3.0).cuda().to(torch.bfloat16)
    model = random_lora_b(hf.add_lora(base, hf.LoraSpec(r=4, alpha=8)))
    r = sample(model, ids, mask, max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    gen = _generate(model, ids, mask, 20)
    w = min(r.completion_ids.shape[1], gen.shape[1])
    assert (r.completion_ids[:, :w] == gen[:, :w]).all(-1).float().mean().item() >= 0.95


def test_lora_pair_from_checkpoints_trains_through_the_graph(tmp_path, graph_calls):
    """The real-checkpoint path (workbench.hf: load by path, LoRA, gradient checkpointing) on the GPU: the
    student's rollouts run through the CUDA graph with its adapters, OPD steps train only the adapters."""
    from workbench import hf
    from workbench.tasks.gsm8k import GSM8K
    t_dir, s_dir = hf.make_tiny_pair(tmp_path, arch="qwen2", tokenizer=hf.make_tiny_tokenizer(384))
    pair = hf.load_pair(str(t_dir), str(s_dir), lora={"r": 4, "alpha": 8}, device="cuda")
    assert fr.unsupported_reason(pair.student) is None
    before = {n: p.detach().clone() for n, p in pair.student.named_parameters()}
    tr = hf.trainer_for(pair, GSM8K(max_new_tokens=8), "opd", steps=2, batch_size=4, eval_every=0, lr=1e-2)
    recs = [tr.step() for _ in range(2)]
    assert graph_calls
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["rollout/mean_length"] > 0 for r in recs)
    changed = [n for n, p in pair.student.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all("lora_" in n for n in changed)
