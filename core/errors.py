"""The one exception type for mistakes a user can make and fix."""


class UserError(Exception):
    """Bad input a user can fix: the CLI prints the message as one line and exits 2.

    The message names the input and what to do about it.
    """


class Unavailable(Exception):
    """A service the pipeline needs (the model registry) did not answer, even after retries
    with back-off: the CLI prints the message as one line and exits 2; an Airflow task that
    meets it fails and is retried later, unlike a UserError."""
