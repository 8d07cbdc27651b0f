"""Every method preset, a few steps on a fixed batch, moves what it targets the right way (issue 15, item 2),
and its loss ignores the tokens after EOS. The checks live in tests/objective_checks.py (test_mutations.py
runs them against broken trainers)."""
import pytest

import objective_checks as oc
from workbench.config import PRESETS


def test_every_preset_is_covered():
    assert set(oc.SFT_FAMILY + oc.OPD_FAMILY + oc.GRPO_FAMILY) == set(PRESETS)


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_a_few_steps_move_the_target_the_right_way(method):
    oc.check_direction(method)


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_the_loss_ignores_tokens_after_eos(method):
    oc.check_mask_respected(method)
