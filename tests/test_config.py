"""workbench.config: a method preset fills only the fields the caller did not give (issue 15, item 5)."""
import copy
import pickle

import pytest

from workbench.config import PRESETS, TrainConfig, apply_preset


def test_an_explicit_value_equal_to_the_default_is_kept():
    # lmbda's dataclass default is 1.0 and GKD's preset says 0.5: passing 1.0 must win (it used to become 0.5)
    cfg = apply_preset(TrainConfig(method="gkd", lmbda=1.0))
    assert cfg.lmbda == 1.0
    assert cfg.beta == PRESETS["gkd"]["beta"] and cfg.lr == PRESETS["gkd"]["lr"]   # the rest of the preset
    assert apply_preset(TrainConfig(method="gkd")).lmbda == PRESETS["gkd"]["lmbda"]
    assert apply_preset(TrainConfig("gkd", lmbda=1.0)).lmbda == 1.0                    # method positionally


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_every_preset_field_passed_at_its_default_is_kept(method):
    base = TrainConfig()
    for key in PRESETS[method]:
        default = getattr(base, key)
        if default is None:         # None means "not set" (the preset fills it): tested below
            continue
        cfg = apply_preset(TrainConfig(method=method, **{key: default}))
        assert getattr(cfg, key) == default, (method, key)
        assert TrainConfig.for_method(method, **{key: default}).__dict__[key] == default


def test_none_means_not_set():
    cfg = apply_preset(TrainConfig(method="grpo", num_generations=None, lr=None))
    assert (cfg.num_generations, cfg.lr) == (PRESETS["grpo"]["num_generations"], PRESETS["grpo"]["lr"])


def test_an_assignment_after_construction_counts_as_given():
    cfg = TrainConfig(method="gkd")
    cfg.lmbda = 1.0
    cfg.lr = 1e-5
    out = apply_preset(cfg)
    assert (out.lmbda, out.lr, out.beta) == (1.0, 1e-5, PRESETS["gkd"]["beta"])


def test_resolution_round_trips_through_dict_copy_and_pickle():
    cfg = apply_preset(TrainConfig(method="gkd", lmbda=1.0, steps=3))
    assert "_explicit" not in cfg.to_dict()                  # config.json holds fields only
    back = TrainConfig.from_dict(cfg.to_dict())
    assert back == cfg and apply_preset(back) == cfg        # applying the preset again changes nothing
    raw = TrainConfig(method="gkd", lmbda=1.0)
    for clone in (copy.deepcopy(raw), pickle.loads(pickle.dumps(raw))):
        assert apply_preset(clone).lmbda == 1.0


def test_resolution_is_pure_complete_and_frozen():
    """trainer.resolve_config decides teacher, student and generation length once; the input is untouched and
    the result refuses edits (nothing changes a run's config after validation)."""
    import dataclasses

    from workbench import zoo
    from workbench.config import ConfigError
    from workbench.tasks import get_task
    from workbench.trainer import resolve_config

    task = get_task("addition")
    cfg = TrainConfig(method="opd")
    before = dataclasses.asdict(cfg)
    out = resolve_config(cfg, task)
    assert dataclasses.asdict(cfg) == before                       # pure
    assert (out.teacher, out.student) == zoo.default_pair("addition")
    assert out.max_new_tokens == task.max_new_tokens and out.loss == "sampled_token" and out.lr == 3e-4
    with pytest.raises(dataclasses.FrozenInstanceError, match="dataclasses.replace"):
        out.max_new_tokens = 3
    assert dataclasses.replace(out, steps=7).steps == 7             # a new config is built instead
    given = resolve_config(cfg, task, teacher_given=True, student_given=True)
    assert (given.teacher, given.student) == ("<object>", "<object>")
    with pytest.raises(ConfigError, match="max_new_tokens=2 is below"):
        resolve_config(TrainConfig(method="opd", max_new_tokens=2), task)


def test_old_field_names_are_accepted_with_a_deprecation_warning(tmp_path, capsys):
    """`topk` -> `teacher_topk`, `lmbda_reward` -> `reward_scale`: keyword arguments, for_method options, an
    older run's config.json and CLI flags still work for one release, each saying the new name."""
    import json

    from workbench import cli
    from workbench.config import ConfigError

    with pytest.warns(DeprecationWarning, match="'topk' is renamed 'teacher_topk'"):
        assert TrainConfig(method="opd", topk=8).teacher_topk == 8
    with pytest.warns(DeprecationWarning, match="'lmbda_reward' is renamed 'reward_scale'"):
        assert TrainConfig.for_method("exopd", lmbda_reward=1.5).reward_scale == 1.5
    old = TrainConfig.for_method("exopd").to_dict()
    old["lmbda_reward"] = old.pop("reward_scale")
    old["topk"] = old.pop("teacher_topk")
    with pytest.warns(DeprecationWarning):
        cfg = TrainConfig.from_dict(json.loads(json.dumps(old)))
    assert cfg == TrainConfig.for_method("exopd")
    with pytest.raises(ConfigError, match="both 'topk' and its new name 'teacher_topk'"):
        TrainConfig(topk=2, teacher_topk=3)
    ns = cli.build_parser().parse_args(["train", "--topk", "6", "--lmbda-reward", "1.25"])
    assert (ns.teacher_topk, ns.reward_scale) == (6, 1.25)
    err = capsys.readouterr().err
    assert "--topk is renamed --teacher-topk" in err and "--lmbda-reward is renamed --reward-scale" in err


def test_an_older_run_config_with_preset_applied_still_loads(tmp_path):
    """Run directories written before the config was resolved in one place hold a `preset_applied` key: it is
    ignored (no error, no field), and the config means what it meant."""
    import json
    import warnings

    from workbench.runs import load_config

    old = {**TrainConfig.for_method("gkd", lmbda=1.0, steps=3).to_dict(), "preset_applied": True}
    assert "preset_applied" not in TrainConfig().to_dict()
    (tmp_path / "config.json").write_text(json.dumps({"config": old}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no deprecation or other warning for this key
        cfg = TrainConfig.from_dict(load_config(tmp_path)["config"])
    assert cfg == TrainConfig.for_method("gkd", lmbda=1.0, steps=3) and apply_preset(cfg) == cfg
    assert not hasattr(cfg, "preset_applied") and not hasattr(TrainConfig, "resolved")
