"""Statuses, error kinds and media kinds are declared once (schemas/vocab.py), each error kind with its retry
class, and the next run retries exactly the transient ones.

- every declared kind has a retry class, and the library names kinds and statuses through the vocabulary
  (no bare strings at the places rows and errors are built; no reference to an undeclared member);
- the planner, walked over every declared kind, sends again exactly the transient ones;
- end to end: a Gemini 408 (emulator fault) and a 5xx from an OpenAI-compatible server are recorded, then
  retried by the next run without being asked, which describes them.
"""
from __future__ import annotations

import ast
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from enrich.schemas.vocab import ErrorKind, MediaKind, Retry, RunStatus, Status, retried_next_run, retry_class
from enrich.tasks.discover import DiscoveredFile
from enrich.tasks.incremental import Planner
from enrich.warehouse.state import PathState, WarehouseState
from enrich.warehouse.views import connect
from tests.media_factory import make_jpeg
from tests.support.flows import run_enrich_flow

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_FOLDERS = ("enrich", "flows", "tasks", "warehouse", "schemas")
VOCAB = {"ErrorKind": ErrorKind, "Status": Status, "RunStatus": RunStatus, "MediaKind": MediaKind}


def test_every_error_kind_declares_its_retry_class():
    assert len(ErrorKind) > 50
    for kind in ErrorKind:
        assert isinstance(kind.retry, Retry), kind
        assert kind == kind.value and isinstance(kind, str)  # stored as the plain string
    # the kinds the old hand-kept list had drifted on
    for kind in ("server_error", "http_408", "file_processing_timeout", "model_not_found"):
        assert ErrorKind(kind).retry is Retry.TRANSIENT, kind
    for kind in ("corrupt", "too_long", "invalid_output", "max_tokens", "safety", "http_400", "not_media"):
        assert ErrorKind(kind).retry is Retry.FINAL, kind


def test_kinds_older_warehouses_wrote_keep_a_retry_class():
    assert retry_class("http_507") is Retry.TRANSIENT  # a 5xx not declared one by one: a server error
    assert retry_class("http_418") is Retry.FINAL
    assert retry_class("something_we_never_wrote") is Retry.FINAL
    assert ErrorKind.for_http_status(408) is ErrorKind.HTTP_408
    assert ErrorKind.for_http_status(599) is ErrorKind.SERVER_ERROR
    assert ErrorKind.for_http_status(451) is ErrorKind.REQUEST_REJECTED
    assert ErrorKind.for_block_reason("IMAGE_SAFETY") is ErrorKind.IMAGE_SAFETY


def test_statuses_without_an_outcome_are_retried_and_answers_are_not():
    assert retried_next_run("interrupted", None) and retried_next_run("over_budget", "over_budget")
    for status in ("ok", "blocked", "skipped", "gone"):
        assert not retried_next_run(status, None)
    assert not retried_next_run("blocked", "safety")


# ------------------------------------------------------------------------------------- the code uses them

ROW_BUILDERS = {"_row", "status_row", "DescribeResult"}  # positional (status, error_kind, ...) arguments


def _library_files() -> list[Path]:
    files = []
    for folder in LIBRARY_FOLDERS:
        files += [p for p in (ROOT / folder).rglob("*.py") if "emulator" not in p.parts and p.name != "vocab.py"]
    return files


def _bare_literals(tree: ast.AST) -> list[tuple[int, str]]:
    declared = {m.value for m in ErrorKind} | {m.value for m in Status} | {m.value for m in RunStatus}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in ("kind", "error_kind", "status") and isinstance(kw.value, ast.Constant) \
                        and kw.value.value in declared:
                    found.append((node.lineno, f"{kw.arg}={kw.value.value!r}"))
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name in ROW_BUILDERS:
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and arg.value in declared:
                        found.append((node.lineno, f"{name}(... {arg.value!r} ...)"))
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            for elt in node.value.elts:
                if isinstance(elt, ast.Constant) and elt.value in declared:
                    found.append((node.lineno, f"return (... {elt.value!r} ...)"))
    return found


def _undeclared_members(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in VOCAB:
            enum = VOCAB[node.value.id]
            if not hasattr(enum, node.attr):
                found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


def test_library_code_names_statuses_and_error_kinds_through_the_vocabulary():
    offenders = []
    for path in _library_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in _bare_literals(tree)]
        offenders += [f"{path.relative_to(ROOT)}:{line}: undeclared {what}" for line, what in
                      _undeclared_members(tree)]
    assert not offenders, "use the members of schemas/vocab.py:\n" + "\n".join(offenders)


def test_the_vocabulary_check_catches_a_bare_string():
    tree = ast.parse('raise MediaError("x", kind="corrupt")\nreturn_row = _row(p, "error", "empty", "e")\n'
                     'ok = ErrorKind.NOT_A_KIND')
    assert [w for _, w in _bare_literals(tree)] == ["kind='corrupt'", "_row(... 'error' ...)", "_row(... 'empty' ...)"]
    assert [w for _, w in _undeclared_members(tree)] == ["ErrorKind.NOT_A_KIND"]


# ------------------------------------------------------------------------------------------ the planner

VERSION = "v1"


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.value)
def test_the_next_run_retries_exactly_the_transient_kinds(kind):
    """A file whose latest row (same bytes, current version) is an `error` of this kind."""
    path, digest = "/lib/a.jpg", "ab" * 32
    state = WarehouseState(by_path={(path, "detailed"): PathState(digest, 10, 0, Status.ERROR, kind, "why", VERSION, "image",
                                                    "image/jpeg")})
    planner = Planner(state=state, run_id="r2", version_of=lambda _kind, _profile=None: VERSION)
    file = DiscoveredFile(path=path, size=10, mtime_ns=0, kind=MediaKind.IMAGE, mime="image/jpeg",
                          content_hash=digest, status=Status.PENDING, error_kind=None, error=None,
                          profile="detailed")
    sent = planner.admit(file)
    assert sent is (kind.retry is Retry.TRANSIENT)
    assert planner.unchanged == (0 if sent else 1)

    failed_too = Planner(state=state, run_id="r3", version_of=lambda _kind, _profile=None: VERSION,
                         reprocess=frozenset({"failed"}))
    assert failed_too.admit(file) is True  # --reprocess failed redoes the final ones as well


# ------------------------------------------------------------------------------------------- end to end

def _library(root: Path, n: int = 2) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        make_jpeg(root / f"p{i}.jpg", size=(96, 64), color=(40 * i, 90, 160))
    return root


def _rows(home: Path) -> list[tuple]:
    return connect(home / "warehouse").execute(
        "SELECT status, error_kind FROM items ORDER BY path").fetchall()


@pytest.mark.usefixtures("prefect_harness")
def test_a_gemini_408_is_recorded_then_retried_by_the_next_run(tmp_path, gemini, enrich_home):
    lib = _library(tmp_path / "lib")
    gemini.set_config(faults={"408": 1.0})
    first = run_enrich_flow([lib], {"max_attempts": 1})
    assert first["status"] == "finished"
    assert _rows(enrich_home) == [("error", "http_408")] * 2

    gemini.set_config(faults={"408": 0.0})
    second = run_enrich_flow([lib], {"max_attempts": 1})
    assert second["items"] == 2 and second["unchanged"] == 0
    assert _rows(enrich_home) == [("ok", None)] * 2


class _FlakyOpenAI(ThreadingHTTPServer):
    """An OpenAI-compatible server that answers 500 until told to work."""

    daemon_threads = True
    failing = True


class _Handler(BaseHTTPRequestHandler):
    server: _FlakyOpenAI

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.failing:
            self._send(500, {"error": {"message": "Generation failed"}})
            return
        content = json.dumps({"caption": "A test picture.", "description": "Colours.", "tags": ["test"],
                              "objects": [], "visible_text": "", "people_count": 0, "setting": "indoor"})
        self._send(200, {"id": "x", "object": "chat.completion", "model": "m",
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}],
                         "usage": {"prompt_tokens": 50, "completion_tokens": 20}})


@pytest.mark.usefixtures("prefect_harness")
def test_a_5xx_from_an_openai_compatible_server_is_recorded_then_retried_by_the_next_run(tmp_path, enrich_home):
    srv = _FlakyOpenAI(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        model = f"openai:m@http://127.0.0.1:{srv.server_address[1]}/v1"
        lib = _library(tmp_path / "lib")
        first = run_enrich_flow([lib], {"model": model, "max_attempts": 1})
        assert first["status"] == "finished"
        assert _rows(enrich_home) == [("error", "server_error")] * 2

        srv.failing = False
        second = run_enrich_flow([lib], {"model": model, "max_attempts": 1})
        assert second["items"] == 2 and second["unchanged"] == 0
        assert _rows(enrich_home) == [("ok", None)] * 2
    finally:
        srv.shutdown()
        srv.server_close()
