"""Running `python -m orchestrator` as a user does, in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_env(env: dict | None = None) -> dict:
    """The environment of a command run as a user does: this checkout's code, Ray quiet."""
    return dict(os.environ, PYTHONPATH=str(REPO), RAY_AUTH_MODE="disabled",
                RAY_USAGE_STATS_ENABLED="0", **(env or {}))


def run_cli(*args, cwd: Path, timeout: float = 600, env: dict | None = None,
            module: str = "orchestrator") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=cli_env(env))


def run_cli_into_gone_reader(*args, cwd: Path, timeout: float = 600,
                             module: str = "orchestrator") -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS | head -0`: stdout is a pipe whose reader closed it before the
    first line (every write fails with EPIPE, as after `head -1` has its line). Captures
    stderr only."""
    env = cli_env()
    env.pop("PYTHONUNBUFFERED", None)  # a user's shell: stdout buffered, flushed again at exit
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd,
                              stdout=writer, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, env=env)
    finally:
        os.close(writer)


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def tree(folder: Path) -> list[str]:
    """Every path under `folder`, relative, for 'nothing was written' checks."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


class InProcess:
    """`orchestrator.cli.main(argv)` in this process: the same code path, no interpreter start."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_main(argv, capsys, monkeypatch, cwd: Path, main=None) -> InProcess:
    if main is None:
        from orchestrator.cli import main
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return InProcess(code, out, err)
