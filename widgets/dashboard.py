"""`TrainingDashboard`: a trainer callback that draws live or final plotly figures.

    dash = TrainingDashboard(mode="live")       # or "static" under papermill / headless
    dash.controls                               # (own cell) Stop, sample browser, smoothing
    trainer.run(300, callbacks=[dash])          # figures redraw in this cell's output
    dash.save("runs/dashboard.html")

It reads only the per-step records of docs/records.md. Figures are plain
`go.Figure` JSON published as `application/vnd.plotly.v1+json` (what papermill
saves and JupyterLab draws). Live, each cell displays them once, with a
`display_id`, and every redraw (at most every `min_redraw_s` seconds):
  - updates those outputs in place (what a saved or papermill-run notebook holds);
  - updates one small `application/javascript` output that calls
    `Plotly.react` on the figures already on the page. plotly's JupyterLab
    renderer ignores in-place updates of a drawn figure, and a new figure
    (`clear_output` + `display`) would reset the reader's zoom every second;
    `Plotly.react` with an unchanged `layout.uirevision` keeps zoom and pan.
No FigureWidget (papermill would save an empty plot plus ~5 MB of JavaScript).

Modes (one code path, `_render` is the only place that displays):
  live    redraw during the run (throttled) and once more at on_end;
          widget clicks are processed inside on_step (see `widgets.kernel_pump`);
  static  nothing during the run; the final figures once at on_end; no widgets;
  auto    live inside a Jupyter kernel, static elsewhere. Notebooks executed by
          papermill should pass mode="static" (e.g. from their parameters cell).
"""

from __future__ import annotations

import html as _html
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from . import figures as F
from .kernel_pump import KernelPump
from .store import RecordStore

PLOTLY_MIME = "application/vnd.plotly.v1+json"
MODES = ("live", "static", "auto")


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def _execution_count() -> int | None:
    from IPython import get_ipython
    ip = get_ipython()
    return getattr(ip, "execution_count", None) if ip is not None else None


def react_script(specs: dict, dashboard: str) -> str:
    """JavaScript that redraws this dashboard's figures already on the page with `Plotly.react`.

    A figure is found by its `layout.meta` ({"dashboard": id, "figure": name}); `window.Plotly` is
    the library plotly's JupyterLab renderer loaded to draw them (nothing is drawn before that).
    """
    payload = json.dumps({name: {"data": spec["data"], "layout": spec["layout"], "config": PLOT_CONFIG}
                          for name, spec in specs.items()}).replace("</", "<\\/")
    return ("(function(){var P=window.Plotly;if(!P)return;var specs=" + payload + ";"
            "document.querySelectorAll('.js-plotly-plot').forEach(function(el){"
            "var m=el.layout&&el.layout.meta;if(!m||m.dashboard!==" + json.dumps(dashboard) + ")return;"
            "var s=specs[m.figure];if(s)P.react(el,s.data,s.layout,s.config);});})();")


PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def figure_bundle(fig, label: str = "figure") -> dict:
    """The mimebundle plotly's JupyterLab renderer draws: data + layout + config, plain JSON.

    `fig` is a go.Figure or an already plain {"data", "layout"} dict (no validation cost).
    """
    spec = json.loads(fig.to_json()) if hasattr(fig, "to_json") else dict(fig)
    spec["config"] = dict(PLOT_CONFIG)
    return {PLOTLY_MIME: spec, "text/plain": f"<plotly {label}: {len(spec.get('data', []))} traces>"}


class _LiveView:
    """The outputs one cell shows live: header, figures, and the `Plotly.react` script slot."""

    def __init__(self, cell: int | None, uid: str):
        self.cell, self.uid = cell, uid
        self.header: Any = None
        self.figures: dict[str, Any] = {}
        self.script: Any = None


def _tag(spec: dict, uid: str, name: str) -> None:
    """Mark a figure so the react script finds it on the page (plotly keeps `layout.meta` on the element)."""
    spec["layout"]["meta"] = {"dashboard": uid, "figure": name}


PROGRESS_ENV = "OPD_WORKBENCH_PROGRESS"


def report_progress(line: dict) -> None:
    """Append one JSON line to the file named by $OPD_WORKBENCH_PROGRESS, if set: how a headless notebook run
    (`python -m widgets.notebooks run`, which sets it for the kernel) shows training progress on its terminal."""
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    except OSError:
        pass        # progress is a courtesy: never fail training over it


class TrainingDashboard:
    """Live training dashboard; a callback for `Trainer.run(n, callbacks=[...])`.

    Parameters
    ----------
    mode : "live" | "static" | "auto"
    min_redraw_s : live mode redraws at most this often (the final redraw is always made)
    smoothing : initial EMA weight in [0, 1) for the curves (0 = raw)
    wrap : tokens per heatmap row
    max_points : stored points per series per run (decimated beyond that)
    max_sample_batches : sample batches kept per run for the heatmap browser
    pump_kernel : in live mode, handle widget clicks while the cell runs (ipykernel 7)
    height : pixel height of the curves figure
    """

    def __init__(self, mode: str = "auto", *, min_redraw_s: float = 1.0, smoothing: float = 0.0,
                 wrap: int = 32, max_points: int = 2000, max_sample_batches: int = 50,
                 pump_kernel: bool = True, height: int = 640):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError("smoothing must be in [0, 1)")
        self.mode = ("live" if _in_kernel() else "static") if mode == "auto" else mode
        self.min_redraw_s = float(min_redraw_s)
        self.smoothing = float(smoothing)
        self.wrap = int(wrap)
        self.height = int(height)
        self.store = RecordStore(max_points=max_points, max_sample_batches=max_sample_batches)
        self.selected_run: str | None = None    # None: follow the latest run
        self.selected_step: int | None = None   # None: follow the latest sample batch
        self.sample_view = "student"             # SFT runs: "student" (own samples) or "training" (teacher traces)
        self.redraws = 0
        self._t_step = 0.0       # seconds spent in on_step (redraws included)
        self._n_step = 0
        self._t_draw = 0.0       # seconds spent drawing
        self.last_error: BaseException | None = None
        self._stop = False
        self._running: set[str] = set()
        self._last_redraw = -float("inf")
        self._dirty = False
        self._controls = None
        self._controls_cell: int | None = None   # execution count of the cell showing the controls
        self._controls_auto = True                # True until the user shows `controls` themselves
        self._syncing = False
        self._pump = KernelPump() if (self.mode == "live" and pump_kernel) else None
        self._view: _LiveView | None = None     # the outputs of the cell drawing live
        self._stopped_by_you: set[str] = set()   # runs this dashboard's Stop ended
        self._latest_step: int | None = None
        self._in_pump = False

    # ---- callback protocol (docs/records.md) -------------------------------------------
    def on_start(self, info: dict) -> None:
        report_progress({"run": str(info.get("run", "run")), "event": "start", "total": info.get("total_steps"),
                         "step": info.get("start_step", 0)})
        self._stop = False
        rs = self.store.start(info, now=time.monotonic())
        self._stopped_by_you.discard(rs.run)
        self._running.add(rs.run)
        self._latest_step = rs.start_step
        if self._pump is not None:
            self._pump.hold_busy()    # the kernel says "busy" until on_end (see kernel_pump)
        if self._controls is not None:
            self._set_stop_button(stopping=False)
            self._set_status(f"{rs.run} [{rs.method or '?'}]: running")
        if self.mode == "live":
            if self._controls_auto:   # not shown by the user: show them with the figures of this cell
                self._controls_cell = _execution_count()
            self._render()
            if self._pump is not None and self._controls is not None:
                comm = getattr(self._stop_btn, "comm", None)
                if comm is not None:   # Stop clicks are heard mid-step (kernel_pump.listen)
                    self._pump.listen([comm.comm_id])

    def on_step(self, record: dict) -> bool:
        t0 = time.perf_counter()
        report_progress({"run": str(record.get("run", "run")), "event": "step", "step": record.get("step"),
                         "total": record.get("total_steps"), "elapsed": record.get("time/elapsed_s")})
        self.store.add(record, now=time.monotonic())
        self._latest_step = int(record["step"])
        if self.mode == "live":
            if self._pump is not None:
                self._in_pump = True     # a Stop clicked now ends the run after this step
                try:
                    self._pump.pump()
                finally:
                    self._in_pump = False
            if self._dirty or time.monotonic() - self._last_redraw >= self.min_redraw_s:
                self._render()
        self._t_step += time.perf_counter() - t0
        self._n_step += 1
        if self._stop:
            self._stopped_by_you.update(self._running)
        return self._stop

    def on_end(self, summary: dict) -> None:
        run = str(summary.get("run", "run"))
        report_progress({"run": run, "event": "end", "step": summary.get("step"), "reason": summary.get("reason"),
                         "elapsed": summary.get("wall_s")})
        summary = dict(summary, end_state=F.end_state(summary, stopped_by_you=run in self._stopped_by_you))
        rs = self.store.finish(summary)
        self._running.discard(rs.run)
        if self._pump is not None:
            if not self._running:
                self._pump.stop_listening()
            self._pump.pump()
            if not self._running:
                self._pump.release_busy()
        if self._controls is not None:
            self._set_stop_button(stopping=False)
            self._set_status(f"{rs.run} [{rs.method or '?'}]: {summary['end_state']} at step "
                             f"{summary.get('step', rs.last_step)}")
        self._render(final=True)

    # ---- stopping -------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the trainer to stop after the current step (on_step returns True)."""
        self._stop = True
        if self._controls is not None:
            self._set_stop_button(stopping=True)
            if self._running:
                self._set_status(f"Stop requested: training ends after step {self._stop_after()}")

    def _stop_after(self) -> int | None:
        """The step after which a Stop takes effect: the one in progress (or just recorded)."""
        if self._latest_step is None:
            return None
        # A click handled by the pump inside on_step(k) makes on_step return True: the run ends after k.
        # Any other time (between callbacks, another thread) the next on_step sees it: after k + 1.
        return self._latest_step + (0 if self._in_pump else 1)

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def overhead(self) -> dict:
        """What watching costs the training loop: mean on_step time and mean redraw time."""
        return {"steps": self._n_step, "redraws": self.redraws,
                "on_step_mean_ms": 1e3 * self._t_step / max(self._n_step, 1),
                "redraw_mean_ms": 1e3 * self._t_draw / max(self.redraws, 1)}

    @property
    def pump_status(self) -> str:
        """Whether Stop clicks are handled during a running cell, and why not if not."""
        if self._pump is None:
            return "off (static mode or pump_kernel=False)"
        return self._pump.reason

    # ---- figures ----------------------------------------------------------------------
    def _sample_run(self) -> str | None:
        if self.selected_run in self.store.runs:
            return self.selected_run
        return self.store.latest_run()

    def _batches(self, run: str | None) -> tuple[list, str]:
        """(sample batches, whose) the heatmap browses for `run`.

        source="teacher" runs (SFT) train on the teacher's text, so by default the heatmap shows the
        student's own samples they record (`student_samples`); view="training" shows the teacher traces.
        """
        if not run:
            return [], ""
        if self.store.teacher_data(run):
            own = self.store.sample_batches(run, student=True)
            if own and self.sample_view == "student":
                return own, F.STUDENT_SAMPLES_WHOSE
            return self.store.sample_batches(run), F.TEACHER_TRACES_WHOSE
        return self.store.sample_batches(run), "the latest rollouts (the student's own samples)"

    def _sample_batch(self):
        """(run, step, samples, whose) selected for the heatmap, or None."""
        run = self._sample_run()
        batches, whose = self._batches(run)
        if not batches:
            return None
        if self.selected_step is None:
            step, samples = batches[-1]
        else:  # the selected step, or the oldest kept one if it was dropped since
            step, samples = next(((s, b) for s, b in batches if s >= self.selected_step), batches[-1])
        return run, step, samples, whose

    def specs(self) -> dict:
        """{"curves": dict, "tokens": dict}: the figures as plain plotly JSON (what is displayed)."""
        sel = self._sample_batch()
        if sel is None:
            tokens = F.empty_heatmap_spec()
        else:
            run, step, samples, whose = sel
            tokens = F.token_heatmap_spec(samples, step=step, run=run, wrap=self.wrap, whose=whose)
        return {"curves": F.curves_spec(self.store, smoothing=self.smoothing, height=self.height),
                "tokens": tokens}

    def figures(self) -> dict:
        """{"curves": go.Figure, "tokens": go.Figure} for the current state."""
        import plotly.graph_objects as go
        return {name: go.Figure(spec) for name, spec in self.specs().items()}

    def header_html(self) -> str:
        return F.header_html(self.store, now=time.monotonic())

    def _display_figures(self) -> None:
        from IPython.display import HTML, display
        display(HTML(self.header_html()))
        for name, spec in self.specs().items():
            display(figure_bundle(spec, name), raw=True)

    def show(self) -> None:
        """Display the current (after on_end: the final) figures as static plotly output."""
        if _in_ipython():
            self._display_figures()

    def _ipython_display_(self) -> None:
        if self.mode == "live":
            from IPython.display import display
            display(self.controls)
        else:
            self.show()

    # ---- rendering: the one place that draws during/after a run -------------------------
    def _render(self, final: bool = False) -> None:
        if self.mode == "static" and not final:
            return
        t0 = time.perf_counter()
        try:
            if self.mode == "live":
                if self._controls is not None:
                    self._sync_controls()
                if _in_ipython():
                    self._render_live()
            else:
                self.show()
            self.redraws += 1
        except Exception as e:  # a drawing bug must not end a long training run
            if self.last_error is None:
                warnings.warn(f"TrainingDashboard could not draw: {e!r}", RuntimeWarning, stacklevel=2)
            self.last_error = e
        finally:
            self._t_draw += time.perf_counter() - t0
            self._last_redraw = time.monotonic()
            self._dirty = False

    def _render_live(self) -> None:
        """First draw in a cell: display everything with display ids; later: update those in place."""
        from IPython.display import HTML, display
        cell = _execution_count()
        specs = self.specs()
        if self._view is None or self._view.cell != cell:
            here = self._controls_cell is not None and self._controls_cell == cell
            if here:
                if self._controls is None:
                    self._build_controls()
                display(self._controls)
            view = _LiveView(cell=cell, uid=f"opd-{os.getpid()}-{id(self)}-{cell}")
            view.header = display(HTML(self.header_html()), display_id=True)
            for name, spec in specs.items():
                _tag(spec, view.uid, name)
                view.figures[name] = display(figure_bundle(spec, name), raw=True, display_id=True)
            view.script = display({"text/plain": ""}, raw=True, display_id=True)
            self._view = view
            return
        view = self._view
        view.header.update(HTML(self.header_html()))
        for name, spec in specs.items():
            _tag(spec, view.uid, name)
            view.figures[name].update(figure_bundle(spec, name), raw=True)
        view.script.update({"application/javascript": react_script(specs, view.uid), "text/plain": ""},
                           raw=True)

    # ---- saving -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, plotlyjs: str = "inline", png: bool = True) -> dict:
        """Write the figures as one standalone HTML file (and PNGs when kaleido works).

        plotlyjs="inline" embeds plotly.js once (~4.7 MB, works offline);
        plotlyjs="directory" writes plotly.min.js next to the HTML file instead.
        Returns {"html": str, "png": [str, ...], "png_skipped": str | None}.
        """
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            path = path.with_suffix(".html")
        path.parent.mkdir(parents=True, exist_ok=True)
        if plotlyjs not in ("inline", "directory"):
            raise ValueError('plotlyjs must be "inline" or "directory" (a CDN does not work offline)')
        figs = self.figures()
        parts = []
        for i, fig in enumerate(figs.values()):
            include = (True if plotlyjs == "inline" else "directory") if i == 0 else False
            parts.append(fig.to_html(full_html=False, include_plotlyjs=include,
                                     config={"displaylogo": False, "responsive": True}))
        if plotlyjs == "directory":
            from plotly.offline import get_plotlyjs
            (path.parent / "plotly.min.js").write_text(get_plotlyjs(), encoding="utf-8")
        page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>OPD Workbench dashboard"
                "</title></head><body style=\"font-family:sans-serif\">\n" + self.header_html() + "\n"
                + "\n".join(parts) + "\n</body></html>\n")
        path.write_text(page, encoding="utf-8")
        info: dict[str, Any] = {"html": str(path), "png": [], "png_skipped": None}
        if png:
            info.update(self._save_png(figs, path))
        else:
            info["png_skipped"] = "png=False"
        return info

    @staticmethod
    def _save_png(figs: dict, html_path: Path) -> dict:
        try:
            import kaleido  # noqa: F401
        except ImportError:
            return {"png": [], "png_skipped": "kaleido is not installed"}
        if os.path.exists("/usr/bin/chromium"):
            os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")  # kaleido 1.x / choreographer
        out = []
        try:
            for name, fig in figs.items():
                p = html_path.with_name(f"{html_path.stem}_{name}.png")
                fig.write_image(str(p), width=1200, height=fig.layout.height or 600)
                out.append(str(p))
        except Exception as e:
            return {"png": out, "png_skipped": f"kaleido failed: {e!r}"[:500]}
        return {"png": out, "png_skipped": None}

    # ---- controls (ipywidgets; live mode) ------------------------------------------------
    @property
    def controls(self):
        """Stop button, run + sample-batch selector, smoothing slider, heatmap view (an ipywidgets VBox).

        Show it in its own cell before the training cells to keep one set of controls in view;
        otherwise each training cell shows them once above its figures.
        """
        if self._controls is None:
            self._build_controls()
        if self._controls_auto:   # first shown by the user: remember in which cell
            self._controls_auto = False
            self._controls_cell = _execution_count() if _in_ipython() else None
        return self._controls

    def _build_controls(self) -> None:
        import ipywidgets as W
        self._stop_btn = W.Button(description="Stop", icon="stop", button_style="danger",
                                  tooltip="Stop training after the current step",
                                  layout=W.Layout(width="110px"))
        self._stop_btn.on_click(lambda _b: self.request_stop())
        self._run_dd = W.Dropdown(options=[("latest run", "")], value="", description="samples of",
                                  layout=W.Layout(width="230px"))
        self._batch = W.IntSlider(value=0, min=0, max=0, description="batch", readout=False,
                                  continuous_update=False, layout=W.Layout(width="260px"))
        self._batch_label = W.Label("latest")
        self._view_dd = W.Dropdown(options=[("student's own samples", "student"),
                                            ("training text (SFT: teacher traces)", "training")],
                                   value=self.sample_view, description="heatmap",
                                   layout=W.Layout(width="300px"))
        self._smooth = W.FloatSlider(value=self.smoothing, min=0.0, max=0.99, step=0.01,
                                     description="EMA", continuous_update=False,
                                     layout=W.Layout(width="260px"))
        self._status = W.HTML(_html.escape(f"Stop during a running cell: {self.pump_status}"))
        self._browse = W.Output()   # used only after a run, on a control change (never in a loop)
        self._run_dd.observe(self._on_control, names="value")
        self._batch.observe(self._on_control, names="value")
        self._smooth.observe(self._on_control, names="value")
        self._view_dd.observe(self._on_control, names="value")
        self._controls = W.VBox([W.HBox([self._stop_btn, self._run_dd, self._batch,
                                         self._batch_label, self._smooth]),
                                 W.HBox([self._view_dd, self._status]), self._browse])
        self._sync_controls()

    def _set_stop_button(self, stopping: bool) -> None:
        after = self._stop_after() if stopping else None
        self._stop_btn.description = ("Stop" if not stopping else
                                      "stopping after step " + (str(after) if after is not None else "…"))
        self._stop_btn.disabled = stopping
        self._stop_btn.layout.width = "240px" if stopping else "110px"

    def _set_status(self, text: str) -> None:
        self._status.value = _html.escape(text)

    def _on_control(self, change) -> None:
        if self._syncing:
            return
        self.smoothing = float(self._smooth.value)
        self.selected_run = self._run_dd.value or None   # "" = follow the latest run
        self.sample_view = self._view_dd.value
        batches, _ = self._batches(self._sample_run())
        if change["owner"] in (self._run_dd, self._view_dd):
            self.selected_step = None
        elif change["owner"] is self._batch and batches:
            i = min(int(self._batch.value), len(batches) - 1)
            self.selected_step = None if i == len(batches) - 1 else batches[i][0]
        self._dirty = True
        self._sync_controls()
        if not self._running and self.store.runs and _in_kernel():
            # No run in progress: redraw below the controls (an Output updated only on a click).
            from IPython.display import clear_output
            with self._browse:
                clear_output(wait=True)
                self._display_figures()

    def _sync_controls(self) -> None:
        """Bring selector ranges and labels up to date (sends widget updates only on change)."""
        self._syncing = True
        try:
            opts = [("latest run", "")] + [(r, r) for r in self.store.run_names()]
            if list(self._run_dd.options) != opts:
                self._run_dd.options = opts
                self._run_dd.value = self.selected_run if self.selected_run in self.store.runs else ""
            sel = self._sample_batch()
            batches = self._batches(sel[0])[0] if sel else []
            n = max(len(batches), 1)
            idx = next((i for i, (s, _) in enumerate(batches) if sel and s == sel[1]), n - 1)
            if self._batch.max != n - 1:
                self._batch.max = n - 1
            if self._batch.value != idx:
                self._batch.value = idx
            label = "no samples yet" if not sel else (
                f"step {sel[1]}" + (" (latest)" if self.selected_step is None else ""))
            if self._batch_label.value != label:
                self._batch_label.value = label
            if abs(self._smooth.value - self.smoothing) > 1e-12:
                self._smooth.value = self.smoothing
            if self._view_dd.value != self.sample_view:
                self._view_dd.value = self.sample_view
        finally:
            self._syncing = False
