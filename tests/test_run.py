"""`formwork run`: the supervisor with stand-in children (fast: stop, Ctrl-C, the web server dying, the worker
dying and restarting with a capped backoff, a child that won't stop, the supervisor killed outright), the
one-line start-up errors, and the real command end to end on a free port."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from formwork.supervise import port_problem
from tests.peers import wait_until

ROOT = Path(__file__).resolve().parent.parent

# A stand-in child: notes "started" once its SIGTERM handler is in place, "stopped" when SIGTERM ends it.
FAKE = """
import os, signal, sys, time
name, mode, log = sys.argv[1:4]
def note(what):
    with open(log, "a") as fh:
        fh.write(f"{name} {what} {os.getpid()}\\n")
def stop(*_):
    note("stopped")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else stop)
note("started")
if mode.startswith("exit"):
    sys.exit(int(mode[4:]))
while True:
    time.sleep(0.02)
"""

DRIVER = """
import json, logging, sys
from formwork.supervise import Supervisor
logging.basicConfig(level=logging.INFO, format="%(message)s")
cfg = json.loads(sys.argv[1])
sys.exit(Supervisor(cfg["web"], cfg["worker"], **cfg["options"]).run())
"""


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


class Fake:
    """A supervisor driving stand-in children, and what they noted."""

    def __init__(self, tmp_path: Path, web: str = "serve", worker: str | None = "serve", **options: Any) -> None:
        self.log = tmp_path / "children.log"
        self.log.touch()

        def child(name: str, mode: str) -> list[str]:
            return [sys.executable, "-c", FAKE, name, mode, str(self.log)]

        cfg = {"web": child("web", web), "worker": child("worker", worker) if worker else None,
               "options": {"stop_timeout": 10, **options}}
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(cfg)], env=_env(), cwd=tmp_path,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def lines(self, what: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.split()[1] == what]

    def names(self, what: str) -> list[str]:
        return [line.split()[0] for line in self.lines(what)]

    def wait_started(self, web: int = 1, worker: int = 1) -> None:
        wait_until(lambda: self.names("started").count("web") >= web
                   and self.names("started").count("worker") >= worker, timeout=30)

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_both_children_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    fake = Fake(tmp_path)
    fake.wait_started()
    fake.proc.send_signal(sig)
    code, out = fake.finish()
    assert code == 0, out
    assert sorted(fake.names("stopped")) == ["web", "worker"]
    assert "the worker stopped (exit code 0)" in out and "the web server stopped (exit code 0)" in out


def test_without_a_worker_only_the_web_server_runs(tmp_path: Path) -> None:
    fake = Fake(tmp_path, worker=None)
    fake.wait_started(worker=0)
    fake.proc.send_signal(signal.SIGTERM)
    code, out = fake.finish()
    assert code == 0, out
    assert fake.names("started") == ["web"] and fake.names("stopped") == ["web"]


def test_when_the_web_server_dies_the_worker_is_stopped_and_the_command_fails(tmp_path: Path) -> None:
    fake = Fake(tmp_path, web="exit3")
    code, out = fake.finish()
    assert code == 3, out
    assert fake.names("stopped") == ["worker"]
    assert "the web server exited (code 3): stopping the worker" in out


def test_a_dying_worker_is_restarted_with_a_growing_delay_and_a_cap_per_minute(tmp_path: Path) -> None:
    fake = Fake(tmp_path, worker="exit1", first_delay=0.05, max_restarts=3)
    fake.wait_started(worker=4)  # the first start and three restarts
    time.sleep(0.5)  # a fifth start, if the cap failed, would come within 0.4 s (0.05 * 2**3)
    assert fake.names("started").count("worker") == 4
    fake.proc.send_signal(signal.SIGTERM)
    code, out = fake.finish()
    assert code == 0, out
    delays = [float(d) for d in re.findall(r"restarting it in ([\d.]+) s", out)]
    assert delays[:3] == [0.05, 0.1, 0.2]
    assert delays[3] > 50  # the cap: wait until the oldest restart is a minute old
    assert out.count("the worker exited unexpectedly (code 1)") == 4
    assert fake.names("stopped") == ["web"]


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    fake = Fake(tmp_path, worker="stubborn", stop_timeout=0.5)
    fake.wait_started()
    fake.proc.send_signal(signal.SIGTERM)
    code, out = fake.finish()
    assert code == 1, out
    assert "the worker did not stop within 0.5 s: killing it" in out
    assert fake.names("stopped") == ["web"]


def test_children_stop_when_the_supervisor_is_killed_outright(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    fake.wait_started()
    fake.proc.kill()
    fake.finish()
    wait_until(lambda: sorted(fake.names("stopped")) == ["web", "worker"], timeout=20)


# --- start-up errors ------------------------------------------------------------------------------------
def test_port_problem_names_a_port_in_use_and_a_bad_host() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert port_problem("127.0.0.1", port) == f"cannot listen on 127.0.0.1:{port}: the port is already in use"
    assert port_problem("127.0.0.1", port) is None
    problem = port_problem("no-such-host.invalid", 5000)
    assert problem is not None and problem.startswith("cannot listen on no-such-host.invalid:5000: unknown host")


def test_run_on_a_busy_port_is_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "formwork", "run", "--port", str(port)], env=_env(
            FORMWORK_INSTANCE=str(tmp_path / "instance")), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"Error: cannot listen on 127.0.0.1:{port}: the port is already in use"]
    assert "Traceback" not in done.stdout + done.stderr


def test_serve_on_a_busy_port_is_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "formwork", "serve", "--port", str(port)], env=_env(
            FORMWORK_INSTANCE=str(tmp_path / "instance")), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"Error: cannot listen on 127.0.0.1:{port}:")


def test_run_with_an_unreachable_database_is_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "formwork", "run", "--port", str(_free_port())], env=_env(
        FORMWORK_INSTANCE=str(tmp_path / "instance"), FORMWORK_DATABASE_URL=f"sqlite:///{tmp_path}/no/such/x.db"),
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot open the database: "), done.stderr


# --- the real command ------------------------------------------------------------------------------------
class Client:
    """urllib with a cookie jar: the API as a browser-less user sees it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.csrf = ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "X-CSRF-Token": self.csrf})
        try:
            with self.opener.open(req, timeout=20) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = self.call(method, path, body)
        assert status < 300, (method, path, status, payload)
        return payload


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(base: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(base + "/health", timeout=5) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_formwork_run_serves_runs_automations_restarts_its_worker_and_stops_cleanly(
        app: Any, backend: str, database_url: str, tmp_path: Path) -> None:
    """On a fresh temporary SQLite database (and on PostgreSQL when configured): init, run, log in through
    the API, build a small app whose automation fills a field, watch it fire; kill the worker and watch the
    supervisor bring it back; then SIGTERM stops everything with exit code 0."""
    env = _env(FORMWORK_INSTANCE=str(tmp_path / "instance"), FORMWORK_SECRET_KEY="e2e-secret",
               FORMWORK_ADMIN_PASSWORD="e2e-admin-pass-1", FORMWORK_SMTP_HOST="127.0.0.1")
    if backend == "postgresql":
        env["FORMWORK_DATABASE_URL"] = database_url  # emptied by the app fixture
    else:
        env.pop("FORMWORK_DATABASE_URL", None)  # the default: instance/formwork.db, as `make run` has it
    init = subprocess.run([sys.executable, "-m", "formwork", "init"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert init.returncode == 0, init.stderr[-2000:]
    port = _free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    out = tmp_path / "run.log"
    with open(out, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "formwork", "run", "--port", str(port), "--threads", "4"],
                                env=env, cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _health(base) is not None, timeout=90, interval=0.1)
        api = Client(base)
        api.csrf = api.ok("POST", "/auth/login", {"username": "admin", "password": "e2e-admin-pass-1"})["csrf_token"]
        api.ok("POST", "/meta/apps", {"key": "ops", "label": "Ops"})
        api.ok("POST", "/meta/apps/ops/tables", {"key": "tasks", "label": "Tasks", "fields": [
            {"key": "title", "label": "Title", "type": "text", "required": True},
            {"key": "status", "label": "Status", "type": "text"}]})
        api.ok("POST", "/meta/apps/ops/automations", {
            "key": "done", "label": "Mark done", "run_as": "admin",
            "trigger": {"type": "record_created", "table": "tasks"},
            "actions": [{"type": "update_record", "fields": {"status": "done: {{ record.title }}"}}]})

        def status_of(rid: int) -> Any:
            return api.ok("GET", f"/data/ops/tasks/{rid}")["fields"].get("status")

        first = api.ok("POST", "/data/ops/tasks", {"fields": {"title": "one"}})
        wait_until(lambda: status_of(first["id"]) == "done: one", timeout=60, interval=0.1)
        wait_until(lambda: (_health(base) or {}).get("worker", {}).get("status") == "running", timeout=30)

        log = out.read_text()
        web_pid = int(re.findall(r"started the web server \(pid (\d+)\)", log)[0])
        worker_pid = int(re.findall(r"started the worker \(pid (\d+)\)", log)[0])
        os.kill(worker_pid, signal.SIGKILL)  # the worker dies: the supervisor restarts it
        wait_until(lambda: len(re.findall(r"started the worker \(pid (\d+)\)", out.read_text())) == 2, timeout=30)
        assert "the worker exited unexpectedly (code -9)" in out.read_text()
        second = api.ok("POST", "/data/ops/tasks", {"fields": {"title": "two"}})
        wait_until(lambda: status_of(second["id"]) == "done: two", timeout=60, interval=0.1)
        new_worker_pid = int(re.findall(r"started the worker \(pid (\d+)\)", out.read_text())[1])

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, out.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log = out.read_text()
    assert "the worker stopped (exit code 0)" in log and "the web server stopped (exit code 0)" in log, log[-3000:]
    assert _gone(web_pid) and _gone(new_worker_pid)
    assert "Traceback" not in log, log[-3000:]
