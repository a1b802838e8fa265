"""What listens where, and what outlives what: servers this project starts bind to loopback
unless asked otherwise and stop with the command that started them; a test that hangs is
stopped, with its fixtures torn down."""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
from cli_helpers import REPO, assert_user_error, run_cli
from mlflow import MlflowClient
from mlflow_helpers import store_uri


def listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state on `port`, read from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


def processes() -> dict[int, tuple[int, int]]:
    """{pid: (parent pid, process group)} of every live process, read from /proc/PID/stat."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:  # it ended meanwhile
            continue
        state, parent, group = stat.rsplit(")", 1)[1].split()[:3]  # the name may hold spaces
        if state != "Z":  # a zombie neither works nor holds a port
            table[int(entry)] = (int(parent), int(group))
    return table


def descendants(pid: int) -> dict[int, int]:
    """{pid: process group} of every live process started, directly or not, by `pid`."""
    table = processes()
    found, parents = {}, {pid}
    while parents:
        children = {p: group for p, (parent, group) in table.items() if parent in parents}
        found.update(children)
        parents = set(children)
    return found


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return f"pid {pid}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(port: int, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"the command exited ({process.returncode})"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            assert time.monotonic() < deadline, f"nothing answered on port {port}"
            time.sleep(0.3)


@contextlib.contextmanager
def running_ui(uri: str, cwd, stdout=subprocess.DEVNULL):
    """`python -m orchestrator ui` on a free port, in a session of its own as a terminal would
    run it; yields (the process, the port) once it answers HTTP. Whatever it leaves running
    is killed at the end, so a failing test leaves no server behind."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ui = subprocess.Popen([sys.executable, "-m", "orchestrator", "ui", "--tracking-uri", uri,
                           "--port", str(port)], cwd=cwd, env=env, stdout=stdout,
                          stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    groups = {ui.pid}
    try:
        wait_for_health(port, ui)
        groups.update(descendants(ui.pid).values())
        yield ui, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            ui.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            ui.wait(timeout=30)
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        ui.wait()


def new_store(folder) -> str:
    uri = store_uri(folder / "mlflow.db")
    MlflowClient(uri).create_experiment("x")
    return uri


def assert_loopback_only(port: int) -> None:
    addresses = listening_addresses(port)
    assert addresses, "the UI never listened"
    # 127.0.0.1 as /proc writes it (little-endian hex), or ::1 / v4-mapped 127.0.0.1
    loopback = {"0100007F", "00000000000000000000000001000000",
                "0000000000000000FFFF00000100007F"}
    assert addresses <= loopback, addresses


def test_a_busy_port_is_one_line_and_exit_2(tmp_path):
    """`mlflow server` itself exits 0 when it cannot listen: the UI would silently not come."""
    uri = new_store(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("ui", "--tracking-uri", uri, "--port", port, cwd=tmp_path, timeout=120)
    assert_user_error(done, f"cannot listen on 127.0.0.1:{port}", "pass --port")


def leftovers(pids, port: int, seconds: float) -> list[str]:
    """What is still running among `pids` or listening on `port` after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        alive = processes()
        left = [command_line(pid) for pid in pids if pid in alive]
        if listening_addresses(port):
            left.append(f"a listener on port {port}")
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.mark.parametrize("stop", ["kill", "ctrl-c"])
def test_stopping_the_ui_stops_its_server(tmp_path, stop):
    """The UI listens on the loopback interface only. `kill PID` (a service manager, a
    script) or Ctrl-C in its terminal: the command ends, and so does every process it started
    (mlflow server, uvicorn): the port is free again."""
    with running_ui(new_store(tmp_path), tmp_path) as (ui, port):
        assert_loopback_only(port)
        server = descendants(ui.pid)
        assert server, "the UI started no server process"
        if stop == "kill":
            ui.send_signal(signal.SIGTERM)
        else:
            os.killpg(ui.pid, signal.SIGINT)  # what a terminal sends its foreground group
        code = ui.wait(timeout=30)
        left = leftovers(server, port, seconds=20)
        assert not left, f"still running after the command ended ({code}): {left}"
        assert code == {"kill": 0, "ctrl-c": 130}[stop]


HANGING_TEST = """
import time
import pytest

@pytest.fixture
def server():
    yield
    open({marker!r}, "w").close()  # teardown ran: a real fixture would stop its server here

def test_hangs(server):
    time.sleep(120)
"""


def test_a_hanging_test_is_stopped_and_torn_down(request, tmp_path):
    """Every test has a time limit (pytest-timeout); the 'signal' method fails the test where
    it hangs, so its fixtures still stop Ray and servers and the other tests go on."""
    assert float(request.config.getini("timeout") or 0) > 0, "no default timeout configured"
    assert request.config.getini("timeout_method") == "signal"
    marker = tmp_path / "torn_down"
    (tmp_path / "test_hangs.py").write_text(textwrap.dedent(HANGING_TEST.format(
        marker=str(marker))))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path),
                           "-o", "timeout=2", str(tmp_path / "test_hangs.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert done.returncode == 1 and "Timeout (>2.0s)" in done.stdout, done.stdout[-2000:]
    assert time.monotonic() - started < 60
    assert marker.exists(), "the fixture's teardown did not run"
