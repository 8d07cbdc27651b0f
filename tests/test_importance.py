"""Importance correction for tempered / top-p sampling (issue 15, item 4).

Rollouts drawn at temperature T with top-p come from mu, not from the student pi. The sampled-token OPD
surrogate with the sampler's log-probs, -sum_t sg(A_t) * pi(y_t)/sg(mu(y_t)), has mean gradient
E_mu[pi/mu * (log pi - log q) grad log pi] = grad KL(pi || q) on mu's support; without them it estimates
E_mu[(log pi - log q) grad log pi], a different vector. A Monte-Carlo estimate at T = 1.5, top-p = 0.9 is
compared with the analytic gradient of the reverse KL (on mu's support, and in full when the nucleus drops
only tokens pi never picks), with a tolerance of 5 standard errors computed from
the same samples; the uncorrected estimator must miss it by far more (the test has teeth).
"""
import pytest
import torch
import torch.nn.functional as F

from workbench import losses as L
from workbench.models import build_model
from workbench.sampling import _filter_logits
from workbench.rollout import completion_logits, pad_prompts, sample
from workbench.tasks import get_task
from workbench.tokenizer import build_tokenizer

T, TOP_P, N = 1.5, 0.9, 200_000
# student logits: a head of six tokens and a tail of two that pi all but never picks (logit -30, mass ~1e-16);
# at T = 1.5 the head spreads and top-p = 0.9 drops the tail *and* the weakest head token (checked below)
STUDENT = torch.tensor([2.0, 1.6, 1.2, 0.8, 0.3, -1.5, -30.0, -30.0], dtype=torch.float64)
TEACHER = torch.tensor([0.5, 2.0, 1.0, -0.5, 0.8, 0.0, 1.0, 0.0], dtype=torch.float64)


def _sampler_logprobs(theta):
    return torch.log_softmax(_filter_logits(theta / T, None, TOP_P), -1)


def _analytic_reverse_kl_grad(theta):
    """d/dtheta KL(pi||q) by autograd of the exact sum over the vocabulary (float64)."""
    th = theta.clone().requires_grad_(True)
    logp, logq = torch.log_softmax(th, -1), torch.log_softmax(TEACHER, -1)
    (logp.exp() * (logp - logq)).sum().backward()
    return th.grad


def _score_term_on(theta, support):
    """sum over y in `support` of pi(y) (log pi(y) - log q(y)) grad log pi(y), in closed form
    (grad_theta log pi(y) = e_y - pi). Over the whole vocabulary it is grad KL(pi||q) (the other term,
    sum_y grad pi(y), is 0); over mu's support it is what importance sampling from mu can estimate."""
    pi = torch.softmax(theta, -1)
    c = pi * (torch.log_softmax(theta, -1) - torch.log_softmax(TEACHER, -1))
    c = torch.where(support, c, torch.zeros_like(c))
    return c - c.sum() * pi


def _mc(theta, corrected, seed=0):
    """(mean gradient, standard error) of the library's sampled-token loss over N single-token rollouts."""
    g = torch.Generator().manual_seed(seed)
    mu = _sampler_logprobs(theta).exp()
    y = torch.multinomial(mu, N, replacement=True, generator=g)[:, None]          # [N, 1] one token each
    th = theta.clone().requires_grad_(True)
    s_lp = torch.log_softmax(th, -1)[y]                                            # [N, 1]
    t_lp = torch.log_softmax(TEACHER, -1)[y]
    adv = L.opd_token_rewards(s_lp, t_lp)
    sampler_lp = _sampler_logprobs(theta)[y] if corrected else None
    loss = L.sampled_token_opd_loss(s_lp, adv, torch.ones_like(s_lp), sampler_logprobs=sampler_lp)
    loss.backward()
    # per-sample gradients in closed form, for the standard error (and to check the library's mean)
    pi = torch.softmax(theta, -1)
    onehot = F.one_hot(y[:, 0], len(theta)).double()
    w = (s_lp.detach() - sampler_lp).exp() if corrected else torch.ones_like(s_lp)
    per = w * (s_lp.detach() - t_lp) * (onehot - pi)                                # [N, V]
    assert torch.allclose(th.grad, per.mean(0), atol=1e-12, rtol=1e-9)            # the loss is this estimator
    return th.grad, per.std(0) / N ** 0.5


def test_the_sampler_really_is_tempered_and_truncated():
    mu = _sampler_logprobs(STUDENT).exp()
    dropped = (mu == 0).nonzero().flatten().tolist()
    assert dropped == [5, 6, 7]                       # top-p cut the tail and one head token
    pi = torch.softmax(STUDENT, -1)
    assert pi[5] > 0.01                                # a head token pi does pick: the nucleus is a real cut
    assert (mu[:5] - pi[:5] / pi[:5].sum()).abs().max() > 0.02   # and T = 1.5 reshapes the rest


def test_corrected_estimator_has_the_analytic_gradient_at_T1_5_top_p_0_9():
    support = _sampler_logprobs(STUDENT).isfinite()
    want = _score_term_on(STUDENT, support)
    full = _analytic_reverse_kl_grad(STUDENT)
    assert torch.allclose(_score_term_on(STUDENT, torch.ones_like(support)), full, atol=1e-12)  # the formula
    got, se = _mc(STUDENT, corrected=True)
    z = ((got - want).abs() / se.clamp_min(1e-12)).max().item()
    assert z < 5, (got, want, se)
    # what the nucleus cannot reach: the dropped tokens' share of the full gradient (here pi[5] ~ 0.03)
    assert (full - want).abs().max() > 10 * se.max()   # measurable here, so the support restriction is real
    # the uncorrected estimator misses both by far
    raw, se_raw = _mc(STUDENT, corrected=False)
    assert ((raw - want).abs() / se_raw).max() > 30
    assert ((raw - full).abs() / se_raw).max() > 30


def test_without_truncation_the_corrected_estimator_has_the_full_gradient():
    """Top-p that keeps every token pi can pick (the tail's mass ~1e-16): the ratio recovers grad KL(pi||q)
    itself, not just its restriction."""
    theta = STUDENT.clone()
    theta[5] = -30.0                                  # the only cut head token now also sits in the far tail
    mu = _sampler_logprobs(theta).exp()
    assert (mu[:5] > 0).all() and (mu[5:] == 0).all()
    want = _analytic_reverse_kl_grad(theta)
    got, se = _mc(theta, corrected=True, seed=1)
    assert ((got - want).abs() / se.clamp_min(1e-12)).max() < 5
    raw, se_raw = _mc(theta, corrected=False, seed=1)
    assert ((raw - want).abs() / se_raw).max() > 30


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_sampler_logprobs_are_those_of_the_distribution_sampled(engine):
    """Both decode loops store log mu(y_t) of the tempered, filtered softmax they drew from, and log pi(y_t)
    of the model; a re-scoring forward gives both back (float32 bound of tests/f32.py)."""
    from f32 import logprob_tol
    tok = build_tokenizer(get_task("addition").charset)
    model = build_model("nano", tok, "llama", seed=3).eval()
    ids, mask = pad_prompts([[1, 5, 6, 7], [1, 9], [1, 4, 4]] * 4, 0)
    g = torch.Generator().manual_seed(0)
    r = sample(model, ids, mask, max_new_tokens=8, eos_token_id=2, pad_token_id=0, temperature=T, top_p=TOP_P,
               top_k=20, generator=g, engine=engine)
    with torch.no_grad():
        logits = completion_logits(model, r)
    want_mu = torch.log_softmax(_filter_logits(logits / T, 20, TOP_P), -1).gather(-1, r.completion_ids[..., None])[..., 0]
    want_pi = torch.log_softmax(logits, -1).gather(-1, r.completion_ids[..., None])[..., 0]
    m = r.completion_mask.bool()
    tol = logprob_tol(model, r.input_ids, r.attention_mask)
    assert (r.sampler_logprobs[m] - want_mu[m]).abs().max() <= tol
    assert (r.logprobs[m] - want_pi[m]).abs().max() <= tol
    assert (r.sampler_logprobs[m] - r.logprobs[m]).abs().max() > 0.05   # mu is not pi here
    assert (r.sampler_logprobs[~m] == 0).all()
    greedy = sample(model, ids, mask, max_new_tokens=4, eos_token_id=2, pad_token_id=0, temperature=0, engine=engine)
    assert greedy.sampler_logprobs is None


@pytest.mark.parametrize("method,fn", [("opd", "sampled_token_opd_loss"), ("grpo", "policy_gradient_loss")])
def test_the_trainer_passes_the_sampler_logprobs_when_the_sampler_is_tempered(method, fn, monkeypatch):
    import objective_checks as oc
    seen = []
    orig = getattr(L, fn)

    def spy(s_lp, *a, **k):
        seen.append(k.get("sampler_logprobs") if fn == "sampled_token_opd_loss" else a[0])
        return orig(s_lp, *a, **k)
    monkeypatch.setattr(L, fn, spy)
    for kw in (dict(temperature=T, top_p=TOP_P), dict(top_k=5), dict()):
        tr = oc.trainer(method, steps=1, **kw)
        _, _, r, _ = tr._batch(1)
        tr.step()
        passed = seen[-1]
        if kw:      # the ratio pi/mu uses the log-probs the sampler stored for exactly these tokens
            assert passed is not None and torch.equal(passed, r.sampler_logprobs)
        elif fn == "sampled_token_opd_loss":    # temperature 1, no filter: the student's own samples, no ratio
            assert passed is None
