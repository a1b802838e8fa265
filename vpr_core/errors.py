"""The one error type a user's mistake becomes.

A `UserError` carries a single line that names the thing that is wrong and how to fix it.
The command line catches it once, prints the line on stderr and exits with status 2.
"""
import errno
import os
import sys

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # no room, or no writing, on the disk


def first_line(error: BaseException, limit: int) -> str:
    """The first line of `error`'s message, at most `limit` characters ('' for none): what a
    one-line message quotes of an error from a library."""
    return (str(error).splitlines() or [""])[0][:limit]


class CommandFailed(Exception):
    """The command ran, but what it was for did not happen (e.g. every trial of a sweep
    failed): one line on stderr, exit status 1."""


class UserError(Exception):
    """A mistake in the user's input (paths, files, settings), not a bug in this code."""

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller built.
        super().__init__(" ".join(str(message).split()))


def exit_status(command) -> int:
    """Run a command-line verb (a callable): 0 when it returns, 2 with one line on stderr for
    a `UserError`, 1 with one line for `CommandFailed`, 130 for Ctrl-C, 1 when the reader of
    the output went away."""
    from .log import log  # 'error: ...' on stderr

    try:
        command()
    except UserError as error:
        log.error(str(error))
        return 2
    except CommandFailed as error:
        log.error(str(error))
        return 1
    except BrokenPipeError:  # output piped into `head` and the like: the reader has gone
        _discard_stdout()
        return 1
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        # every file is written to a temporary name and renamed: the old one is still there
        log.error(f"cannot write {error.filename} ({error.strerror}); free disk space and run "
                  f"the command again (the files it had written before are intact)")
        return 2
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130
    return 0


def _discard_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for the reader that went away would
    fail again when Python flushes it at exit ('Exception ignored ...', exit status 120)."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # stdout replaced by an object without one
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)
