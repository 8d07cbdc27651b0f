"""Pure figure builders: `RecordStore` in, plain `plotly.graph_objects.Figure` out.

No Jupyter here, so every panel can be checked in a unit test by reading the
figure's data. Each curve trace carries `meta = {"panel", "key", "run", "smoothed",
"shadow"}` (shadow: the faint unsmoothed copy drawn when smoothing > 0), so tests
and the browser check find a series without parsing names.

Panels of `curves_figure` (3 x 2), one quantity per panel, its y-axis titled:
    length      rollout/mean_length, rollout/max_length, and the max_new_tokens cap
    truncation  rollout/truncated_frac, rollout/repetition_rate
    reward      reward/mean (verifier)
    accuracy    train/accuracy, eval/accuracy (held-out, greedy; diamond markers)
    signal      teacher/token_reward_mean, teacher/reverse_kl (nats)
    loss        loss
The legend names runs (one entry, one colour each); each panel's title names its line styles.
For source="teacher" runs (SFT) the rollout panels plot the student's own samples
(`student_samples/*`) when the run records them, else the teacher traces, labelled so.
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

# (panel, title, row, col, y-axis title, [(key, label, dash), ...]). One quantity (one unit) per panel,
# so no panel mixes a 0..1 reward with a KL in nats on one unlabelled axis.
PANELS = [
    ("length", "Rollout length", 1, 1, "tokens", [
        ("rollout/mean_length", "mean", "solid"),
        ("rollout/max_length", "max", "dot"),
    ]),
    ("truncation", "Truncated / repetitive rollouts", 1, 2, "fraction of rollouts", [
        ("rollout/truncated_frac", "truncated", "solid"),
        ("rollout/repetition_rate", "repetition", "dash"),
    ]),
    ("reward", "Verifier reward (mean per rollout)", 2, 1, "reward", [
        ("reward/mean", "verifier reward", "solid"),
    ]),
    ("accuracy", "Accuracy", 2, 2, "accuracy", [
        ("train/accuracy", "train (sampled)", "solid"),
        ("eval/accuracy", "held-out eval (greedy)", "dash"),
    ]),
    ("signal", "Teacher signal on the rollouts", 3, 1, "nats", [
        ("teacher/token_reward_mean", "token reward log q − log p", "solid"),
        ("teacher/reverse_kl", "reverse KL", "dot"),
    ]),
    ("loss", "Training loss", 3, 2, "loss (method's own scale)", [
        ("loss", "loss", "solid"),
    ]),
]
ROWS = 3
# For runs that learn from someone else's text (SFT: source="teacher") the rollout panels show the
# student's own samples (record keys student_samples/*, drawn every `student_samples_every` steps):
# exposure bias is about what the student writes, not about the teacher's traces it is fed.
STUDENT_KEYS = {"rollout/mean_length": "student_samples/mean_length",
                "rollout/max_length": "student_samples/max_length",
                "rollout/truncated_frac": "student_samples/truncated_frac",
                "rollout/repetition_rate": "student_samples/repetition_rate",
                "reward/mean": "student_samples/reward_mean",
                "train/accuracy": "student_samples/accuracy",
                "teacher/token_reward_mean": "student_samples/token_reward_mean"}
STUDENT_SAMPLES_WHOSE = ("the student's own samples on this step's training prompts "
                         "(scored by the teacher, not trained on)")
TEACHER_TRACES_WHOSE = "the teacher's traces the student trains on (not the student's own text)"
DASH_GLYPH = {"solid": "━━", "dash": "╍╍", "dot": "┅┅"}
PANEL_KEYS = {p[0]: [k for k, _, _ in p[5]] for p in PANELS}

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
    fig = make_subplots(rows=ROWS, cols=2, subplot_titles=[_panel_title(p) for p in PANELS],
                        horizontal_spacing=0.09, vertical_spacing=0.1)
    return json.dumps(fig.to_plotly_json()["layout"])


def _panel_title(p) -> str:
    """Panel title with its own key: which line style is which metric (the legend only names runs)."""
    key = " · ".join(f"{DASH_GLYPH[dash]} {label}" for _, label, dash in p[5]) if len(p[5]) > 1 else ""
    return f"<b>{p[1]}</b>" + (f"<br><span style='font-size:11px'>{key}</span>" if key else "")


def _axis_ids(row: int, col: int) -> tuple[str, str]:
    n = (row - 1) * 2 + col
    return ("x", "y") if n == 1 else (f"x{n}", f"y{n}")


def _is_teacher_data(rs) -> bool:
    return (rs.config or {}).get("source") == "teacher"


def _series_for(rs, key: str) -> tuple[str, str]:
    """(record key to plot, label suffix) of one panel metric for one run.

    source="teacher" runs: the student's own samples when the run records them, else the teacher
    traces, said so in the label (they are not the student's behaviour).
    """
    if _is_teacher_data(rs):
        sk = STUDENT_KEYS.get(key)
        if sk and sk in rs.series:
            return sk, " (student's own samples)"
        if key.startswith(("rollout/", "reward/", "train/", "teacher/")):
            return key, " (teacher traces)"
    return key, ""


def curves_spec(store: RecordStore, smoothing: float = 0.0, height: int = 820) -> dict:
    """Plotly JSON ({"data", "layout"}) of the curve panels; see `curves_figure`."""
    data: list[dict] = []
    for run in store.run_names():   # one legend entry per run: its colour
        data.append(dict(type="scatter", x=[None], y=[None], mode="lines", name=run, legendgroup=run,
                         line=dict(color=run_colour(store, run), width=3), hoverinfo="skip",
                         meta={"panel": None, "key": "legend", "run": run, "smoothed": False, "shadow": False}))
    max_step = 1
    for panel, _title, row, col, _ytitle, metrics in PANELS:
        xa, ya = _axis_ids(row, col)
        for run in store.run_names():
            rs = store.runs[run]
            colour = run_colour(store, run)
            for key, label, dash in metrics:
                src, suffix = _series_for(rs, key)
                xs, ys = rs.xy(src)
                if not xs:
                    continue
                max_step = max(max_step, xs[-1])
                is_eval = key.startswith("eval/")
                sparse = len(xs) < 3 or is_eval or src != key
                mode = "lines+markers" if sparse else "lines"
                marker = (dict(size=9, symbol="diamond", line=dict(color="white", width=1)) if is_eval
                          else dict(size=6))
                meta = {"panel": panel, "key": key, "run": run, "smoothed": smoothing > 0, "shadow": False,
                        "source": src}
                name = f"{run} · {label}{suffix}"
                if smoothing > 0:
                    data.append(dict(
                        type="scatter", x=xs, y=ys, xaxis=xa, yaxis=ya, mode=mode,
                        name=name + " (raw)", legendgroup=run, showlegend=False, hoverinfo="skip",
                        line=dict(color=_rgba(colour, 0.25), dash=dash, width=1),
                        marker=dict(size=4), meta=dict(meta, smoothed=False, shadow=True)))
                    ys = ema(ys, smoothing)
                # the teacher's traces under a student run's colour: drawn faint, so they do not read as the student
                line_colour = _rgba(colour, 0.35) if suffix == " (teacher traces)" else colour
                data.append(dict(
                    type="scatter", x=xs, y=ys, xaxis=xa, yaxis=ya, mode=mode, name=name,
                    legendgroup=run, showlegend=False, line=dict(color=line_colour, dash=dash, width=2),
                    marker=dict(marker, color=line_colour),
                    hovertemplate=f"{html.escape(name)}<br>step %{{x}}: %{{y:.4g}}<extra></extra>",
                    meta=meta))
        if panel == "length":
            data.extend(_cap_traces(store, xa, ya))
        if panel == "truncation":
            data.extend(_warning_traces(store, xa, ya))
    layout = json.loads(_subplot_layout())
    for p in PANELS:
        xa, ya = _axis_ids(p[2], p[3])
        xkey, ykey = "xaxis" + xa[1:], "yaxis" + ya[1:]
        # steps are integers: never a tick at 1.5 (dtick 1 while there are few steps)
        layout[xkey].update(tickformat="d", **({"dtick": 1} if max_step <= 10 else {}))
        layout[ykey]["title"] = {"text": p[4], "font": {"size": 12}}
        if p[2] == ROWS:
            layout[xkey]["title"] = {"text": "step", "font": {"size": 12}}
    for ykey in ("yaxis2", "yaxis4"):
        layout[ykey]["range"] = [-0.02, 1.02]
    for a in layout.get("annotations", []):
        a["font"] = {"size": 13}
    layout.update(template=_template(), height=height, margin=dict(l=60, r=20, t=60, b=40),
                  legend=dict(font=dict(size=13), orientation="h", x=0, y=1.06, yanchor="bottom",
                              title=dict(text="run:")),
                  hovermode="closest", uirevision="dashboard")
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
                        mode="markers", name=f"{run} · early warning", legendgroup=run, showlegend=False,
                        marker=dict(color="#b00020", symbol="triangle-down", size=11,
                                    line=dict(color=run_colour(store, run), width=2)),
                        text=[m for _, m in ws], hovertemplate="step %{x}: %{text}<extra></extra>",
                        meta={"panel": "truncation", "key": "warning", "run": run, "smoothed": False,
                              "shadow": False}))
    return out


def curves_figure(store: RecordStore, smoothing: float = 0.0, height: int = 820) -> go.Figure:
    """The training-curve panels: one colour (and one legend entry) per run, one line style per
    metric, named in each panel's title."""
    return go.Figure(curves_spec(store, smoothing, height))


# --- token heatmap -------------------------------------------------------------
def heatmap_grid(samples: Sequence[dict], wrap: int = 32, colour_by: str | None = None) -> dict:
    """The cell grid of `token_heatmap` as plain lists.

    Each sample gets a problem row (its prompt, no cells) then one row per `wrap` tokens.
    Returns {"z", "text", "customdata", "y", "colour_by", "sample_of_row", "problem_rows"}
    (problem_rows: [(row label, sample index, prompt)]).
    `colour_by` is "token_reward" when every sample has one, else "student_logprob".
    """
    if wrap < 1:
        raise ValueError("wrap must be >= 1")
    if colour_by is None:
        has_teacher = bool(samples) and all(s.get("token_reward") is not None for s in samples)
        colour_by = "token_reward" if has_teacher else "student_logprob"
    z, text, custom, ylab, owner, problems = [], [], [], [], [], []
    for i, s in enumerate(samples):
        toks = list(s.get("tokens") or [])
        rew = s.get("token_reward")
        logp = s.get("student_logprob")
        vals = rew if colour_by == "token_reward" else logp
        mark = {True: "✓", False: "✗"}.get(s.get("correct"), "·")
        cut = " ✂" if s.get("truncated") else ""
        full_prompt = str(s.get("prompt") or "")
        prompt = full_prompt if len(full_prompt) <= 60 else full_prompt[:57] + "…"
        label = f"s{i} problem"
        z.append([None] * wrap)
        text.append([""] * wrap)
        custom.append([["", None, None, prompt]] * wrap)
        ylab.append(label)
        owner.append(i)
        problems.append((label, i, full_prompt))
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
            "colour_by": colour_by, "sample_of_row": owner, "problem_rows": problems}


def _num(vals, j):
    if vals is None or j >= len(vals) or vals[j] is None:
        return None
    v = float(vals[j])
    return None if math.isnan(v) else v


CLIP_PERCENTILE = 95


def robust_limit(values: Sequence[float | None], percentile: float = CLIP_PERCENTILE, floor: float = 0.1) -> float:
    """The `percentile`-th percentile (nearest rank) of |v|, at least `floor`.

    The heatmap's colour range is ±this: a few extreme tokens (−20 nats) would otherwise stretch
    the scale until mild disagreement (−1) looks white. Cells beyond it take the end colour.
    """
    mags = sorted(abs(v) for v in values if v is not None)
    if not mags:
        return floor
    rank = max(1, math.ceil(percentile / 100 * len(mags)))
    return max(mags[rank - 1], floor)


def token_heatmap_spec(samples: Sequence[dict], *, step: int | None = None, run: str | None = None,
                       wrap: int = 32, row_px: int = 22, whose: str | None = None) -> dict:
    """Plotly JSON of `token_heatmap`. `whose` names the samples in the title (e.g. "the student's own
    samples, scored by the teacher" for SFT runs)."""
    g = heatmap_grid(samples, wrap=wrap)
    where = " · ".join(p for p in (f"run {run}" if run else "", f"step {step}" if step is not None else "") if p)
    cells = [v for row in g["z"] for v in row]
    if g["colour_by"] == "token_reward":
        lim = robust_limit(cells)
        colour = dict(colorscale=DIVERGING, zmid=0, zmin=-lim, zmax=lim,
                      colorbar=dict(title=dict(text=f"log q − log p<br>clipped at ±{lim:.2g}<br>"
                                                    f"({CLIP_PERCENTILE}th pct of |value|)", side="right"),
                                    thickness=12))
        what = (f"colour = teacher token reward log q − log p (red: teacher disagrees, blue: agrees; "
                f"scale ±{lim:.2g} nats)")
    else:
        lim = robust_limit(cells, floor=0.5)
        colour = dict(colorscale=SEQUENTIAL, zmin=-lim, zmax=0,
                      colorbar=dict(title=dict(text=f"student log p<br>clipped at {-lim:.2g}", side="right"),
                                    thickness=12))
        what = ("no teacher for this method: colour = the student log-prob of its own tokens, a different scale "
                "(yellow: confident, purple: unlikely)")
    whose = whose or "the latest samples"
    small = "<br><span style='font-size:12px'>"
    title = (f"Tokens of {whose}{' (' + where + ')' if where else ''}"
             f"{small}{what}</span>{small}rows: ✓/✗ correct, s<i>i</i> = sample <i>i</i>, @<i>k</i> = tokens "
             f"from position <i>k</i> ({wrap} per row), ✂ = truncated at max_new_tokens</span>")
    trace = dict(
        type="heatmap", z=g["z"], text=g["text"], customdata=g["customdata"], y=g["y"],
        x=list(range(wrap)), texttemplate="%{text}", textfont=dict(size=11),
        hoverongaps=False, xgap=1, ygap=1,
        hovertemplate=("%{y}<br>token <b>%{customdata[0]}</b>"
                       + ("<br>token reward %{customdata[1]:.3f}" if g["colour_by"] == "token_reward" else "")
                       + "<br>student log p %{customdata[2]:.3f}<br>prompt %{customdata[3]}<extra></extra>"),
        meta={"panel": "tokens", "colour_by": g["colour_by"], "step": step, "run": run,
              "colour_limit": lim, "whose": whose},
        **colour)
    problems = [dict(x=-0.5, y=label, xref="x", yref="y", xanchor="left", showarrow=False,
                     text=f"<b>{html.escape(prompt)}</b>", font=dict(size=12, color="#333"))
                for label, i, prompt in g["problem_rows"]]
    rows = max(len(g["y"]), 1)
    layout = dict(
        template=_template(), title=dict(text=title, font=dict(size=14)),
        height=150 + row_px * rows, margin=dict(l=90, r=20, t=120, b=20), annotations=problems,
        yaxis=dict(autorange="reversed", type="category", tickfont=dict(size=11)),
        xaxis=dict(showticklabels=False, showgrid=False, zeroline=False), uirevision="tokens")
    return {"data": [trace], "layout": layout}


def token_heatmap(samples: Sequence[dict], *, step: int | None = None, run: str | None = None,
                  wrap: int = 32, row_px: int = 22, whose: str | None = None) -> go.Figure:
    """Per-token heatmap of one sample batch.

    Colour = teacher token reward (log q − log p) on a diverging scale centred at 0;
    when a sample has no token reward (methods without a teacher) every cell is
    coloured by the student's log-prob instead, and the title says so.
    """
    return go.Figure(token_heatmap_spec(samples, step=step, run=run, wrap=wrap, row_px=row_px, whose=whose))


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
    status = "running" if rs.end is None else str(rs.end.get("end_state") or end_state(rs.end))
    return {"run": run, "method": rs.method, "step": rs.last_step, "total": rs.total_steps,
            "elapsed_s": elapsed, "steps_per_s": rate, "eta_s": eta, "status": status}


def end_state(summary: dict, stopped_by_you: bool = False) -> str:
    """What happened, in words, from the trainer's on_end summary (docs/records.md).

    "stopped" covers every callback that asked to stop; the dashboard knows whether its own Stop
    did, and a token-budget callback says so in the summary's message ("stopped by TokenBudget").
    """
    reason = str(summary.get("reason", "ended"))
    msg = str(summary.get("message") or "")
    if reason == "completed":
        return "steps done"
    if reason == "stopped":
        if stopped_by_you:
            return "stopped by you"
        if "budget" in msg.lower():
            return "budget reached"
        return f"stopped ({msg})" if msg and msg != "stopped" else "stopped"
    if reason == "interrupted":
        return "interrupted"
    if reason == "nonfinite":
        return "failed: non-finite updates"
    if reason == "error":
        return f"failed: {msg}" if msg and msg != "error" else "failed"
    return reason


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
