"""What live redraws cost outside a kernel, for `python -m benchmarks dashboard`.

A live dashboard draws only inside IPython. `live_shell()` starts a plain IPython shell (no kernel,
no browser) whose display publisher JSON-serialises every output, as ipykernel does before sending
it: the benchmark then pays for building the figures, the react script and their serialisation,
but not for the browser drawing them (that runs in another process).
"""
from __future__ import annotations

import json


def live_shell():
    """The IPython shell live redraws publish to (created once per process)."""
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    class SerialisingPublisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
            json.dumps({"data": data, "metadata": metadata or {}, "transient": transient or {}})

        def clear_output(self, wait=False):
            pass

    shell = InteractiveShell.instance()
    shell.display_pub = SerialisingPublisher(shell=shell)
    return shell
