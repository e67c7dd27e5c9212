"""The one exception type for mistakes a user can make and fix."""


class UserError(Exception):
    """Bad input a user can fix: the CLI prints the message as one line and exits 2.

    The message names the input and what to do about it.
    """
