"""The one error type a user's mistake becomes.

A `UserError` carries a single line that names the thing that is wrong and how to fix it.
The command line catches it once, prints the line on stderr and exits with status 2.
"""


class UserError(Exception):
    """A mistake in the user's input (paths, files, settings), not a bug in this code."""

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller built.
        super().__init__(" ".join(str(message).split()))


def exit_status(command) -> int:
    """Run a command-line verb (a callable): 0 when it returns, 2 with one line on stderr for
    a `UserError`, 130 for Ctrl-C, 1 when the reader of the output went away."""
    import sys

    try:
        command()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 1
    return 0
