"""What the registry adapter (pipeline/registry.py) makes of MLflow's failures: one line for
the user, or `Unavailable` for a registry that is down, restarting, overloaded or locked,
which `retried` calls again with back-off before it lets the failure go (so that an Airflow
task fails only then, and is retried as a whole).

MLflow's own HTTP retries are off (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0): these decide.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from core.errors import Unavailable, UserError

log = structlog.get_logger()
TRANSIENT = re.compile(r"Max retries exceeded|Failed to establish|Connection (refused|reset|"
                       r"aborted)|timed out|too many 5\d\d error responses|error code 5\d\d|"
                       r"TEMPORARILY_UNAVAILABLE|database is locked", re.IGNORECASE)
REFUSED = re.compile(r"\b401\b|Unauthorized|not authenticated|credentials", re.IGNORECASE)
FORBIDDEN = re.compile(r"\b403\b|Forbidden|Permission denied", re.IGNORECASE)


@contextmanager
def mapped(uri: str, model: str, missing: str | None = None) -> Iterator[None]:
    """Around client calls: MLflow's failures become one-line errors, `missing` the message
    for a thing that does not exist. (A caller that expects a thing may be missing catches
    that inside, see `absent`.)"""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        text = str(e)
        if missing is not None and e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise UserError(missing) from None
        if TRANSIENT.search(text):
            raise Unavailable(f"the model registry at {uri} cannot be reached or failed for "
                              "now: start the MLflow server or set MLFLOW_TRACKING_URI to one "
                              "that runs (unset, it is SQLite under CLLM_HOME)") from None
        if REFUSED.search(text):
            raise UserError(f"the model registry at {uri} refused the credentials: set "
                            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
                            "MLFLOW_TRACKING_TOKEN) to a user it knows") from None
        if FORBIDDEN.search(text):
            raise UserError(f"the model registry at {uri} does not let this user do that: ask "
                            f"its administrator for permission on the model {model!r}") from None
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise UserError(f"the model registry at {uri} failed: {first[:300]}") from None


def absent(error: Exception) -> bool:
    """An MLflow error saying that a model, or an alias of one, does not exist (an alias that
    is not set is an invalid parameter to MLflow, not a missing resource)."""
    return getattr(error, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST",
                                                  "INVALID_PARAMETER_VALUE")


def retried(method):
    """Call a registry method again while the registry is `Unavailable`, after a pause that
    doubles each time, up to the registry's `attempts`; the calls it makes are not retried on
    their own."""

    @functools.wraps(method)
    def call(registry, *args, **kwargs):
        if registry.retrying:
            return method(registry, *args, **kwargs)
        registry.retrying = True
        try:
            for attempt in Retrying(retry=retry_if_exception_type(Unavailable), reraise=True,
                                    stop=stop_after_attempt(registry.attempts),
                                    wait=wait_exponential(multiplier=registry.backoff, max=60),
                                    before_sleep=lambda state: log.warning(
                                        "registry_retry", uri=registry.uri, call=method.__name__,
                                        attempt=state.attempt_number)):
                with attempt:
                    return method(registry, *args, **kwargs)
        finally:
            registry.retrying = False

    return call
