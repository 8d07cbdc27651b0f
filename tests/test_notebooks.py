"""The core notebooks: parameters cell contract, and a papermill execution of each at smoke size.

Each notebook is built from its `notebooks/NN_name.py` percent source and executed by
`widgets.notebooks.run` with size="smoke", a temporary run_dir and mode="static"; the executed
notebook must have no error output, at least one non-empty plotly figure, stay small, and leave
a `results.json` in which no claim was evaluated (smoke runs are too small to show anything).
"""
from __future__ import annotations

import json
import os
import re

import nbformat
import pytest

from widgets import notebooks as NB

NAMES = NB.notebook_names()
PLOTLY_MIME = "application/vnd.plotly.v1+json"
REQUIRED = {"size": '"full"', "run_dir": None, "mode": '"live"', "device": '"auto"'}


def _source_nb(name):
    import jupytext
    return jupytext.read(NB.source_path(name))


def test_notebooks_exist():
    for want in ("00_quickstart", "01_task_and_models", "02_sft_off_policy", "03_outcome_rl_sparse",
                 "04_on_policy_distillation", "05_head_to_head_cost"):
        assert want in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_source_metadata(name):
    nb = _source_nb(name)
    # no kernelspec in the source (jupytext.toml): JupyterLab would rewrite its display name on every save;
    # jupytext gives the notebook the python3 kernel when it opens it, widgets.notebooks when it builds one
    assert "kernelspec" not in nb.metadata
    assert nb.metadata.get("jupytext", {}).get("text_representation", {}).get("format_name") == "percent"
    assert nb.metadata.get("jupytext", {}).get("formats") == "py:percent"
    assert not (NB.NOTEBOOK_DIR / f"{name}.ipynb").exists(), "built .ipynb files are not kept next to the sources"


@pytest.mark.parametrize("name", NAMES)
def test_parameters_cell_is_typed_documented_and_used(name, tmp_path):
    import papermill as pm
    nb = _source_nb(name)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    params = pm.inspect_notebook(str(NB.build_ipynb(name, tmp_path / f"{name}.ipynb")))
    assert set(REQUIRED) <= set(params), f"missing parameters: {set(REQUIRED) - set(params)}"
    for pname, default in REQUIRED.items():
        if default is not None:
            assert params[pname]["default"] == default, (pname, params[pname]["default"])
    rest = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and c is not tagged[0])
    for pname, info in params.items():
        assert info["inferred_type_name"] not in ("None", None), f"{pname}: no type annotation"
        assert info["help"], f"{pname}: no comment documenting it"
        assert re.search(rf"\b{re.escape(pname)}\b", rest), f"parameter {pname!r} is never used"


@pytest.mark.parametrize("name", NAMES)
def test_cells_stay_thin(name):
    for c in _source_nb(name).cells:
        if c.cell_type == "code":
            lines = [ln for ln in c.source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
            assert len(lines) <= 30, f"a code cell of {len(lines)} lines: move logic into workbench/ or widgets/"


@pytest.mark.parametrize("name", NAMES)
def test_executes_at_smoke_size(name, tmp_path):
    lines = []
    dst = NB.run(name, tmp_path, size="smoke", progress_every=0.5, print_fn=lambda *a, **k: lines.append(" ".join(a)))
    # the terminal heard from the run while it went: training progress lines (step x/total, elapsed) of every
    # training run the dashboards saw, or heartbeats; the progress file is gone afterwards
    assert lines and all(ln.startswith(f"[{name} ") for ln in lines), lines[:5]
    steps = [ln for ln in lines if re.search(r": step \d+/\d+, \S+ elapsed", ln)]
    if "TrainingDashboard(" in NB.source_path(name).read_text(encoding="utf-8") and name != "01_task_and_models":
        assert steps, lines[:10]
    assert not list(tmp_path.glob(".*progress*"))
    nb = nbformat.read(dst, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, "\n".join(f"{e.get('ename')}: {e.get('evalue')}" for e in errors)
    figs = [o["data"][PLOTLY_MIME] for o in outputs if PLOTLY_MIME in o.get("data", {})]
    assert figs, "no plotly figure in the executed notebook"
    assert any(f.get("data") for f in figs), "every plotly figure is empty"
    assert dst.stat().st_size < 2_000_000, f"executed notebook is {dst.stat().st_size} bytes"
    res = json.loads((tmp_path / name / "results.json").read_text(encoding="utf-8"))
    assert res["notebook"] == name and res["size"] == "smoke" and res["numbers"]
    assert all(c["status"] == "not_evaluated" for c in res["claims"])
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "shown in this run" not in text


def test_progress_reporter_prints_steps_eta_and_heartbeats(tmp_path):
    """The runner's reporter, fed the lines a dashboard writes: one line per run that moved, with steps, elapsed
    and ETA; a heartbeat when nothing moved; the end with its reason."""
    from widgets.dashboard import PROGRESS_ENV, report_progress
    out, path = [], tmp_path / "p.jsonl"
    rep = NB.ProgressReporter(path, "nb", every_s=3600, print_fn=lambda *a, **k: out.append(" ".join(a)))
    with rep:
        os.environ[PROGRESS_ENV] = str(path)
        try:
            report_progress({"run": "sft", "event": "start", "total": 100, "step": 0})
            report_progress({"run": "sft", "event": "step", "step": 25, "total": 100, "elapsed": 50.0})
            rep.report()
            rep.report()
            report_progress({"run": "sft", "event": "end", "step": 100, "reason": "completed", "elapsed": 200.0})
        finally:
            del os.environ[PROGRESS_ENV]
    assert out[0].endswith("sft: step 25/100, 0m50s elapsed, ETA 2m30s"), out
    assert "still running; no step finished" in out[1] and "(sft)" in out[1]
    assert out[2].endswith("sft: step 100/100, 3m20s elapsed, ended (completed)"), out
    report_progress({"run": "x", "event": "step"})          # no $OPD_WORKBENCH_PROGRESS: nothing, no error


def test_results_markdown(tmp_path):
    from workbench.claims import Claims, write_results
    c = Claims("full", echo=None)
    c("A beats B", True, {"A": 0.9, "B": 0.5})
    c("C beats D", False, {"C": 0.1, "D": 0.2})
    write_results(tmp_path / "00_x", "00_x", "full", {"acc": 0.5, "methods": {"sft": {"acc": 0.7, "tokens": 12000}}},
                  claims=c, config={"steps": 3})
    md = NB.results_markdown([tmp_path], command="python -m widgets.notebooks run all --size full")
    assert "## 00_x" in md and "✓ A beats B" in md and "✗ C beats D" in md and "| sft | 0.700 | 12,000 |" in md
    assert "run all --size full" in md
    assert "| notebook | wall time (s) | torch threads |" in md


def test_results_section_is_replaced_in_place(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\n## Other section\n\nkept\n", encoding="utf-8")
    NB.write_results_section(doc, "## Notebooks\n\nfirst")
    NB.write_results_section(doc, "## Notebooks\n\nsecond")
    text = doc.read_text(encoding="utf-8")
    assert "kept" in text and "second" in text and "first" not in text
    assert text.count(NB.SECTION_BEGIN) == 1 and text.count(NB.SECTION_END) == 1
