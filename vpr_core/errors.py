"""The one error type a user's mistake becomes.

A `UserError` carries a single line that names the thing that is wrong and how to fix it.
The command line catches it once, prints the line on stderr and exits with status 2.
"""


class UserError(Exception):
    """A mistake in the user's input (paths, files, settings), not a bug in this code."""

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller built.
        super().__init__(" ".join(str(message).split()))
