"""workbench.literature: the verdict rules on hand-built numbers (each rule can come out True, False and, where
the condition is not met, None), the testbed fallback, and the table rows."""
from __future__ import annotations

import pytest

from workbench import literature as LT


def _probe(inj=0.1, ctl=0.05, mix=0.1, ent=0.5, p1=0.9, pk=0.99):
    return {"modes": {"pass_at_k": {1: p1, 16: pk}, "orders": {"mixture_rate": mix, "order_entropy": ent,
                                                               "distinct_orders": 2.0},
                      "token_entropy": 0.1, "sampled_accuracy": p1},
            "exposure": {"injected": {"error_rate": inj}, "control": {"error_rate": ctl}, "states": 800}}


def test_exposure_rules():
    probes = {("sft", 0): _probe(inj=0.3, ctl=0.05), ("sft", 1): _probe(inj=0.2, ctl=0.04),
              ("opd", 0): _probe(inj=0.1, ctl=0.05), ("opd", 1): _probe(inj=0.15, ctl=0.05)}
    v = LT.exposure_verdicts(probes)
    assert [x["holds"] for x in v] == [True, True]
    # OPD more accurate everywhere but hurt more by the mistake (rise 0.16 > SFT's 0.15): not "does not compound"
    probes[("opd", 1)] = _probe(inj=0.17, ctl=0.01)
    assert [x["holds"] for x in LT.exposure_verdicts(probes)] == [True, False]
    probes[("sft", 1)] = _probe(inj=0.03, ctl=0.04)       # SFT does not compound in seed 1
    assert LT.exposure_verdicts(probes)[0]["holds"] is False
    assert LT.exposure_verdicts({("opd", 0): _probe()}) == []


def test_mode_rules():
    start = _probe(p1=0.80, pk=0.97)
    probes = {("sft", 0): _probe(mix=0.2, ent=0.9), ("opd", 0): _probe(mix=0.05, ent=0.3, p1=0.90, pk=0.98)}
    v = LT.mode_verdicts(probes, start)
    assert [x["holds"] for x in v] == [True, True, True]          # pass@1 gain 0.10 > pass@16 gain 0.01
    probes[("opd", 0)] = _probe(mix=0.3, ent=1.0, p1=0.81, pk=0.999)
    assert [x["holds"] for x in LT.mode_verdicts(probes, start)] == [False, False, False]
    probes[("opd", 0)] = _probe(p1=0.79, pk=0.90)          # pass@1 fell (less than pass@16 did): no gain
    assert LT.mode_verdicts(probes, start)[2]["holds"] is False
    probes[("opd", 0)]["modes"]["orders"] = None                   # a task without column orders
    probes[("sft", 0)]["modes"]["orders"] = None
    assert [x["holds"] for x in LT.mode_verdicts(probes, start)][:2] == [None, None]


def test_horizon_rule():
    row = (lambda a: {"final_accuracy_mean": a})
    assert LT.horizon_verdicts({None: row(0.90), 16: row(0.86)}, 0.80)[0]["holds"] is True     # 0.06 >= 0.05
    assert LT.horizon_verdicts({None: row(0.90), 16: row(0.84)}, 0.80)[0]["holds"] is False
    assert LT.horizon_verdicts({None: row(0.79), 16: row(0.84)}, 0.80)[0]["holds"] is None     # no gain to recover
    assert LT.horizon_verdicts({None: row(0.9)}, 0.8) == []


def test_exopd_rule_needs_a_teacher_that_is_not_perfect():
    rows = {lam: {"final_accuracy_mean": a} for lam, a in ((0.5, 0.70), (1.0, 0.74), (1.25, 0.80), (1.5, 0.77))}
    v = LT.exopd_verdicts(rows, teacher_accuracy=0.78)
    assert [x["holds"] for x in v] == [True, True]
    assert [x["holds"] for x in LT.exopd_verdicts(rows, teacher_accuracy=0.82)] == [True, False]
    out = LT.exopd_verdicts(rows, teacher_accuracy=0.99)
    assert [x["holds"] for x in out] == [None, None] and "condition" in out[0]["evidence"]
    # notebook 11 runs both targets: their claims must not share a text (the claims ledger keys on it)
    texts = [x["text"] for t in ("full-vocabulary", "sampled-token") for x in LT.exopd_verdicts(rows, 0.78, target=t)]
    assert len(set(texts)) == 4


def test_variance_rule_needs_every_seed():
    r = {"vopd": {"by_seed": [2.5, 1.9], "mean": 2.2, "std": 0.4, "min": 1.9, "max": 2.5},
         "topk": {"by_seed": [3.0, 2.0], "mean": 2.5, "std": 0.7, "min": 2.0, "max": 3.0},
         "full_kl": {"by_seed": [9.0, 9.0], "mean": 9.0, "std": 0.0, "min": 9.0, "max": 9.0}}
    v = {x["text"].split(" reduces")[0]: x["holds"] for x in LT.variance_verdicts(r)}
    assert v == {"vOPD's control variate": False, "Top-K (renormalised) matching": True}


def test_testbed_task_falls_back_only_at_smoke(monkeypatch):
    monkeypatch.setattr(LT, "_built", lambda name: name.startswith("addition-") and "orders" not in name)
    assert LT.testbed_task("addition", "full") == ("addition", None)
    task, note = LT.testbed_task("addition-orders", "smoke")
    assert task == "addition" and "not built" in note
    with pytest.raises(FileNotFoundError, match="zoo build --only"):
        LT.testbed_task("addition-orders", "full")


def test_mode_rows():
    rows = LT.mode_rows({("opd", 0): _probe()}, start=_probe(p1=0.5))
    assert [r["student"] for r in rows] == ["opd/seed0", "start"]
    assert rows[1]["pass@1"] == 0.5 and rows[0]["pass@16"] == 0.99 and rows[0]["error after mistake"] == 0.1


def test_signal_over_training_pools_stretches_of_each_run():
    from workbench.experiments import RecordLog
    log = RecordLog()
    prof = (lambda v: {"n": [2.0], "reverse_kl": [v]})
    for run, vals in (("opd/seed0", (1.0, 2.0, 3.0, 4.0)), ("opd/seed1", (5.0, 7.0)), ("sft/seed0", (9.0, 9.0))):
        for step, v in enumerate(vals, 1):
            log.on_step({"step": step, "run": run, "teacher/by_position": prof(v)})
        log.on_step({"step": 99, "run": run})                   # a step without a profile is skipped
    out = LT.signal_over_training(log, "opd/", parts=2)
    assert out["part 1 of 2"]["reverse_kl"] == [(1 + 2 + 5) / 3]
    assert out["part 2 of 2"]["reverse_kl"] == [(3 + 4 + 7) / 3]
