"""`enrich browse`: a local web gallery of the warehouse (search, filters, item pages, runs and charts).
Read-only; never imports Prefect. The app lives in enrich/web/."""
from __future__ import annotations

import argparse
import sys

from enrich.commands._common import require_folder_warehouse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "browse",
        help="look at the warehouse in a browser: gallery, search, items, runs and charts",
        description="Serve a local web app over the warehouse on 127.0.0.1 only, at a URL carrying a random "
        "access token (requests without it get 403): a gallery of thumbnails with captions and tags, search "
        "and filters (kind, status, folder, date), every field of an item, and runs with spend and token "
        "charts. Thumbnails are made locally and cached under $ENRICH_HOME/thumbs/. Works offline.",
    )
    p.add_argument("--warehouse", help="warehouse folder (default: $ENRICH_WAREHOUSE or $ENRICH_HOME/warehouse)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-open", action="store_true", help="print the URL but do not open a browser")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import webbrowser

    from enrich.errors import UsageError
    from enrich.settings import load_settings
    from enrich.web.app import bind, create_app, make_server, new_token

    settings = load_settings()
    if args.warehouse:
        settings = settings.with_overrides(warehouse=args.warehouse)
    require_folder_warehouse(settings, "browse")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    try:
        sock = bind(args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    port = sock.getsockname()[1]
    token = new_token()
    app = create_app(settings.warehouse, token=token, thumbs_dir=settings.home / "thumbs",
                     cookie_name=f"enrich_token_{port}")
    url = f"http://127.0.0.1:{port}/?token={token}"
    print(f"enrich browse: {url}", flush=True)
    print("(only this machine can connect; Ctrl-C to stop)", file=sys.stderr, flush=True)
    if not args.no_open:
        webbrowser.open(url)
    try:
        make_server(app).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops on Ctrl-C and then re-raises it: stopping is this command's end
        pass
    return 0
