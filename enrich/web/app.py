"""`enrich browse`: the gallery, search, item and runs pages as a Starlette app served by uvicorn.

Safety:
- bound to 127.0.0.1 only; a request whose Host header is not 127.0.0.1 / localhost gets 403 (a page on
  another site cannot reach the app through a DNS name rebound to 127.0.0.1);
- every request must carry the random token printed with the URL: as `?token=` (the printed URL; the app
  then sets an HttpOnly, SameSite=Strict cookie so links need not carry it) or that cookie; else 403;
- read-only: the warehouse is read through an in-memory DuckDB snapshot (enrich.web.library);
- no request parameter reaches the filesystem: a thumbnail is looked up by the content hash the warehouse
  recorded, media by the item's id; anything else is 404;
- every model-written string is escaped (Jinja2 autoescape); a Content-Security-Policy allows nothing but
  this origin's images, media and stylesheet, and no script at all (the pages use none).
"""
from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from enrich.web.library import ITEM_ID, Filters, Library
from enrich.web.pages import environment, field_groups, render, runs_context
from enrich.web.thumbs import SIZES, Thumbnails

ALLOWED_HOSTS = frozenset({"127.0.0.1", "localhost"})
CSP = ("default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'none'; "
       "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
MEDIA_KINDS = ("audio", "video")


def _static(name: str) -> bytes:
    return resources.files("enrich.web").joinpath("static", name).read_bytes()


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:port
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


class Guard:
    """ASGI middleware: Host check, token (query or cookie), security headers on every response."""

    def __init__(self, app, token: str, cookie_name: str) -> None:
        self.app = app
        self.token = token
        self.cookie_name = cookie_name

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        set_cookie = False
        started = time.perf_counter()

        async def send_secure(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                # time spent in the app until the response starts (HTML pages are one body): DevTools shows it
                headers.append((b"server-timing", f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()))
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                if set_cookie:
                    headers.append((b"set-cookie", f"{self.cookie_name}={self.token}; Path=/; HttpOnly; "
                                                   f"SameSite=Strict".encode()))
                message = {**message, "headers": headers}
            await send(message)

        if _hostname(request.headers.get("host", "")) not in ALLOWED_HOSTS:
            return await PlainTextResponse("forbidden: unknown Host", 403)(scope, receive, send_secure)
        given = request.query_params.get("token")
        if given is not None and secrets.compare_digest(given.encode(), self.token.encode()):
            set_cookie = True
        elif not secrets.compare_digest(request.cookies.get(self.cookie_name, "").encode(), self.token.encode()):
            return await PlainTextResponse(
                "forbidden: open the URL `enrich browse` printed (it carries the access token)", 403
            )(scope, receive, send_secure)
        await self.app(scope, receive, send_secure)


def create_app(warehouse: str | Path, *, token: str, thumbs_dir: str | Path, cookie_name: str = "enrich_token",
               library: Library | None = None) -> Starlette:
    library = library or Library(warehouse)
    thumbs = Thumbnails(thumbs_dir)
    css, placeholder = _static("style.css"), _static("placeholder.svg")
    shown_warehouse = str(warehouse)
    home = os.path.expanduser("~")
    if home not in ("", "/") and shown_warehouse.startswith(home + os.sep):
        shown_warehouse = "~" + shown_warehouse[len(home):]

    def not_found() -> Response:
        return PlainTextResponse("not found", 404)

    def page(html: str) -> HTMLResponse:
        return HTMLResponse(html)

    def urls(extra: dict[str, Any]) -> dict[str, Any]:
        def item_url(it: dict[str, Any]) -> str:
            return f"/item/{it['_id']}"

        def thumb_url(it: dict[str, Any]) -> str | None:
            if it.get("kind") == "image" and it.get("content_hash"):
                return f"/thumb/{it['content_hash']}.jpg"
            return None

        return {"item_url": item_url, "thumb_url": thumb_url, "warehouse": shown_warehouse, **extra}

    def gallery(request: Request) -> Response:
        filters = Filters.from_query(request.query_params)
        return page(gallery_html(filters, request.query_params.get("after", "")[:2000]))

    def gallery_html(filters: Filters, after: str) -> str:
        snap = library.snapshot()
        result = snap.gallery(filters, after)
        query = filters.as_query()
        first_url = "/?" + urlencode(query) if query else "/"
        next_url = "/?" + urlencode({**query, "after": result.next_cursor}) if result.next_cursor else None
        return render("gallery.html", **urls({"snapshot": snap, "filters": filters, "page": result,
                                              "after": after, "first_url": first_url, "next_url": next_url}))

    def item(request: Request) -> Response:
        snap = library.snapshot()
        found = snap.item(request.path_params["item_id"])
        if found is None:
            return not_found()
        preview = (f"/preview/{found['content_hash']}.jpg"
                   if found.get("kind") == "image" and found.get("content_hash") else None)
        media = f"/media/{found['_id']}" if found.get("kind") in MEDIA_KINDS else None
        return page(render("item.html", **urls({"item": found, "groups": field_groups(found),
                                                "preview_url": preview, "media_url": media})))

    def image(side: int):
        def endpoint(request: Request) -> Response:
            content_hash = request.path_params["content_hash"]
            sources = library.snapshot().image_sources(content_hash)  # validates the hash; [] when unknown
            if not sources:
                return not_found()
            data = thumbs.get(content_hash, sources, side)
            if data is None:  # recorded, but unreadable now (moved, changed, not decodable)
                return Response(placeholder, media_type="image/svg+xml")
            return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"})
        return endpoint

    def media(request: Request) -> Response:
        item_id = request.path_params["item_id"]
        found = library.snapshot().item(item_id) if ITEM_ID.match(item_id) else None
        if found is None or found.get("kind") not in MEDIA_KINDS or not os.path.isfile(found["path"]):
            return not_found()
        return FileResponse(found["path"], media_type=found.get("mime") or "application/octet-stream")

    def runs(request: Request) -> Response:
        snap = library.snapshot()

        def run_link(r: dict[str, Any]) -> str:
            return "/?" + urlencode({"run": r["run_id"]})

        return page(render("runs.html", **urls(runs_context(snap, run_link=run_link))))

    def static(body: bytes, media_type: str):
        def endpoint(request: Request) -> Response:
            return Response(body, media_type=media_type, headers={"cache-control": "private, max-age=3600"})
        return endpoint

    routes = [
        Route("/", gallery),
        Route("/item/{item_id}", item),
        Route("/thumb/{content_hash}.jpg", image(SIZES["thumb"])),
        Route("/preview/{content_hash}.jpg", image(SIZES["preview"])),
        Route("/media/{item_id}", media),
        Route("/runs", runs),
        Route("/static/style.css", static(css, "text/css")),
        Route("/static/placeholder.svg", static(placeholder, "image/svg+xml")),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # Before the server takes its first request: start the worker threads (and import anyio's backend),
        # compile the templates and run the first page's queries, so the first page a user opens costs what
        # every later one does.
        for name in ("item.html", "runs.html", "_runs.html"):
            environment().get_template(name)
        await anyio.to_thread.run_sync(gallery_html, Filters(), "")
        yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(Guard, token=token, cookie_name=cookie_name)
    app.state.library = library
    return app


def bind(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


def make_server(app):
    """A uvicorn server for `app`; run it with `.run(sockets=[bind(port)])`."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", server_header=False)
    return uvicorn.Server(config)


def new_token() -> str:
    return secrets.token_urlsafe(24)
