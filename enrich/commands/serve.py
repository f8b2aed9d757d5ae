"""`enrich serve PATH... --cron "0 2 * * *"`: run the enrich flow on a schedule, served by this process.

A Prefect schedule needs a persistent Prefect server (with the ephemeral one Prefect only logs "Cannot
schedule flows on an ephemeral server"): point PREFECT_API_URL at one (`prefect server start`, or Prefect
Cloud), or pass --start-server to start one here. Every scheduled run is an ordinary incremental
`enrich run` with the options given here: it describes only what is new or changed, waits for another run
holding the warehouse instead of failing, and obeys the budget. Stop with Ctrl-C (or SIGTERM).
For workers and work pools instead of this process, see prefect.yaml.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from enrich.commands._common import add_media_flags, overrides_from, resolve_paths, start_emulator

NEEDS_SERVER = (
    "a schedule needs a persistent Prefect server. Start one in another terminal with "
    "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api, or pass --start-server "
    "to let enrich serve start one (its data lives in $ENRICH_HOME/prefect)"
)
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="describe PATH... on a schedule (Prefect deployment served by this process)",
        description="Register a Prefect deployment of the enrich flow with a cron schedule and run its "
        "scheduled runs in this process until stopped (Ctrl-C). Needs a persistent Prefect server: "
        "PREFECT_API_URL, or --start-server. Each run is incremental. See the runs in the Prefect UI "
        "(the server's address without /api) or with `enrich runs`.",
    )
    add_media_flags(p, "serve")
    p.add_argument("--cron", required=True, help='when to run, a cron expression, e.g. "0 2 * * *" (02:00 daily)')
    p.add_argument("--timezone", help="time zone of the cron expression (default: this machine's, else UTC)")
    p.add_argument("--name", default="nightly", help="deployment name (default: nightly)")
    p.add_argument("--start-server", action="store_true",
                   help="start a local Prefect server (UI included) when PREFECT_API_URL is not set")
    p.add_argument("--port", type=int, default=4200, help="port for --start-server (default 4200)")
    p.set_defaults(handler=main)


def local_timezone() -> str:
    """The IANA name of this machine's zone (TZ, /etc/timezone, /etc/localtime), else UTC."""
    if os.environ.get("TZ", "").strip(":"):
        return os.environ["TZ"].lstrip(":")
    try:
        return Path("/etc/timezone").read_text().strip() or "UTC"
    except OSError:
        pass
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"


def start_prefect_server(port: int, home: Path) -> tuple[subprocess.Popen, str]:
    """Start `prefect server start` as a child and wait until its API answers."""
    from enrich.errors import UsageError

    exe = Path(sys.executable).with_name("prefect")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]
    cmd += ["server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = prefect_server_env(port)
    log_path = home / "prefect" / "server.log"
    from enrich.private_fs import open_private, private_dirs

    private_dirs(log_path.parent)
    log = os.fdopen(open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UsageError(f"the Prefect server did not start (exit {proc.returncode}); see {log_path}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise UsageError(f"the Prefect server did not answer within 180 s; see {log_path}")


def flow_parameters(roots: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The deployment's parameters: the safe run options only (see flows/run_options.py)."""
    from enrich.flows.run_options import split_overrides

    options, _ = split_overrides(overrides_from(args))
    return {"roots": roots, "overrides": options.as_parameters(), "reprocess": list(args.reprocess or []),
            "wait_for_lock": True}


def process_environment(args: argparse.Namespace) -> dict[str, str]:
    """What serve's own flags set that a flow parameter may not (the warehouse, --keep-metadata, an endpoint
    or local model, the mode, the selection, the context): put into the serving process's environment (each
    setting's own variable), which every scheduled run inherits."""
    from enrich.flows.run_options import split_overrides

    from enrich.flows.run_options import ALLOWED_ROOTS_ENV

    _, rest = split_overrides(overrides_from(args))
    # a flow run created through Prefect's API may only describe the folders served here
    env: dict[str, str] = {ALLOWED_ROOTS_ENV: os.pathsep.join(str(Path(p).expanduser().resolve()) for p in args.paths)}
    from enrich.settings import SETTINGS

    for name, value in rest.items():
        if name == "warehouse":
            env["ENRICH_WAREHOUSE"] = str(Path(value).expanduser().resolve())
            continue
        spec = SETTINGS.get(name)
        if spec is None or not spec.env:
            continue  # --sample / --limit: a trial is for one run, not for every scheduled one
        env[spec.env[0]] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env


def prefect_server_env(port: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the Prefect server `--start-server` starts: CSRF protection on and CORS limited to
    the server's own origin, so a web page in the user's browser cannot create flow runs on it."""
    env = {**(os.environ if base is None else base), "PREFECT_UI_ENABLED": "true",
           "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
           "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
           "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "true"}
    env.pop("PREFECT_API_URL", None)
    return env


def main(args: argparse.Namespace) -> int:
    from enrich.errors import UsageError
    from enrich.prefect_env import configure_prefect_env
    from enrich.settings import load_settings

    roots = resolve_paths(args.paths)
    settings = load_settings()
    from enrich.warehouse.location import check_writable

    check_writable(settings.with_overrides(warehouse=args.warehouse).warehouse if getattr(args, "warehouse", None)
                   else settings.warehouse)
    start_server = not os.environ.get("PREFECT_API_URL")
    if start_server:
        if not args.start_server:
            raise UsageError(NEEDS_SERVER)
        os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{args.port}/api"  # before Prefect settings load
        os.environ.setdefault("PREFECT_CLIENT_CSRF_SUPPORT_ENABLED", "true")  # the server checks CSRF tokens
    configure_prefect_env()  # before Prefect is imported; the runs this process starts inherit it
    server = None
    if start_server:
        print(f"starting a Prefect server on port {args.port} (first start takes a while)...", file=sys.stderr)
        server, _ = start_prefect_server(args.port, settings.home)
    emu = None
    try:
        if args.emulator:
            emu, url = start_emulator()
            print(f"Using the local Gemini emulator at {url} (answers are fake; nothing is billed).",
                  file=sys.stderr)
        params = flow_parameters(roots, args)
        os.environ.update(process_environment(args))  # what scheduled runs of this process inherit
        checked = load_settings().with_overrides(**params["overrides"])
        if checked.api_key is None and not checked.model.startswith(("mlx:", "openai:")):
            raise UsageError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment of "
                             "enrich serve (scheduled runs inherit it), or pass --emulator")
        serve_schedule(params, args.cron, args.timezone or local_timezone(), args.name)
    finally:
        if emu is not None:
            emu.stop()
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0


def build_deployment(params: dict[str, Any], cron: str, timezone: str, name: str):
    """The RunnerDeployment for the flow with this schedule (plain values only: the key stays in the env)."""
    from enrich.errors import UsageError
    from enrich.flows.enrich_flow import enrich_flow
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    try:
        schedule = Cron(cron, timezone=timezone)
    except ValueError as exc:
        raise UsageError(f"invalid --cron {cron!r} or --timezone {timezone!r}: {str(exc).splitlines()[0]}") from None
    return enrich_flow.to_deployment(
        name=name,
        schedules=[schedule],
        parameters=params,
        description=f"enrich {' '.join(params['roots'])} on '{cron}' ({timezone}); incremental",
        tags=["enrich"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve_schedule(params: dict[str, Any], cron: str, timezone: str, name: str) -> None:
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    deployment = build_deployment(params, cron, timezone, name)
    api = PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL", "")
    ui = api.removesuffix("/").removesuffix("/api")
    print(f"serving deployment enrich/{name}: {', '.join(params['roots'])} on '{cron}' ({timezone})", flush=True)
    print(f"  runs in the Prefect UI: {ui}/deployments  (and `enrich runs` for items and spend)", flush=True)
    print("  run once now: prefect deployment run 'enrich/" + name + "'", flush=True)
    print("  stop: Ctrl-C here (the schedule is paused until served again)", flush=True)
    serve(deployment, print_starting_message=False)
