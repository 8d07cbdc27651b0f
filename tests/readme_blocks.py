"""Run a README section's fenced blocks as a user would copy them: a ```python block whose first line is
`# FILE.py` is saved as that file; each line of a ```bash block is a command, `.venv/bin/python -m workbench
ARGS` runs in-process (cli.main), `.venv/bin/python FILE.py` runs the saved file. Returns each command's stdout."""
import contextlib
import io
import os
import re
import runpy
import shlex
import sys
from pathlib import Path


def section_blocks(readme: Path, heading: str) -> list[tuple[str, str]]:
    text = readme.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end > 0 else None]
    return re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S)


def run_section(readme: Path, heading: str, workdir: Path, copy=()) -> list[str]:
    from workbench import cli

    blocks = section_blocks(readme, heading)
    assert blocks, f"README section {heading!r} has no fenced blocks"
    outputs, old_cwd = [], os.getcwd()
    sys.path.insert(0, str(workdir))
    os.chdir(workdir)
    try:
        for lang, body in blocks:
            if lang == "python":
                first = body.splitlines()[0]
                assert first.startswith("# ") and first.endswith(".py"), f"python block without a file name: {first}"
                (workdir / first[2:].strip()).write_text(body)
                continue
            assert lang == "bash", lang
            for line in body.splitlines():
                line = line.split("  #")[0].strip()
                if not line:
                    continue
                argv = shlex.split(line)
                assert argv[0] == ".venv/bin/python", line
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    if argv[1:3] == ["-m", "workbench"]:
                        rc = cli.main(argv[3:])
                    else:
                        runpy.run_path(str(workdir / argv[1]), run_name="__main__")
                        rc = 0
                assert rc == 0, f"{line!r} exited {rc}; output:\n{buf.getvalue()[-3000:]}"
                outputs.append(buf.getvalue())
    finally:
        os.chdir(old_cwd)
        sys.path.remove(str(workdir))
    return outputs
