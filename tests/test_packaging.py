"""The install paths agree with pyproject.toml: Makefile (venv), environment.yml (conda), .ci/run (CI)."""
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _torch_req(reqs) -> Requirement:
    found = [Requirement(r) for r in reqs if Requirement(r).name == "torch"]
    assert len(found) == 1, reqs
    return found[0]


def _editable_extras(arg: str) -> tuple[str, set[str]]:
    """'.[dev]' -> ('.', {'dev'})"""
    m = re.fullmatch(r"""['"]?([^\[\]'"]+)(?:\[([^\]]*)\])?['"]?""", arg.strip())
    assert m, arg
    return m.group(1), {e.strip() for e in (m.group(2) or "").split(",") if e.strip()}


def test_pyproject_pins_torch_and_defines_dev(pyproject):
    torch = _torch_req(pyproject["project"]["dependencies"])
    assert str(torch.specifier).startswith("=="), "torch must be pinned to one release"
    extras = pyproject["project"]["optional-dependencies"]
    assert "dev" in extras
    dev = [Requirement(r) for r in extras["dev"]]
    assert "pytest" in {r.name for r in dev}
    # self-references (opd-workbench[notebooks]) name this project and extras that exist
    for r in dev:
        if r.name == pyproject["project"]["name"]:
            assert r.extras <= set(extras), r


def test_environment_yml_matches_pyproject(pyproject):
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["name"] == "opd-workbench"
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = [d for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1
    pip = pip[0]["pip"]
    torch_idx = [i for i, r in enumerate(pip) if not r.startswith("-") and Requirement(r).name == "torch"]
    edit_idx = [i for i, r in enumerate(pip) if r.startswith("-e ")]
    assert len(torch_idx) == 1 and len(edit_idx) == 1, pip
    assert Requirement(pip[torch_idx[0]]) == _torch_req(pyproject["project"]["dependencies"])
    assert torch_idx[0] < edit_idx[0], "torch is installed before the project"
    path, extras = _editable_extras(pip[edit_idx[0]][3:])
    assert path == "."
    assert extras == {"dev"} and extras <= set(pyproject["project"]["optional-dependencies"])


def _make_copy(tmp_path, venv=False, stamp_fresh=False) -> Path:
    """Makefile + pyproject in a scratch dir, optionally with a fake venv and set-up stamp."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    if venv:
        (tmp_path / ".venv" / "bin").mkdir(parents=True)
        py = tmp_path / ".venv" / "bin" / "python"
        py.write_text("#!/bin/sh\nexit 0\n")
        py.chmod(0o755)
        stamp = tmp_path / ".venv" / ".setup-stamp"
        stamp.write_text("")
        t = (tmp_path / "pyproject.toml").stat().st_mtime
        os.utime(stamp, (t + 10, t + 10) if stamp_fresh else (t - 10, t - 10))
    return tmp_path


def _clean_make_env() -> dict:
    """The environment without an outer make's variables: under `make test` a nested make would
    otherwise print "make[1]: Entering directory ..." lines and inherit the outer flags. EXTRAS goes too:
    .ci/run exports it for its own `make test`, and these tests read the Makefile's default."""
    return {k: v for k, v in os.environ.items()
            if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "EXTRAS")}


def _dry_run(cwd, *args, env: dict | None = None) -> list[str]:
    out = subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=cwd, capture_output=True, text=True,
                         check=True, env={**_clean_make_env(), **(env or {})})
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


@needs_make
def test_makefile_setup_installs_torch_pin_before_project(tmp_path, pyproject):
    cmds = _dry_run(_make_copy(tmp_path), "setup")
    assert cmds[0] == "python3 -m venv .venv"
    installs = [c for c in cmds if c.startswith(".venv/bin/pip install")]
    assert len(installs) == 2, cmds
    torch_args = shlex.split(installs[0])[2:]
    assert len(torch_args) == 1
    assert Requirement(torch_args[0]) == _torch_req(pyproject["project"]["dependencies"])
    edit_args = shlex.split(installs[1])[2:]
    assert edit_args[0] == "-e"
    path, extras = _editable_extras(edit_args[1])
    assert path == "." and extras == {"dev"}
    assert cmds.index(installs[0]) < cmds.index(installs[1])
    # what .ci/run asks for: the export extra on top, through the environment
    (tmp_path / "ci").mkdir()
    ci = [c for c in _dry_run(_make_copy(tmp_path / "ci"), "setup", env={"EXTRAS": "dev,export"})
          if c.startswith(".venv/bin/pip install -e")]
    assert _editable_extras(shlex.split(ci[0])[3])[1] == {"dev", "export"}
    kernel = [c for c in cmds if "ipykernel install" in c]
    assert len(kernel) == 1 and cmds.index(kernel[0]) > cmds.index(installs[1])
    assert shlex.split(kernel[0]) == [".venv/bin/python", "-m", "ipykernel", "install", "--sys-prefix", "--name",
                                      "python3", "--display-name", "Python 3 (opd-workbench)"]
    assert cmds[-1] == "touch .venv/.setup-stamp"
    # PYTHON is overridable
    assert _dry_run(tmp_path, "setup", "PYTHON=python3.12")[0] == "python3.12 -m venv .venv"


@needs_make
def test_makefile_stamp_skips_setup_until_pyproject_changes(tmp_path):
    d = _make_copy(tmp_path, venv=True, stamp_fresh=True)
    assert _dry_run(d, "test") == [".venv/bin/python -m pytest -q -p no:cacheprovider --durations=15"]
    assert _dry_run(d, "test-slow") == [".venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 -m slow"]
    assert _dry_run(d, "demo") == [".venv/bin/python -m widgets.notebooks run 00_quickstart --out runs/demo --size full"]
    assert _dry_run(d, "bench") == [".venv/bin/python -m benchmarks all --json"]
    assert _dry_run(d, "zoo") == [".venv/bin/python -m workbench zoo build"]
    # an existing venv is not re-created, but a newer pyproject.toml re-runs the installs
    (tmp_path / "stale").mkdir()
    stale = _dry_run(_make_copy(tmp_path / "stale", venv=True, stamp_fresh=False), "test")
    assert not any("-m venv" in c for c in stale)
    assert stale[0] == ".venv/bin/pip install torch==2.13.0" and stale[-1].startswith(".venv/bin/python -m pytest")


@needs_make
def test_makefile_has_all_targets(tmp_path):
    d = _make_copy(tmp_path, venv=True, stamp_fresh=True)
    for target in ("setup", "test", "test-slow", "demo", "bench", "zoo", "browser-deps", "clean"):
        subprocess.run(["make", "-n", target], cwd=d, capture_output=True, text=True, check=True,
                       env=_clean_make_env())


def _ci_lines():
    text = (REPO / ".ci" / "run").read_text()
    return text, [ln.split("#", 1)[0].strip() for ln in text.splitlines() if ln.split("#", 1)[0].strip()]


def test_ci_run_calls_make_test():
    text, lines = _ci_lines()
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
    assert os.access(REPO / ".ci" / "run", os.X_OK)
    assert "set -euo pipefail" in lines
    assert any(re.search(r"(^|[\s;&|])make test\s*$", ln) for ln in lines), lines
    assert any("apt-get install -y" in ln and "chromium" in text for ln in lines)


def test_ci_run_propagates_failure(tmp_path):
    """Run a copy of .ci/run with a fake `make` that fails: the script must fail with its status."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text(f'#!/bin/sh\necho "$PWD $*" > {tmp_path}/make_args\nexit 3\n')
    (bin_dir / "chromium").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], cwd="/", env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert (tmp_path / "make_args").read_text().strip() == f"{tmp_path} test"
    (bin_dir / "make").write_text("#!/bin/sh\nexit 0\n")
    res = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, (res.stdout, res.stderr)


def test_readme_names_the_commands():
    readme = REPO / "README.md"
    if not readme.exists():
        pytest.skip("README.md not written yet")
    text = readme.read_text()
    assert "make test" in text and "make demo" in text
