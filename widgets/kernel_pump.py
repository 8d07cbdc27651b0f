"""Let widget clicks reach the kernel while a cell is still running.

Why this exists: while a cell runs `trainer.run(...)`, the kernel's main thread is
busy inside that cell, so the messages a browser sends when you click a widget
(`comm_msg`) wait in a queue until the cell ends — a Stop button would never be
heard. `jupyter-ui-poll` solves this for ipykernel 6 by pumping the kernel's
shell stream from inside the cell; its trick does not apply to ipykernel 7, whose
shell messages come from a "shell channel" thread over an in-process ZMQ socket
pair to the main thread.

Mid-step Stop (`listen(comm_ids)` / `stop_listening()`): pump() runs between steps, so with
steps of several seconds a click would wait for the step. While a run is live the dashboard lets
a thread read the socket instead: messages for the Stop button's comm are handled on that thread
at once (the button is disabled and relabelled within ~50 ms); every other message is queued, in
order, for pump() on the main thread. The listener stops in on_end, before the cell returns and the
kernel's own loop reads the socket again.

What `KernelPump.pump()` does (ipykernel 7, main shell only), called from
`on_step`:
  1. read every message already waiting on that in-process socket (non-blocking);
  2. widget messages (`comm_open` / `comm_msg` / `comm_close`) are handled right
     now, synchronously, with the kernel's own comm handlers and the message as
     parent; the running cell's parent is restored afterwards, so the next
     `display` still lands in the cell's output;
  3. anything else (e.g. the `execute_request` of the next cells after
     "Run All") is handed, in arrival order, to the callback the kernel itself
     registered for that socket. That creates the same asyncio task the kernel
     would have created; it waits on the kernel's per-shell lock behind the
     running cell and runs after it, in order. Nothing is dropped or reordered.

Busy while training (`hold_busy()` / `release_busy()`): JupyterLab's status bar and the
server's kernel state show the execution_state of the *latest* iopub status message, whatever
request it answers. While a cell runs, the control channel keeps answering JupyterLab's own
requests (debugger `debug_request`s, subshell requests), each with busy then idle: the kernel then
reads "Idle" mid-run. While held, every "idle" the kernel publishes for another request is
followed at once by a "busy" whose parent is the running cell, so the last word is "busy" until
the cell's own idle. Comm messages handled by `pump()` publish no status.

It touches private ipykernel attributes (`shell_channel_thread.manager.
_shell_channel_to_main`, the ZMQStream's `_recv_callback`), checked at
construction: where they are missing (ipykernel 6, a plain Python process, a
subshell, a non-main thread) the pump reports `available == False` with a
reason and does nothing — `dashboard.request_stop()` and the kernel's
interrupt (the trainer ends with reason "interrupted") still work.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

_COMM_TYPES = {"comm_open", "comm_msg", "comm_close"}


class KernelPump:
    """Handles pending widget messages from inside a running cell (see module doc)."""

    def __init__(self) -> None:
        self.available = False
        self.reason = ""
        self.handled = 0      # comm messages handled so far
        self.deferred = 0     # other messages passed on to the kernel's queue
        self._kernel: Any = None
        self._socket: Any = None
        self._stream: Any = None
        self._held: Any = None    # the kernel's status publisher while hold_busy() is on
        self._listener: threading.Thread | None = None
        self._stop_listener = threading.Event()
        self._pending: deque = deque()   # frames the listener read for the main thread, in order
        try:
            self._setup()
        except Exception as e:  # never let the dashboard fail because of this
            self.available, self.reason = False, f"kernel pump unavailable: {e!r}"

    def _setup(self) -> None:
        try:
            from IPython import get_ipython
        except ImportError:
            self.reason = "IPython is not installed"
            return
        ip = get_ipython()
        kernel = getattr(ip, "kernel", None)
        if kernel is None:
            self.reason = "not running inside a Jupyter kernel"
            return
        sct = getattr(kernel, "shell_channel_thread", None)
        manager = getattr(sct, "manager", None)
        pair = getattr(manager, "_shell_channel_to_main", None)
        stream = getattr(pair, "to_stream", None)
        if stream is None or not hasattr(stream, "_recv_callback"):
            self.reason = ("this ipykernel has no shell-channel thread (ipykernel < 7?): "
                           "widget clicks are handled only between cells")
            return
        self._kernel, self._socket, self._stream = kernel, pair.to_socket, stream
        self._shell = ip
        self._main_thread = getattr(manager, "_parent_thread", threading.main_thread())
        self.available, self.reason = True, "ok"

    def hold_busy(self) -> bool:
        """Keep the kernel's reported state "busy" until `release_busy()` (see module doc)."""
        if not self.available or self._held is not None:
            return self._held is not None
        k = self._kernel
        cell = k.get_parent("shell")
        if not cell or not cell.get("header"):
            return False
        publish = k._publish_status       # the bound method; replaced on the instance only
        cell_id = cell["header"].get("msg_id")

        def publish_status(status, channel, parent=None):
            publish(status, channel, parent)
            if status != "idle":
                return
            p = parent or k.get_parent(channel)
            if (p or {}).get("header", {}).get("msg_id") != cell_id:
                publish("busy", "shell", cell)

        k._publish_status = publish_status
        self._held = publish_status
        publish("busy", "shell", cell)   # an idle for another request may already be the latest word
        return True

    def release_busy(self) -> None:
        if self._held is not None and getattr(self._kernel, "_publish_status", None) is self._held:
            del self._kernel._publish_status       # back to the class's method
        self._held = None

    def listen(self, comm_ids, poll_ms: int = 50) -> bool:
        """Read the shell socket on a thread of its own until `stop_listening()`, so that messages for
        `comm_ids` (the Stop button's) are handled within `poll_ms`, in the middle of a long step.

        Everything else is kept, in order, for `pump()` to handle on the main thread (widget callbacks
        that touch the dashboard's state, the next cells' execute requests). While the thread runs it
        is the only reader of the socket; the kernel's own loop reads it again after the cell.
        """
        if not self.available or self._listener is not None:
            return self._listener is not None
        import zmq

        fast = set(comm_ids)
        stop = threading.Event()

        def run():
            while not stop.is_set():
                try:
                    if not self._socket.poll(poll_ms, zmq.POLLIN):
                        continue
                    frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.ZMQError:
                    continue
                if self._comm_id(frames) in fast:
                    self._handle_comm(frames)
                    self.handled += 1
                else:
                    self._pending.append(frames)

        self._stop_listener = stop
        self._listener = threading.Thread(target=run, name="dashboard-kernel-pump", daemon=True)
        self._listener.start()
        # whatever happens to the run, the socket goes back to the kernel when the cell ends
        self._shell.events.register("post_run_cell", self._after_cell)
        return True

    def stop_listening(self) -> None:
        if self._listener is not None:
            self._stop_listener.set()
            self._listener.join()
            self._listener = None
            try:
                self._shell.events.unregister("post_run_cell", self._after_cell)
            except ValueError:
                pass

    def _after_cell(self, *_args) -> None:
        self.stop_listening()
        self.pump()       # hand what the listener queued to the kernel, in order

    def pump(self, limit: int = 100) -> int:
        """Process up to `limit` waiting messages; return how many comm messages were handled."""
        if not self.available or threading.current_thread() is not self._main_thread:
            return 0
        import zmq

        handled = 0
        for _ in range(limit):
            if self._pending:                 # read by the listener thread, in arrival order
                frames = self._pending.popleft()
            elif self._listener is not None:  # the listener owns the socket
                break
            else:
                try:
                    if not self._socket.poll(0, zmq.POLLIN):
                        break
                    frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.ZMQError:
                    break
            if self._msg_type(frames) in _COMM_TYPES:
                self._handle_comm(frames)
                handled += 1
            else:
                self._defer(frames)
        self.handled += handled
        return handled

    # -- internals ------------------------------------------------------------
    def _comm_id(self, frames) -> str | None:
        """The comm a comm_msg is for (None for any other message)."""
        if self._msg_type(frames) != "comm_msg":
            return None
        session = self._kernel.session
        try:
            _, msg = session.feed_identities(frames, copy=False)
            # content=False: a signed message may be deserialised with content only once (replay check)
            header = session.deserialize(msg, content=False, copy=False)
            return session.unpack(header["content"]).get("comm_id")
        except Exception:
            return None

    def _msg_type(self, frames) -> str | None:
        if len(frames) == 1:   # ipykernel's internal "stop aborting" marker
            return None
        session = self._kernel.session
        try:
            _, msg = session.feed_identities(frames, copy=False)
            return session.deserialize(msg, content=False, copy=False)["header"]["msg_type"]
        except Exception:
            return None

    def _defer(self, frames) -> None:
        """Give the message to the kernel exactly as its own ZMQStream would have."""
        callback = self._stream._recv_callback
        if callback is None:   # nobody listens: nothing else we can do
            return
        self._stream._run_callback(callback, frames)
        self.deferred += 1

    def _handle_comm(self, frames) -> None:
        k = self._kernel
        idents, msg = k.session.feed_identities(frames, copy=False)
        msg = k.session.deserialize(msg, content=True, copy=False)
        handler = k.shell_handlers.get(msg["header"]["msg_type"])
        if handler is None:
            return
        saved_parent = k.get_parent("shell")
        try:
            saved_ident = k._get_shell_context_var(k._shell_parent_ident)
        except Exception:
            saved_ident = None
        k.set_parent(idents, msg, channel="shell")
        try:
            handler(None, idents, msg)  # comm handlers ignore the stream argument
        except Exception:
            k.log.error("dashboard: error in a widget message handler", exc_info=True)
        finally:
            k.set_parent(saved_ident, saved_parent, channel="shell")
