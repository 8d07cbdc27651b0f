"""Execute the workbench notebooks headlessly (papermill), from their paired `.py:percent` sources.

    python -m widgets.notebooks run 00_quickstart --out runs/demo            # full size (make demo)
    python -m widgets.notebooks run 04_on_policy_distillation --size smoke
    python -m widgets.notebooks list

Notebooks are kept in git as jupytext percent files (`notebooks/NN_name.py`),
without outputs; this builds the `.ipynb`, injects `size`, `run_dir` and
`mode="static"` (final figures as static plotly output), executes it, and
reports where the executed notebook and the saved figures are.

While it runs, the terminal gets a progress line at least every `--progress-every`
seconds (default 30): per training run, steps done, elapsed time and an ETA, read
from the JSON lines the notebook's dashboards append to $OPD_WORKBENCH_PROGRESS
(set here for the kernel); a heartbeat when no step finished since the last line.
There is no per-cell timeout unless `--timeout` asks for one: a busy machine is slow,
not broken.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_names() -> list[str]:
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


def source_path(name: str) -> Path:
    p = NOTEBOOK_DIR / f"{name}.py"
    if not p.exists():
        raise FileNotFoundError(f"no notebook {name!r} in {NOTEBOOK_DIR}; choose one of {notebook_names()}")
    return p


def build_ipynb(name: str, dest: Path) -> Path:
    """Convert the percent-format source into an .ipynb (no outputs) with kernelspec metadata."""
    import jupytext
    nb = jupytext.read(source_path(name))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    dest.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, dest, fmt="ipynb")
    return dest


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class ProgressReporter:
    """Tail the progress file a notebook's dashboards append to, and print what changed every `every_s` seconds
    (a heartbeat line when nothing did): one line per training run with steps done, elapsed and ETA."""

    def __init__(self, path: Path, label: str, every_s: float = 30.0, print_fn=print):
        self.path, self.label, self.every_s, self.print = Path(path), label, every_s, print_fn
        self.runs: dict[str, dict] = {}
        self._pos, self._t0 = 0, time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self.path.write_text("", encoding="utf-8")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.report()
        self.path.unlink(missing_ok=True)

    def _loop(self):
        while not self._done.wait(self.every_s):
            self.report()

    def _read(self) -> set:
        changed = set()
        try:
            with open(self.path, encoding="utf-8") as f:
                f.seek(self._pos)
                chunk = f.read()
        except OSError:
            return changed
        complete = chunk[:chunk.rfind("\n") + 1]          # a line still being written waits for the next read
        self._pos += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            st = self.runs.setdefault(ev.get("run", "run"), {})
            st.update({k: v for k, v in ev.items() if v is not None})
            changed.add(ev.get("run", "run"))
        return changed

    def line(self, run: str) -> str:
        st = self.runs[run]
        step, total, el = st.get("step") or 0, st.get("total"), st.get("elapsed")
        parts = [f"{run}: step {step}" + (f"/{total}" if total else "")]
        if el is not None:
            parts.append(f"{_fmt_s(el)} elapsed")
        if st.get("event") == "end":
            parts.append(f"ended ({st.get('reason', 'done')})")
        elif el is not None and step and total:
            parts.append(f"ETA {_fmt_s(el / step * (total - step))}")
        return ", ".join(parts)

    def report(self) -> None:
        changed = self._read()
        head = f"[{self.label} {_fmt_s(time.monotonic() - self._t0)}]"
        if not changed:
            live = [r for r, st in self.runs.items() if st.get("event") != "end"]
            self.print(f"{head} still running; " + (f"no step finished in the last {self.every_s:.0f}s ({', '.join(live)})"
                                                    if live else "no training run in progress"), flush=True)
        for run in sorted(changed):
            self.print(f"{head} {self.line(run)}", flush=True)


def run(name: str, out: str | Path, size: str = "full", timeout_s: int | None = None, extra: dict | None = None,
        log_output: bool = False, progress_every: float | None = None, print_fn=print) -> Path:
    """Execute one notebook into `out/NAME.ipynb`; its figures go under `out/` too (run_dir).

    timeout_s: per-cell limit (None: none). progress_every: print training progress every so many seconds
    (None: quiet)."""
    import papermill as pm
    from .dashboard import PROGRESS_ENV
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src = build_ipynb(name, out / f".{name}.input.ipynb")
    dst = out / f"{name}.ipynb"
    params = {"size": size, "run_dir": str(out / name), "mode": "static", **(extra or {})}
    progress = out / f".{name}.progress.jsonl"
    saved = {k: os.environ.get(k) for k in (PROGRESS_ENV, "PYTHONPATH")}
    os.environ[PROGRESS_ENV] = str(progress)            # inherited by the kernel papermill starts
    # the kernel imports workbench/widgets from this checkout (not whichever one the venv was installed from)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(NOTEBOOK_DIR.parent)] + ([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else []))
    try:
        with ProgressReporter(progress, name, progress_every, print_fn) if progress_every else nullcontext():
            pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3", cwd=str(NOTEBOOK_DIR),
                                execution_timeout=timeout_s, progress_bar=False, log_output=log_output)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        progress.unlink(missing_ok=True)
    src.unlink(missing_ok=True)
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m widgets.notebooks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("names", nargs="+", help="notebook names (e.g. 00_quickstart) or 'all'")
    r.add_argument("--out", default="runs/notebooks")
    r.add_argument("--size", default="full", choices=["smoke", "full"])
    r.add_argument("--timeout", type=int, default=None,
                   help="seconds per cell (default: no limit; a slow machine just takes longer)")
    r.add_argument("--progress-every", type=float, default=30.0,
                   help="print training progress every so many seconds (default 30; 0: quiet)")
    sub.add_parser("list")
    res = sub.add_parser("results", help="render results.json files of executed notebooks as Markdown")
    res.add_argument("dirs", nargs="*", help="output folders of `run` (or results.json files)")
    res.add_argument("--committed", action="store_true",
                     help="write docs/results.md from the committed results/*.json")
    res.add_argument("--write", default=None, help="write the Markdown to this file (default: print it)")
    res.add_argument("--command", default=None, help="the command that produced the results (shown verbatim)")
    res.add_argument("--into", default=None, help="replace (or append) the generated section of this Markdown file")
    ns = p.parse_args(argv)
    if ns.cmd == "results":
        return results_main(ns)
    if ns.cmd == "list":
        print("\n".join(notebook_names()))
        return 0
    names = notebook_names() if ns.names == ["all"] else ns.names
    for name in names:
        t0 = time.time()
        print(f"executing {name} (size={ns.size}) ...", flush=True)
        try:
            dst = run(name, ns.out, size=ns.size, timeout_s=ns.timeout, log_output=True,
                      progress_every=ns.progress_every or None)
        except Exception as e:
            if "Timeout" not in type(e).__name__ and "timed out" not in str(e):
                raise
            print(f"{name}: a cell ran longer than --timeout {ns.timeout}s and was stopped ({type(e).__name__}). "
                  f"The machine may just be busy: rerun without --timeout (no limit) or with a larger one; the "
                  f"partial notebook is {Path(ns.out) / (name + '.ipynb')}", file=sys.stderr, flush=True)
            return 1
        figs = sorted((Path(ns.out) / name).glob("**/*.html")) if (Path(ns.out) / name).exists() else []
        print(f"done in {time.time() - t0:.0f}s\n  executed notebook: {dst}", flush=True)
        for f in figs:
            print(f"  figure: {f.resolve()}")
        if not figs:
            print(f"  (no HTML figures under {Path(ns.out) / name})")
    return 0


# ---- results.json -> Markdown (docs/results.md) ------------------------------------------------
def _fmt(v) -> str:
    from workbench.claims import fmt
    if isinstance(v, list):
        if len(v) > 12:
            return f"[{len(v)} values]"
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, str):
        return v.replace("|", "\\|")
    return fmt(v)


def _is_table(d) -> bool:
    """A dict of dicts with mostly scalar values: render as one table (rows = outer keys)."""
    return (isinstance(d, dict) and len(d) > 0 and all(isinstance(v, dict) for v in d.values())
            and all(any(not isinstance(x, (dict, list)) for x in v.values()) for v in d.values()))


def _table(d: dict, skip=("curve",)) -> list[str]:
    cols = []
    for v in d.values():
        for k, x in v.items():
            if k not in cols and k not in skip and not isinstance(x, (dict, list)):
                cols.append(k)
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, v in d.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(v.get(c)) for c in cols) + " |")
    return lines


def _flatten(d, prefix="") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not _is_table(v):
            out += _flatten(v, key + ".")
        elif not isinstance(v, dict):
            out.append((key, v))
    return out


def results_markdown(paths, command: str | None = None, title: str = "Measured results of the notebooks",
                     level: int = 1) -> str:
    """Markdown for docs/results.md from `results.json` files (or folders holding NAME/results.json).

    `level`: heading level of the title (notebooks get one level below it)."""
    h1, h2 = "#" * level, "#" * (level + 1)
    import json
    files = []
    for p in map(Path, paths):
        files += [p] if p.is_file() else sorted(p.glob("*/results.json"))
    docs = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    docs.sort(key=lambda d: d.get("notebook", ""))
    if not docs:
        raise FileNotFoundError(f"no results.json under {[str(p) for p in paths]}")
    sizes = sorted({d.get("size") for d in docs})
    lines = [f"{h1} {title}", "",
             "Every number below was computed by the notebook named in its heading, at the size shown, and",
             "written to `results.json` in its run directory; nothing here is typed by hand. Claims marked",
             "✓ held in that run, ✗ did not; each lists the measured evidence next to it.", ""]
    if command:
        lines += ["Produced by:", "", "```bash", command, "```", ""]
    m = docs[0].get("machine", {})
    lines += [f"Size: {', '.join(map(str, sizes))}. Machine: {m.get('cpus')} CPUs, torch {m.get('torch')}, "
              f"device {m.get('device')}, {m.get('platform')}.", ""]
    # torch threads per notebook: seeded runs repeat only at the same thread count
    lines += ["| notebook | wall time (s) | torch threads | load avg at end | claims |", "|---|---|---|---|---|"]
    for d in docs:
        mm = d.get("machine") or {}
        lines.append(f"| {d['notebook']} | {_fmt(d.get('wall_s'))} | {mm.get('threads')} | {_fmt(mm.get('loadavg_1m'))} "
                     f"| {d.get('claims_summary', '')} |")
    lines.append("")
    mark = {"shown": "✓", "not_shown": "✗", "not_measured": "?", "not_evaluated": "·"}
    for d in docs:
        lines += [f"{h2} {d['notebook']}", "",
                  f"size `{d.get('size')}`, executed {d.get('created')}, {_fmt(d.get('wall_s'))} s of cells.", ""]
        if d.get("checks"):
            lines += ["**Checks** (hold by construction; guards, not evidence)", ""]
            lines += [f"- {'passed' if c.get('holds') else 'FAILED'}: {c['text']}" for c in d["checks"]]
            lines.append("")
        if d.get("claims"):
            lines += ["**Claims**", ""]
            for c in d["claims"]:
                ev = ", ".join(f"{k} = {_fmt(v)}" for k, v in (c.get("evidence") or {}).items())
                src = f" (source: {c['source']})" if c.get("source") else ""
                lines.append(f"- {mark.get(c.get('status'), '?')} {c['text']}{src}" + (f" — {ev}" if ev else ""))
            lines.append("")
        nums = {k: v for k, v in (d.get("numbers") or {}).items() if not k.startswith("_")}   # "_x": bulk data
        tables = {k: v for k, v in nums.items() if _is_table(v)}
        flat = _flatten({k: v for k, v in nums.items() if k not in tables})
        if flat:
            lines += ["**Numbers**", "", "| quantity | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in flat]
            lines.append("")
        for k, v in tables.items():
            lines += [f"**{k}**", ""] + _table(v) + [""]
        curves = (d.get("numbers") or {}).get("_curves")
        if curves:
            lines += ["**Curves** (held-out greedy accuracy at each evaluation; student tokens → accuracy)", ""]
            for run, pts in curves.items():
                pts = [p for p in pts if p.get("eval/accuracy") is not None]
                lines.append(f"- {run}: " + ", ".join(f"{p['student_tokens'] / 1000:.0f}k→{p['eval/accuracy']:.3f}"
                                                      for p in pts))
            lines.append("")
    return "\n".join(lines)


SECTION_BEGIN = "<!-- notebooks results: begin (generated by `python -m widgets.notebooks results`) -->"
SECTION_END = "<!-- notebooks results: end -->"


def write_results_section(path, text: str) -> None:
    """Put `text` between the section markers of an existing Markdown file (appended if absent)."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{SECTION_BEGIN}\n{text.rstrip()}\n{SECTION_END}\n"
    if SECTION_BEGIN in old and SECTION_END in old:
        head, rest = old.split(SECTION_BEGIN, 1)
        tail = rest.split(SECTION_END, 1)[1].lstrip("\n")
        new = head + block + ("\n" + tail if tail else "")
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block
    path.write_text(new, encoding="utf-8")


COMMITTED_COMMAND = ("python -m widgets.notebooks run NAME --size full --out DIR; "
                     "python -m workbench.claims commit DIR NAME; python -m widgets.notebooks results --committed")


def committed_results_markdown() -> str:
    """docs/results.md: the committed results/*.json rendered (tests/test_claims.py checks the file is exactly this)."""
    from workbench.claims import RESULTS_DIR
    return results_markdown(sorted(RESULTS_DIR.glob("*.json")), command=COMMITTED_COMMAND,
                            title="Results of the notebooks (generated from results/*.json)")


def results_main(ns) -> int:
    if ns.committed:
        from workbench.claims import REPO
        (REPO / "docs" / "results.md").write_text(committed_results_markdown(), encoding="utf-8")
        print("wrote docs/results.md from results/*.json")
        return 0
    if not ns.dirs:
        raise SystemExit("results: name output folders of `run` (or results.json files), or pass --committed")
    command = ns.command or ("python -m widgets.notebooks run all --size full --out " + " ".join(ns.dirs))
    if ns.into:
        write_results_section(ns.into, results_markdown(ns.dirs, command=command, level=2,
                                                        title="Notebooks: measured results of the last full execution"))
        print(f"updated the notebooks section of {ns.into}")
        return 0
    text = results_markdown(ns.dirs, command=command)
    if ns.write:
        Path(ns.write).write_text(text, encoding="utf-8")
        print(f"wrote {ns.write}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
