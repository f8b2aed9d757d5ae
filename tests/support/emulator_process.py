"""The Gemini emulator in its own process (`python -m enrich.emulator`), driven over its control routes.

Tests and benchmarks that need the pipeline's CPU to themselves use this instead of the in-process
`emulator` fixture: the emulator's request handling then no longer shares our GIL.
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class EmulatorProcess:
    def __init__(self, *args: str) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "enrich.emulator", *args], cwd=ROOT,
                                      stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline().strip()
        if not line.startswith("EMULATOR_URL="):
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = line.split("=", 1)[1]
        self.pid = self._proc.pid

    def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/_emulator/{route}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def set_config(self, **config: Any) -> dict[str, Any]:
        return self._call("POST", "config", config)

    def reset(self) -> None:
        self._call("POST", "reset", {})

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout:
            self._proc.stdout.close()

    def __enter__(self) -> "EmulatorProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
