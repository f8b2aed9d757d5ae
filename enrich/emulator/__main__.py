"""`python -m enrich.emulator [--port 8765] [--latency-ms 300-800] [--fault 503=0.05 ...] [--rpm N] [--seed S]`"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import FAULT_KINDS, EmulatorConfig, Faults, GeminiEmulator


def _latency(s: str) -> tuple[float, float]:
    if "-" in s:
        lo, hi = s.split("-", 1)
        return (float(lo), float(hi))
    return (float(s), float(s))


def _fault(s: str) -> tuple[str, float]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE, got {s!r}")
    k, v = s.split("=", 1)
    k = k.strip().removeprefix("rate_")
    if k not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(f"unknown fault {k!r}; one of {', '.join(FAULT_KINDS)}")
    rate = float(v)
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError("a fault rate is a probability in [0, 1]")
    return k, rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m enrich.emulator", description="Local Gemini API emulator")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--latency-ms", type=_latency, default=(0.0, 0.0), help="LO-HI or N milliseconds")
    ap.add_argument("--fault", type=_fault, action="append", default=[],
                    help=f"KIND=RATE, KIND one of {', '.join(FAULT_KINDS)}; repeatable")
    ap.add_argument("--rpm", type=int, default=None, help="requests per minute limit (sliding 60 s window)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retry-delay-s", type=float, default=1.0)
    ap.add_argument("--slow-s", type=float, default=5.0)
    ap.add_argument("--invalid-key", action="append", default=None,
                    help="API-key prefix treated as invalid (default: 'invalid'); repeatable")
    ap.add_argument("--strict-media", action="store_true", help="400 on undecodable images/PDFs")
    a = ap.parse_args(argv)
    faults = Faults(**{f"rate_{k}": v for k, v in a.fault})
    cfg = EmulatorConfig(latency_ms=a.latency_ms, faults=faults, retry_delay_s=a.retry_delay_s, slow_s=a.slow_s,
                         rpm_limit=a.rpm, seed=a.seed, port=a.port, strict_media=a.strict_media,
                         invalid_keys=tuple(a.invalid_key) if a.invalid_key else ("invalid",))
    emu = GeminiEmulator(cfg)
    url = emu.start()
    done = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print(f"EMULATOR_URL={url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
