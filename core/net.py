"""Ports on this machine, for the servers the pipeline starts (Airflow, the MLflow UI) and
for tests."""

from __future__ import annotations

import socket


def free_port(preferred: int) -> int:
    """The preferred port when it is free on 127.0.0.1, else any free one."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")
