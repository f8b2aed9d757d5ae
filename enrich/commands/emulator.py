"""`enrich emulator`: serve the local Gemini emulator (for demos, tests and trying the pipeline offline)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emulator", help="serve the local Gemini emulator on 127.0.0.1",
                       description="Serve a local Gemini API emulator. Point enrich (or any google-genai "
                       "client) at it with GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:PORT.")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--latency-ms", default="0-0", help="uniform latency range, e.g. 300-800")
    p.add_argument("--fault", action="append", default=[], metavar="NAME=RATE",
                   help="fault probability: 429, 500, 503, garbage, slow, safety, prompt_block (repeatable)")
    p.add_argument("--rpm", type=int, default=None, help="answer 429 above this many requests a minute")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import sys

    from enrich.emulator.__main__ import main as emulator_main

    argv = ["--port", str(args.port), "--latency-ms", args.latency_ms, "--seed", str(args.seed)]
    for f in args.fault:
        argv += ["--fault", f]
    if args.rpm:
        argv += ["--rpm", str(args.rpm)]
    return int(emulator_main(argv) or 0)
