"""Execute the workbench notebooks headlessly (papermill), from their paired `.py:percent` sources.

    python -m widgets.notebooks run 00_quickstart --out runs/demo            # full size (make demo)
    python -m widgets.notebooks run 04_on_policy_distillation --size smoke
    python -m widgets.notebooks list

Notebooks are kept in git as jupytext percent files (`notebooks/NN_name.py`),
without outputs; this builds the `.ipynb`, injects `size`, `run_dir` and
`mode="static"` (final figures as static plotly output), executes it with a
timeout, and reports where the executed notebook and the saved figures are.
"""
from __future__ import annotations

import argparse
import sys
import time
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


def run(name: str, out: str | Path, size: str = "full", timeout_s: int = 1800, extra: dict | None = None,
        log_output: bool = False) -> Path:
    """Execute one notebook into `out/NAME.ipynb`; its figures go under `out/` too (run_dir)."""
    import papermill as pm
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src = build_ipynb(name, out / f".{name}.input.ipynb")
    dst = out / f"{name}.ipynb"
    params = {"size": size, "run_dir": str(out / name), "mode": "static", **(extra or {})}
    pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3", cwd=str(NOTEBOOK_DIR),
                        execution_timeout=timeout_s, progress_bar=False, log_output=log_output)
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
    r.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    sub.add_parser("list")
    ns = p.parse_args(argv)
    if ns.cmd == "list":
        print("\n".join(notebook_names()))
        return 0
    names = notebook_names() if ns.names == ["all"] else ns.names
    for name in names:
        t0 = time.time()
        print(f"executing {name} (size={ns.size}) ...", flush=True)
        dst = run(name, ns.out, size=ns.size, timeout_s=ns.timeout, log_output=True)
        figs = sorted((Path(ns.out) / name).glob("**/*.html")) if (Path(ns.out) / name).exists() else []
        print(f"done in {time.time() - t0:.0f}s\n  executed notebook: {dst}", flush=True)
        for f in figs:
            print(f"  figure: {f.resolve()}")
        if not figs:
            print(f"  (no HTML figures under {Path(ns.out) / name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
