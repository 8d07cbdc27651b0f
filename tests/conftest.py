"""Shared test set-up: one CPU thread unless OMP_NUM_THREADS says otherwise, quiet transformers.

One thread by default because the machines are shared; OMP_NUM_THREADS=2 runs the suite with two (.ci/run
picks a thread count per run), which changes float32 summation orders: the suite must pass either way.
"""
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))

import transformers  # noqa: E402

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


# ---- shared fixtures: the addition task's tokenizer and a tiny random (teacher, student) pair ---------------
import pytest  # noqa: E402

from workbench.models import build_model  # noqa: E402
from workbench.tasks import get_task  # noqa: E402
from workbench.tokenizer import build_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    """The character tokenizer of the `addition` task."""
    return build_tokenizer(get_task("addition").charset)


@pytest.fixture(scope="module")
def models(tok):
    """(teacher, student): tiny random `nano` models (d32 x 1 layer), each step well under a second on one
    thread; tests deep-copy the student before training it."""
    return build_model("nano", tok, seed=1).eval(), build_model("nano", tok, seed=2)
