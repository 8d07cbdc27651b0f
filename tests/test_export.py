"""workbench.export: a run exported to TRL and verl, the loss parity behind each mapping, and a TRL round trip.

Parity: on one fixed batch of logits and masks, this project's per-token losses (workbench.losses) against
the engines' own loss code. TRL's functions are called directly (installed with `pip install -e '.[export]'`);
verl does not install next to this stack (verl 0.9.1 pins transformers 5.10), so its per-token estimators are
re-implemented below from their formulas as test oracles (verl 0.9.1, verl/trainer/ppo/core_algos.py
`kl_penalty_forward`; verl/trainer/distillation/losses.py: with use_policy_gradient the advantage is -loss and
the policy loss is the vanilla PPO surrogate, verl/trainer/ppo/core_algos.py `compute_policy_loss_vanilla`).
"""
import json
import math
from collections import defaultdict
from dataclasses import fields
from types import SimpleNamespace

import pytest
import torch

from workbench import losses as L
from workbench.config import TrainConfig, apply_preset
from workbench.export import ExportError, export_run

trl = pytest.importorskip("trl", reason="the export extra is not installed: pip install -e '.[export]'")

B, T, V, H = 3, 5, 48, 16
EPS32 = torch.finfo(torch.float32).eps


def _batch(seed=0):
    """Hidden states and LM heads (TRL's stable loss takes those, never full logits), their logits, a mask."""
    g = torch.Generator().manual_seed(seed)
    h_s, h_t = torch.randn(B * T, H, generator=g), torch.randn(B * T, H, generator=g)
    w_s, w_t = torch.randn(V, H, generator=g) * 0.6, torch.randn(V, H, generator=g) * 0.6
    mask = torch.ones(B, T)
    mask[0, 3:] = 0          # a short completion
    mask[2, 4:] = 0
    return h_s, h_t, w_s, w_t, mask


def _tol(*logits):
    """float32 tolerance: each implementation evaluates log-softmax and a probability-weighted sum over the
    vocabulary in a different order; every operation rounds at ~eps * (largest |logit| + log V), and the
    weights sum to 1, so the two results differ by a few such units. 32 units covers the dozen operations of
    the longer path with margin; the values compared are >= 100x larger (checked), so a wrong formula fails."""
    zmax = max(z.abs().max().item() for z in logits)
    return 32 * EPS32 * (zmax + math.log(V))


def _trl_per_token(h_s, h_t, w_s, w_t, beta, temperature=1.0):
    from trl.kernels.chunked_divergence import ChunkedDivergenceFunction
    div, _ = ChunkedDivergenceFunction.apply(h_s, w_s, None, h_t, w_t, None, beta, temperature)
    return div


# ------------------------------------------------------------------------------------------------------------
# parity with TRL
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_full_reverse_kl_matches_trl_distillation_loss_value_and_gradient(temperature):
    """TRL DistillationTrainer's loss (trl/kernels/chunked_divergence.py, beta=1) vs losses.full_reverse_kl."""
    h_s, h_t, w_s, w_t, mask = _batch()
    h_s1 = h_s.clone().requires_grad_(True)
    trl_tok = _trl_per_token(h_s1, h_t, w_s, w_t, beta=1.0, temperature=temperature)
    h_s2 = h_s.clone().requires_grad_(True)
    zs, zt = (h_s2 @ w_s.T).view(B, T, V), (h_t @ w_t.T).view(B, T, V)
    ours_mean, ours_tok = L.full_reverse_kl(zs, zt, mask, temperature=temperature)
    tol = _tol(zs, zt)
    assert ours_tok.mean() > 100 * tol
    torch.testing.assert_close(trl_tok.view(B, T), ours_tok, rtol=0, atol=tol)
    # the reductions agree too: TRL's masked mean (its _chunked_divergence_loss) == ours
    from trl.trainer.distillation_trainer import _chunked_divergence_loss
    trl_loss, _, n = _chunked_divergence_loss(h_s1.view(B, T, H), h_t.view(B, T, H), w_s, w_t, mask, 1.0,
                                              temperature=temperature)
    assert n.item() == mask.sum().item()
    torch.testing.assert_close(trl_loss, ours_mean, rtol=0, atol=tol)
    # gradients w.r.t. the student's hidden states through the same LM head
    trl_loss.backward()
    ours_mean.backward()
    torch.testing.assert_close(h_s1.grad, h_s2.grad, rtol=0, atol=tol)
    assert h_s2.grad.abs().max() > 100 * tol


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.9])
def test_generalized_jsd_matches_trl_stable_and_gkd_losses(beta):
    """TRL's stable DistillationTrainer (chunked kernel) and experimental GKDTrainer.generalized_jsd_loss vs
    losses.generalized_jsd, masked mean and gradient, beta 0 (forward KL) .. 0.9."""
    from trl.experimental.gkd import GKDTrainer
    from trl.trainer.distillation_trainer import _chunked_divergence_loss
    h_s, h_t, w_s, w_t, mask = _batch(1)
    h1 = h_s.clone().requires_grad_(True)
    trl_loss, _, _ = _chunked_divergence_loss(h1.view(B, T, H), h_t.view(B, T, H), w_s, w_t, mask, beta)
    h2 = h_s.clone().requires_grad_(True)
    zs, zt = (h2 @ w_s.T).view(B, T, V), (h_t @ w_t.T).view(B, T, V)
    ours = L.generalized_jsd(zs, zt, beta=beta, mask=mask)
    tol = _tol(zs, zt)
    assert ours > 100 * tol
    torch.testing.assert_close(trl_loss, ours, rtol=0, atol=tol)
    trl_loss.backward()
    ours.backward()
    torch.testing.assert_close(h1.grad, h2.grad, rtol=0, atol=tol)
    labels = torch.where(mask.bool(), 1, -100)
    gkd = GKDTrainer.generalized_jsd_loss(zs.detach(), zt, labels=labels, beta=beta)
    torch.testing.assert_close(gkd, ours.detach(), rtol=0, atol=tol)


def _iw_opd_self():
    """The attributes IWOPDTrainer._compute_iw_opd_loss reads, so TRL's own method runs without a trainer."""
    return SimpleNamespace(temperature=1.0, iw_opd_gamma=0.0, iw_opd_epsilon=1e-8,
                           model=SimpleNamespace(training=True), _metrics={"train": defaultdict(list)})


def test_sampled_token_estimator_matches_trl_iw_opd_at_gamma_zero():
    """TRL's sampled-token objective (trl/experimental/iw_opd, iw_opd_gamma=0: every weight is 1) vs
    losses.sampled_token_opd_loss with the OPD reward log q - log pi: value and gradient w.r.t. the logits."""
    from trl.experimental.iw_opd import IWOPDTrainer
    h_s, h_t, w_s, w_t, mask = _batch(2)
    g = torch.Generator().manual_seed(5)
    zs0, zt = (h_s @ w_s.T).view(B, T, V), (h_t @ w_t.T).view(B, T, V)
    ids = torch.multinomial(torch.softmax(zs0, -1).view(-1, V), 1, generator=g).view(B, T)
    labels = torch.where(mask.bool(), ids, -100)
    t_lp = L.token_logprobs(zt, ids)
    z1 = zs0.clone().requires_grad_(True)
    trl_loss = IWOPDTrainer._compute_iw_opd_loss(_iw_opd_self(), z1, ids, labels, t_lp)
    z2 = zs0.clone().requires_grad_(True)
    s_lp = L.token_logprobs(z2, ids)
    ours = L.sampled_token_opd_loss(s_lp, L.opd_token_rewards(s_lp, t_lp), mask)
    tol = _tol(zs0, zt)
    assert abs(ours.item()) > 100 * tol
    torch.testing.assert_close(trl_loss, ours, rtol=0, atol=tol)
    trl_loss.backward()
    ours.backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=0, atol=tol)


def test_topk_reverse_kl_matches_trl_where_the_topk_supports_coincide():
    """TRL IW-OPD's top-K reverse KL renormalises over the *student's* top-K; workbench's (Fu et al.) over the
    *teacher's*. Where both models rank the same K tokens on top the two are the same quantity, and they
    agree; elsewhere they differ, which is why `export` lists loss='topk' as approximated."""
    from trl.experimental.iw_opd import IWOPDTrainer
    k = 4
    g = torch.Generator().manual_seed(3)
    zs = torch.randn(B, T, V, generator=g)
    zt = zs + 0.5 * torch.randn(B, T, V, generator=g)
    top = torch.randperm(V, generator=g)[:k]
    zs[..., top] += 12.0         # both models put the same k tokens far above the rest
    zt[..., top] += 12.0
    same = zs.topk(k, -1).indices.sort(-1).values == zt.topk(k, -1).indices.sort(-1).values
    assert same.all()
    _, ours_tok = L.topk_reverse_kl(zs, zt, k=k, renormalize=True)
    trl_tok = IWOPDTrainer.generalized_jsd_loss(zs, zt, beta=1.0, top_k=k, add_tail=False, reduction="none").sum(-1)
    tol = _tol(zs, zt)
    assert ours_tok.mean() > 100 * tol
    torch.testing.assert_close(trl_tok, ours_tok, rtol=0, atol=tol)
    # with different top-K sets they are not the same loss (the export's "approximated" is not a formality)
    zt2 = zt.clone()
    zt2[..., top] -= 24.0
    a = L.topk_reverse_kl(zs, zt2, k=k)[1]
    b = IWOPDTrainer.generalized_jsd_loss(zs, zt2, beta=1.0, top_k=k, add_tail=False, reduction="none").sum(-1)
    assert (a - b).abs().max() > 1e3 * tol


# ------------------------------------------------------------------------------------------------------------
# verl: its estimators from their formulas (oracle), against ours
# ------------------------------------------------------------------------------------------------------------
def verl_kl_penalty(logprob, ref_logprob, mode):
    """verl 0.9.1 core_algos.kl_penalty_forward, written out from its formula (k1: log pi - log ref;
    k3 / low_var_kl: ratio - log ratio - 1 with ratio = ref/pi, log ratio clamped to [-20, 20], the result to
    [-10, 10]). In distillation `ref` is the teacher."""
    if mode in ("k1", "kl"):
        return logprob - ref_logprob
    if mode in ("k3", "low_var_kl"):
        lr = (ref_logprob - logprob).clamp(-20, 20)
        return (lr.exp() - lr - 1).clamp(-10, 10)
    raise ValueError(mode)


def verl_pg_distillation_loss(log_prob, old_log_prob, distill_losses, mask, clip=0.2):
    """verl 0.9.1 distillation with use_policy_gradient: advantage = -distillation loss, vanilla PPO surrogate
    -A * ratio clipped at 1 +- clip, aggregated token-mean (sum over valid tokens / their number)."""
    adv = -distill_losses.detach()
    ratio = torch.exp(log_prob - old_log_prob)
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
    return (pg * mask).sum() / mask.sum()


def test_sampled_token_estimator_matches_verl_k1_policy_gradient():
    """export --to verl maps loss='sampled_token' to loss_mode=k1 + use_policy_gradient: same value, same gradient."""
    h_s, h_t, w_s, w_t, mask = _batch(4)
    zs0, zt = (h_s @ w_s.T).view(B, T, V), (h_t @ w_t.T).view(B, T, V)
    ids = torch.multinomial(torch.softmax(zs0, -1).view(-1, V), 1,
                            generator=torch.Generator().manual_seed(9)).view(B, T)
    t_lp = L.token_logprobs(zt, ids)
    z1 = zs0.clone().requires_grad_(True)
    lp1 = L.token_logprobs(z1, ids)
    verl = verl_pg_distillation_loss(lp1, lp1.detach(), verl_kl_penalty(lp1, t_lp, "k1"), mask)
    tol = _tol(zs0, zt)
    verl.backward()
    # ours in its ratio form (tokens from a sampler whose log-probs are given) has verl's value; the plain
    # REINFORCE form -A log pi has another value but, at ratio 1, the same gradient
    for sampler in (True, False):
        z2 = zs0.clone().requires_grad_(True)
        lp2 = L.token_logprobs(z2, ids)
        ours = L.sampled_token_opd_loss(lp2, L.opd_token_rewards(lp2, t_lp), mask,
                                        sampler_logprobs=lp2.detach() if sampler else None)
        if sampler:
            assert abs(ours.item()) > 100 * tol
            torch.testing.assert_close(verl, ours, rtol=0, atol=tol)
        ours.backward()
        torch.testing.assert_close(z1.grad, z2.grad, rtol=0, atol=tol)
        assert z2.grad.abs().max() > 100 * tol


def test_verl_estimators_in_expectation_equal_the_full_reverse_kl():
    """Exact expectations over the whole vocabulary (no sampling): E_pi[k3] = KL(pi||q) and the expected k1
    policy-gradient gradient = grad KL(pi||q), i.e. what export --to verl approximates loss='full_kl' with."""
    mask = _batch()[-1].double()          # float64 throughout: this is an identity, not a cross-implementation check
    g = torch.Generator().manual_seed(11)
    # logits mild enough that verl's clamp of k3 at 10 never acts (checked below): clamped, E[k3] is biased low
    zs0 = 0.5 * torch.randn(B, T, V, generator=g, dtype=torch.float64)
    zt = 0.5 * torch.randn(B, T, V, generator=g, dtype=torch.float64)
    zs = zs0.clone().requires_grad_(True)
    kl_mean, kl_tok = L.full_reverse_kl(zs, zt, mask)
    kl_mean.backward()
    lp_s, lp_t = torch.log_softmax(zs0, -1), torch.log_softmax(zt, -1)
    p = lp_s.exp()
    k3 = verl_kl_penalty(lp_s, lp_t, "k3")                  # every token of the vocabulary as "the sample"
    assert k3.max() < 10 and kl_tok.min() > 0.05
    torch.testing.assert_close((p * k3).sum(-1), kl_tok.detach(), rtol=1e-10, atol=1e-12)
    # E_y~pi[ grad of verl's k1 PG surrogate at token y ], weighting every token by its probability
    z = zs0.clone().requires_grad_(True)
    lp = torch.log_softmax(z, -1)
    surrogate = -(-verl_kl_penalty(lp, lp_t, "k1")).detach() * torch.exp(lp - lp.detach())
    w = mask / mask.sum()
    (surrogate * p * w.unsqueeze(-1)).sum().backward()
    torch.testing.assert_close(z.grad, zs.grad, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------------------------
# export: files, mappings, refusals
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real tiny Hugging Face pair (tests/test_hf_real.py's recipe) and a 1-step workbench OPD run with it."""
    from workbench import hf
    from workbench.cli import main
    d = tmp_path_factory.mktemp("export")
    t_dir, s_dir = hf.make_tiny_pair(d / "ckpt", arch="qwen2", tokenizer=hf.make_tiny_tokenizer(384))
    run = d / "run"
    rc = main(["train", "--method", "opd", "--task", "gsm8k", "--teacher", str(t_dir), "--student", str(s_dir),
               "--steps", "1", "--batch-size", "2", "--max-new-tokens", "8", "--eval-every", "0",
               "--eval-problems", "1", "--out", str(run), "--device", "cpu", "--json"])
    assert rc == 0
    return run, t_dir, s_dir


def _variant(run, tmp_path, **changes):
    """A copy of the run's config.json with some settings changed (export reads nothing else)."""
    cfg = json.loads((run / "config.json").read_text())
    cfg["config"].update(changes)
    d = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_every_trainconfig_field_is_classified_for_both_targets(tiny_run, tmp_path):
    run, _, _ = tiny_run
    for loss in ("sampled_token", "full_kl", "jsd", "topk", "gopd_full"):
        r = _variant(run, tmp_path, loss=loss)
        for to in ("trl", "verl"):
            ex = export_run(r, to)
            assert ex.unclassified == [], (to, loss, ex.unclassified)
    # a setting no rule knows (e.g. a new TrainConfig field) is reported, not dropped
    from workbench import export as E
    cfg = apply_preset(TrainConfig.from_dict(json.loads((run / "config.json").read_text())["config"]))
    ex = E.Export("trl", tmp_path)
    E._leftovers(cfg, ex, handled=set())
    assert "lr" in ex.unclassified and "lr" in ex.unmapped
    assert {f.name for f in fields(TrainConfig)} >= set(E.NEUTRAL) | E.RUN_LOCAL


def test_export_trl_writes_a_config_trl_parses_with_the_runs_settings(tiny_run, capsys):
    from trl.scripts.distillation import make_parser
    from workbench.cli import main
    run, t_dir, s_dir = tiny_run
    assert main(["export", "--to", "trl", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "approximated" in printed and "loss='sampled_token'" in printed and "unmapped" in printed
    path = run / "export-trl" / "trl_distillation.yaml"
    script, train, model, data = make_parser().parse_args_and_config(
        args=["--config", str(path), "--bf16", "false"], fail_with_unknown_args=True)     # bf16: no GPU here
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert model.model_name_or_path == str(s_dir) and train.teacher_model_name_or_path == str(t_dir)
    assert train.beta == 1.0 and train.max_completion_length == 8 == cfg["max_new_tokens"]
    assert train.learning_rate == cfg["lr"] and train.max_steps == cfg["steps"]
    assert train.per_device_train_batch_size == cfg["batch_size"] and train.temperature == cfg["temperature"]
    rows = [json.loads(x) for x in (run / "export-trl" / "prompts.jsonl").read_text().splitlines()]
    assert rows and rows[0]["prompt"][0]["role"] == "user"


def test_export_lists_what_each_engine_lacks(tiny_run, tmp_path):
    run, _, _ = tiny_run
    r = _variant(run, tmp_path, method="gkd", loss="jsd", beta=0.5, lmbda=0.5, jsd_temperature=2.0)
    trl_ex = export_run(r, "trl")
    assert "lmbda" in trl_ex.unmapped and "jsd_temperature" in trl_ex.approximated
    assert trl_ex.mapped["beta"].startswith("beta = 0.5")
    verl_ex = export_run(r, "verl")
    assert "lmbda" in verl_ex.unmapped and "loss" in verl_ex.approximated
    # sampling at another temperature than the loss's: both engines use one temperature for both
    r = _variant(run, tmp_path, temperature=0.7)
    for to in ("trl", "verl"):
        ex = export_run(r, to)
        assert "temperature" in ex.approximated and "temperature" not in ex.mapped
    assert "temperature" in export_run(run, "trl").mapped
    r = _variant(run, tmp_path, loss="topk", teacher_topk=8, gamma=0.9, vopd=False)
    verl_ex = export_run(r, "verl")
    assert verl_ex.overrides["distillation.distillation_loss.loss_mode"] == "forward_kl_topk"
    assert verl_ex.overrides["distillation.distillation_loss.topk"] == 8
    assert "forward" in verl_ex.approximated["loss"] and "gamma" in verl_ex.unmapped
    text = (r / "export-verl" / "verl_launch.sh").read_text()
    assert "distillation.enabled=true" in text and "distillation.distillation_loss.topk=8" in text


def test_export_verl_overrides_for_sampled_token_opd(tiny_run, capsys):
    import pandas as pd
    from workbench.cli import main
    run, t_dir, s_dir = tiny_run
    assert main(["export", "--to", "verl", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    o = out["overrides"]
    assert o["actor_rollout_ref.model.path"] == str(s_dir)
    assert o["distillation.teacher_models.teacher_model.model_path"] == str(t_dir)
    assert o["distillation.distillation_loss.loss_mode"] == "k1"
    assert o["distillation.distillation_loss.use_policy_gradient"] is True
    assert o["distillation.distillation_loss.use_task_rewards"] is False
    assert o["data.max_response_length"] == 8 and o["actor_rollout_ref.rollout.n"] == 1
    # verl refuses prompts over data.max_prompt_length: the longest prompt under the student's chat template
    from workbench import hf
    from workbench.tasks.gsm8k import GSM8K
    tok, task = hf.load_tokenizer(str(s_dir)), GSM8K()
    n_test = json.loads((run / "config.json").read_text())["config"]["eval_problems"]      # the val rows written
    exported = task.train + task.test[:n_test]
    assert o["data.max_prompt_length"] == max(len(task.encode_prompt(tok, p.prompt)) for p in exported)
    assert out["approximated"] == {} and out["unmapped"] == {}
    df = pd.read_parquet(out["files"]["train"])
    assert len(df) > 0 and df["prompt"][0][0]["role"] == "user" and df["data_source"][0] == "openai/gsm8k"


def test_export_refuses_toy_checkpoints_and_other_methods(tiny_run, tmp_path, capsys):
    from workbench.cli import main
    run, _, _ = tiny_run
    r = _variant(run, tmp_path, teacher="addition-teacher")
    with pytest.raises(ExportError, match="zoo checkpoint"):
        export_run(r, "trl")
    from workbench import zoo
    r = _variant(run, tmp_path, student=str(zoo.ZOO_DIR / "addition-student"))
    assert main(["export", "--to", "verl", str(r)]) == 2
    assert "zoo checkpoint" in capsys.readouterr().err
    r = _variant(run, tmp_path, method="grpo", source="student", signal="sparse", loss="pg", num_generations=2)
    with pytest.raises(ExportError, match="SFTTrainer|GRPO"):
        export_run(r, "verl")
    with pytest.raises(ExportError, match="unknown export target"):
        export_run(run, "deepspeed")
    assert not (r / "export-verl").exists()


# ------------------------------------------------------------------------------------------------------------
# round trip: the exported file drives TRL's own script for 2 steps on the CPU
# ------------------------------------------------------------------------------------------------------------
def test_trl_round_trip_two_steps_from_the_exported_file(tiny_run, tmp_path):
    from trl.scripts.distillation import main as trl_main
    from trl.scripts.distillation import make_parser
    run, _, _ = tiny_run
    ex = export_run(run, "trl", out=tmp_path / "trl")
    out = tmp_path / "trl-run"
    # the exported file as is; only what a CPU test needs on top: 2 steps, float32, a checkpoint to read back
    args = ["--config", str(ex.files["config"]), "--max_steps", "2", "--bf16", "false", "--output_dir", str(out),
            "--save_strategy", "steps", "--save_steps", "2", "--save_only_model", "true"]
    parsed = make_parser().parse_args_and_config(args=args, fail_with_unknown_args=True)
    trl_main(*parsed)
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    logged = [h for h in state["log_history"] if "loss" in h]
    assert state["global_step"] == 2 and len(logged) == 2
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in logged)      # a KL: positive for a random pair
    assert (out / "model.safetensors").exists()
