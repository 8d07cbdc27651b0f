"""Static plotly figures for the notebooks' analyses (everything that is not the live dashboard).

Each builder takes plain numbers (what `workbench.experiments` returns) and gives a `go.Figure`;
`show(fig)` displays it as a plain plotly mimebundle — no plotly.js in the notebook, so an
executed notebook stays small and the figure renders in JupyterLab and survives papermill.
"""
from __future__ import annotations

import math
from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .dashboard import figure_bundle

COLOURS = {"teacher": "#444444", "student": "#888888", "sft": "#636efa", "filtered_sft": "#19d3f3",
           "grpo": "#EF553B", "opd": "#00cc96"}
PALETTE = ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880"]
TEMPLATE = "plotly_white"


def colour(name: str, i: int = 0) -> str:
    key = name.lower().split()[0].replace("-", "_")
    return COLOURS.get(key, PALETTE[i % len(PALETTE)])


def show(fig: go.Figure, label: str = "figure") -> None:
    """Display a figure as static plotly JSON (works live and under papermill)."""
    from IPython.display import display
    display(figure_bundle(fig, label), raw=True)


def _layout(fig: go.Figure, title: str, height: int = 380, **kw) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=dict(text=title, font=dict(size=15)), height=height,
                      margin=dict(l=60, r=20, t=70, b=50), **kw)
    return fig


def _clean(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


# --- 01: task and models ------------------------------------------------------------------
def length_histogram(lengths: dict[str, Sequence[int]], cap: int | None = None,
                     title: str = "Completion length (tokens, EOS included)") -> go.Figure:
    fig = go.Figure()
    for i, (name, xs) in enumerate(lengths.items()):
        fig.add_histogram(x=list(xs), name=name, opacity=0.65, marker_color=colour(name, i), xbins=dict(size=1))
    if cap:
        fig.add_vline(x=cap, line_dash="dash", line_color="#888", annotation_text=f"max_new_tokens = {cap}")
    fig.update_layout(barmode="overlay", xaxis_title="tokens", yaxis_title="completions")
    return _layout(fig, title)


def accuracy_by_digits(acc: dict[str, dict[int, float]], title: str = "Greedy accuracy by operand length") -> go.Figure:
    fig = go.Figure()
    for i, (name, by) in enumerate(acc.items()):
        fig.add_bar(x=[f"{d} digits" for d in by], y=list(by.values()), name=name, marker_color=colour(name, i),
                    text=[f"{v:.0%}" for v in by.values()], textposition="outside")
    fig.update_layout(barmode="group", yaxis=dict(range=[0, 1.12], title="accuracy"))
    return _layout(fig, title)


# --- curves --------------------------------------------------------------------------------
def accuracy_curves(evals: dict[str, list[dict]], x: str = "student_tokens", teacher_accuracy: float | None = None,
                    target_frac: float | None = 0.9, title: str | None = None, key: str = "eval/accuracy",
                    x_title: str | None = None) -> go.Figure:
    """Held-out accuracy of several runs against a cost axis (student tokens, FLOPs, train_s, step)."""
    fig = go.Figure()
    for i, (run, curve) in enumerate(evals.items()):
        pts = [c for c in curve if c.get(key) is not None]
        fig.add_scatter(x=[c[x] for c in pts], y=[c[key] for c in pts], mode="lines+markers", name=run,
                        line=dict(color=colour(run, i), width=2))
    if teacher_accuracy is not None:
        fig.add_hline(y=teacher_accuracy, line_color="#444", line_dash="dot",
                      annotation_text=f"teacher {teacher_accuracy:.0%}", annotation_position="bottom right")
        if target_frac:
            fig.add_hline(y=target_frac * teacher_accuracy, line_color="#999", line_dash="dash",
                          annotation_text=f"{target_frac:.0%} of teacher", annotation_position="top left")
    labels = {"student_tokens": "student tokens processed", "teacher_tokens": "teacher tokens",
              "flops": "FLOPs (2N forward, 6N forward+backward)", "train_s": "training time (s, no eval)",
              "step": "step"}
    fig.update_layout(xaxis_title=x_title or labels.get(x, x), yaxis=dict(range=[-0.02, 1.02], title="held-out accuracy"))
    return _layout(fig, title or f"Held-out greedy accuracy vs {labels.get(x, x)}")


def metric_curves(series: dict[str, tuple[Sequence, Sequence]], title: str, y_title: str,
                  y_range: Sequence[float] | None = None, smooth: int = 1) -> go.Figure:
    """One line per (run or metric) name: {name: (steps, values)}; optional moving average."""
    fig = go.Figure()
    for i, (name, (xs, ys)) in enumerate(series.items()):
        ys = list(ys)
        if smooth > 1 and ys:
            ys = [sum(ys[max(0, j - smooth + 1):j + 1]) / len(ys[max(0, j - smooth + 1):j + 1]) for j in range(len(ys))]
        fig.add_scatter(x=list(xs), y=ys, mode="lines", name=name, line=dict(color=colour(name, i), width=2))
    fig.update_layout(xaxis_title="step", yaxis_title=y_title)
    if y_range:
        fig.update_yaxes(range=list(y_range))
    return _layout(fig, title)


# --- 02: exposure bias ---------------------------------------------------------------------
def exposure_figure(profiles: dict[str, dict], title: str = "Per-column error rate: clean prefix vs after the model's own first mistake") -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("error rate by column", "pooled over columns"),
                        column_widths=[0.65, 0.35])
    for i, (name, p) in enumerate(profiles.items()):
        c = colour(name, i)
        cols = [f"col {k}" for k in p["columns"]]
        fig.add_scatter(x=cols, y=[_clean(v) for v in p["clean_err"]], name=f"{name} · clean prefix",
                        mode="lines+markers", line=dict(color=c, dash="solid"), legendgroup=name, row=1, col=1)
        fig.add_scatter(x=cols, y=[_clean(v) for v in p["after_err"]], name=f"{name} · after own mistake",
                        mode="lines+markers", line=dict(color=c, dash="dash"), legendgroup=name, row=1, col=1)
        fig.add_bar(x=["before first mistake", "after first mistake"], y=[_clean(p["before"]), _clean(p["after"])],
                    name=name, marker_color=c, legendgroup=name, showlegend=False, row=1, col=2,
                    text=[f"{v:.0%}" if _clean(v) is not None else "n/a" for v in (p["before"], p["after"])],
                    textposition="outside")
    fig.update_yaxes(range=[0, 1.05], title_text="column error rate", row=1, col=1)
    fig.update_yaxes(range=[0, 1.12], row=1, col=2)
    fig.update_layout(barmode="group")
    return _layout(fig, title, height=420)


def grouped_bars(values: dict[str, dict[str, float]], title: str, y_title: str, y_range=None,
                 pct: bool = False, log_y: bool = False) -> go.Figure:
    """{series: {category: value}} as grouped bars."""
    fig = go.Figure()
    for i, (name, by) in enumerate(values.items()):
        ys = [_clean(v) for v in by.values()]
        fig.add_bar(x=list(by), y=ys, name=name, marker_color=colour(name, i),
                    text=[("n/a" if v is None else f"{v:.0%}" if pct else f"{v:.3g}") for v in ys],
                    textposition="outside")
    fig.update_layout(barmode="group", yaxis_title=y_title)
    if log_y:
        fig.update_yaxes(type="log")
    if y_range:
        fig.update_yaxes(range=list(y_range))
    return _layout(fig, title)


# --- 03: sparse credit ----------------------------------------------------------------------
def credit_bars(audits: dict[str, dict], note_opd: bool = True,
                title: str = "Where credit lands: GRPO's one reward per rollout") -> go.Figure:
    cats = {"zero-advantage groups": "zero_adv_frac", "tokens that receive credit": "credited_token_frac",
            "blamed tokens that were correct steps": "blamed_correct_frac"}
    vals = {name: {c: a.get(k) for c, k in cats.items()} for name, a in audits.items()}
    fig = grouped_bars(vals, title, "fraction", y_range=[0, 1.15], pct=True)
    if note_opd:
        fig.add_annotation(text="OPD: every sampled token gets its own teacher reward (credited fraction = 100%)",
                           xref="paper", yref="paper", x=0, y=1.08, showarrow=False, align="left")
    return fig


# --- 04: OPD ------------------------------------------------------------------------------
def reward_by_position(buckets: dict[str, dict], title: str = "Teacher token reward log q − log p by position") -> go.Figure:
    cats = {"correct samples": "correct_samples", "before first mistake": "before", "at first mistake": "at",
            "after first mistake": "after"}
    vals = {name: {c: b.get(k) for c, k in cats.items()} for name, b in buckets.items()}
    fig = grouped_bars(vals, title, "mean token reward (nats)")
    fig.add_hline(y=0, line_color="#888")
    return fig


def estimator_figure(result: dict, title: str = "OPD estimators at the initial student: gradient variance") -> go.Figure:
    names = list(result)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("variance of a minibatch gradient (log scale)",
                                                        "cosine of mean gradient to full-vocabulary KL"))
    fig.add_bar(x=names, y=[result[n]["variance"] for n in names], marker_color=[PALETTE[i] for i in range(len(names))],
                text=[f"{result[n]['variance']:.3g}" for n in names], textposition="outside", showlegend=False,
                row=1, col=1)
    fig.add_bar(x=names, y=[result[n].get("cosine_to_full_kl") for n in names],
                marker_color=[PALETTE[i] for i in range(len(names))], showlegend=False,
                text=[f"{result[n].get('cosine_to_full_kl', float('nan')):.2f}" for n in names], textposition="outside",
                row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(range=[-0.1, 1.15], row=1, col=2)
    return _layout(fig, title, height=400)


def entropy_figure(ent: dict[str, dict], title: str = "Entropy at the student's own prefixes (nats per token)") -> go.Figure:
    vals = {"student": {n: e["student_entropy"] for n, e in ent.items()},
            "teacher (same prefixes)": {n: e["teacher_entropy"] for n, e in ent.items()}}
    return grouped_bars(vals, title, "mean entropy (nats)")


# --- 05: costs -------------------------------------------------------------------------------
def two_by_two(evals: dict[str, list[dict]], corners: dict[str, tuple[int, int]], teacher_accuracy: float | None,
               x: str = "student_tokens", title: str = "The 2x2: data source x signal density, same student-token budget") -> go.Figure:
    """One panel per corner; `corners` maps run name -> (row, col) with row 1 = off-policy, col 1 = dense."""
    names = {(1, 1): "off-policy · dense", (1, 2): "off-policy · sparse", (2, 1): "on-policy · dense",
             (2, 2): "on-policy · sparse"}
    by_cell = {rc: run for run, rc in corners.items()}
    titles = [f"{names[rc]}: {by_cell.get(rc, '—')}" for rc in ((1, 1), (1, 2), (2, 1), (2, 2))]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, shared_xaxes=True, shared_yaxes=True,
                        vertical_spacing=0.12, horizontal_spacing=0.06)
    for i, (run, (r, c)) in enumerate(corners.items()):
        curve = evals.get(run, [])
        fig.add_scatter(x=[p[x] for p in curve], y=[p["eval/accuracy"] for p in curve], mode="lines+markers",
                        name=run, line=dict(color=colour(run, i), width=2), row=r, col=c)
        if teacher_accuracy is not None:
            fig.add_hline(y=teacher_accuracy, line_dash="dot", line_color="#444", row=r, col=c)
            fig.add_hline(y=0.9 * teacher_accuracy, line_dash="dash", line_color="#aaa", row=r, col=c)
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_xaxes(title_text="student tokens", row=2, col=1)
    fig.update_xaxes(title_text="student tokens", row=2, col=2)
    fig.update_yaxes(title_text="held-out accuracy", row=1, col=1)
    fig.update_yaxes(title_text="held-out accuracy", row=2, col=1)
    return _layout(fig, title + "<br><sup>dotted: teacher accuracy; dashed: 90% of it</sup>", height=560)


def cost_bars(rows: list[dict], title: str = "Cost to reach 90% of the teacher's accuracy") -> go.Figure:
    cols = [("student_tokens_to_target", "student tokens"), ("teacher_tokens_to_target", "teacher tokens"),
            ("flops_to_target", "FLOPs"), ("train_s_to_target", "training seconds")]
    fig = make_subplots(rows=1, cols=4, subplot_titles=[c[1] for c in cols])
    for j, (key, _) in enumerate(cols, start=1):
        xs = [r["run"] for r in rows]
        ys = [r.get(key) for r in rows]
        fig.add_bar(x=xs, y=[0 if v is None else v for v in ys], showlegend=False,
                    marker_color=[colour(x, i) for i, x in enumerate(xs)],
                    text=["never" if v is None else f"{v:.3g}" for v in ys], textposition="outside", row=1, col=j)
    return _layout(fig, title + "<br><sup>'never' = did not reach the target within the budget</sup>", height=400)


# --- 06-08: failure modes -------------------------------------------------------------------
def reward_histogram_figure(hists: dict[str, dict], title: str = "Per-token teacher reward log q − log p (share of tokens per bin)") -> go.Figure:
    """{name: workbench.analysis.reward_histogram(...)} as grouped bars over the same bins."""
    fig = go.Figure()
    for i, (name, h) in enumerate(hists.items()):
        e, n = h["edges"], max(1, h["n"])
        labels = [f"[{a:g}, {b:g})" for a, b in zip(e[:-1], e[1:])]
        fig.add_bar(x=labels, y=[c / n for c in h["counts"]], name=f"{name} (n={h['n']})", marker_color=colour(name, i))
    fig.update_layout(barmode="group", xaxis_title="reward bin (nats; ends are open)", yaxis_title="share of tokens")
    fig.update_yaxes(type="log")
    return _layout(fig, title)


# --- 00 / 05: a comparison over seeds ---------------------------------------------------------
def seed_curves(evals: dict[str, list[dict]], x: str = "student_tokens", target: float | None = None,
                teacher_accuracy: float | None = None, title: str | None = None) -> go.Figure:
    """Every seed of every method ("method/seedN" runs): one colour and one legend entry per method."""
    fig = go.Figure()
    methods = []
    for run in evals:
        m = run.split("/")[0]
        if m not in methods:
            methods.append(m)
    for run, curve in evals.items():
        m = run.split("/")[0]
        pts = [c for c in curve if c.get("eval/accuracy") is not None]
        first = next(r for r in evals if r.split("/")[0] == m) == run
        fig.add_scatter(x=[c[x] for c in pts], y=[c["eval/accuracy"] for c in pts], mode="lines+markers",
                        name=m, legendgroup=m, showlegend=first, hovertext=run,
                        line=dict(color=colour(m, methods.index(m)), width=1.5), marker=dict(size=4))
    if teacher_accuracy is not None:
        fig.add_hline(y=teacher_accuracy, line_color="#444", line_dash="dot",
                      annotation_text=f"teacher {teacher_accuracy:.3f}", annotation_position="bottom right")
    if target is not None:
        fig.add_hline(y=target, line_color="#999", line_dash="dash", annotation_text=f"target {target:.3f}",
                      annotation_position="top left")
    labels = {"student_tokens": "student tokens processed", "flops": "FLOPs (2N forward, 6N forward+backward)",
              "train_s": "training time (s, no eval)", "step": "step"}
    ys = [c["eval/accuracy"] for cs in evals.values() for c in cs if c.get("eval/accuracy") is not None]
    lo = min(ys + [target or 1.0]) if ys else 0.0
    fig.update_layout(xaxis_title=labels.get(x, x),
                      yaxis=dict(range=[max(0.0, lo - 0.03), 1.01], title="held-out greedy accuracy"))
    return _layout(fig, title or f"Held-out accuracy vs {labels.get(x, x)}: every seed")
