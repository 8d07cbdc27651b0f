"""Failure-mode diagnostics (issue #6): repetition and truncation on constructed sequences, advantage by
repetition, the special-token compatibility check and its masking fix, the dashboard's early-warning flag."""
from __future__ import annotations

import copy

import pytest
import torch

from workbench import analysis as A
from workbench.compat import check_special_tokens
from workbench.config import ConfigError, TrainConfig, validate
from workbench.experiments import held_out
from workbench.metrics import LengthAlarm, advantage_by_repetition, repeated_token_mask, repetition_rate
from workbench.models import build_model
from workbench.rollout import to_rollout
from workbench.tasks import get_task
from workbench.trainer import Trainer

TASK = get_task("addition")


@pytest.fixture(scope="module")
def teacher(tok):
    """A tiny random model (tied input/output embeddings)."""
    return build_model("nano", tok, seed=1).eval()


# ---- repetition and truncation on constructed sequences ------------------------------------------
def test_repetition_rate_on_constructed_completions():
    clean = "1+2+0=03,4+5+0=09,9+9+0=18,0+0+1=01,|1903"
    looping = "1+2+0=03," + "4+5+0=09," * 8
    assert repetition_rate([clean]) == 0.0
    assert repetition_rate([looping]) == 1.0
    assert repetition_rate([clean, looping, looping, clean]) == 0.5


def test_truncated_flag_from_constructed_ids():
    eos = 2
    completion = torch.tensor([[5, 6, eos, 0], [5, 6, 7, 8], [eos, 0, 0, 0]])
    r = to_rollout(torch.ones(3, 2, dtype=torch.long), torch.ones(3, 2), completion, torch.zeros(3, 4), eos)
    assert r.truncated.tolist() == [False, True, False]
    assert r.lengths.tolist() == [3, 4, 1]
    assert r.truncated.float().mean().item() == pytest.approx(1 / 3)


def test_length_alarm_fires_on_a_truncation_jump():
    alarm = LengthAlarm(truncation=0.9, repetition=0.9, rise=0.3, window=5)
    fired = [alarm.update({"step": k, "rollout/truncated_frac": v, "rollout/repetition_rate": 0.0})
             for k, v in enumerate([0.1, 0.1, 0.15, 0.5, 0.6])]
    assert fired[:3] == [[], [], []]
    assert fired[3] and "truncation rose by 0.40" in fired[3][0]
    assert fired[4] == []                           # fires once at the onset


def test_repeated_token_mask_and_advantage_split():
    ids = torch.tensor([[1, 2, 3, 1, 2, 3, 9, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    rep = repeated_token_mask(ids, mask, n=3)
    assert rep.tolist() == [[False, False, False, False, False, True, False, False]]
    rep2 = repeated_token_mask(ids, mask, n=2)
    assert rep2[0].nonzero().flatten().tolist() == [4, 5]
    adv = torch.tensor([[-1.0, -1.0, -1.0, -1.0, -0.1, -0.1, -1.0, -50.0]])
    out = advantage_by_repetition(adv, ids, mask, n=2)
    assert out["repeated"] == pytest.approx(-0.1)
    assert out["normal"] == pytest.approx(-1.0)      # the padded -50 is not counted
    assert out["repeated_frac"] == pytest.approx(2 / 7)
    none = advantage_by_repetition(adv, torch.arange(8)[None], mask, n=2)
    assert none["repeated"] is None and none["repeated_frac"] == 0.0


def test_reward_histogram_counts_every_token():
    samples = [{"token_reward": [-25.0, -0.3, -0.02, 0.0, 0.2]}, {"token_reward": [-3.0]}, {"token_reward": None}]
    h = A.reward_histogram(samples)
    assert sum(h["counts"]) == h["n"] == 6
    assert h["neg_frac"] == pytest.approx(4 / 6) and h["pos_frac"] == pytest.approx(1 / 6)
    assert h["near_zero_frac"] == pytest.approx(1 / 6)                  # the 0.0 is in the dead band
    assert h["neg_mass_frac"] == pytest.approx(28.32 / 28.52)
    assert h["min"] == -25.0
    assert A.reward_histogram([])["n"] == 0


# ---- special-token mismatch ------------------------------------------------------------------
def test_moved_token_teacher_only_changes_the_emitted_id(tok, teacher):
    eos, unk = tok.eos_token_id, tok.unk_token_id
    bad = A.teacher_with_moved_token(teacher, eos, unk)
    ids = torch.tensor([[tok.bos_token_id, 6, 4, 7, 16]])
    with torch.no_grad():
        a, b = teacher(ids).logits, bad(ids).logits
    assert torch.allclose(a[..., eos], b[..., unk]) and torch.allclose(a[..., unk], b[..., eos])
    keep = [i for i in range(a.shape[-1]) if i not in (eos, unk)]
    assert torch.allclose(a[..., keep], b[..., keep])
    # the original is untouched (tied weights were untied in the copy only)
    assert teacher.get_output_embeddings().weight.data_ptr() == teacher.get_input_embeddings().weight.data_ptr()


def test_swapped_token_teacher_is_the_same_model_relabelled(tok, teacher):
    """Swapping ',' and '<unk>' in a tied model: its logits on a relabelled input are the original's,
    relabelled; greedy completions are the original's with the two ids exchanged; the original is untouched."""
    comma, unk = tok.convert_tokens_to_ids(","), tok.unk_token_id
    before = teacher.get_input_embeddings().weight.detach().clone()
    alt = A.teacher_with_swapped_tokens(teacher, comma, unk)
    assert alt.get_output_embeddings().weight.data_ptr() == alt.get_input_embeddings().weight.data_ptr()
    assert torch.equal(teacher.get_input_embeddings().weight, before)
    perm = torch.arange(len(tok))
    perm[[comma, unk]] = perm[[unk, comma]]
    ids = torch.tensor([[tok.bos_token_id, 6, 4, 7, comma, 9, 5], [tok.bos_token_id, 5, unk, 8, 8, comma, 4]])
    with torch.no_grad():
        a, b = teacher(ids).logits, alt(perm[ids]).logits
    assert torch.allclose(a[..., perm], b, atol=1e-6)
    problems = held_out(TASK, 6)
    from workbench.batching import prompt_batch
    from workbench.rollout import sample
    pids, pmask = prompt_batch(tok, problems, "cpu", task=TASK)
    kw = dict(max_new_tokens=12, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=0.0)
    r0, r1 = sample(teacher, pids, pmask, **kw), sample(alt, pids, pmask, **kw)
    assert torch.equal(perm[r0.completion_ids], r1.completion_ids)
    # an untied teacher: both matrices are swapped
    untied = copy.deepcopy(teacher)
    head = untied.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    untied.config.tie_word_embeddings = False
    with torch.no_grad():
        assert torch.allclose(untied(ids).logits[..., perm], A.teacher_with_swapped_tokens(untied, comma, unk)(perm[ids]).logits,
                              atol=1e-6)


def test_special_token_check_detects_a_teacher_with_another_eos(tok, teacher):
    """A teacher trained to end with <eos>: compatible. The same teacher emitting <unk> there: refused, and
    the report names the token it prefers and the fix; apply_fix=True reports the masking fix instead."""
    eos, unk = tok.eos_token_id, tok.unk_token_id
    # the reference teacher ends answers confidently: an output bias toward EOS
    good = copy.deepcopy(teacher)
    head = good.get_output_embeddings()
    w = head.weight.detach().clone()
    head.weight = torch.nn.Parameter(w, requires_grad=False)
    good.config.tie_word_embeddings = False
    head.bias = torch.nn.Parameter(torch.zeros(w.shape[0]), requires_grad=False)
    head.bias[eos] = 30.0                            # EOS strongly preferred everywhere (incl. the end)
    head.bias[unk] = -30.0
    problems = held_out(TASK, 4)
    ok = check_special_tokens(good, tok, problems, task=TASK)
    assert ok.ok and ok.special["eos_logprob"] > -1
    bad = A.teacher_with_moved_token(good, eos, unk)
    rep = check_special_tokens(bad, tok, problems, task=TASK)
    assert not rep.ok
    assert rep.special["teacher_prefers"] == "<unk>" and rep.special["eos_logprob"] < -20
    assert "mask_special_tokens=True" in str(rep)
    with pytest.raises(ConfigError, match="cannot be distilled"):
        rep.raise_if_errors()
    fixed = check_special_tokens(bad, tok, problems, task=TASK, apply_fix=True)
    assert fixed.ok and [f.level for f in fixed.findings] == ["fixed"]

    pen = A.special_token_penalty(good, bad, tok, problems, max_new_tokens=8)
    assert pen["positions"] > 0                      # `good` (EOS bias +30) ends every rollout with EOS
    assert pen["at_token"] < -20 and pen["share_of_loss"] > 0.5

    # the rollout length is the task's (config.generation_length), never a fixed guess; none given is an error
    from types import SimpleNamespace
    short = A.special_token_penalty(bad, bad, tok, problems, task=SimpleNamespace(max_new_tokens=3))
    longer = A.special_token_penalty(bad, bad, tok, problems, task=SimpleNamespace(max_new_tokens=3), max_new_tokens=9)
    assert 0 < short["tokens"] <= 3 * len(problems) < longer["tokens"] <= 9 * len(problems)
    with pytest.raises(ValueError, match="pass task="):
        A.special_token_penalty(good, bad, tok, problems)
    with pytest.raises(ValueError, match="pass task="):
        A.estimator_gradients(good, bad, tok, problems, repeats=1, batch_size=2)


def test_mask_special_tokens_config_and_trainer(tok, teacher):
    with pytest.raises(ConfigError, match="mask_special_tokens"):
        validate(TrainConfig.for_method("sft", mask_special_tokens=True))
    cfg = TrainConfig.for_method("opd", mask_special_tokens=True, batch_size=8, steps=1, eval_every=0,
                                 device="cpu")
    student = build_model("nano", tok, seed=2)
    with torch.no_grad():                            # EOS logit 0 among small random logits: rollouts often stop
        student.get_output_embeddings().weight[tok.eos_token_id].zero_()
    tr = Trainer(cfg, teacher=teacher, student=student, tokenizer=tok)
    _, _, r, _ = tr._batch(1)                       # step 1's rollout (per-step seeds), drawn again here
    m = r.completion_mask.bool()
    want = (r.completion_ids[m] == tok.eos_token_id).float().mean().item()   # the share of EOS positions
    assert 0.0 < want < 1.0
    rec = tr.step()
    assert rec["mask/special_masked_frac"] == pytest.approx(want, abs=1e-6)
    assert torch.isfinite(torch.tensor(rec["loss"]))


# ---- the dashboard's early-warning flag ------------------------------------------------------------
def test_dashboard_flags_record_warnings():
    from widgets import RecordStore
    from widgets import figures as F
    store = RecordStore()
    for k in range(1, 6):
        rec = {"step": k, "run": "opd", "method": "opd", "total_steps": 5, "max_new_tokens": 64,
               "rollout/mean_length": 40.0, "rollout/truncated_frac": 0.1 * k, "rollout/repetition_rate": 0.0}
        if k == 4:
            rec["warning"] = "truncation rose by 0.30 within 4 steps at step 4"
        store.add(rec)
    html = F.header_html(store)
    assert "opd-dashboard-warning" in html and "early warning at step 4" in html and "rose by 0.30" in html
    spec = F.curves_spec(store)
    warn = [t for t in spec["data"] if (t.get("meta") or {}).get("key") == "warning"]
    assert len(warn) == 1 and warn[0]["x"] == [4]
    assert "warning" not in store.runs["opd"].series        # not plotted as a scalar series
    quiet = RecordStore()
    quiet.add({"step": 1, "run": "a", "rollout/mean_length": 3.0})
    assert "opd-dashboard-warning" not in F.header_html(quiet)


# ---- runaway summaries from records ----------------------------------------------------------------
def test_truncation_summary_on_constructed_records():
    from workbench import runaway as R
    trunc = [0.0, 0.05, 0.02, 0.3, 0.95, 1.0, 1.0, 0.98, 1.0, 1.0, 1.0, 0.97]
    recs = [{"step": i + 1, "rollout/truncated_frac": t, "rollout/repetition_rate": t / 2,
             "teacher/top1_overlap": 0.7 + 0.01 * i} for i, t in enumerate(trunc)]
    recs[3]["warning"] = "truncation rose by 0.30 within 4 steps at step 4"
    recs[-1]["eval/accuracy"] = 0.0
    recs[5]["eval/accuracy"] = 0.1
    assert R.first_step_at(recs) == 5
    assert R.jump_width(recs) == 2                   # last step under 0.1 is step 3, first >= 0.9 is step 5
    s = R.truncation_summary(recs, last=5, window=3)
    assert s["jumped"] and s["sustained"] and s["first step >= 0.9 truncated"] == 5
    assert s["final truncated frac (last 5 steps)"] == pytest.approx(sum(trunc[-5:]) / 5)
    assert s["first warning"] == 4 and s["max repetition rate"] == 0.5 and s["final eval accuracy"] == 0.0
    assert s["top-1 overlap, first 3"] == pytest.approx(0.71) and s["top-1 overlap, last 3"] == pytest.approx(0.80)
    assert s["top-4 overlap, first 3"] is None      # key never recorded
    calm = [{"step": i, "rollout/truncated_frac": 0.05} for i in range(1, 6)]
    c = R.truncation_summary(calm)
    assert not c["jumped"] and not c["sustained"] and R.jump_width(calm) is None
    # a run that starts truncated has no step under 0.1 before its first full step: no measurable jump
    assert R.jump_width([{"step": 1, "rollout/truncated_frac": 0.95}]) is None
    with pytest.raises(ValueError, match="no records"):
        R.truncation_summary([])
    assert R.token_count_per_sample([{"tokens": [",", "1", ","]}, {"tokens": ["<unk>"]}], ",") == 1.0


def test_collapse_summary_on_constructed_records():
    from workbench import runaway as R
    lengths = [53.0, 40.0, 20.0, 9.0, 4.0, 2.0, 2.0, 3.0]
    recs = [{"step": i + 1, "rollout/mean_length": n, "rollout/truncated_frac": 0.1 * (i % 3),
             "rollout/repetition_rate": n / 100} for i, n in enumerate(lengths)]
    recs[0].update({"teacher/token_reward_mean": -0.5, "opd/advantage_mean": 0.25})
    recs[2]["eval/accuracy"] = 0.4
    recs[6]["warning"] = "collapse"
    s = R.collapse_summary(recs, collapse_len=10, last=4)
    assert s["start length"] == 53.0 and s["final length (last 4 steps)"] == pytest.approx(11 / 4)
    assert s["collapsed"] and s["first step below 10 tokens"] == 4
    assert s["max truncated frac"] == pytest.approx(0.2)
    assert s["final truncated frac (last 4 steps)"] == pytest.approx((0.1 + 0.2 + 0.0 + 0.1) / 4)   # steps 5-8
    assert s["max repetition rate"] == 0.53 and s["final eval accuracy"] == 0.4 and s["warnings"] == 1
    assert s["token reward at step 1"] == -0.5 and s["advantage mean at step 1"] == 0.25
    healthy = R.collapse_summary([{**r, "rollout/mean_length": 50.0} for r in recs], collapse_len=10, last=4)
    assert not healthy["collapsed"] and healthy["first step below 10 tokens"] is None
    with pytest.raises(ValueError, match="no records"):
        R.collapse_summary([])


def test_seed_frequency_warning_lead_and_token_counts():
    from workbench import runaway as R
    rows = {"a · seed 0": {"collapsed": True, "jumped": False}, "a · seed 1": {"collapsed": False, "jumped": True},
            "a · seed 2": {"collapsed": True, "jumped": True}, "a + fix · seed 0": {"collapsed": False, "jumped": False}}
    f = R.seed_frequency(rows, ("a", "a + fix"), flags=("collapsed", "jumped"))
    # "a + fix · seed 0" starts with "a" but is not a run of kind "a": the " · seed " suffix separates kinds
    assert f == {"a": {"collapsed": 2, "jumped": 2, "seeds": 3}, "a + fix": {"collapsed": 0, "jumped": 0, "seeds": 1}}
    with pytest.raises(ValueError, match="no run named 'b'"):
        R.seed_frequency(rows, ("b",))
    recs = [{"step": i + 1, "rollout/mean_length": n} for i, n in enumerate([50.0, 30.0, 20.0, 12.0, 8.0, 3.0])]
    recs[1]["warning"] = "truncation rose by 0.30 within 4 steps at step 2"     # not about length: ignored
    recs[2]["warning"] = "length 20.0 <= 0.50 x the first step's 50.0 at step 3"
    assert R.warnings_of(recs) == [(2, recs[1]["warning"]), (3, recs[2]["warning"])]
    assert R.warning_lead(recs, collapse_len=10) == 5 - 3       # below 10 tokens at step 5, warned at step 3
    assert R.warning_lead(recs, collapse_len=2) is None          # never below 2 tokens
    assert R.warning_lead([{k: v for k, v in r.items() if k != "warning"} for r in recs]) is None
    first, last = [{"tokens": [",", "1", ","]}], [{"tokens": ["<unk>"]}, {"tokens": ["1"]}]
    assert R.token_counts(first, last, (",", "<unk>")) == {", per sample, first": 2.0, ", per sample, last": 0.0,
                                                          "<unk> per sample, first": 0.0,
                                                          "<unk> per sample, last": 0.5}
    from workbench.experiments import RecordLog
    log = RecordLog()
    for r in recs[:3]:
        log.on_step({"run": "r", **r})
    assert log.series("r", "rollout/mean_length", offset=30) == ([31, 32, 33], [50.0, 30.0, 20.0])


def test_rollout_table_keeps_special_tokens_the_text_drops(tok, teacher):
    from workbench.experiments import rollout_table
    rows = rollout_table(teacher, tok, TASK, held_out(TASK, 5), temperature=1.0, max_new_tokens=12, seed=3)
    for row in rows:
        assert len(row["tokens"]) == row["length"]
        visible = "".join(t for t in row["tokens"] if t not in tok.all_special_tokens)
        assert row["completion"] == visible          # the text is the tokens minus the special ones
        if not row["truncated"]:
            assert row["tokens"][-1] == tok.eos_token


def test_budget_stopped_run_gets_a_final_evaluation_with_its_costs():
    """experiments.train evaluates where a run stopped when the trainer did not (budget stop mid-interval):
    the added row carries that step's cumulative tokens, FLOPs and training time."""
    from workbench import experiments as X
    log = X.RecordLog()
    tr = X.train("sft", log=log, name="b", steps=6, batch_size=4, eval_every=5, eval_problems=4, eval_sampled=False,
                 device="cpu", budget_tokens=1)
    last = log.records["b"][-1]
    assert tr.step_count == last["step"] < 5             # stopped by the budget before the first scheduled eval
    row = log.evals["b"][-1]
    assert row["step"] == tr.step_count and "eval/accuracy" in row
    assert row["student_tokens"] == last["cost/student_tokens"] and row["flops"] == last["cost/flops"]
    assert row["train_s"] == last["train_s"] > 0
