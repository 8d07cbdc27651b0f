"""The live dashboard in a real JupyterLab, driven by Playwright + Debian's chromium.

Needs: apt package `chromium` (/usr/bin/chromium), python packages jupyterlab,
ipywidgets, plotly, playwright. Never runs `playwright install` (no downloads here).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FIXTURES = Path(__file__).parent / "notebooks_fixtures"
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
TOTAL_STEPS = 2000
SLEEP_S = 1.5     # a step longer than the 1 s Stop must be acknowledged in: heard mid-step, not between steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


@contextlib.contextmanager
def _jupyterlab(tmp_path, root, *args):
    """JupyterLab on 127.0.0.1:<free port>, empty token, root_dir = root; killed by PID."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    pytest.importorskip("playwright.sync_api")
    pytest.importorskip("jupyterlab")
    port = _free_port()
    env = dict(os.environ)
    for var, sub in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("JUPYTER_CONFIG_DIR", "config")):
        env[var] = str(tmp_path / sub)
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
         "--ServerApp.open_browser=False", "--LabApp.news_url=", "--allow-root", *args],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status", 90, proc)
        yield {"url": f"http://127.0.0.1:{port}", "root": root, "log": tmp_path / "lab.log"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)   # the server and the kernels it started
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving the live-dashboard fixture notebook."""
    root = tmp_path / "nb"
    root.mkdir()
    shutil.copy(FIXTURES / "synthetic_records.py", root)
    nb = json.loads((FIXTURES / "dashboard_live.ipynb").read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = (f"total_steps = {TOTAL_STEPS}\nsleep_s = {SLEEP_S}\n"
                              f"repo_root = {str(REPO)!r}\nfixtures_dir = '.'")
    (root / "dashboard_live.ipynb").write_text(json.dumps(nb))
    with _jupyterlab(tmp_path, root) as info:
        yield info


PLOTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
    traces: (el.data || []).map(t => ({type: t.type, meta: t.meta || null,
                                       n: (t.x || []).length, text: t.type === 'heatmap' ? t.text : null})),
    svgText: (el.querySelector('.heatmaplayer') || {textContent: ''}).textContent
}))"""


LENGTH_N_JS = ("el => Math.max(0, ...(el.data || []).filter(t => t.meta && t.meta.key === 'rollout/mean_length')"
               ".map(t => t.x.length))")


def _plots(page):
    return page.evaluate(PLOTS_JS)


def _length_points(plots, run: str = "opd") -> int:
    return max([t["n"] for p in plots for t in p["traces"]
                if (t["meta"] or {}).get("key") == "rollout/mean_length" and t["meta"].get("run") == run] or [0])


def _wait_kernel_idle(page, timeout: float = 90) -> None:
    """Wait until the notebook's kernel is idle, accepting a "Select Kernel" dialog if one shows."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
        if accept.count():
            accept.first.click()
        elif page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count():
            page.wait_for_timeout(500)
            if not page.locator(".jp-Dialog").count():
                return
        page.wait_for_timeout(300)
    raise TimeoutError("the kernel did not become idle")


def _run_all_cells(page, tries: int = 4) -> None:
    """Run > Run All Cells, retried until a cell shows it is executing or has run.

    Right after the kernel turns idle, JupyterLab sometimes ignores the menu command (seen on a fresh
    virtual environment under load: every prompt stayed "[ ]"); a click that took effect shows "[*]"
    or an execution count on some cell within seconds.
    """
    started = ("() => Array.from(document.querySelectorAll('.jp-InputArea-prompt'))"
               ".some(el => /\\[(\\*|\\d+)\\]/.test(el.textContent))")
    for _ in range(tries):
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        try:
            page.wait_for_function(started, timeout=15_000)
            return
        except Exception:
            page.keyboard.press("Escape")
            _wait_kernel_idle(page)
    raise TimeoutError(f"Run All Cells did not start execution after {tries} tries")


def test_live_dashboard_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    result_file = lab["root"] / "browser_result.json"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"{lab['url']}/lab/tree/dashboard_live.ipynb", wait_until="domcontentloaded")
            _wait_kernel_idle(page)
            _run_all_cells(page)

            # plots appear and the rollout-length series grows while training runs
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".some(el => (el.data || []).some(t => t.meta && t.meta.key === 'rollout/mean_length'"
                " && t.meta.run === 'opd'))", timeout=90_000)
            seen = [_length_points(_plots(page))]
            for _ in range(2):
                time.sleep(max(2.5, 1.5 * SLEEP_S))
                seen.append(_length_points(_plots(page)))
            assert not result_file.exists(), "training ended before it could be watched"
            assert seen[0] > 0 and seen[1] > seen[0] and seen[2] > seen[1], seen

            # the kernel says busy mid-run: JupyterLab's status bar and the server's kernel state
            kernels = json.loads(urllib.request.urlopen(f"{lab['url']}/api/kernels", timeout=5).read())
            assert [k["execution_state"] for k in kernels] == ["busy"], kernels
            status_bar = page.locator(".jp-StatusBar-Widget").first.text_content()
            assert "Busy" in status_bar and "Idle" not in status_bar, status_bar

            # SFT (the cell before): its heatmap shows the student's own samples, labelled so
            sft_heat = [t for p_ in _plots(page) for t in p_["traces"] if t["type"] == "heatmap"
                        and (t["meta"] or {}).get("run") == "sft"]
            assert sft_heat and "student's own samples" in sft_heat[-1]["meta"]["whose"], sft_heat[:1]
            page.locator(".js-plotly-plot").nth(1).screenshot(path=str(ARTIFACTS / "dashboard_sft_heatmap.png"))

            # a drag-zoom on the length panel survives the next redraws (Plotly.react keeps uirevision)
            curves = page.locator(".js-plotly-plot").nth(2)      # the OPD cell's curves (after SFT's two)
            drag = curves.locator(".nsewdrag[data-subplot='xy']")
            drag.scroll_into_view_if_needed()
            box = drag.bounding_box()
            y0 = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + box["width"] * 0.2, y0)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.5, y0, steps=8)
            page.mouse.up()
            zoomed = curves.evaluate("el => el.layout.xaxis.range.slice()")
            assert curves.evaluate("el => el.layout.xaxis.autorange") is False
            n0 = curves.evaluate(LENGTH_N_JS)
            for _ in range(2):
                page.wait_for_function(f"el => ({LENGTH_N_JS})(el) > {n0}", arg=curves.element_handle(),
                                       timeout=10_000)
                n0 = curves.evaluate(LENGTH_N_JS)
                time.sleep(0.2)
            assert curves.evaluate("el => el.layout.xaxis.range.slice()") == pytest.approx(zoomed), zoomed
            assert not result_file.exists(), "training ended before the zoom could be checked"
            page.screenshot(path=str(ARTIFACTS / "dashboard_zoomed.png"), full_page=False)

            # the heatmap shows token text
            plots = _plots(page)
            heat = [p_ for p_ in plots if any(t["type"] == "heatmap" for t in p_["traces"])]
            assert heat, "no heatmap rendered"
            cells = [x for t in heat[-1]["traces"] if t["type"] == "heatmap" for row in t["text"] for x in row if x]
            assert "<eos>" in cells and len(cells) > 20
            assert any(tok in heat[-1]["svgText"] for tok in ("␣", "↵", "<eos>", "+", "=")), heat[-1]["svgText"][:200]

            # Stop, clicked while the training cell runs, ends training after the current step
            stop = page.locator(".jupyter-widgets button:has-text('Stop')").first
            # every change of the button, timed in the page (the run may end, and re-arm it, quickly)
            stop.evaluate("""b => { window.__stopLog = []; window.__clickT = null;
                b.addEventListener('click', () => { window.__clickT = performance.now(); }, true);
                new MutationObserver(() => window.__stopLog.push(
                    {t: performance.now(), text: b.textContent, disabled: b.disabled}))
                  .observe(b, {subtree: true, childList: true, characterData: true, attributes: true}); }""")
            stop.click()
            page.wait_for_function("() => window.__stopLog.some(e => e.disabled)", timeout=10_000)
            stop.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "dashboard_stopping.png"))
            log = page.evaluate("() => ({click: window.__clickT, log: window.__stopLog})")
            ack = [e for e in log["log"] if e["disabled"] and re.search(r"stopping after step \d+", e["text"])]
            # acknowledged within a second (steps take SLEEP_S): disabled, and says after which step it ends
            assert ack and ack[0]["t"] - log["click"] < 1000, log
            stop_after = int(re.search(r"stopping after step (\d+)", ack[0]["text"]).group(1))
            deadline = time.monotonic() + 60
            while not result_file.exists() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert result_file.exists(), "the notebook did not finish after Stop (see lab.log)"
            res = json.loads(result_file.read_text())
            assert res["summary"]["reason"] == "stopped" and res["end_state"] == "stopped by you", res
            assert res["summary"]["step"] < TOTAL_STEPS // 2, res
            assert res["summary"]["step"] == stop_after, (res, stop_after)
            assert res["pump"] == "ok" and res["error"] is None, res
            print("dashboard overhead in the browser run:", res["overhead"])

            # the final redraw has the last step; then a screenshot for people to look at
            page.wait_for_function(
                "n => Array.from(document.querySelectorAll('.js-plotly-plot')).some(el => (el.data || [])"
                ".some(t => t.meta && t.meta.key === 'rollout/mean_length' && t.x[t.x.length - 1] === n))",
                arg=res["summary"]["step"], timeout=30_000)
            no_news = page.locator(".jp-Notification-Toast button:has-text('No')")
            if no_news.count():       # JupyterLab's "news?" toast would cover the output
                no_news.first.click()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=False)
            assert not page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count()
        except BaseException:
            try:
                page.screenshot(path=str(ARTIFACTS / "dashboard_failure.png"), full_page=True)
                print("lab.log tail:\n", lab["log"].read_text()[-3000:])
            except Exception:
                pass
            raise
        finally:
            browser.close()


def test_double_click_opens_a_paired_notebook_as_a_notebook(tmp_path):
    """The settings `make setup` installs (<venv>/share/jupyter/lab/settings/overrides.json) make a
    double-click on notebooks/*.py open the notebook view, not the text editor."""
    from playwright.sync_api import sync_playwright

    root = tmp_path / "nb"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "00_quickstart.py", root)
    shutil.copy(REPO / "jupytext.toml", root)
    app_settings = tmp_path / "app_settings"      # where the venv's JupyterLab reads overrides.json
    app_settings.mkdir()
    shutil.copy(REPO / "widgets" / "lab_overrides.json", app_settings / "overrides.json")
    ARTIFACTS.mkdir(exist_ok=True)
    with _jupyterlab(tmp_path, root, f"--LabApp.app_settings_dir={app_settings}") as lab_, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--headless=new", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{lab_['url']}/lab", wait_until="domcontentloaded")
            item = page.locator(".jp-DirListing-item:has-text('00_quickstart.py')")
            item.wait_for(timeout=60_000)
            item.dblclick()
            page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "double_click_notebook.png"))
            # the notebook view: the quickstart's cells (markdown and code), no text editor
            cells = page.locator(".jp-NotebookPanel .jp-Cell")
            assert cells.count() > 3
            assert "Quickstart" in page.locator(".jp-NotebookPanel").first.text_content()
            assert page.locator(".jp-FileEditor:visible").count() == 0
            # saving it unchanged leaves the tracked file as it was (jupytext.toml)
            before = (root / "00_quickstart.py").stat().st_mtime_ns
            page.locator(".jp-NotebookPanel .jp-Cell").first.click()
            page.keyboard.press("Control+s")
            deadline = time.monotonic() + 20
            while (root / "00_quickstart.py").stat().st_mtime_ns == before and time.monotonic() < deadline:
                time.sleep(0.3)
            assert (root / "00_quickstart.py").stat().st_mtime_ns != before, "the save did not happen"
            time.sleep(0.5)
            assert (root / "00_quickstart.py").read_text() == (REPO / "notebooks" / "00_quickstart.py").read_text()
        finally:
            browser.close()
