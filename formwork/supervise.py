"""`formwork run`: the web server and one worker as two child processes of one command.

For a single machine and for trying Formwork out; production runs ``formwork serve`` and ``formwork
worker`` under its own supervisor (systemd, containers) instead. The children live in their own session,
so a terminal's Ctrl-C reaches only this process, which forwards SIGTERM to both: each finishes its
current work (waitress its requests, the worker its batch) and exits. The web server is essential: when it
dies the worker is stopped and the command fails. The worker is restarted with a growing delay when it
dies, at most ``max_restarts`` times a minute. On Linux the children also get SIGTERM if this process is
killed outright (PR_SET_PDEATHSIG), so none outlives it.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("formwork.run")

POLL = 0.2  # seconds between looks at the children
RESTART_WINDOW = 60.0


def port_problem(host: str, port: int) -> str | None:
    """Why the web server could not listen on ``host:port`` (one line), or None when it can.

    Binds the way waitress does (SO_REUSEADDR), so a port held only by closed connections is free.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot listen on {host}:{port}: unknown host ({e.strerror})"
    except (OverflowError, UnicodeError):
        return f"cannot listen on {host}:{port}: not a valid address"
    for family, kind, proto, _name, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
        except OSError as e:
            reason = "the port is already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            return f"cannot listen on {host}:{port}: {reason}"
        finally:
            sock.close()
    return None


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when this process dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Child:
    """One supervised process: its command line and, while it runs, its Popen."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, start_new_session=True, preexec_fn=_die_with_parent())
        self.started = time.monotonic()
        log.info("started the %s (pid %s)", self.name, self.proc.pid)

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


class Supervisor:
    """Runs the web server and (optionally) a worker until a signal or the web server's death."""

    def __init__(self, web: Sequence[str], worker: Sequence[str] | None, *, stop_timeout: float = 30.0,
                 max_restarts: int = 5, first_delay: float = 1.0, max_delay: float = 30.0) -> None:
        self.web = Child("web server", web)
        self.worker = Child("worker", worker) if worker else None
        self.stop_timeout = stop_timeout
        self.max_restarts = max_restarts
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.stopping = threading.Event()
        self.restarts: deque[float] = deque()
        self.restart_at: float | None = None

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stopping.is_set():
            log.info("%s received: stopping", signal.Signals(signum).name)
        self.stopping.set()

    def run(self) -> int:
        """Start both, watch them, stop both; the exit code of `formwork run`."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.web.start()
        if self.worker is not None:
            self.worker.start()
        while not self.stopping.wait(POLL):
            code = self.web.exit_code()
            if code is not None:
                log.error("the web server exited (code %s): stopping the worker", code)
                self._stop_all()
                return code or 1
            if self.worker is not None:
                self._watch_worker()
        return 0 if self._stop_all() else 1

    def _watch_worker(self) -> None:
        assert self.worker is not None
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restart_at = None
                self.restarts.append(now)
                self.worker.start()
            return
        code = self.worker.exit_code()
        if code is None:
            return
        while self.restarts and self.restarts[0] < now - RESTART_WINDOW:
            self.restarts.popleft()
        delay = min(self.max_delay, self.first_delay * 2.0 ** len(self.restarts))
        if len(self.restarts) >= self.max_restarts:  # the cap: wait until the oldest restart leaves the window
            delay = max(delay, self.restarts[0] + RESTART_WINDOW - now)
        log.error("the worker exited unexpectedly (code %s) after %.1f s: restarting it in %.3g s",
                  code, now - self.worker.started, delay)
        self.restart_at = now + delay

    def _stop_all(self) -> bool:
        """SIGTERM to every running child, wait up to ``stop_timeout``, then kill; True when all stopped
        on their own with exit code 0."""
        children = [c for c in (self.worker, self.web) if c is not None and c.proc is not None]
        for c in children:
            c.terminate()
        deadline = time.monotonic() + self.stop_timeout
        clean = True
        for c in children:
            assert c.proc is not None
            if c is self.worker and self.restart_at is not None:
                continue  # it died earlier (reported then) and was waiting for its restart
            try:
                code = c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("the %s did not stop within %g s: killing it", c.name, self.stop_timeout)
                c.proc.kill()
                code = c.proc.wait()
            log.info("the %s stopped (exit code %s)", c.name, code)
            clean = clean and code == 0
        return clean
