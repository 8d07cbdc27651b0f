"""Your own checkpoints and data from the command line: locally built tiny Hugging Face checkpoints with LoRA,
a teacher whose embedding is padded past the tokenizer (--alignment truncate), GSM8K-format files (question /
answer rows, JSONL and parquet) and QA files with a chosen verifier; every bad case is one error naming the fix,
the same text from the command line as from Python. The README's "Your own checkpoints" commands run as written."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from readme_blocks import run_section
from workbench import cli, hf
from workbench.config import ConfigError, TrainConfig, field_docs
from workbench.tasks.qa import QA

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "gsm8k_sample.jsonl"


@pytest.fixture(scope="module")
def readme_ckpts(tmp_path_factory):
    """The README's "Your own checkpoints" section, run as written in a fresh directory holding data/."""
    d = tmp_path_factory.mktemp("own_ckpts")
    (d / "data").mkdir()
    shutil.copy(SAMPLE, d / "data" / SAMPLE.name)
    outputs = run_section(REPO / "README.md", "Your own checkpoints", d)
    return d, outputs


def _train(d, *extra, teacher="ckpts/tiny-qwen2-teacher", student="ckpts/tiny-qwen2-student"):
    return ["train", "--teacher", str(d / teacher), "--student", str(d / student), "--steps", "1", "--batch-size", "2",
            "--max-new-tokens", "8", "--eval-every", "0", "--eval-problems", "2", *extra]


def test_readme_lora_run_trains_adapters_and_resumes(readme_ckpts, capsys, monkeypatch):
    d, out = readme_ckpts
    monkeypatch.chdir(d)           # the run recorded its checkpoints as the README wrote them: relative to d
    run = d / "runs" / "lora"
    rec = json.loads((run / "config.json").read_text())
    assert rec["config"]["lora_r"] == 8 and rec["task"]["class"] == "workbench.tasks.gsm8k:GSM8K"
    assert rec["task"]["params"]["path"] == "data/gsm8k_sample.jsonl"
    ck = run / "checkpoints" / "step_000002"
    adapter = json.loads((ck / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16                 # alpha defaults to 2 x r
    assert not (ck / "model.safetensors").exists()                           # only the adapters were trained
    assert "reason=completed" in out[1] and "reason=completed" in out[2]      # the truncate run too
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--steps", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["step"] == 3 and summary["reason"] == "completed"
    assert (run / "checkpoints" / "step_000003" / "adapter_config.json").exists()


def test_padded_teacher_is_refused_without_truncate_with_the_same_message_as_python(readme_ckpts, capsys):
    d, _ = readme_ckpts
    code = cli.main(_train(d, "--task", "gsm8k", teacher="ckpts/padded-teacher"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1
    assert "embedding sizes differ (teacher vocab_size 448, student 384)" in err
    assert "--alignment truncate" in err
    with pytest.raises(ConfigError) as e:          # the Python entry point: the same check, the same words
        hf.load_pair(str(d / "ckpts" / "padded-teacher"), str(d / "ckpts" / "tiny-qwen2-student"), device="cpu")
    assert str(e.value) in err
    pair = hf.load_pair(str(d / "ckpts" / "padded-teacher"), str(d / "ckpts" / "tiny-qwen2-student"), device="cpu",
                        alignment="truncate", lora=None)
    assert pair.report.teacher_logits_slice == 384


def test_config_special_ids_outside_the_tokenizer_are_refused_with_the_fix(readme_ckpts, capsys):
    d, _ = readme_ckpts
    tok = hf.load_tokenizer(d / "ckpts" / "tiny-qwen2-student")
    bad = d / "ckpts" / "gpt2-bad-eos"
    if not bad.exists():
        # GPT2Config's defaults: bos = eos = 50256, far outside a 384-token tokenizer
        GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2)).save_pretrained(bad)
        tok.save_pretrained(bad)
    code = cli.main(_train(d, "--task", "gsm8k", student="ckpts/gpt2-bad-eos"))
    err = capsys.readouterr().err
    assert code == 2
    assert "has eos_token_id=50256, outside its tokenizer's 384 tokens" in err
    assert f"fix: set it to the tokenizer's eos_token_id ({tok.eos_token_id})" in err
    assert "model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id" in err


def test_gsm8k_files_as_published_jsonl_and_parquet(readme_ckpts, tmp_path, capsys):
    d, _ = readme_ckpts
    rows = [json.loads(x) for x in SAMPLE.read_text().splitlines() if x.strip()]
    pq = tmp_path / "train.parquet"
    pd.DataFrame(rows).to_parquet(pq)
    assert cli.main(_train(d, "--task", "gsm8k", "--data", str(pq), "--out", str(tmp_path / "pq"))) == 0
    rec = json.loads((tmp_path / "pq" / "config.json").read_text())
    assert rec["task"]["params"]["path"] == str(pq) and rec["config"]["data"] == str(pq)
    capsys.readouterr()
    # the old field names are for the synthetic tasks' --data rows; given to gsm8k they name GSM8K's columns
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"prompt": "1+1=", "solution": "2", "answer": "2"}) + "\n")
    assert cli.main(_train(d, "--task", "gsm8k", "--data", str(old))) == 2
    err = capsys.readouterr().err
    assert "missing column(s) ['question']; found ['prompt', 'solution', 'answer']" in err and "ending in '#### N'" in err
    noans = tmp_path / "noans.jsonl"
    noans.write_text(json.dumps({"question": "What is 1+1?", "answer": "It is 2."}) + "\n")
    assert cli.main(_train(d, "--task", "gsm8k", "--data", str(noans))) == 2
    assert "noans.jsonl:1: 'answer' must be a worked solution ending in '#### N'" in capsys.readouterr().err


def test_qa_files_with_a_chosen_verifier(readme_ckpts, tmp_path, capsys):
    d, _ = readme_ckpts
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(r) for r in [
        {"question": "What is six times seven?", "answer": "42"},
        {"question": "How many legs has a cat?", "answer": "4"},
        {"prompt": "What is ten minus three?", "answer": 7}]) + "\n")
    out = tmp_path / "qa_run"
    assert cli.main(_train(d, "--task", "qa", "--data", str(qa), "--task-param", "verifier=numeric",
                           "--out", str(out))) == 0
    rec = json.loads((out / "config.json").read_text())
    assert rec["config"]["task"] == "qa" and rec["task"]["params"]["verifier"] == "numeric"
    capsys.readouterr()
    words = tmp_path / "words.jsonl"
    words.write_text(json.dumps({"question": "Capital of France?", "answer": "Paris"}) + "\n")
    assert cli.main(_train(d, "--task", "qa", "--data", str(words), "--task-param", "verifier=numeric")) == 2
    assert "answer 'Paris' is not a number, which verifier='numeric' needs" in capsys.readouterr().err
    assert cli.main(_train(d, "--task", "qa")) == 2
    assert "task 'qa' reads your file: pass --data FILE" in capsys.readouterr().err
    assert cli.main(_train(d, "--task", "qa", "--data", str(qa), "--task-param", "verifier=regex")) == 2
    assert "verifier='regex' needs pattern=" in capsys.readouterr().err
    assert cli.main(_train(d, "--task", "qa", "--data", str(qa), "--task-param", "verifier")) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err


def _qa_file(path, *answers):
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": a}) + "\n" for i, a in enumerate(answers)))
    return path


def test_qa_verifiers_grade_like_their_definitions(tmp_path):
    num = QA(_qa_file(tmp_path / "n.jsonl", "1250"), verifier="numeric", test_frac=0)
    p = num.train[0]
    assert num.verify(p, "so 1,250.00 in all\n#### $1,250").correct          # the final number, normalised
    assert not num.verify(p, "#### 1251").correct and not num.verify(p, "#### 1250", truncated=True).correct
    with pytest.raises(ValueError, match="n2.jsonl:2: answer 'Oslo' is not a number"):
        QA(_qa_file(tmp_path / "n2.jsonl", "3", "Oslo"), verifier="numeric")
    ex = QA(_qa_file(tmp_path / "w.jsonl", "Oslo"), test_frac=0)
    oslo = ex.train[0]
    assert oslo.solution == "#### Oslo"                                          # default reference solution
    assert ex.verify(oslo, "Thinking...\n#### Oslo").correct and ex.verify(oslo, "I think\nOslo\n").correct
    assert not ex.verify(oslo, "#### oslo").correct and not ex.verify(oslo, "#### Oslo, Norway").correct
    assert QA(tmp_path / "w.jsonl", case_sensitive=False, test_frac=0).verify(oslo, "#### oslo").correct
    rx = QA(tmp_path / "w.jsonl", verifier="regex", pattern=r"answer: (\w+)", test_frac=0)
    assert rx.verify(oslo, "answer: Rome ... answer: Oslo").correct            # the last match, its group
    assert not rx.verify(oslo, "answer: Oslo ... answer: Rome").correct
    assert not rx.verify(oslo, "Oslo").correct                                   # no match: no answer
    with pytest.raises(ValueError, match="not a regular expression"):
        QA(tmp_path / "w.jsonl", verifier="regex", pattern="(")
    with pytest.raises(ValueError, match="verifier must be one of"):
        QA(tmp_path / "w.jsonl", verifier="fuzzy")


def test_lora_options_need_a_rank_and_bad_values_are_refused(readme_ckpts, capsys):
    d, _ = readme_ckpts
    assert cli.main(_train(d, "--task", "gsm8k", "--lora-alpha", "8")) == 2
    assert "also pass lora_r (--lora R)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(_train(d, "--task", "gsm8k", "--alignment", "guess"))
    assert "invalid choice: 'guess'" in capsys.readouterr().err
    assert cli.main(_train(d, "--task", "gsm8k", "--teacher-device", "gpu0")) == 2
    assert "teacher_device 'gpu0' is not a device name" in capsys.readouterr().err


def test_help_documents_every_flag_from_the_config_field_docs(capsys):
    docs = field_docs()
    for cmd in ("train", "compare"):
        with pytest.raises(SystemExit):
            cli.main([cmd, "--help"])
        flat = lambda t: " ".join(t.split()).replace("- ", "-")      # noqa: E731  (argparse re-wraps, also at hyphens)
        text = flat(capsys.readouterr().out)
        for name, doc in docs.items():
            if cmd == "compare" and name in ("method", "steps", "name", "seed"):
                continue
            assert doc, f"TrainConfig.{name} has no comment in config.py"
            assert f"--{name.replace('_', '-')}" in text, name
            assert flat(doc) in text, name
    assert "OPD discount in [0, 1]" in docs["gamma"] and "in [0, 1]" in docs["lmbda"]
    assert "token_mean | sum | seq_mean" in docs["reduction"]
    assert set(docs) == {f for f in TrainConfig.__dataclass_fields__}


def test_compare_on_your_checkpoints_with_lora_and_truncate(readme_ckpts, tmp_path, capsys):
    d, _ = readme_ckpts
    out = tmp_path / "cmp"
    assert cli.main(["compare", "--task", "gsm8k", "--data", str(SAMPLE), "--teacher", str(d / "ckpts" / "padded-teacher"),
                     "--student", str(d / "ckpts" / "tiny-qwen2-student"), "--alignment", "truncate", "--lora", "4",
                     "--methods", "opd,grpo", "--seeds", "0", "--budget-tokens", "200", "--batch-size", "4",
                     "--num-generations", "2", "--max-new-tokens", "8", "--eval-problems", "2", "--out", str(out),
                     "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r.get("method") for r in rows[:-1]] == ["opd", "grpo"]
    for m in ("opd", "grpo"):
        rec = json.loads((out / m / "seed0" / "config.json").read_text())
        assert rec["config"]["alignment"] == "truncate" and rec["config"]["lora_r"] == 4
        ck = sorted((out / m / "seed0" / "checkpoints").glob("step_*"))[-1]
        assert (ck / "adapter_config.json").exists() and not (ck / "model.safetensors").exists()
