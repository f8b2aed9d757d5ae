"""Loopback ports for the local servers the tests start."""
from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    """A port nothing listens on now (the server started next binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Until something accepts connections on `port`; raises OSError after `timeout`, or at once when
    `process` (the server) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or (process is not None and process.poll() is not None):
                raise
            time.sleep(0.1)
