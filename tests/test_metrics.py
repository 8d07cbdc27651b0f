import zlib

import pytest

from workbench.metrics import REPETITION_THRESHOLD, compression_ratio, is_repetitive, repetition_rate
from workbench.tasks import get_task


def test_compression_ratio_matches_zlib():
    s = "3+4+0=07,5+6+1=12,"
    assert compression_ratio(s) == pytest.approx(len(s) / len(zlib.compress(s.encode(), 9)))
    assert compression_ratio("") == 0.0


@pytest.mark.parametrize("task", ["addition", "multiply"])
@pytest.mark.parametrize("split", ["train", "test", "long", "short"])
def test_clean_reference_solutions_are_not_repetitive(task, split):
    t = get_task(task)
    sols = [p.solution for p in t.problems(300, seed=1, split=split)]
    assert max(compression_ratio(s[-48:]) for s in sols) <= 2.1
    assert repetition_rate(sols) == 0.0


@pytest.mark.parametrize("text", ["0" * 60, "12" * 30, "1+1+0=02," * 7, "0+0+0=00," * 7, "7" * 48])
def test_degenerate_tails_are_repetitive(text):
    assert is_repetitive(text)
    assert compression_ratio(text[-48:]) > REPETITION_THRESHOLD


def test_short_texts_never_flagged_and_rate_counts():
    assert not is_repetitive("0" * 20)          # shorter than the tail window
    assert repetition_rate(["0" * 60, "3+4+0=07,5+6+1=12,|0012", "9" * 50, "x"]) == 0.5
    assert repetition_rate([]) == 0.0


def test_length_alarm_threshold_rise_and_rearm():
    from workbench.metrics import LengthAlarm
    a = LengthAlarm(truncation=0.5, repetition=0.3, rise=0.3, window=5)
    seq = [0.0, 0.05, 0.1, 0.45, 0.45, 0.6, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.55]
    fired = [(i + 1, m) for i, v in enumerate(seq) for m in a.update({"step": i + 1, "rollout/truncated_frac": v})]
    steps = [s for s, _ in fired]
    # rise of 0.45 (from 0.0) within the window at step 4; stays active through 7 (over 0.5 / risen); clears; fires at 14
    assert steps == [4, 14]
    assert "rose by 0.45 within 4 steps" in fired[0][1] and "0.55 >= 0.50" in fired[1][1]
    b = LengthAlarm()
    assert b.update({"step": 1, "rollout/repetition_rate": 0.4}) == ["repetition 0.40 >= 0.30 at step 1"]
    with pytest.raises(ValueError, match="window"):
        LengthAlarm(window=1)


def test_length_alarm_watches_collapse_to_short_answers():
    from workbench.metrics import LengthAlarm
    a = LengthAlarm(truncation=0.9, repetition=0.9, shrink=0.5)
    lengths = [53.0, 50.0, 30.0, 26.5, 20.0, 40.0, 12.0]
    fired = [(i + 1, m) for i, v in enumerate(lengths)
             for m in a.update({"step": i + 1, "rollout/mean_length": v, "rollout/truncated_frac": 0.0})]
    # 26.5 = 0.5 x 53 fires at step 4; stays active at 20; clears at 40; fires again at 12
    assert [s for s, _ in fired] == [4, 7]
    assert "length 26.5 <= 0.50 x the first step's 53.0 at step 4" == fired[0][1]
    off = LengthAlarm(shrink=0.0)
    assert all(off.update({"step": i, "rollout/mean_length": v}) == [] for i, v in enumerate([53.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="shrink"):
        LengthAlarm(shrink=1.0)
