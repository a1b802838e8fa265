"""What listens where: servers this project starts bind to loopback unless asked otherwise."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from mlflow import MlflowClient

from cli_helpers import REPO


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


def test_the_mlflow_ui_listens_on_loopback_only(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).create_experiment("x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, "-m", "orchestrator", "ui", "--tracking-uri", uri,
                               "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        addresses = listening_addresses(port)
        assert addresses, "the UI never listened"
        # 127.0.0.1 as /proc writes it (little-endian hex), or ::1 / v4-mapped 127.0.0.1
        loopback = {"0100007F", "00000000000000000000000001000000",
                    "0000000000000000FFFF00000100007F"}
        assert addresses <= loopback, addresses
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
