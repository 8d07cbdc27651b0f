"""GSM8K-format task: reading JSONL/parquet, malformed rows, the numeric verifier, chat-template prompts."""
import json
import random

import pytest

from workbench.batching import prompt_batch
from workbench.tasks import DATA_TASKS, get_task
from workbench.tasks.gsm8k import (GSM8K, SAMPLE_PATH, DataError, extract_answer, normalize_number,
                                   read_problems)


def test_shipped_sample_reads_and_every_reference_verifies():
    rows = read_problems(SAMPLE_PATH)
    assert len(rows) == 12
    assert len({p.prompt for p in rows}) == 12
    task = GSM8K()
    assert len(task.train) + len(task.test) == 12 and len(task.test) == 3
    assert not {p.prompt for p in task.train} & {p.prompt for p in task.test}
    for p in rows:
        assert p.solution.rstrip().splitlines()[-1].startswith("####")
        v = task.verify(p, p.solution)
        assert v.correct and v.reward == 1.0 and v.answer == p.answer
    assert "0.75" in {p.answer for p in rows}                 # a decimal answer is in the sample


def test_get_task_by_name_and_splits():
    assert "gsm8k" in DATA_TASKS
    t = get_task("gsm8k", max_new_tokens=64)
    assert isinstance(t, GSM8K) and t.max_new_tokens == 64 and t.min_new_tokens() == 1
    assert t.problems(2, split="test") == t.test[:2]
    assert t.problems(50, split="test") == t.test           # held-out: in order, no repeats
    a = t.problems(20, seed=3)
    assert a == t.problems(20, seed=3) and a != t.problems(20, seed=4)
    assert all(p in t.train for p in a)
    with pytest.raises(ValueError, match="no split"):
        t.problems(2, split="validation")


@pytest.mark.parametrize("text,want", [
    ("so the answer is 42.", "42"),
    ("12 apples and 30 pears make 42", "42"),
    ("#### 1,250", "1250"),
    ("She pays $1,250.00 in total\n#### $1,250.00", "1250"),
    ("#### 0.750", "0.75"),
    ("#### -3", "-3"),
    ("first 5 then #### 7 and later 9", "7"),                 # the number right after the last ####
    ("#### 4\nwait, no:\n#### 5", "5"),
    ("no digits here", None),
    ("#### none", None),
    ("", None),
])
def test_extract_answer(text, want):
    assert extract_answer(text) == want


def test_normalize_and_equality():
    assert normalize_number("1,000") == "1000" and normalize_number("2.50") == "2.5"
    assert normalize_number("abc") is None and normalize_number("") is None
    t = GSM8K()
    p = next(p for p in t.train + t.test if p.answer == "0.75")
    assert t.verify(p, "each costs $.75 → #### 0.75").correct
    assert t.verify(p, "it is 0.750").correct
    assert not t.verify(p, "#### 0.76").correct
    v = t.verify(p, "#### 0.75", truncated=True)             # truncated completions score 0
    assert (v.reward, v.answer, v.correct) == (0.0, None, False)


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_malformed_rows_name_file_and_line(tmp_path):
    good = {"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"}
    cases = [
        ([good, "{not json"], ":2: not valid JSON"),
        ([good, good, {"question": "Q?", "answer": "no final marker"}], ":3: 'answer' must be a worked solution"),
        ([{"question": "Q?", "answer": "#### twelve"}], ":1: the text after '####' is not a number"),
        ([good, {"question": "", "answer": "#### 1"}], ":2: 'question' is empty"),
        ([good, [1, 2]], ":2: expected a JSON object"),
    ]
    for i, (rows, msg) in enumerate(cases):
        f = _write_jsonl(tmp_path / f"bad{i}.jsonl", rows)
        with pytest.raises(DataError) as e:
            read_problems(f)
        assert str(f) in str(e.value) and msg in str(e.value), str(e.value)
    f = _write_jsonl(tmp_path / "cols.jsonl", [{"q": "x", "a": "#### 1"}])
    with pytest.raises(DataError, match="missing column"):
        read_problems(f)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_problems(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="unsupported file type"):
        read_problems(_write_jsonl(tmp_path / "x.csv", [good]))


def test_parquet_and_separate_test_file(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = [json.loads(line) for line in SAMPLE_PATH.read_text().splitlines()]
    pd.DataFrame(rows[:8]).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame(rows[8:]).to_parquet(tmp_path / "test.parquet")
    t = GSM8K(tmp_path / "train.parquet", test_path=tmp_path / "test.parquet")
    assert len(t.train) == 8 and len(t.test) == 4
    bad = pd.DataFrame([{"question": "Q", "answer": "4"}])
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet: row 0"):
        read_problems(tmp_path / "bad.parquet")


def test_chat_template_prompt_encoding():
    from workbench.hf import chat_prompt_ids, make_tiny_tokenizer
    tok = make_tiny_tokenizer(384)
    t = GSM8K(instruction="Answer with #### N.")
    p = t.train[0]
    ids = t.encode_prompt(tok, p.prompt)
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>user\n" + p.prompt + "\nAnswer with #### N.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert ids == chat_prompt_ids(tok, t.user_message(p.prompt))
    # the batching hook: prompt_batch(..., task=) uses encode_prompt (left-padded)
    problems = random.Random(0).sample(t.train, 3)
    ids_b, mask = prompt_batch(tok, problems, task=t)
    for row, m, q in zip(ids_b.tolist(), mask.tolist(), problems):
        assert [i for i, k in zip(row, m) if k] == t.encode_prompt(tok, q.prompt)
    # no template: plain text + newline
    tok.chat_template = None
    assert tok.decode(t.encode_prompt(tok, p.prompt)).endswith("Answer with #### N.\n")
