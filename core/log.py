"""structlog set-up: readable key-value lines on a terminal, JSON lines elsewhere."""

import logging
import sys

import structlog
from tqdm import tqdm


class _BarSafeStderr:
    """stderr that lifts any progress bar out of the way of a log line, then redraws it."""

    def write(self, text: str) -> None:
        tqdm.write(text, file=sys.stderr, end="")

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(log_format: str = "auto", level: int = logging.INFO) -> None:
    """Route structlog events to stderr, rendered for a person or for a log collector."""
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    renderer = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(
            file=_BarSafeStderr() if log_format == "console" else sys.stderr),
        cache_logger_on_first_use=False,
    )
