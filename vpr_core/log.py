"""The package logger: what the commands say while they work.

Information goes to stdout as plain lines, warnings and errors to stderr as `warning: ...` /
`error: ...`. A command's product (its table, its --json) is printed, not logged.
"""
from __future__ import annotations

import logging
import sys

log = logging.getLogger("vpr_core")  # its modules log to children of it: vpr_core.training, ...


class _CurrentStream(logging.StreamHandler):
    """A handler that writes to whatever sys.stdout / sys.stderr is when a line is logged
    (tests and tools swap them), flushing each line."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    @property
    def stream(self):
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler sets it; the current one is used
        pass

    def handleError(self, record: logging.LogRecord) -> None:
        """A reader that went away (`| head`) stops the command, as a failed print does
        (`errors.exit_status` ends it quietly); logging would print a traceback per line."""
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            raise sys.exc_info()[1]
        super().handleError(record)


class _Prefixed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def _install() -> None:
    if log.handlers:
        return
    info = _CurrentStream("stdout")
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    problems = _CurrentStream("stderr")
    problems.setLevel(logging.WARNING)
    for handler in (info, problems):
        handler.setFormatter(_Prefixed())
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def quiet() -> None:
    """Only warnings and errors (the sweep's per-epoch lines are information)."""
    log.setLevel(logging.WARNING)


_install()
