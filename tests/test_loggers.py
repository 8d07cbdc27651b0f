"""workbench.loggers: a short run logged to TensorBoard (read back with TensorBoard's own reader) and W&B offline."""
import json
import math

import pytest

from workbench.cli import main
from workbench.loggers import TensorBoardWatcher, samples_markdown, scalars
from workbench.runs import read_jsonl

TRAIN = ["train", "--method", "opd", "--steps", "2", "--batch-size", "4", "--eval-every", "0", "--eval-problems", "4",
         "--device", "cpu", "--json"]


def test_scalars_and_samples_text_from_a_record():
    rec = {"step": 3, "run": "opd", "loss": 0.5, "batch/on_policy": True, "cost/student_tokens": 12,
           "warning": "truncation", "nonfinite/reason": None,
           "samples": [{"prompt": "1+2=", "tokens": ["3", "<eos>"], "token_reward": [-0.25, 0.5],
                        "student_logprob": [-1.0, -0.1], "correct": True, "reward": 1.0, "truncated": False}]}
    assert scalars(rec) == {"loss": 0.5, "batch/on_policy": 1.0, "cost/student_tokens": 12.0}
    md = samples_markdown(rec["samples"])
    assert "| 0 | `'3'` | -0.250 |" in md and "| 1 | `'<eos>'` | +0.500 |" in md and "'1+2='" in md


def _read_tb(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def test_tensorboard_log_of_a_short_run_reads_back_with_the_records_metric_names(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install -e '.[export]'")
    run = tmp_path / "run"
    assert main(TRAIN + ["--out", str(run), "--log-to", "tensorboard"]) == 0
    records = read_jsonl(run / "metrics.jsonl")
    ea = _read_tb(run / "tensorboard")
    want = set().union(*(scalars(r) for r in records))
    assert "loss" in want and "teacher/reverse_kl" in want and "rollout/mean_length" in want
    assert set(ea.Tags()["scalars"]) == want
    for r in records:
        for k, v in scalars(r).items():
            got = {e.step: e.value for e in ea.Scalars(k)}
            # TensorBoard stores float32: a value read back is within half an ulp of float32 of what was logged
            assert math.isclose(got[r["step"]], v, rel_tol=2 ** -24, abs_tol=1e-30), (k, r["step"])
    # the token-level samples are there as text, one entry per step, with the tokens of samples.jsonl
    assert "samples/text_summary" in ea.Tags()["tensors"]     # add_text stores text under TAG/text_summary
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in ea.Tensors("samples/text_summary")}
    assert set(texts) == {1, 2}
    last = read_jsonl(run / "samples.jsonl")[-1]
    assert samples_markdown(last["samples"]) == texts[last["step"]]


def test_watcher_on_start_on_end_and_no_file_before_the_first_event(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install -e '.[export]'")
    w = TensorBoardWatcher(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()         # nothing written into a run directory before the trainer made it
    w.on_start({"run": "x", "config": {"lr": 0.1}, "start_step": 0})
    w.on_step({"step": 1, "loss": 2.0})
    w.on_end({"reason": "completed", "step": 1})
    ea = _read_tb(tmp_path / "tb")
    assert [e.value for e in ea.Scalars("loss")] == [2.0]
    assert {"config/text_summary", "end/text_summary"} <= set(ea.Tags()["tensors"])


def test_log_to_refuses_unknown_loggers_before_training(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(TRAIN + ["--out", str(run), "--log-to", "tensorboard,mlflow"]) == 2
    assert "mlflow" in capsys.readouterr().err and not run.exists()


def test_wandb_offline_run_gets_the_scalars_and_a_samples_table(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="pip install wandb")
    from workbench.loggers import WandbWatcher
    from workbench.trainer import Trainer
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    tr = Trainer(method="opd", steps=2, batch_size=4, eval_every=0, eval_problems=4, device="cpu", out=str(run))
    class Snapshot(WandbWatcher):         # the run's summary (last value of each key) as W&B holds it at the end
        def on_end(self, summary):
            self.summary = dict(self.run.summary)
            super().on_end(summary)

    w = Snapshot(project="test", dir=tmp_path / "wb")
    tr.run(callbacks=[w])
    records = read_jsonl(run / "metrics.jsonl")
    offline = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb"))
    for k, v in scalars(records[-1]).items():
        assert w.summary[k] == pytest.approx(v, rel=1e-12), k
    tables = sorted(offline[0].glob("files/media/table/samples_*.table.json"))
    assert len(tables) == 2
    t = json.loads(tables[-1].read_text())
    assert t["columns"] == WandbWatcher.COLUMNS
    last = read_jsonl(run / "samples.jsonl")[-1]["samples"]
    assert [row[3] for row in t["data"]] == [tok for s in last for tok in s["tokens"]]
    assert wandb.run is None                       # the watcher finished its run
