"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input a person can fix: the message names the problem and the fix, on one line."""
