"""`python -m orchestrator ui`: the MLflow UI on a tracking store, and nothing left behind.

`mlflow server` starts uvicorn (and, unless disabled, MLflow's job runner with its consumers).
It runs here in a session of its own, so one signal to its process group reaches every process
it started. This command stops that group when it is asked to stop (Ctrl-C, SIGTERM from a
service manager or `kill`, SIGHUP from a closed terminal) and when the server ends by itself.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

from vpr_core.errors import UserError
from vpr_core.log import log

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# uvicorn stops in about 2 s on SIGTERM; MLflow's job consumers (if enabled) in up to 8 s
GRACE_SECONDS = 15.0
# MLflow 3.17's UI shows GenAI pages unless the address says otherwise (whatever the
# experiment's tags): links carry this so a person lands on the runs table
RUNS_VIEW = "workflowType=machine_learning"


def serve(uri: str, host: str, port: int) -> None:
    """Run the MLflow UI on the store `uri` until stopped; Ctrl-C ends as KeyboardInterrupt."""
    check_free(host, port)
    address = f"http://{_browser_host(host)}:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    # the job runner serves GenAI features this project does not use: 8 fewer processes
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    log.info(f"MLflow UI on {address} (Ctrl-C to stop)")
    code, stopped_by = run_until_stopped(command, env, lambda: print_runs_links(uri, address))
    if stopped_by == signal.SIGINT:
        raise KeyboardInterrupt
    if stopped_by is None:  # it should serve until stopped: even a status of 0 is a failure
        raise UserError(f"mlflow server ended by itself (exit status {code}); see its messages "
                        f"above")


def check_free(host: str, port: int) -> None:
    """A `UserError` unless `host:port` can be listened on (`mlflow server` exits 0 when its
    uvicorn cannot bind, and would leave the user with a UI that never came)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise UserError(f"--host {host}: {error.strerror}; pass an address of this machine, "
                        f"e.g. 127.0.0.1") from None
    with socket.socket(family, kind) as probe:
        # as uvicorn does: a port whose last connections are closing is free to listen on
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise UserError(f"cannot listen on {host}:{port} ({error.strerror}); pass --port "
                            f"with a free port") from None


def runs_links(uri: str, address: str) -> list[tuple[str, str]]:
    """(experiment name, address of its runs table) for each experiment holding runs, the most
    recently updated first."""
    from vpr_tracking.store import store_at

    store = store_at(uri)  # a damaged database is a UserError: the server cannot show it
    return [(name, f"{address}/#/experiments/{experiment_id}/runs?{RUNS_VIEW}")
            for experiment_id, name in store.experiments()
            if store.search(experiment_id, with_history=False, max_results=1)]


def print_runs_links(uri: str, address: str) -> None:
    for name, link in runs_links(uri, address):
        log.info(f"  runs of {name}: {link}")


def run_until_stopped(command: list[str], env: dict, after_start=None
                      ) -> tuple[int, int | None]:
    """Run `command` in a new session until it exits or a stop signal arrives, then end every
    process of that session. Returns (its exit status, the stop signal or None)."""
    received: list[int] = []
    previous = {}
    for signum in STOP_SIGNALS:
        # a signal ignored on purpose stays ignored (nohup's SIGHUP, SIGINT of `cmd &`)
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, lambda got, _frame: received.append(got))
    try:
        server = subprocess.Popen(command, env=env, start_new_session=True)
        try:
            if after_start is not None:
                after_start()
            while server.poll() is None and not received:
                time.sleep(0.2)  # a handler only records the signal: looked at here
        finally:
            stop_group(server)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return server.returncode, (received[0] if received else None)


def stop_group(leader: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM to the process group `leader` heads, SIGKILL to what is left after `grace` s."""
    _signal_group(leader.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(leader) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(leader):
        _signal_group(leader.pid, signal.SIGKILL)
    leader.wait()


def _group_alive(leader: subprocess.Popen) -> bool:
    leader.poll()  # reap the leader: as a zombie it would still count as a member
    try:
        os.killpg(leader.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def _browser_host(host: str) -> str:
    """Where a browser on this machine reaches a server listening on `host`."""
    if host in ("0.0.0.0", "::", ""):  # every interface: this machine's loopback is one
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host  # an IPv6 address goes in brackets in a URL
