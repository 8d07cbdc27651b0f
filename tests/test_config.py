"""workbench.config: a method preset fills only the fields the caller did not give (issue 15, item 5)."""
import copy
import pickle

import pytest

from workbench.config import PRESETS, TrainConfig


def test_an_explicit_value_equal_to_the_default_is_kept():
    # lmbda's dataclass default is 1.0 and GKD's preset says 0.5: passing 1.0 must win (it used to become 0.5)
    cfg = TrainConfig(method="gkd", lmbda=1.0).resolved()
    assert cfg.lmbda == 1.0
    assert cfg.beta == PRESETS["gkd"]["beta"] and cfg.lr == PRESETS["gkd"]["lr"]   # the rest of the preset
    assert TrainConfig(method="gkd").resolved().lmbda == PRESETS["gkd"]["lmbda"]
    assert TrainConfig("gkd", lmbda=1.0).resolved().lmbda == 1.0                    # method positionally


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_every_preset_field_passed_at_its_default_is_kept(method):
    base = TrainConfig()
    for key in PRESETS[method]:
        default = getattr(base, key)
        if default is None:         # None means "not set" (the preset fills it): tested below
            continue
        cfg = TrainConfig(method=method, **{key: default}).resolved()
        assert getattr(cfg, key) == default, (method, key)
        assert TrainConfig.for_method(method, **{key: default}).__dict__[key] == default


def test_none_means_not_set():
    cfg = TrainConfig(method="grpo", num_generations=None, lr=None).resolved()
    assert (cfg.num_generations, cfg.lr) == (PRESETS["grpo"]["num_generations"], PRESETS["grpo"]["lr"])


def test_an_assignment_after_construction_counts_as_given():
    cfg = TrainConfig(method="gkd")
    cfg.lmbda = 1.0
    cfg.lr = 1e-5
    out = cfg.resolved()
    assert (out.lmbda, out.lr, out.beta) == (1.0, 1e-5, PRESETS["gkd"]["beta"])


def test_resolution_round_trips_through_dict_copy_and_pickle():
    cfg = TrainConfig(method="gkd", lmbda=1.0, steps=3).resolved()
    assert "_explicit" not in cfg.to_dict()                  # config.json holds fields only
    back = TrainConfig.from_dict(cfg.to_dict())
    assert back == cfg and back.resolved() == cfg            # preset_applied: resolving again changes nothing
    raw = TrainConfig(method="gkd", lmbda=1.0)
    for clone in (copy.deepcopy(raw), pickle.loads(pickle.dumps(raw))):
        assert clone.resolved().lmbda == 1.0
