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
