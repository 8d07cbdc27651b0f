"""The `repeat` task and what notebook 12 measures with it: loop tokens, the repeated-vs-normal reward split,
the stop-decision probe, the truncation-collapse rule, and the shipped pair's two teachers."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from workbench.analysis import another_copy_probability
from workbench.metrics import advantage_by_marker_samples
from workbench.runaway import truncation_collapse
from workbench.tasks import ANSWER_SEP, get_task
from workbench.tasks.repeat import Repeat, RepeatLoops
from workbench.tokenizer import build_tokenizer, encode_text


def test_gold_answers_verify_and_fit_the_cap():
    task = get_task("repeat")
    tok = build_tokenizer(task.charset)
    probs = task.problems(400, seed=3, split="train")
    for p in probs:
        word, count = Repeat.parse_prompt(p.prompt)
        body, answer = p.solution.split(ANSWER_SEP)
        assert body.split(",") == [word] * count and answer == str(count) == p.answer
        assert 1 <= len(word) <= 3 and set(word) <= set("abcd") and 1 <= count <= 19
        assert task.verify(p, p.solution).correct
        encode_text(tok, p.prompt + p.solution)
        assert len(p.solution) + 1 <= task.max_new_tokens
    assert {Repeat.parse_prompt(p.prompt)[1] for p in probs} == set(range(1, 20))     # every count drawn
    assert task.max_new_tokens == 19 * 4 + 2 + 1 + 10                                # room for ~3 extra copies


def test_wrong_counts_truncation_and_a_right_count_after_wrong_copies_all_fail():
    task = Repeat()
    p = Repeat.solve("ab", 3)
    assert p.solution == "ab,ab,ab|3"
    for wrong in ("ab,ab,ab,ab|3", "ab,ab|3", "ab,ab,ab|4", "ab,ab,ba|3", "ab,ab,ab", "", "ab,ab,ab|3|3"):
        assert not task.verify(p, wrong).correct, wrong
    assert task.verify(p, "ab,ab,ab,ab|3").answer == "3"        # parsed, but the copies are wrong
    assert not task.verify(p, p.solution, truncated=True).correct


def test_bad_parameters_are_refused():
    for kw in (dict(max_count=0), dict(max_count=100), dict(max_word=0), dict(max_word=7)):
        with pytest.raises(ValueError):
            Repeat(**kw)
    with pytest.raises(ValueError, match="loop_frac"):
        RepeatLoops(loop_frac=1.5)


def _loop_flags_by_hand(prompt, completion):
    """Independent reading: the body's first `count` copies and the commas between them are the answer;
    every body character from the comma that opens copy count+1 on is the loop; `|` and after is not."""
    count = int(prompt[:-1].split("*")[1])
    body = completion.split(ANSWER_SEP)[0]
    copies = body.split(",")
    if len(copies) <= count:
        return [False] * len(completion)
    start = len(",".join(copies[:count]))          # index of the comma before copy count+1
    return [start <= i < len(body) for i in range(len(completion))]


def test_loop_tokens_match_a_hand_reading():
    rng = random.Random(0)
    task = Repeat()
    for p in task.problems(300, seed=4):
        word, count = Repeat.parse_prompt(p.prompt)
        n = max(0, count + rng.randint(-3, 4))
        parts = [word if rng.random() < 0.8 else word[::-1] + "a" for _ in range(n)]
        completion = ",".join(parts) + rng.choice(["", ",", ANSWER_SEP + str(count), ANSWER_SEP + "1" + ANSWER_SEP])
        assert Repeat.loop_tokens(p.prompt, completion) == _loop_flags_by_hand(p.prompt, completion), completion
    assert Repeat.loop_tokens("ab*2=", "ab,ab,ab,a") == [False] * 5 + [True] * 5
    assert Repeat.loop_tokens("ab*2=", "ab,ab|2") == [False] * 7


def test_repeat_loops_trains_on_over_counted_prefixes_and_keeps_gold_on_val_and_test():
    task = RepeatLoops(loop_frac=0.5)
    train = task.problems(400, seed=1, split="train")
    looped = [p for p in train if not p.prompt.endswith("=")]
    assert 120 < len(looped) < 280                      # about half
    for p in looped:
        head, written = p.prompt.split("=", 1)
        word, count = Repeat.parse_prompt(head + "=")
        assert written.split(",") == [word] * len(written.split(",")) and count < len(written.split(",")) <= count + 3
        assert ANSWER_SEP not in p.solution and p.solution.startswith("," + word)
        assert p.solution.split(",")[1:] == [word] * (len(p.solution.split(",")) - 1)
        # copies on to the cap: the completion (prefix + solution) ends within one copy of it, or one copy past it
        assert abs(len(written) + len(p.solution) - task.max_new_tokens) <= len(word) + 1
    # val and test (and train at loop_frac 0) are `repeat`'s gold problems (another stream: the seed mixes in the name)
    for probs in (task.problems(100, seed=2, split="val"), task.problems(100, seed=2, split="test"),
                  RepeatLoops(loop_frac=0.0).problems(100, seed=1)):
        assert all(p.prompt.endswith("=") and p == Repeat.solve(*Repeat.parse_prompt(p.prompt)) for p in probs)


def test_marker_split_against_a_hand_computation():
    samples = [{"prompt": "ab*1=", "tokens": list("ab,ab") + ["<eos>"], "token_reward": [1, 2, 3, 4, 5, 6]},
               {"prompt": "a*2=", "tokens": list("a,a|2"), "token_reward": [-1, -1, -1, -1, -1]},
               {"prompt": "a*1=", "tokens": list("a"), "token_reward": None}]       # no teacher: skipped
    got = advantage_by_marker_samples(samples, Repeat.loop_tokens)
    # loop: ",ab" of the first sample (3, 4, 5); normal: "ab" and EOS (1, 2, 6) and all of the second
    assert got["marked"] == pytest.approx(4.0)
    assert got["normal"] == pytest.approx((1 + 2 + 6 - 5) / 8)
    assert got["marked_frac"] == pytest.approx(3 / 11)
    assert advantage_by_marker_samples([], Repeat.loop_tokens) == {"marked": None, "normal": None, "marked_frac": 0.0}
    # a special token the student wrote is one position inside its copy; EOS is never flagged, even after a loop
    odd = [{"prompt": "a*1=", "tokens": ["a", ",", "<unk>", "<eos>"], "token_reward": [0, 1, 2, 3]}]
    assert advantage_by_marker_samples(odd, Repeat.loop_tokens) == {"marked": 1.5, "normal": 1.5, "marked_frac": 0.5}
    with pytest.raises(ValueError, match="one character per token"):
        advantage_by_marker_samples([{"prompt": "ab*1=", "tokens": ["ab"], "token_reward": [0.0]}], Repeat.loop_tokens)


class _CommaCounter(torch.nn.Module):
    """A stand-in model whose next-token logits favour `,` by the number of commas already in the input:
    logit(`,`) = commas, every other logit 0, so P(`,`) = e^c / (e^c + V - 1) can be computed by hand."""

    def __init__(self, tok):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.comma, self.V = tok.convert_tokens_to_ids(","), len(tok)

    def forward(self, ids):
        logits = torch.zeros(ids.shape[0], ids.shape[1], self.V)
        logits[..., self.comma] = (ids == self.comma).sum(-1, keepdim=True).float()
        return SimpleNamespace(logits=logits)


def test_another_copy_probability_reads_the_decision_after_count_plus_d_copies():
    import math
    tok = build_tokenizer(Repeat.charset)
    model = _CommaCounter(tok)
    problems = [Repeat.solve("ab", 3), Repeat.solve("c", 1)]
    got = another_copy_probability(model, tok, problems, offsets=(-1, 0, 2))
    p = lambda commas: math.exp(commas) / (math.exp(commas) + model.V - 1)       # noqa: E731
    # count + d copies hold count + d - 1 commas; d = -1 skips the count-1 problem (no copy to write after)
    assert got[-1] == pytest.approx(p(1))
    assert got[0] == pytest.approx((p(2) + p(0)) / 2)
    assert got[2] == pytest.approx((p(4) + p(2)) / 2)


def _records(truncated):
    return [{"step": i + 1, "rollout/truncated_frac": t} for i, t in enumerate(truncated)]


def test_truncation_collapse_rule():
    assert truncation_collapse(_records([0.0] * 10 + [0.95] * 40))          # jumps at step 11, stays
    assert truncation_collapse(_records([0.0] * 29 + [0.9] + [0.8] * 20))   # at step 30, stays above 0.75
    assert not truncation_collapse(_records([0.0] * 31 + [1.0] * 20))       # too late: step 32
    assert not truncation_collapse(_records([0.0] * 10 + [0.95] * 10 + [0.2] * 30))   # recovered
    assert not truncation_collapse(_records([0.5] * 50))                    # never reached 0.9
    with pytest.raises(ValueError):
        truncation_collapse([])


def test_recorded_accuracies_of_the_repeat_entries():
    from workbench import zoo
    rows = {r["name"]: r for r in zoo.listing()}
    assert rows["repeat-teacher"]["accuracy"] >= 0.95 and rows["repeat-loop-teacher"]["accuracy"] >= 0.95
    assert 0.2 <= rows["repeat-student-sft"]["accuracy"] <= 0.6        # over-counts: room to learn, and to loop
    assert rows["repeat-student"]["params"] * 5 < rows["repeat-teacher"]["params"]


def test_shipped_teachers_agree_on_gold_and_differ_on_loops():
    """Notebook 12's premise, on the shipped checkpoints: both teachers stop after exactly `count` copies and go on
    before it; past the count the counting teacher expects the end and the looping teacher another copy."""
    from workbench.pairs import load_checkpoint
    problems = Repeat().problems(60, seed=5, split="test")
    probs = {}
    for name in ("repeat-teacher", "repeat-loop-teacher"):
        model, tok = load_checkpoint("teacher", name, "cpu", trainable=False)
        probs[name] = another_copy_probability(model, tok, problems, offsets=(-1, 0, 1, 3))
    for by in probs.values():
        assert by[-1] > 0.95 and by[0] < 0.05
    assert probs["repeat-teacher"][1] < 0.3 and probs["repeat-teacher"][3] < 0.3
    assert probs["repeat-loop-teacher"][1] > 0.9 and probs["repeat-loop-teacher"][3] > 0.9
