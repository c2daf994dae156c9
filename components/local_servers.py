"""Local server processes the tests and the bench scripts start themselves (``mlflow server``, ``moto_server``):
a free port, waiting for the server's first HTTP answer, and stopping the process group that was started —
never anything else on the machine.  Not used by the benchmark itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

__all__ = ["free_port", "stop_process_group", "wait_http"]


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Return once ``url`` answers 200; RuntimeError (with the tail of ``log``) when ``proc`` exits first or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 — a local server the caller started
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{url} did not answer within {timeout:.0f} s\n{tail}")
        time.sleep(0.2)


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group the caller started with ``start_new_session=True`` (SIGKILL after 10 s)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
