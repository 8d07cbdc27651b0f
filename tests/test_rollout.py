"""workbench.rollout: greedy == model.generate, masks/truncation on scripted models, sampling statistics."""
import math

import pytest
import torch
from types import SimpleNamespace

from workbench.batching import prompt_batch
from workbench.models import build_model
from workbench.pairs import load_checkpoint
from workbench.sampling import _filter_logits
from workbench.rollout import pad_prompts, positions_from_mask, sample, sequence_logprobs
from workbench.tasks import get_task
from workbench.tokenizer import build_tokenizer

from f32 import assert_greedy_agrees, assert_logprobs_close

PAD, BOS, EOS = 0, 1, 2


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(get_task("addition").charset)


def _scrambled(tok, arch, eos_scale, seed=3, std=0.5):
    """A random model with large weights (so greedy output depends on the context) whose EOS output row is
    scaled up, so that greedy decoding ends at different positions in different rows."""
    model = build_model("nano", tok, arch, seed=1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
        model.get_output_embeddings().weight[EOS] *= eos_scale
    return model.eval()


PROMPTS = [[BOS, 5, 6], [BOS, 5, 6, 7, 8, 9, 4], [BOS, 9], [BOS, 4, 4, 4, 4], [BOS, 10, 11, 12, 5], [BOS, 7, 7]]


def _greedy_both(model, ids, mask, max_new):
    r = sample(model, ids, mask, max_new_tokens=max_new, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    g = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new,
                       eos_token_id=EOS, pad_token_id=PAD)
    return r, g[:, ids.shape[1]:]


def _check_rollout_consistency(r, max_new):
    """Masks, lengths, truncation and padding implied by the completion ids themselves."""
    B, N = r.completion_ids.shape
    assert N <= max_new
    for b in range(B):
        row = r.completion_ids[b].tolist()
        if EOS in row:
            n = row.index(EOS) + 1
            assert not r.truncated[b]
            assert row[n:] == [PAD] * (N - n)
        else:
            n = N
            assert N == max_new and r.truncated[b]
        assert r.lengths[b].item() == n
        assert r.completion_mask[b].tolist() == [1.0] * n + [0.0] * (N - n)
        assert (r.logprobs[b, n:] == 0).all() and (r.logprobs[b, :n] < 0).all()
    # the loop stops as soon as every row is done
    assert N == max_new or not r.truncated.any() and r.lengths.max().item() == N


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_greedy_equals_generate_on_random_models(tok, arch):
    ids, mask = pad_prompts(PROMPTS, PAD)
    assert mask.sum(-1).tolist() == [3, 7, 2, 5, 5, 3]
    lengths_seen = set()
    for eos_scale in (1.0, 4.0):
        model = _scrambled(tok, arch, eos_scale)
        r, gen = _greedy_both(model, ids, mask, 16)
        assert r.completion_ids.shape == gen.shape
        assert_greedy_agrees(model, ids, mask, r.completion_ids, gen)
        _check_rollout_consistency(r, 16)
        lengths_seen |= set(r.lengths.tolist())
    assert 16 in lengths_seen and len(lengths_seen) >= 3, lengths_seen   # EOS at varying positions, and never
    # greedy log-probs are those of the argmax token, and re-scoring gives them back
    lp = sequence_logprobs(model, r)
    assert_logprobs_close(model, r, lp, r.logprobs)


def test_greedy_equals_generate_when_every_row_ends(tok):
    model = _scrambled(tok, "gpt2", 4.0)
    ids, mask = pad_prompts([[BOS, 4, 4, 4, 4], [BOS, 10, 11, 12, 5], [BOS, 7, 7]], PAD)
    r, gen = _greedy_both(model, ids, mask, 30)
    assert_greedy_agrees(model, ids, mask, r.completion_ids, gen)
    assert not r.truncated.any()
    assert r.completion_ids.shape[1] == r.lengths.max().item() < 30   # early exit, same width as generate
    _check_rollout_consistency(r, 30)


@pytest.fixture(scope="module")
def trained():
    """A trained model whose weights are committed (the zoo's addition student, workbench/zoo_ckpt): the same
    bits on every CPU, unlike a model trained in the fixture, whose float32 training differs between CPUs
    and thread counts (on one CPU such a model never emitted EOS)."""
    return load_checkpoint("student", "addition-student", "cpu", trainable=False)


def test_greedy_equals_generate_on_a_trained_model(trained):
    model, tk = trained
    task = get_task("addition")
    problems = task.problems(5, seed=0, split="short") + task.problems(3, seed=0, split="long")
    ids, mask = prompt_batch(tk, problems)
    assert mask.sum(-1).tolist() == [13] * 5 + [15] * 3        # prompts of different lengths, left padded
    for max_new in (45, 60, 70):
        r, gen = _greedy_both(model, ids, mask, max_new)
        assert_greedy_agrees(model, ids, mask, r.completion_ids, gen)
        _check_rollout_consistency(r, max_new)
    assert (~r.truncated).sum() >= 2 and len(set(r.lengths.tolist())) >= 2   # it emits EOS, at varying places
    # sampled rollouts re-score to their stored log-probs under the same model
    g = torch.Generator().manual_seed(0)
    rs = sample(model, ids, mask, max_new_tokens=70, eos_token_id=EOS, pad_token_id=PAD, temperature=1.0,
                generator=g)
    _check_rollout_consistency(rs, 70)
    assert_logprobs_close(model, rs, sequence_logprobs(model, rs), rs.logprobs)


# ---- scripted models ---------------------------------------------------------------------------------------
class Scripted(torch.nn.Module):
    """Row b's logits at generation step t put `high` on schedule[b][t] (0 elsewhere), whatever the input.

    Records the position ids and attention masks it is called with."""

    def __init__(self, schedule, vocab=8, high=10.0):
        super().__init__()
        self.schedule, self.vocab, self.high = schedule, vocab, high
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=True,
                logits_to_keep=0):
        t = len(self.calls)
        self.calls.append(SimpleNamespace(input_ids=input_ids.clone(), mask=attention_mask.clone(),
                                          pos=position_ids.clone()))
        B, L = input_ids.shape
        logits = torch.zeros(B, L, self.vocab)
        for b in range(B):
            sched = self.schedule[b]
            logits[b, -1, sched[min(t, len(sched) - 1)]] = self.high
        return SimpleNamespace(logits=logits, cache=cache or "cache")


def test_scripted_eos_at_start_middle_never():
    # row 0: EOS first; row 1: EOS at t=2; row 2: never; tokens after EOS are ignored (pad is written instead)
    model = Scripted([[EOS, 5, 6, 7, 3], [4, 5, EOS, 6, 7], [3, 4, 5, 6, 7]])
    ids, mask = pad_prompts([[BOS, 3], [BOS], [BOS, 4, 5]], PAD)
    r = sample(model, ids, mask, max_new_tokens=5, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    assert r.completion_ids.tolist() == [[EOS, 0, 0, 0, 0], [4, 5, EOS, 0, 0], [3, 4, 5, 6, 7]]
    assert r.completion_mask.tolist() == [[1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert r.lengths.tolist() == [1, 3, 5]
    assert r.truncated.tolist() == [False, False, True]
    lp = 10.0 - math.log(math.exp(10.0) + 7)      # log-softmax of the scheduled token
    expect = torch.tensor([[lp, 0, 0, 0, 0], [lp, lp, lp, 0, 0], [lp] * 5])
    assert torch.allclose(r.logprobs, expect, atol=1e-6)
    assert r.input_ids.tolist()[1] == [PAD, PAD, BOS, 4, 5, EOS, 0, 0]
    assert r.attention_mask.tolist()[0] == [0, 1, 1, 1, 0, 0, 0, 0]
    # positions continue from each prompt's real length; a finished row stops attending to new tokens
    assert model.calls[0].pos.tolist() == [[0, 0, 1], [0, 0, 0], [0, 1, 2]]
    assert [c.pos[:, 0].tolist() for c in model.calls[1:]] == [[2, 1, 3], [3, 2, 4], [4, 3, 5], [5, 4, 6]]
    assert model.calls[-1].mask.tolist() == [[0, 1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1, 0],
                                             [1, 1, 1, 1, 1, 1, 1]]


def test_scripted_all_end_early_and_all_truncated():
    model = Scripted([[4, EOS], [EOS]])
    ids, mask = pad_prompts([[BOS], [BOS]], PAD)
    r = sample(model, ids, mask, max_new_tokens=10, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    assert r.completion_ids.tolist() == [[4, EOS], [EOS, PAD]]
    assert r.lengths.tolist() == [2, 1] and not r.truncated.any()
    assert len(model.calls) == 2                 # stopped as soon as both rows ended

    model = Scripted([[3], [4]])
    r = sample(model, ids, mask, max_new_tokens=4, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    assert r.completion_ids.tolist() == [[3] * 4, [4] * 4]
    assert r.completion_mask.tolist() == [[1.0] * 4] * 2
    assert r.lengths.tolist() == [4, 4] and r.truncated.tolist() == [True, True]
    assert len(model.calls) == 4                 # no forward pass for a token that is never sampled
    r = sample(model, ids, mask, max_new_tokens=1, eos_token_id=EOS, pad_token_id=PAD, temperature=0.7)
    assert r.completion_ids.shape == (2, 1) and r.truncated.all()


def test_training_mode_restored():
    model = Scripted([[EOS]])
    model.train()
    ids, mask = pad_prompts([[BOS]], PAD)
    sample(model, ids, mask, max_new_tokens=3, eos_token_id=EOS, pad_token_id=PAD)
    assert model.training
    model.eval()
    sample(model, ids, mask, max_new_tokens=3, eos_token_id=EOS, pad_token_id=PAD)
    assert not model.training


# ---- sampling statistics ----------------------------------------------------------------------------------
class Fixed(torch.nn.Module):
    """Same logits for every row and step."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=True,
                logits_to_keep=0):
        B, L = input_ids.shape
        return SimpleNamespace(logits=self.logits.expand(B, L, -1).clone(), cache=cache)


PROBS = torch.tensor([0.02, 0.03, 0.30, 0.20, 0.15, 0.10, 0.08, 0.07, 0.05])   # token 2 (EOS) included


def _draw(temperature=1.0, top_k=None, top_p=None, n=4000, seed=0):
    model = Fixed(PROBS.log())
    ids, mask = pad_prompts([[BOS]] * n, PAD)
    g = torch.Generator().manual_seed(seed)
    r = sample(model, ids, mask, max_new_tokens=1, eos_token_id=EOS, pad_token_id=PAD, temperature=temperature,
               top_k=top_k, top_p=top_p, generator=g)
    counts = torch.bincount(r.completion_ids[:, 0], minlength=len(PROBS)).double()
    return r, counts


def _chi2(counts, probs):
    n = counts.sum()
    support = probs > 0
    assert (counts[~support] == 0).all(), "sampled a token outside the support"
    exp = probs[support].double() * n
    return float(((counts[support] - exp) ** 2 / exp).sum()), int(support.sum()) - 1


# 99.9% quantiles of chi-square with k degrees of freedom
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12}


def test_temperature_one_matches_softmax():
    r, counts = _draw()
    stat, dof = _chi2(counts, PROBS)
    assert stat < CHI2_999[dof], (stat, counts)
    # stored log-probs are the model's own (temperature-1) log-probs of the sampled token
    assert torch.allclose(r.logprobs[:, 0], PROBS.log()[r.completion_ids[:, 0]], atol=1e-6)
    # the truncated flag follows the sampled token
    assert torch.equal(r.truncated, r.completion_ids[:, 0] != EOS)
    # reproducible with the same generator seed, different with another
    assert torch.equal(_draw(seed=0)[1], counts)
    assert not torch.equal(_draw(seed=1)[1], counts)


def test_chi2_check_is_sensitive():
    """The bound above rejects a visibly wrong distribution (e.g. the tempered one)."""
    _, counts = _draw(temperature=2.0)
    stat, dof = _chi2(counts, PROBS)
    assert stat > 10 * CHI2_999[dof]
    tempered = PROBS.sqrt() / PROBS.sqrt().sum()
    stat, dof = _chi2(counts, tempered)
    assert stat < CHI2_999[dof]


def test_top_k_restricts_support():
    r, counts = _draw(top_k=3)
    expect = torch.zeros_like(PROBS)
    expect[[2, 3, 4]] = PROBS[[2, 3, 4]] / PROBS[[2, 3, 4]].sum()
    stat, dof = _chi2(counts, expect)
    assert dof == 2 and stat < CHI2_999[dof]
    # log-probs are still of the unfiltered model distribution
    assert torch.allclose(r.logprobs[:, 0], PROBS.log()[r.completion_ids[:, 0]], atol=1e-6)


@pytest.mark.parametrize("top_p", [0.3, 0.5, 0.62, 0.9])
def test_top_p_restricts_support(top_p):
    # manual nucleus: the smallest set of most likely tokens whose mass reaches top_p
    order = torch.argsort(PROBS, descending=True).tolist()
    keep, mass = [], 0.0
    for i in order:
        keep.append(i)
        mass += PROBS[i].item()
        if mass >= top_p - 1e-9:
            break
    expect = torch.zeros_like(PROBS)
    expect[keep] = PROBS[keep] / PROBS[keep].sum()
    _, counts = _draw(top_p=top_p)
    assert set(torch.nonzero(counts).flatten().tolist()) == set(keep)
    stat, dof = _chi2(counts, expect)
    if dof:
        assert stat < CHI2_999[dof]
    filtered = _filter_logits(PROBS.log()[None], None, top_p)
    assert set(torch.isfinite(filtered[0]).nonzero().flatten().tolist()) == set(keep)


def test_top_k_and_top_p_together():
    # top_k=4 keeps {2,3,4,5} (mass .75); top_p=0.8 of the renormalised mass keeps {2,3,4} (.4,.267,.2 -> .867)
    _, counts = _draw(top_k=4, top_p=0.8)
    assert set(torch.nonzero(counts).flatten().tolist()) == {2, 3, 4}


def test_argument_errors():
    model = Fixed(PROBS.log())
    ids, mask = pad_prompts([[BOS]], PAD)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="max_new_tokens must be positive"):
            sample(model, ids, mask, max_new_tokens=bad, eos_token_id=EOS, pad_token_id=PAD)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        sample(model, ids, mask, max_new_tokens=2, eos_token_id=EOS, pad_token_id=PAD, temperature=-0.5)
    with pytest.raises(ValueError, match="no prompts"):
        pad_prompts([], PAD)


def test_pad_prompts_and_positions():
    ids, mask = pad_prompts([[1, 5, 6], [1], [1, 7]], pad_id=0)
    assert ids.tolist() == [[1, 5, 6], [0, 0, 1], [0, 1, 7]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert ids.dtype == mask.dtype == torch.long
    assert positions_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 1]]


def test_use_engine_switches_what_auto_means(tok, monkeypatch):
    """rollout.use_engine: the public switch the benchmarks compare the engines with (no patching of the
    trainer's imports). Inside use_engine("hf"), engine="auto" calls never reach the fast engine; outside
    they do (a supported model); an explicit engine= is not overridden; the old meaning comes back."""
    from workbench import fast_rollout, rollout
    model = build_model("nano", tok, "llama", seed=0)
    task = get_task("addition")
    ids, mask = prompt_batch(tok, task.problems(3, seed=0), "cpu")
    calls = []
    real = fast_rollout.fast_sample
    monkeypatch.setattr(fast_rollout, "fast_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(max_new_tokens=4, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=0.0)
    auto = sample(model, ids, mask, **kw)
    assert calls == [1]
    with rollout.use_engine("hf"):
        hf = sample(model, ids, mask, **kw)
        assert calls == [1]                         # "auto" meant "hf" here
        sample(model, ids, mask, engine="fast", **kw)
        assert calls == [1, 1]                      # an explicit engine wins
    assert torch.equal(hf.completion_ids, auto.completion_ids)    # greedy: both engines agree exactly on CPU
    sample(model, ids, mask, **kw)
    assert calls == [1, 1, 1]
    with pytest.raises(ValueError, match="engine must be one of"):
        with rollout.use_engine("vllm"):
            pass
