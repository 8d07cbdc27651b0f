"""Dashboard tests: pure figure layer, bounded memory, Stop, EMA, and a papermill run (static mode)."""

from __future__ import annotations

import json
import math
import os
import re
import random
import sys
import time
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "notebooks_fixtures"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(FIXTURES))

from synthetic_records import SyntheticTrainer, make_record  # noqa: E402

from widgets import RecordStore, Series, TrainingDashboard  # noqa: E402
from widgets import figures as F  # noqa: E402
from widgets.dashboard import PLOTLY_MIME  # noqa: E402


def feed(store, records):
    for r in records:
        store.add(r)
    return records


def traces(fig, panel=None, key=None, run="any", shadow=False):
    out = []
    for t in fig.data:
        m = t.meta or {}
        if panel is not None and m.get("panel") != panel:
            continue
        if key is not None and m.get("key") != key:
            continue
        if run != "any" and m.get("run") != run:
            continue
        if bool(m.get("shadow")) != shadow:
            continue
        out.append(t)
    return out


# --- panels --------------------------------------------------------------------------
def test_each_panel_holds_the_recorded_series():
    store = RecordStore()
    recs = feed(store, [make_record(s, run="opd", eval_every=10) for s in range(1, 26)])
    fig = F.curves_figure(store)
    for panel, keys in F.PANEL_KEYS.items():
        for key in keys:
            (t,) = traces(fig, panel, key, "opd")
            want = [(r["step"], r[key]) for r in recs if key in r]
            assert list(t.x) == [s for s, _ in want]
            assert list(t.y) == pytest.approx([v for _, v in want])
            assert t.legendgroup == "opd" and t.name.startswith("opd · ")
    (ev,) = traces(fig, "accuracy", "eval/accuracy", "opd")
    assert list(ev.x) == [10, 20] and "markers" in ev.mode
    (cap,) = traces(fig, "length", "max_new_tokens")
    assert list(cap.y) == [64, 64] and list(cap.x) == [1, 25]
    # panels sit on their own axes
    assert traces(fig, "length")[0].xaxis == "x" and traces(fig, "accuracy")[0].xaxis == "x4"


def test_overlaid_runs_get_labelled_traces_and_one_colour_each():
    store = RecordStore()
    for run, teacher in (("sft", False), ("grpo", False), ("opd", True)):
        feed(store, [make_record(s, run=run, method=run, teacher=teacher) for s in range(1, 11)])
    fig = F.curves_figure(store)
    colours = {}
    for run in ("sft", "grpo", "opd"):
        ts = [t for t in traces(fig, run=run) if t.meta["key"] != "legend"]
        assert ts and all(t.legendgroup == run and t.name.startswith(f"{run} · ") for t in ts)
        ts += traces(fig, key="legend", run=run)
        cols = {t.line.color for t in ts}
        assert len(cols) == 1
        colours[run] = cols.pop()
        assert len(traces(fig, "length", "rollout/mean_length", run)) == 1
    assert len(set(colours.values())) == 3
    # no teacher, no teacher curve
    assert traces(fig, "signal", "teacher/reverse_kl", "sft") == []
    assert len(traces(fig, "signal", "teacher/reverse_kl", "opd")) == 1


# --- heatmap --------------------------------------------------------------------------
def _sample(n, correct=True, teacher=True, seed=0):
    rng = random.Random(seed)
    toks = [rng.choice(["1", "2", " ", "\n", "+", "ab c"]) for _ in range(n - 1)] + ["<eos>"]
    toks[:2] = [" ", "\n"]
    if n > 41:
        toks[40] = "ab c"
    return {"prompt": "12+34=", "tokens": toks,
            "token_reward": [rng.uniform(-2, 1) for _ in toks] if teacher else None,
            "student_logprob": [-rng.random() for _ in toks],
            "correct": correct, "reward": float(correct), "truncated": False}


def test_heatmap_cells_line_up_with_tokens_wrapping_and_whitespace():
    samples = [_sample(70, correct=True), _sample(5, correct=False, seed=1)]
    fig = F.token_heatmap(samples, step=7, run="opd", wrap=32)
    (h,) = fig.data
    assert h.type == "heatmap" and h.zmid == 0 and h.texttemplate == "%{text}"
    assert h.colorscale[0][1] == "#b2182b" and h.colorscale[-1][1] == "#2166ac"   # red < 0 < blue
    # each sample: a problem row (its prompt as an annotation, no cells), then one row per 32 tokens
    assert list(h.y) == ["s0 problem", "✓ s0 @0", "✓ s0 @32", "✓ s0 @64", "s1 problem", "✗ s1 @0"]
    assert h.z[0] == [None] * 32 and h.z[4] == [None] * 32
    notes = {a.y: a.text for a in fig.layout.annotations}
    assert notes == {"s0 problem": "<b>12+34=</b>", "s1 problem": "<b>12+34=</b>"}
    cells = []  # (row, col) of every token, in order
    for i, s in enumerate(samples):
        for j in range(len(s["tokens"])):
            row = (1, 2, 3)[j // 32] if i == 0 else 5
            cells.append((i, j, row, j % 32))
    for i, j, r, c in cells:
        tok = samples[i]["tokens"][j]
        want = tok.replace(" ", "␣").replace("\n", "↵")
        assert h.text[r][c] == want
        assert h.z[r][c] == pytest.approx(samples[i]["token_reward"][j])
        assert h.customdata[r][c][0] == want
        assert h.customdata[r][c][1] == pytest.approx(samples[i]["token_reward"][j])
        assert h.customdata[r][c][2] == pytest.approx(samples[i]["student_logprob"][j])
    assert list(h.text[3][70 - 64:]) == [""] * (32 - 6) and h.z[3][6] is None     # padding
    assert list(h.text[5][5:]) == [""] * 27
    assert (h.text[1][0], h.text[1][1], h.text[2][8]) == ("␣", "↵", "ab␣c")
    assert not any(ch in "".join(x for row in h.text for x in row) for ch in " \n")
    assert "token reward" in fig.layout.title.text and h.meta["colour_by"] == "token_reward"


def test_heatmap_without_teacher_colours_by_student_logprob():
    samples = [_sample(10, teacher=False)]
    fig = F.token_heatmap(samples, wrap=8)
    (h,) = fig.data
    assert h.meta["colour_by"] == "student_logprob"
    assert "student log-prob" in fig.layout.title.text
    assert h.z[1][:8] == pytest.approx(samples[0]["student_logprob"][:8])
    assert h.z[2][:2] == pytest.approx(samples[0]["student_logprob"][8:])
    assert h.zmax == 0 and h.zmin < 0 and "different scale" in fig.layout.title.text


def test_visible_token():
    assert F.visible_token(" a\nb\t") == "␣a↵b⇥"
    assert F.visible_token("") == "∅"


# --- bounded memory ----------------------------------------------------------------------
def test_memory_stays_bounded_over_10000_steps():
    samples = [_sample(40, seed=i) for i in range(4)]
    dash = TrainingDashboard(mode="static", max_points=2000, max_sample_batches=50)
    dash.on_start({"run": "opd", "method": "opd", "total_steps": 10_000, "max_new_tokens": 64,
                   "start_step": 0, "config": {}})
    t0 = time.perf_counter()
    for s in range(1, 10_001):
        rec = {"step": s, "run": "opd", "rollout/mean_length": float(s), "rollout/max_length": 64.0,
               "train/accuracy": 0.5, "teacher/reverse_kl": 1.0 / s, "samples": samples}
        if s % 100 == 0:
            rec["eval/accuracy"] = 0.5
        assert dash.on_step(rec) is False
    per_step_us = (time.perf_counter() - t0) / 10_000 * 1e6
    dash.on_end({"run": "opd", "reason": "completed", "step": 10_000})
    rs = dash.store.runs["opd"]
    for key, series in rs.series.items():
        assert len(series.xs) <= 2000, key
        xs, ys = series.points()
        assert len(xs) <= 2001 and xs[0] in (1, 100) and xs[-1] == 10_000
        assert xs == sorted(xs)
    xs, ys = rs.xy("rollout/mean_length")
    assert 1000 <= len(xs) <= 2001 and ys == [float(x) for x in xs]   # decimation keeps true steps
    assert len(rs.samples) == 50 and rs.samples[0][0] == 9951 and rs.samples[-1][0] == 10_000
    assert dash.store.total_points() <= 5 * 2001
    fig = dash.figures()["curves"]
    assert all(len(t.x) <= 2001 for t in fig.data)
    assert per_step_us < 2000   # generous; typical ~20 us on this machine


def test_series_decimation_keeps_even_stride_and_latest():
    s = Series(max_points=10)
    for i in range(1, 101):
        s.append(i, i * 2.0)
    xs, ys = s.points()
    assert len(s.xs) <= 10 and xs[-1] == 100 and ys[-1] == 200.0
    gaps = {b - a for a, b in zip(s.xs, s.xs[1:])}
    assert len(gaps) == 1          # evenly decimated


# --- stop, smoothing, header, throttle --------------------------------------------------------
def test_stop_makes_on_step_return_true():
    dash = TrainingDashboard(mode="static")
    dash.on_start({"run": "r", "total_steps": 10})
    assert dash.on_step(make_record(1, run="r")) is False
    dash.request_stop()
    assert dash.stop_requested and dash.on_step(make_record(2, run="r")) is True
    dash.on_start({"run": "r2", "total_steps": 10})        # a new run starts un-stopped
    assert dash.on_step(make_record(1, run="r2")) is False


def test_stop_button_click_stops_the_trainer():
    dash = TrainingDashboard(mode="static")
    btn = dash.controls.children[0].children[0]
    assert btn.description == "Stop"

    class ClickAt:
        def on_step(self, rec):
            if rec["step"] == 5:
                btn.click()

    summary = SyntheticTrainer(run="x", total_steps=100).run(100, callbacks=[ClickAt(), dash])
    assert summary["reason"] == "stopped" and summary["step"] == 5
    assert dash.store.runs["x"].end["reason"] == "stopped"
    assert btn.description == "Stop" and not btn.disabled     # re-armed after on_end


def test_ema_matches_hand_computation():
    assert F.ema([1.0, 2.0, 4.0], 0.5) == pytest.approx([1.0, 1.5, 2.75])
    assert F.ema([3.0, 3.0], 0.0) == [3.0, 3.0]
    store = RecordStore()
    feed(store, [{"step": s, "run": "a", "train/accuracy": v} for s, v in enumerate([0.0, 1.0, 1.0, 0.0], 1)])
    fig = F.curves_figure(store, smoothing=0.9)
    (sm,) = traces(fig, "accuracy", "train/accuracy", "a")
    (raw,) = traces(fig, "accuracy", "train/accuracy", "a", shadow=True)
    hand = [0.0, 0.9 * 0.0 + 0.1 * 1.0]
    hand.append(0.9 * hand[-1] + 0.1 * 1.0)
    hand.append(0.9 * hand[-1] + 0.1 * 0.0)
    assert list(sm.y) == pytest.approx(hand) and list(raw.y) == [0.0, 1.0, 1.0, 0.0]
    assert raw.showlegend is False


def test_header_shows_method_progress_rate_eta():
    store = RecordStore()
    store.start({"run": "opd", "method": "opd", "total_steps": 100, "start_step": 0})
    store.add({"step": 20, "run": "opd", "time/elapsed_s": 10.0})
    p = F.run_progress(store, "opd")
    assert p["steps_per_s"] == pytest.approx(2.0) and p["eta_s"] == pytest.approx(40.0)
    line = F.header_lines(store)[0]
    assert "opd [opd] step 20/100" in line and "2.00 steps/s" in line and "ETA 0:40" in line
    store.finish({"run": "opd", "reason": "stopped", "step": 20})
    assert F.header_lines(store)[0].endswith("stopped")
    assert "opd-dashboard-header" in F.header_html(store)


def test_live_mode_redraws_are_throttled(monkeypatch):
    dash = TrainingDashboard(mode="live", min_redraw_s=3600, pump_kernel=False)
    monkeypatch.setattr(dash, "show", lambda: None)
    monkeypatch.setattr("IPython.display.clear_output", lambda wait=False: None)
    SyntheticTrainer(run="t", total_steps=50).run(50, callbacks=[dash])
    assert dash.redraws == 2            # on_start + the final redraw at on_end
    dash2 = TrainingDashboard(mode="live", min_redraw_s=0, pump_kernel=False)
    monkeypatch.setattr(dash2, "show", lambda: None)
    SyntheticTrainer(run="t", total_steps=10).run(10, callbacks=[dash2])
    assert dash2.redraws == 12 and dash2.last_error is None


def test_static_mode_is_quiet_outside_ipython(capsys):
    dash = TrainingDashboard(mode="static")
    SyntheticTrainer(run="q", total_steps=5).run(5, callbacks=[dash])
    assert capsys.readouterr().out == "" and dash.last_error is None
    assert TrainingDashboard().mode == "static"       # "auto" outside a kernel
    with pytest.raises(ValueError):
        TrainingDashboard(mode="fancy")


def test_sample_selector_browses_earlier_batches():
    dash = TrainingDashboard(mode="static", max_sample_batches=5)
    SyntheticTrainer(run="a", total_steps=8).run(8, callbacks=[dash])
    ctl = dash.controls
    slider = ctl.children[0].children[2]
    assert (slider.min, slider.max, slider.value) == (0, 4, 4)        # steps 4..8, latest
    slider.value = 1
    assert dash.specs()["tokens"]["data"][0]["meta"]["step"] == 5
    smooth = ctl.children[0].children[4]
    smooth.value = 0.5
    assert dash.smoothing == 0.5


def test_save_writes_one_standalone_html(tmp_path):
    dash = TrainingDashboard(mode="static")
    SyntheticTrainer(run="s", total_steps=5).run(5, callbacks=[dash])
    info = dash.save(tmp_path / "d.html")
    text = Path(info["html"]).read_text()
    assert text.count("<script type=\"text/javascript\">/**\n* plotly.js") <= 1
    assert not re.search(r"<script[^>]+src=\"https?://", text) and text.count("Plotly.newPlot(") == 2
    assert "png_skipped" in info and (info["png"] or info["png_skipped"])
    info2 = dash.save(tmp_path / "dir" / "d.html", plotlyjs="directory", png=False)
    assert (tmp_path / "dir" / "plotly.min.js").exists() and info2["png_skipped"] == "png=False"
    assert Path(info2["html"]).stat().st_size < 200_000


# --- papermill: static mode in a real kernel ----------------------------------------------------
def test_papermill_static_notebook(tmp_path):
    pm = pytest.importorskip("papermill")
    import nbformat

    out = tmp_path / "out.ipynb"
    steps = 30
    pm.execute_notebook(
        str(FIXTURES / "dashboard_static.ipynb"), str(out),
        parameters={"steps": steps, "runs": "sft,opd", "mode": "static", "out_dir": str(tmp_path),
                    "repo_root": str(REPO), "fixtures_dir": str(FIXTURES)},
        kernel_name="python3", execution_timeout=120, progress_bar=False, cwd=str(tmp_path))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # realpath: a worktree's .venv may be a symlink to a shared venv (the same Python)
    kernel_prefix = re.search(r"KERNEL_PREFIX (\S+)", text).group(1)
    assert os.path.realpath(kernel_prefix) == os.path.realpath(sys.prefix), \
        "the notebook ran in another Python than this venv"
    figs = [o.data[PLOTLY_MIME] for o in outputs if o.output_type == "display_data" and PLOTLY_MIME in o.data]
    assert len(figs) == 4          # curves + tokens at the end of each of the two runs
    final_curves = [f for f in figs if any((t.get("meta") or {}).get("panel") == "length" for t in f["data"])][-1]
    by = {(t["meta"]["run"], t["meta"]["key"]): t for t in final_curves["data"]}
    for run in ("sft", "opd"):
        t = by[(run, "rollout/mean_length")]
        assert t["x"] == list(range(1, steps + 1)) and len(t["y"]) == steps
    assert ("opd", "teacher/reverse_kl") in by and ("sft", "teacher/reverse_kl") not in by
    tokens = figs[-1]["data"][0]
    assert tokens["type"] == "heatmap" and tokens["meta"]["step"] == steps
    assert any(x for row in tokens["text"] for x in row)
    assert not any("vnd.jupyter.widget" in k for o in outputs for k in o.get("data", {}))
    assert out.stat().st_size < 1.5e6
    assert (tmp_path / "dashboard.html").exists()
    json.dumps(final_curves)   # plain JSON, no typed arrays


def test_papermill_live_mode_leaves_one_final_redraw(tmp_path):
    """Live mode headless: every redraw replaces the cell's output, so one final set remains."""
    pm = pytest.importorskip("papermill")
    import nbformat

    out = tmp_path / "live.ipynb"
    pm.execute_notebook(
        str(FIXTURES / "dashboard_static.ipynb"), str(out),
        parameters={"steps": 12, "runs": "sft,opd", "mode": "live", "out_dir": str(tmp_path),
                    "repo_root": str(REPO), "fixtures_dir": str(FIXTURES)},
        kernel_name="python3", execution_timeout=120, progress_bar=False, cwd=str(tmp_path))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    run_cell = next(c for c in nb.cells if "trainer.run(" in c.source)
    figs = [o.data[PLOTLY_MIME] for o in run_cell.outputs if PLOTLY_MIME in o.get("data", {})]
    assert len(figs) == 2     # curves + tokens of the final redraw only
    by = {(t["meta"]["run"], t["meta"]["key"]): t for t in figs[0]["data"]}
    assert by[("opd", "rollout/mean_length")]["x"][-1] == 12 and by[("sft", "rollout/mean_length")]["x"][-1] == 12
    assert any("vnd.jupyter.widget-view" in k for o in run_cell.outputs for k in o.get("data", {}))
    assert out.stat().st_size < 1.5e6


# --- the kernel says "busy" while a training cell runs (a real ipykernel) ----------------------
def _status_during_cell(hold: bool) -> list[tuple[str, str]]:
    """(execution_state, parent msg_type) of every status message from a cell that pumps for 3 s,
    while a control-channel request (as JupyterLab's debugger sends) is answered mid-cell."""
    import queue
    jc = pytest.importorskip("jupyter_client.manager")
    km, kc = jc.start_new_kernel(kernel_name="python3", cwd=str(REPO))
    try:
        kc.execute_interactive(f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
                               "from widgets.kernel_pump import KernelPump", timeout=60)
        while True:
            try:
                kc.get_iopub_msg(timeout=0.3)
            except queue.Empty:
                break
        mid = kc.execute(f"import time\np = KernelPump(); held = p.hold_busy() if {hold} else None\n"
                         "t = time.time()\nwhile time.time() - t < 3:\n    p.pump(); time.sleep(0.05)\n"
                         "p.release_busy()\nassert p.available and held in (True, None)")
        time.sleep(1.0)
        kc.control_channel.send(kc.session.msg("kernel_info_request", {}))
        states = []
        while True:
            m = kc.get_iopub_msg(timeout=30)
            if m["msg_type"] == "error":
                raise AssertionError(m["content"])
            if m["msg_type"] == "status":
                states.append((m["content"]["execution_state"], m["parent_header"].get("msg_type")))
                if m["content"]["execution_state"] == "idle" and m["parent_header"].get("msg_id") == mid:
                    return states
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_kernel_reports_busy_for_the_whole_training_cell():
    held = _status_during_cell(hold=True)
    # the control request's idle is followed by a busy for the running cell; the cell's idle ends it
    i = held.index(("idle", "kernel_info_request"))
    assert held[i + 1] == ("busy", "execute_request") and held[-1] == ("idle", "execute_request")
    assert [s for s, _ in held[:-1]][-1] == "busy"
    # without the hold the kernel's last word mid-cell is the control request's "idle" (the bug)
    plain = _status_during_cell(hold=False)
    assert plain[-2] == ("idle", "kernel_info_request")


# --- notebooks: JupyterLab opens the paired .py files as notebooks, saving leaves them unchanged ---------
def test_saving_an_unchanged_notebook_leaves_the_file_unchanged(tmp_path):
    """What JupyterLab does on open + save through jupytext's contents manager, with the repo's jupytext.toml:
    the running kernel's display name and jupytext's version would otherwise be written into the header."""
    import asyncio
    import shutil

    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
    from jupytext.async_contentsmanager import build_async_jupytext_contents_manager_class

    shutil.copy(REPO / "jupytext.toml", tmp_path)
    names = sorted(p.name for p in (REPO / "notebooks").glob("*.py"))
    assert len(names) >= 5
    for name in names:
        shutil.copy(REPO / "notebooks" / name, tmp_path)
    cm = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)(root_dir=str(tmp_path))

    async def open_and_save(name):
        nb = (await cm.get(name, content=True, type="notebook"))["content"]
        # what JupyterLab adds once the venv's kernel runs
        nb["metadata"]["kernelspec"] = {"display_name": "Python 3 (opd-workbench)", "language": "python",
                                        "name": "python3"}
        nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.2"}
        await cm.save({"type": "notebook", "format": "json", "content": nb}, name)

    for name in names:
        asyncio.run(open_and_save(name))
        assert (tmp_path / name).read_text() == (REPO / "notebooks" / name).read_text(), name


def test_lab_overrides_open_python_files_with_jupytext():
    settings = json.loads((REPO / "widgets" / "lab_overrides.json").read_text())
    assert settings["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["python"] == "Jupytext Notebook"
    make = (REPO / "Makefile").read_text()
    # installed where JupyterLab in the venv reads overrides: <sys.prefix>/share/jupyter/lab/settings
    assert "widgets/lab_overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json" in make


# --- readability: legend, panel labels, axes, steps, eval markers, colour scale (figure data) ---------
def test_legend_has_one_entry_per_run_and_panels_name_their_metrics():
    store = RecordStore()
    for run in ("sft", "grpo", "opd"):
        feed(store, [make_record(s, run=run, method=run, teacher=run == "opd") for s in range(1, 31)])
    fig = F.curves_figure(store)
    shown = [t for t in fig.data if t.showlegend is not False]
    # three runs + the max_new_tokens cap; every metric trace stays out of the legend
    assert [t.name for t in shown] == ["sft", "grpo", "opd", "max_new_tokens = 64"]
    assert {t.line.color for t in shown[:3]} == {F.run_colour(store, r) for r in ("sft", "grpo", "opd")}
    titles = [a.text for a in fig.layout.annotations]
    for _panel, title, _r, _c, _y, metrics in F.PANELS:
        (t,) = [x for x in titles if title in x]
        if len(metrics) > 1:     # the panel's own key: line style -> metric
            for _key, label, dash in metrics:
                assert f"{F.DASH_GLYPH[dash]} {label}" in t
    # one quantity per panel, each y-axis titled; reward and KL on different axes
    ytitles = {p[0]: fig.layout[("yaxis" + F._axis_ids(p[2], p[3])[1][1:])].title.text for p in F.PANELS}
    assert ytitles["reward"] == "reward" and ytitles["signal"] == "nats" and ytitles["length"] == "tokens"
    (rew,) = traces(fig, "reward", "reward/mean", "opd")
    (kl,) = traces(fig, "signal", "teacher/reverse_kl", "opd")
    assert rew.yaxis != kl.yaxis


def test_steps_are_integer_ticks_and_eval_points_are_visible_markers():
    store = RecordStore()
    feed(store, [make_record(s, run="opd", eval_every=2) for s in range(1, 4)])
    fig = F.curves_figure(store)
    for p in F.PANELS:
        xa = fig.layout["xaxis" + F._axis_ids(p[2], p[3])[0][1:]]
        assert xa.tickformat == "d" and xa.dtick == 1      # 3 steps: no tick at 1.5
    (ev,) = traces(fig, "accuracy", "eval/accuracy", "opd")
    assert list(ev.x) == [2] and "markers" in ev.mode and ev.marker.size >= 8
    feed(store, [make_record(s, run="opd", eval_every=2) for s in range(4, 40)])
    fig = F.curves_figure(store)
    assert fig.layout.xaxis.dtick is None and fig.layout.xaxis.tickformat == "d"   # plotly picks, integers only


def test_heatmap_colour_scale_is_symmetric_and_clipped_at_the_95th_percentile():
    samples = [_sample(40, seed=i) for i in range(3)]
    samples[0]["token_reward"][5] = -20.0     # one extreme token
    samples[1]["token_reward"][7] = 15.0
    fig = F.token_heatmap(samples, wrap=16)
    (h,) = fig.data
    vals = sorted(abs(v) for s in samples for v in s["token_reward"])
    # nearest-rank 95th percentile, computed here independently of robust_limit
    want = vals[math.ceil(0.95 * len(vals)) - 1]
    assert h.zmin == pytest.approx(-want) and h.zmax == pytest.approx(want) and want < 5
    assert f"±{want:.2g}" in h.colorbar.title.text and "95th" in h.colorbar.title.text
    assert F.robust_limit([None, 0.0, 0.01]) == 0.1       # never a zero-width scale


def test_end_states_are_named_for_what_happened():
    es = F.end_state
    assert es({"reason": "completed"}) == "steps done"
    assert es({"reason": "stopped", "message": "stopped by TrainingDashboard"}, stopped_by_you=True) == "stopped by you"
    assert es({"reason": "stopped", "message": "stopped by TokenBudget"}) == "budget reached"
    assert es({"reason": "stopped", "message": "early warning: truncation"}) == "stopped (early warning: truncation)"
    assert es({"reason": "interrupted"}) == "interrupted"
    assert es({"reason": "error", "message": "ValueError('x')"}) == "failed: ValueError('x')"
    assert es({"reason": "nonfinite"}).startswith("failed")


def test_budget_end_is_not_called_stopped_and_status_follows_the_running_run():
    class TokenBudget:      # workbench.compare's callback, by name: the trainer's message names it
        def on_step(self, rec):
            return rec["step"] >= 2

    dash = TrainingDashboard(mode="static")
    ctl = dash.controls
    status = ctl.children[1].children[1]
    SyntheticTrainer(run="sft", total_steps=3).run(3, callbacks=[TokenBudget(), dash])
    assert dash.store.runs["sft"].end["end_state"] == "budget reached"
    assert "budget reached" in F.header_lines(dash.store)[0] and "stopped" not in F.header_lines(dash.store)[0]
    assert "sft" in status.value and "budget reached" in status.value

    class Watch:
        def on_step(self, rec):
            seen.append(status.value)

    seen = []
    SyntheticTrainer(run="grpo", total_steps=2).run(2, callbacks=[dash, Watch()])
    assert all("grpo" in v and "running" in v for v in seen), seen    # not "sft: budget reached"
    assert "grpo" in status.value and "steps done" in status.value


def test_stop_is_acknowledged_with_the_step_it_ends_after():
    dash = TrainingDashboard(mode="static")
    btn = dash.controls.children[0].children[0]
    states = []

    class ClickAt:
        def on_step(self, rec):
            if rec["step"] == 4:
                btn.click()
                states.append((btn.description, btn.disabled))

    # clicked after the dashboard saw step 4: its next on_step (step 5) asks to stop
    summary = SyntheticTrainer(run="x", total_steps=50).run(50, callbacks=[dash, ClickAt()])
    assert states == [("stopping after step 5", True)] and summary["step"] == 5
    assert dash.store.runs["x"].end["end_state"] == "stopped by you"


# --- SFT: the dashboard shows the student's own samples ------------------------------------------------
def test_sft_runs_plot_and_show_the_students_own_samples():
    dash = TrainingDashboard(mode="static")
    SyntheticTrainer(run="sft", method="sft", total_steps=20, teacher=False,
                     student_samples_every=5).run(20, callbacks=[dash])
    fig = dash.figures()["curves"]
    (length,) = traces(fig, "length", "rollout/mean_length", "sft")
    assert length.meta["source"] == "student_samples/mean_length" and list(length.x) == [5, 10, 15, 20]
    assert "student's own samples" in length.name
    # no student-sample series for the max length: the teacher traces, said so
    (mx,) = traces(fig, "length", "rollout/max_length", "sft")
    assert mx.meta["source"] == "rollout/max_length" and "teacher traces" in mx.name
    assert mx.line.color.startswith("rgba(") and not length.line.color.startswith("rgba(")   # drawn faint
    tokens = dash.specs()["tokens"]["data"][0]
    assert tokens["meta"]["step"] == 20 and tokens["meta"]["whose"] == F.STUDENT_SAMPLES_WHOSE
    assert tokens["meta"]["colour_by"] == "token_reward"          # scored by the teacher
    dash.sample_view = "training"                                # the teacher-trace view stays available
    tokens = dash.specs()["tokens"]["data"][0]
    assert tokens["meta"]["whose"] == F.TEACHER_TRACES_WHOSE and tokens["meta"]["colour_by"] == "student_logprob"


def test_live_redraws_update_the_cells_outputs_in_place():
    """Live mode inside IPython: the first draw displays header, figures and a script slot with display ids;
    every later redraw updates exactly those ids, the script calling Plotly.react on this dashboard's figures."""
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    published = []

    class Recorder(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
            published.append({"data": data, "id": (transient or {}).get("display_id"), "update": update})

    existed = InteractiveShell.initialized()
    shell = InteractiveShell.instance()
    saved = shell.display_pub
    shell.display_pub = Recorder(shell=shell)
    try:
        dash = TrainingDashboard(mode="live", min_redraw_s=0, pump_kernel=False)
        SyntheticTrainer(run="opd", total_steps=3).run(3, callbacks=[dash])
    finally:
        shell.display_pub = saved
        if not existed:              # later tests run outside IPython again
            InteractiveShell.clear_instance()
            sys.displayhook = sys.__displayhook__
    first = [p for p in published if not p["update"]]
    # the controls (shown with the figures: the user did not show them in a cell of their own), once
    assert "application/vnd.jupyter.widget-view+json" in first[0]["data"] and first[0]["id"] is None
    first = first[1:]
    assert [("text/html" in p["data"], PLOTLY_MIME in p["data"]) for p in first] == \
        [(True, False), (False, True), (False, True), (False, False)]     # header, curves, tokens, script slot
    ids = [p["id"] for p in first]
    assert all(ids) and len(set(ids)) == 4
    updates = [p for p in published if p["update"]]
    assert {p["id"] for p in updates} == set(ids) and len(updates) == 4 * 4   # 3 steps + the final redraw
    uid = first[1]["data"][PLOTLY_MIME]["layout"]["meta"]["dashboard"]
    last = {p["id"]: p["data"] for p in updates[-4:]}
    script = last[ids[3]]["application/javascript"]
    assert "P.react(el" in script and json.dumps(uid) in script
    curves = last[ids[1]][PLOTLY_MIME]
    assert curves["layout"]["meta"] == {"dashboard": uid, "figure": "curves"} and curves["layout"]["uirevision"]
    (length,) = [t for t in curves["data"] if t["meta"]["key"] == "rollout/mean_length"]
    assert length["x"] == [1, 2, 3]       # the saved output holds the final data


def test_stop_clicks_are_handled_in_the_middle_of_a_long_step():
    """A real kernel: a cell whose "step" blocks for 3 s; a comm message for the listened-to comm is
    handled on the listener thread within a fraction of a second, one for another comm waits for pump()."""
    import queue
    jc = pytest.importorskip("jupyter_client.manager")
    km, kc = jc.start_new_kernel(kernel_name="python3", cwd=str(REPO))
    try:
        kc.execute_interactive(
            f"import sys, time, threading; sys.path.insert(0, {str(REPO)!r})\n"
            "from widgets.kernel_pump import KernelPump\n"
            "got = []\n"
            "def target(comm, msg):\n"
            "    comm.on_msg(lambda m: got.append((comm.comm_id, time.time(), threading.current_thread().name)))\n"
            "get_ipython().kernel.comm_manager.register_target('probe', target)\n", timeout=60)
        for cid in ("fast", "slow"):
            kc.shell_channel.send(kc.session.msg("comm_open", {"comm_id": cid, "target_name": "probe", "data": {}}))
        time.sleep(1.0)
        kc.execute("p = KernelPump(); assert p.listen(['fast'])\n"
                   "t0 = time.time(); time.sleep(3.0)        # one long step: nothing pumps meanwhile\n"
                   "t1 = time.time(); p.pump(); p.stop_listening()\n"
                   "print('RESULT', [(c, round(t - t0, 2), th) for c, t, th in got], round(t1 - t0, 2))")
        time.sleep(1.0)
        for cid in ("fast", "slow"):
            kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": cid, "data": {"click": 1}}))
        out = ""
        while "RESULT" not in out:
            m = kc.get_iopub_msg(timeout=30)
            if m["msg_type"] == "error":
                raise AssertionError(m["content"])
            if m["msg_type"] == "stream":
                out += m["content"]["text"]
        got, step_s = eval(out.split("RESULT", 1)[1].strip().rsplit(" ", 1)[0]), float(out.split()[-1])
        assert len(got) == 2, out
        (fast,) = [g for g in got if g[0] == "fast"]
        (slow,) = [g for g in got if g[0] == "slow"]
        # sent ~1 s into the 3 s step: handled mid-step on the listener; the other only at pump()
        assert fast[1] < step_s - 1.0 and fast[2] == "dashboard-kernel-pump"
        assert slow[1] >= step_s and slow[2] == "MainThread"
        # the kernel answers normally afterwards
        assert kc.execute_interactive("1 + 1", timeout=30)["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_bench_dashboard_live_row_measures_real_redraws():
    """`python -m benchmarks dashboard` reports the live dashboard's cost from redraws that happened."""
    import torch
    from IPython.core.interactiveshell import InteractiveShell

    from benchmarks.bench import bench_dashboard

    existed = InteractiveShell.initialized()
    try:
        row = bench_dashboard(1, torch.device("cpu"), steps_per_run=2, mode="live")
    finally:
        if not existed:
            InteractiveShell.clear_instance()
            sys.displayhook = sys.__displayhook__
    assert not row.get("skipped"), row
    assert row["mode"] == "live" and row["redraws"] >= 2 and row["redraw_ms"] > 0
    assert row["step_s_with"] > 0 and row["step_s_without"] > 0 and "overhead_frac_paired" in row
