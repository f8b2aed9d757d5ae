"""A local Gemini API emulator for tests and offline demos: the real google-genai SDK talks to it over HTTP.

    from enrich.emulator import GeminiEmulator, EmulatorConfig, Faults
    with GeminiEmulator(EmulatorConfig(faults=Faults(rate_503=0.1))) as emu:
        client = genai.Client(api_key="test", http_options=types.HttpOptions(base_url=emu.url,
                                                                              api_version="v1beta"))
        ...
        emu.stats()

Command line: `python -m enrich.emulator --port 8765 --latency-ms 300-800 --fault 503=0.05 --rpm 60 --seed 1`
prints `EMULATOR_URL=http://127.0.0.1:8765` and serves until SIGINT/SIGTERM.
"""
from .server import EmulatorConfig, Faults, GeminiEmulator

__all__ = ["GeminiEmulator", "EmulatorConfig", "Faults"]
