"""The one pair loader (`pairs.load_named_pair`) and the one single-checkpoint loader (`pairs.load_checkpoint`):
zoo names, checkpoint directories and hub ids in, a `Pair` with its compatibility report out; errors before any
load name the fix. No test downloads: the hub-id path is followed up to the `from_pretrained` call."""
from __future__ import annotations

import pytest
import torch

import workbench.models as models_mod
from workbench import pairs, zoo
from workbench.config import ConfigError
from workbench.models import build_model, save_checkpoint
from workbench.tasks import get_task
from workbench.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tok, models):
    d = tmp_path_factory.mktemp("pair")
    save_checkpoint(models[0], tok, d / "teacher")
    save_checkpoint(models[1], tok, d / "student")
    other = build_tokenizer(get_task("multiply").charset)
    save_checkpoint(build_model("nano", other, seed=3), other, d / "other")
    return {k: str(d / k) for k in ("teacher", "student", "other")}


def test_named_pair_from_directories_is_checked_frozen_and_reported(dirs, models):
    pair = pairs.load_named_pair(dirs["teacher"], dirs["student"], "cpu")
    assert isinstance(pair, pairs.Pair) and pair.report.ok and pair.report.errors == []
    assert pair.teacher_name == dirs["teacher"] and pair.device == torch.device("cpu")
    assert pair.dtype == torch.float32
    assert not any(p.requires_grad for p in pair.teacher.parameters()) and not pair.teacher.training
    assert all(p.requires_grad for p in pair.student.parameters())
    for loaded, built in ((pair.teacher, models[0]), (pair.student, models[1])):   # the saved weights, bit for bit
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), built.state_dict().values()))
    alone = pairs.load_named_pair(dirs["teacher"], dirs["student"], "cpu", load_teacher=False)
    assert alone.teacher is None and alone.report.ok


def test_named_pair_refuses_two_vocabularies_before_loading(dirs, monkeypatch):
    """The one compatibility check (`pairs.check` -> `compat.check_pair`) runs on tokenizers and configs before
    any weights load, so its refusal comes with its fix and nothing was loaded."""
    loads = []
    real = models_mod.load_checkpoint
    monkeypatch.setattr(models_mod, "load_checkpoint", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    with pytest.raises(ConfigError, match=r"the tokenizers differ \(19 vs 18 tokens.*\n    fix: choose a teacher "
                                          r"and student of one family"):
        pairs.load_named_pair(dirs["other"], dirs["student"], "cpu")
    assert loads == []
    pairs.load_named_pair(dirs["teacher"], dirs["student"], "cpu")     # the spy sees loads when there are some
    assert sorted(loads) == sorted([dirs["teacher"], dirs["student"]])


def test_named_pair_options_reach_the_loaded_models(dirs):
    """dtype, alignment and teacher_device (the CLI's --dtype/--alignment/--teacher-device) flow into the Pair."""
    pair = pairs.load_named_pair(dirs["teacher"], dirs["student"], "cpu", dtype="bfloat16", alignment="truncate",
                                 teacher_device="cpu")
    assert pair.dtype == torch.bfloat16 and next(pair.teacher.parameters()).dtype == torch.bfloat16
    assert pair.report.alignment == "truncate" and pair.report.ok and pair.info["teacher_device"] == "cpu"
    assert not isinstance(pair.teacher, pairs.TeacherView)      # same rows, same device: nothing to view through


def test_named_pair_from_the_zoo():
    try:
        zoo.path("addition-teacher"), zoo.path("addition-student")
    except FileNotFoundError:
        pytest.skip("the zoo pair is not built")
    pair = pairs.load_named_pair("addition-teacher", "addition-student", "cpu")
    assert pair.report.ok and pair.teacher.config.vocab_size == pair.student.config.vocab_size


def test_bad_references_fail_before_any_load(tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(models_mod, "load_checkpoint", lambda *a, **k: loads.append(a) or (_ for _ in ()).throw(
        AssertionError("loaded")))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "noconfig").mkdir()
    cases = [("missing-model", "neither a zoo entry .*, a checkpoint directory nor a hub id"),
             (str(tmp_path / "afile"), "is a file"), (str(tmp_path / "noconfig"), "has no config.json")]
    for name, msg in cases:
        with pytest.raises(FileNotFoundError, match=msg):
            pairs.load_named_pair(name, name, "cpu")
    assert loads == []


def test_hub_id_goes_unchanged_to_from_pretrained(monkeypatch, tok, models):
    """A hub id is not a local path: the compatibility check reads its tokenizer and config, and the loader hands
    it to models.load_checkpoint (which calls from_pretrained), both unchanged; stopped there, no download. A
    failure at either becomes one ConfigError naming the id."""
    seen, read = [], []

    def offline(path, **kw):
        seen.append((path, kw))
        raise OSError("offline: no network and not in the local cache")

    monkeypatch.setattr(models_mod, "load_checkpoint", offline)
    monkeypatch.setattr(pairs, "load_tokenizer", offline)
    assert pairs.checkpoint_location("teacher", "some-org/some-model") == "some-org/some-model"
    with pytest.raises(ConfigError, match=r"could not load the student checkpoint 'some-org/some-model' \(OSError"):
        pairs.load_named_pair("some-org/other-model", "some-org/some-model", "cpu")
    assert seen == [("some-org/some-model", {})]            # the check's tokenizer read; no weights asked for
    seen.clear()
    # tokenizer and config readable (as from the local cache): the weights' load gets the id unchanged
    monkeypatch.setattr(pairs, "load_tokenizer", lambda ref: read.append(ref) or tok)
    monkeypatch.setattr(pairs, "load_config", lambda ref: models[1].config)
    with pytest.raises(ConfigError, match=r"could not load the student checkpoint 'some-org/some-model' \(OSError"):
        pairs.load_named_pair("some-org/other-model", "some-org/some-model", "cpu")
    assert read == ["some-org/some-model", "some-org/other-model"]
    assert seen == [("some-org/some-model", {"device": "cpu", "trainable": True, "dtype": None})]
