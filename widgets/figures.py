"""Pure figure builders: `RecordStore` in, plain `plotly.graph_objects.Figure` out.

No Jupyter here, so every panel can be checked in a unit test by reading the
figure's data. Each curve trace carries `meta = {"panel", "key", "run", "smoothed",
"shadow"}` (shadow: the faint unsmoothed copy drawn when smoothing > 0), so tests
and the browser check find a series without parsing names.

Panels of `curves_figure` (2 x 2):
    length      rollout/mean_length, rollout/max_length, and the max_new_tokens cap
    truncation  rollout/truncated_frac, rollout/repetition_rate
    signal      reward/mean, teacher/token_reward_mean, teacher/reverse_kl
    accuracy    train/accuracy, eval/accuracy (held-out, greedy)
`token_heatmap` draws one sample batch, one row per `wrap` tokens.
"""

from __future__ import annotations

import html
import json
import math
from functools import lru_cache
from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .store import RecordStore

# (panel, title, row, col, [(key, label, dash), ...])
PANELS = [
    ("length", "Rollout length (tokens)", 1, 1, [
        ("rollout/mean_length", "mean length", "solid"),
        ("rollout/max_length", "max length", "dot"),
    ]),
    ("truncation", "Truncated fraction / repetition rate", 1, 2, [
        ("rollout/truncated_frac", "truncated", "solid"),
        ("rollout/repetition_rate", "repetition", "dash"),
    ]),
    ("signal", "Signal: verifier reward, teacher token reward, reverse KL", 2, 1, [
        ("reward/mean", "verifier reward", "solid"),
        ("teacher/token_reward_mean", "teacher token reward", "dash"),
        ("teacher/reverse_kl", "reverse KL", "dot"),
    ]),
    ("accuracy", "Accuracy (train sampled, eval greedy)", 2, 2, [
        ("train/accuracy", "train accuracy", "solid"),
        ("eval/accuracy", "eval accuracy", "dash"),
    ]),
]
PANEL_KEYS = {p[0]: [k for k, _, _ in p[4]] for p in PANELS}

# plotly's default qualitative palette; one colour per run, in order of appearance
RUN_COLOURS = ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A",
               "#19d3f3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52"]

# Explicit colour scales: a scale *name* is resolved differently by plotly.py ("RdBu":
# red = low) and plotly.js ("RdBu": blue = low), and live output skips plotly.py.
DIVERGING = [[0.0, "#b2182b"], [0.25, "#ef8a62"], [0.5, "#f7f7f7"], [0.75, "#67a9cf"], [1.0, "#2166ac"]]
SEQUENTIAL = [[0.0, "#440154"], [0.25, "#3b528b"], [0.5, "#21918c"], [0.75, "#5ec962"], [1.0, "#fde725"]]

WHITESPACE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def run_colour(store: RecordStore, run: str) -> str:
    names = store.run_names()
    i = names.index(run) if run in names else len(names)
    return RUN_COLOURS[i % len(RUN_COLOURS)]


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average, TensorBoard-style weight in [0, 1).

    s[0] = v[0];  s[t] = weight * s[t-1] + (1 - weight) * v[t]  (over the points given).
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError("smoothing weight must be in [0, 1)")
    out: list[float] = []
    s = None
    for v in values:
        s = v if s is None else weight * s + (1.0 - weight) * v
        out.append(s)
    return out


def visible_token(tok: str) -> str:
    """Token text with whitespace made visible (space → ␣, newline → ↵, tab → ⇥)."""
    if tok == "":
        return "∅"
    for a, b in WHITESPACE.items():
        tok = tok.replace(a, b)
    return tok


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# --- curves ------------------------------------------------------------------
# Figures are first built as plain plotly JSON dicts ("specs"): building a go.Figure
# validates every property (~40-80 ms for these two figures), which a live redraw
# every second should not pay. `*_figure` wraps the same spec in a go.Figure.

@lru_cache(maxsize=1)
def _template() -> dict:
    import plotly.io as pio
    return pio.templates["plotly_white"].to_plotly_json()


@lru_cache(maxsize=4)
def _subplot_layout() -> str:
    fig = make_subplots(rows=2, cols=2, subplot_titles=[p[1] for p in PANELS],
                        horizontal_spacing=0.08, vertical_spacing=0.13)
    return json.dumps(fig.to_plotly_json()["layout"])


def _axis_ids(row: int, col: int) -> tuple[str, str]:
    n = (row - 1) * 2 + col
    return ("x", "y") if n == 1 else (f"x{n}", f"y{n}")


def curves_spec(store: RecordStore, smoothing: float = 0.0, height: int = 640) -> dict:
    """Plotly JSON ({"data", "layout"}) of the four curve panels; see `curves_figure`."""
    data: list[dict] = []
    for panel, _title, row, col, metrics in PANELS:
        xa, ya = _axis_ids(row, col)
        for run in store.run_names():
            rs = store.runs[run]
            colour = run_colour(store, run)
            for key, label, dash in metrics:
                xs, ys = rs.xy(key)
                if not xs:
                    continue
                sparse = len(xs) < 3 or key.startswith("eval/")
                mode = "lines+markers" if sparse else "lines"
                meta = {"panel": panel, "key": key, "run": run, "smoothed": smoothing > 0, "shadow": False}
                name = f"{run} · {label}"
                if smoothing > 0:
                    data.append(dict(
                        type="scatter", x=xs, y=ys, xaxis=xa, yaxis=ya, mode=mode,
                        name=name + " (raw)", legendgroup=run, showlegend=False, hoverinfo="skip",
                        line=dict(color=_rgba(colour, 0.25), dash=dash, width=1),
                        marker=dict(size=4), meta=dict(meta, smoothed=False, shadow=True)))
                    ys = ema(ys, smoothing)
                data.append(dict(
                    type="scatter", x=xs, y=ys, xaxis=xa, yaxis=ya, mode=mode, name=name,
                    legendgroup=run, line=dict(color=colour, dash=dash, width=2), marker=dict(size=5),
                    hovertemplate=f"{html.escape(run)} · {label}<br>step %{{x}}: %{{y:.4g}}<extra></extra>",
                    meta=meta))
        if panel == "length":
            data.extend(_cap_traces(store, xa, ya))
        if panel == "truncation":
            data.extend(_warning_traces(store, xa, ya))
    layout = json.loads(_subplot_layout())
    layout["xaxis3"]["title"] = {"text": "step"}
    layout["xaxis4"]["title"] = {"text": "step"}
    layout["yaxis"]["title"] = {"text": "tokens"}
    layout["yaxis2"]["range"] = [-0.02, 1.02]
    layout["yaxis4"]["range"] = [-0.02, 1.02]
    layout.update(template=_template(), height=height, margin=dict(l=50, r=20, t=40, b=40),
                  legend=dict(font=dict(size=10), tracegroupgap=6), hovermode="closest",
                  uirevision="dashboard")
    return {"data": data, "layout": layout}


def _cap_traces(store: RecordStore, xa: str, ya: str) -> list[dict]:
    """Horizontal line(s) at max_new_tokens over the steps seen in the length panel."""
    caps: dict[int, list[int]] = {}
    for rs in store.runs.values():
        if rs.max_new_tokens is None:
            continue
        xs = [x for k in PANEL_KEYS["length"] for x in rs.xy(k)[0]]
        if xs:
            caps.setdefault(int(rs.max_new_tokens), []).extend([min(xs), max(xs)])
    return [dict(type="scatter", x=[min(xs), max(xs)], y=[cap, cap], xaxis=xa, yaxis=ya,
                 mode="lines", name=f"max_new_tokens = {cap}",
                 line=dict(color="#888", dash="dash", width=1.5),
                 hovertemplate=f"max_new_tokens = {cap}<extra></extra>",
                 meta={"panel": "length", "key": "max_new_tokens", "run": None, "smoothed": False,
                       "shadow": False})
            for cap, xs in sorted(caps.items())]


def _warning_traces(store: RecordStore, xa: str, ya: str) -> list[dict]:
    """Red markers at the top of the truncation panel where a run's early warning fired."""
    out = []
    for run in store.run_names():
        ws = list(store.runs[run].warnings)
        if not ws:
            continue
        out.append(dict(type="scatter", x=[s for s, _ in ws], y=[1.0] * len(ws), xaxis=xa, yaxis=ya,
                        mode="markers", name=f"{run} · early warning", legendgroup=run,
                        marker=dict(color="#b00020", symbol="triangle-down", size=11,
                                    line=dict(color=run_colour(store, run), width=2)),
                        text=[m for _, m in ws], hovertemplate="step %{x}: %{text}<extra></extra>",
                        meta={"panel": "truncation", "key": "warning", "run": run, "smoothed": False,
                              "shadow": False}))
    return out


def curves_figure(store: RecordStore, smoothing: float = 0.0, height: int = 640) -> go.Figure:
    """The four training-curve panels, one colour per run, one dash style per metric."""
    return go.Figure(curves_spec(store, smoothing, height))


# --- token heatmap -------------------------------------------------------------
def heatmap_grid(samples: Sequence[dict], wrap: int = 32, colour_by: str | None = None) -> dict:
    """The cell grid of `token_heatmap` as plain lists (one row per `wrap` tokens).

    Returns {"z", "text", "customdata", "y", "colour_by", "sample_of_row"}.
    `colour_by` is "token_reward" when every sample has one, else "student_logprob".
    """
    if wrap < 1:
        raise ValueError("wrap must be >= 1")
    if colour_by is None:
        has_teacher = bool(samples) and all(s.get("token_reward") is not None for s in samples)
        colour_by = "token_reward" if has_teacher else "student_logprob"
    z, text, custom, ylab, owner = [], [], [], [], []
    for i, s in enumerate(samples):
        toks = list(s.get("tokens") or [])
        rew = s.get("token_reward")
        logp = s.get("student_logprob")
        vals = rew if colour_by == "token_reward" else logp
        mark = {True: "✓", False: "✗"}.get(s.get("correct"), "·")
        cut = " ✂" if s.get("truncated") else ""
        prompt = str(s.get("prompt") or "")
        prompt = prompt if len(prompt) <= 60 else prompt[:57] + "…"
        n = max(len(toks), 1)
        for start in range(0, n, wrap):
            zr, tr, cr = [], [], []
            for j in range(start, start + wrap):
                if j < len(toks):
                    tok = visible_token(str(toks[j]))
                    r = _num(rew, j)
                    lp = _num(logp, j)
                    zr.append(_num(vals, j))
                    tr.append(tok)
                    cr.append([tok, r, lp, prompt])
                else:
                    zr.append(None)
                    tr.append("")
                    cr.append(["", None, None, prompt])
            z.append(zr)
            text.append(tr)
            custom.append(cr)
            ylab.append(f"{mark} s{i} @{start}{cut if start == 0 else ''}")
            owner.append(i)
    return {"z": z, "text": text, "customdata": custom, "y": ylab,
            "colour_by": colour_by, "sample_of_row": owner}


def _num(vals, j):
    if vals is None or j >= len(vals) or vals[j] is None:
        return None
    v = float(vals[j])
    return None if math.isnan(v) else v


def token_heatmap_spec(samples: Sequence[dict], *, step: int | None = None, run: str | None = None,
                       wrap: int = 32, row_px: int = 22) -> dict:
    """Plotly JSON of `token_heatmap`."""
    g = heatmap_grid(samples, wrap=wrap)
    where = " · ".join(p for p in (f"run {run}" if run else "", f"step {step}" if step is not None else "") if p)
    if g["colour_by"] == "token_reward":
        colour = dict(colorscale=DIVERGING, zmid=0,
                      colorbar=dict(title=dict(text="log q − log p", side="right"), thickness=12))
        what = "colour = teacher token reward log q − log p (red: teacher disagrees, blue: agrees)"
    else:
        colour = dict(colorscale=SEQUENTIAL, zmax=0,
                      colorbar=dict(title=dict(text="log p", side="right"), thickness=12))
        what = "colour = student log-prob (no teacher token reward for this method)"
    title = (f"Tokens of the latest samples{' (' + where + ')' if where else ''}"
             f"<br><sup>{what}; ✓/✗ = correct, ✂ = truncated</sup>")
    trace = dict(
        type="heatmap", z=g["z"], text=g["text"], customdata=g["customdata"], y=g["y"],
        x=list(range(wrap)), texttemplate="%{text}", textfont=dict(size=11),
        hoverongaps=False, xgap=1, ygap=1,
        hovertemplate=("%{y}<br>token <b>%{customdata[0]}</b>"
                       + ("<br>token reward %{customdata[1]:.3f}" if g["colour_by"] == "token_reward" else "")
                       + "<br>student log p %{customdata[2]:.3f}<br>prompt %{customdata[3]}<extra></extra>"),
        meta={"panel": "tokens", "colour_by": g["colour_by"], "step": step, "run": run},
        **colour)
    rows = max(len(g["y"]), 1)
    layout = dict(
        template=_template(), title=dict(text=title, font=dict(size=14)),
        height=110 + row_px * rows, margin=dict(l=90, r=20, t=70, b=20),
        yaxis=dict(autorange="reversed", type="category", tickfont=dict(size=11)),
        xaxis=dict(showticklabels=False, showgrid=False, zeroline=False))
    return {"data": [trace], "layout": layout}


def token_heatmap(samples: Sequence[dict], *, step: int | None = None, run: str | None = None,
                  wrap: int = 32, row_px: int = 22) -> go.Figure:
    """Per-token heatmap of one sample batch.

    Colour = teacher token reward (log q − log p) on a diverging scale centred at 0;
    when a sample has no token reward (methods without a teacher) every cell is
    coloured by the student's log-prob instead, and the title says so.
    """
    return go.Figure(token_heatmap_spec(samples, step=step, run=run, wrap=wrap, row_px=row_px))


def empty_heatmap_spec(message: str = "no token samples yet") -> dict:
    return {"data": [], "layout": dict(
        template=_template(), height=160, xaxis=dict(visible=False), yaxis=dict(visible=False),
        margin=dict(l=20, r=20, t=20, b=20),
        annotations=[dict(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")])}


def empty_heatmap(message: str = "no token samples yet") -> go.Figure:
    return go.Figure(empty_heatmap_spec(message))


def latest_heatmap(store: RecordStore, run: str | None = None, index: int = -1, wrap: int = 32) -> go.Figure:
    """Heatmap of the `index`-th kept sample batch of `run` (default: latest of the latest run)."""
    run = run if run in store.runs else store.latest_run()
    batches = store.sample_batches(run) if run else []
    if not batches:
        return empty_heatmap()
    step, samples = batches[max(-len(batches), min(index, len(batches) - 1))]
    return token_heatmap(samples, step=step, run=run, wrap=wrap)


# --- header ------------------------------------------------------------------------
def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def run_progress(store: RecordStore, run: str, now: float | None = None) -> dict:
    """method, step, total, elapsed_s, steps_per_s, eta_s, status of one run.

    Elapsed time is the trainer's `time/elapsed_s` when records carry it, else the
    dashboard's wall clock (from on_start, or the first step, to `now` / the latest step).
    """
    rs = store.runs[run]
    elapsed = rs.last_scalars.get("time/elapsed_s")
    if elapsed is None and rs.started_at is not None:
        end = now if (now is not None and rs.end is None) else rs.last_at
        elapsed = None if end is None else end - rs.started_at
    done = (rs.last_step or 0) - rs.start_step
    rate = done / elapsed if elapsed and elapsed > 0 and done > 0 else None
    eta = None
    if rate and rs.total_steps and rs.end is None:
        eta = max(rs.total_steps - (rs.last_step or 0), 0) / rate
    status = "running" if rs.end is None else str(rs.end.get("reason", "ended"))
    return {"run": run, "method": rs.method, "step": rs.last_step, "total": rs.total_steps,
            "elapsed_s": elapsed, "steps_per_s": rate, "eta_s": eta, "status": status}


def header_lines(store: RecordStore, now: float | None = None) -> list[str]:
    lines = []
    for run in store.run_names():
        p = run_progress(store, run, now)
        rate = f"{p['steps_per_s']:.2f} steps/s" if p["steps_per_s"] else "– steps/s"
        eta = f"ETA {fmt_duration(p['eta_s'])}" if p["status"] == "running" else p["status"]
        lines.append(f"{run} [{p['method'] or '?'}] step {p['step'] if p['step'] is not None else '–'}"
                     f"/{p['total'] or '?'} · elapsed {fmt_duration(p['elapsed_s'])} · {rate} · {eta}")
    return lines or ["waiting for the first step…"]


def warning_lines(store: RecordStore) -> list[tuple[str, str]]:
    """(run, line) for every run whose trainer raised the early warning (record["warning"], LengthAlarm)."""
    out = []
    for run in store.run_names():
        ws = list(store.runs[run].warnings)
        if ws:
            step, msg = ws[-1]
            more = f" ({len(ws)} warnings)" if len(ws) > 1 else ""
            out.append((run, f"⚠ {run}: early warning at step {step}{more}: {msg}"))
    return out


def header_html(store: RecordStore, now: float | None = None) -> str:
    rows = []
    for run, line in zip(store.run_names() or [None], header_lines(store, now)):
        dot = (f'<span style="color:{run_colour(store, run)}">●</span> ' if run else "")
        rows.append(f"<div>{dot}{html.escape(line)}</div>")
    for run, line in warning_lines(store):
        rows.append(f'<div class="opd-dashboard-warning" style="color:#b00020;font-weight:bold">'
                    f"{html.escape(line)}</div>")
    return ('<div class="opd-dashboard-header" style="font-family:monospace;font-size:13px;'
            'line-height:1.5">' + "".join(rows) + "</div>")
