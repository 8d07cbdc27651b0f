"""Claims that a run checks, and the `results.json` a notebook leaves behind.

A notebook's prose explains a mechanism; every sentence about what *this* run
showed is printed from measured numbers instead:

    claims = Claims(size)                     # size "smoke" -> nothing is evaluated
    claims("OPD needs fewer student tokens than GRPO to reach 90% of the teacher",
           holds=opd_tokens < grpo_tokens, evidence={"OPD": opd_tokens, "GRPO": grpo_tokens})

prints one of

    ✓ shown in this run: OPD needs fewer ... [OPD=1.2e+05, GRPO=never]
    ✗ NOT shown in this run: OPD needs fewer ... [OPD=..., GRPO=...]
    · not evaluated at size=smoke (too small to mean anything): OPD needs ... [measured: ...]

and keeps it for `write_results`. A claim with `holds=None` is reported as
"could not be measured" (e.g. a method never reached the target).

A *check* (`claims.check(...)`) is printed and kept apart: something that holds by construction or
by identity (E[r] = -KL <= 0, a refusal of the mismatch built to be refused). It guards the run,
it is not evidence for the literature, and it is not counted among the claims.

`results/<notebook>.json` are the committed results.json files of full-size runs; docs/results.md
is generated from them (`python -m widgets.notebooks results --committed`), and
`python -m workbench.claims check FRESH_DIR` compares a fresh full-size run's verdicts with them
(`make claims`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch

EVALUATED_SIZES = ("full",)


def _plain(v):
    """JSON-safe copy: numpy/torch scalars -> Python, NaN/inf -> None, dataclasses -> dicts."""
    if is_dataclass(v) and not isinstance(v, type):
        return _plain(asdict(v))
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 0) == 0:
        v = v.item()
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Path):
        return str(v)
    try:
        f = float(v)
        return f if math.isfinite(f) else None
    except (TypeError, ValueError):
        return str(v)


def fmt(v) -> str:
    """Compact number formatting for evidence: 0.734, 1.2e+05, 12, 'never'."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e5 or a < 1e-3:
            return f"{v:.3g}"
        if a >= 100:
            return f"{v:.0f}"
        return f"{v:.3f}" if a < 10 else f"{v:.2f}"
    return str(v)


def fmt_evidence(evidence: dict | None) -> str:
    if not evidence:
        return ""
    return ", ".join(f"{k}={fmt(v)}" for k, v in evidence.items())


class Claims:
    """Collects claims; prints each with its evidence. Call the object (or `.claim`) to add one."""

    def __init__(self, size: str, evaluated_sizes=EVALUATED_SIZES, echo=print):
        self.size = size
        self.evaluate = size in evaluated_sizes
        self.items: list[dict] = []
        self.checks: list[dict] = []
        self._echo = echo

    def check(self, text: str, holds: bool, evidence: dict | None = None) -> None:
        """A sanity check (holds by construction or identity): printed, kept apart, never counted as a claim."""
        holds = bool(holds)
        item = {"text": text, "holds": holds, "status": "check_passed" if holds else "check_FAILED",
                "evidence": _plain(evidence or {})}
        self.checks.append(item)
        if self._echo is not None:
            ev = fmt_evidence(evidence)
            self._echo(f"{'☑' if holds else '☒'} check {'passed' if holds else 'FAILED'}: {text}"
                       + (f"  [{ev}]" if ev else ""))

    def claim(self, text: str, holds: bool | None, evidence: dict | None = None, *,
              source: str | None = None) -> dict:
        """Record and print one claim. `holds=None`: the quantity could not be measured in this run.

        `source` names where the claim comes from in the literature (e.g. "Qwen3 report, Table 21").
        """
        holds = None if holds is None else bool(holds)
        ev = fmt_evidence(evidence)
        if not self.evaluate:
            status = "not_evaluated"
            line = (f"· not evaluated at size={self.size} (too small to mean anything): {text}"
                    + (f"  [measured: {ev}]" if ev else ""))
        elif holds is None:
            status = "not_measured"
            line = f"? could not be measured in this run: {text}" + (f"  [{ev}]" if ev else "")
        elif holds:
            status = "shown"
            line = f"✓ shown in this run: {text}" + (f"  [{ev}]" if ev else "")
        else:
            status = "not_shown"
            line = f"✗ NOT shown in this run: {text}" + (f"  [{ev}]" if ev else "")
        item = {"text": text, "holds": holds, "status": status, "evidence": _plain(evidence or {}),
                "source": source}
        self.items.append(item)
        if self._echo is not None:
            self._echo(line)
        return item

    def __call__(self, text: str, holds: bool | None, evidence: dict | None = None, *,
                 source: str | None = None) -> None:
        """Same as `claim`, returning nothing (so a notebook cell ending with a claim shows no dict)."""
        self.claim(text, holds, evidence, source=source)

    def counts(self) -> dict:
        out = {"shown": 0, "not_shown": 0, "not_measured": 0, "not_evaluated": 0}
        for it in self.items:
            out[it["status"]] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        if not self.evaluate:
            return f"{len(self.items)} claims, not evaluated at size={self.size}"
        return (f"{c['shown']} of {len(self.items)} claims shown in this run, {c['not_shown']} not shown"
                + (f", {c['not_measured']} not measurable" if c["not_measured"] else ""))


def write_results(run_dir, notebook: str, size: str, numbers: dict, claims: Claims | None = None,
                  config: dict | None = None, started: float | None = None, device: str | None = None) -> Path:
    """Write `run_dir/results.json`: measured numbers, claims, size, config and the machine.

    `started` is a `time.time()` from the notebook's first cell (wall time covers the notebook's cells).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "notebook": notebook, "size": size,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "wall_s": round(time.time() - started, 1) if started else None,
        "machine": {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
        "numbers": _plain(numbers),
        "claims": claims.items if claims is not None else [],
        "checks": claims.checks if claims is not None else [],
        "claims_summary": claims.summary() if claims is not None else "",
        "config": _plain(config or {}),
    }
    path = run_dir / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# committed results and a fresh run's verdicts against them (`make claims`)
# ---------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "results"


def load_results(results_dir=RESULTS_DIR) -> list[dict]:
    """Every committed `results/<notebook>.json` (a notebook's results.json from a full-size run), by name."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(results_dir).glob("*.json"))]


def verdict_differences(fresh_dir, results_dir=RESULTS_DIR) -> list[str]:
    """Claims whose verdict in a fresh run (`fresh_dir/<notebook>/results.json`) differs from the committed one."""
    diffs = []
    for doc in load_results(results_dir):
        p = Path(fresh_dir) / doc["notebook"] / "results.json"
        if not p.exists():
            diffs.append(f"{doc['notebook']}: no fresh results.json at {p}")
            continue
        fresh = json.loads(p.read_text(encoding="utf-8"))
        if fresh.get("size") != doc.get("size"):
            diffs.append(f"{doc['notebook']}: fresh run is size {fresh.get('size')!r}, committed {doc.get('size')!r}")
        new = {c["text"]: c["status"] for c in fresh.get("claims", [])}
        for c in doc.get("claims", []):
            if new.get(c["text"]) != c["status"]:
                diffs.append(f"{doc['notebook']}: {c['text']!r}: committed {c['status']}, fresh {new.get(c['text'])}")
    return diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workbench.claims",
                                 description="Compare a fresh full-size run's verdicts with the committed results/*.json, "
                                             "or commit a fresh run's results.json files.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare FRESH_DIR/<notebook>/results.json verdicts with the committed ones")
    c.add_argument("fresh_dir")
    k = sub.add_parser("commit", help="copy FRESH_DIR/<notebook>/results.json into results/ (full size only)")
    k.add_argument("fresh_dir")
    k.add_argument("notebooks", nargs="+")
    ns = ap.parse_args(argv)
    if ns.cmd == "commit":
        RESULTS_DIR.mkdir(exist_ok=True)
        for nb in ns.notebooks:
            src = Path(ns.fresh_dir) / nb / "results.json"
            doc = json.loads(src.read_text(encoding="utf-8"))
            if doc.get("size") != "full":
                raise SystemExit(f"{src} is a size={doc.get('size')!r} run; only full-size results are committed")
            shutil.copyfile(src, RESULTS_DIR / f"{nb}.json")
        print(f"copied {len(ns.notebooks)} result(s) into {RESULTS_DIR}; now regenerate docs/results.md with "
              "`python -m widgets.notebooks results --committed`")
        return 0
    diffs = verdict_differences(ns.fresh_dir)
    for d in diffs:
        print(d)
    print(f"{len(load_results())} committed notebook result(s); {len(diffs)} verdict difference(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
