"""The exceptions the command line turns into one line: a mistake a user can fix, a service
that did not answer, a training whose workers failed."""


class UserError(Exception):
    """Bad input a user can fix: the CLI prints the message as one line and exits 2.

    The message names the input and what to do about it.
    """


class Unavailable(Exception):
    """A service the pipeline needs (the model registry) did not answer, even after retries
    with back-off: the CLI prints the message as one line and exits 2; an Airflow task that
    meets it fails and is retried later, unlike a UserError."""


class WorkerFailed(Exception):
    """A worker of a distributed training died or failed (its reason in the message): the CLI
    prints it as one line and exits 3; an Airflow task that meets it is retried and resumes
    the checkpoint."""
