"""How the Gemini backend classifies every HTTP failure: retry, record for this item, or stop the run.

The real SDK talks HTTP to a tiny local server that answers every request with one fixed status, body and
headers (the emulator does not produce 401/403/502/504 or a per-day quota), so the whole client path is real.
"""
from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from enrich.backends.base import DescribeRequest, MediaPart
from enrich.backends.gemini import GeminiBackend
from enrich.errors import FatalRunError, ItemRequestError, RetryableError
from enrich.schemas.descriptions import DESCRIPTION_SCHEMAS

STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "BAD_GATEWAY", 503: "UNAVAILABLE",
          504: "DEADLINE_EXCEEDED"}


class _Fixed(BaseHTTPRequestHandler):
    answer: tuple[int, bytes, dict] = (200, b"{}", {})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        code, body, headers = self.answer
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fixed_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fixed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def answer(code: int, details: list | None = None, headers: dict | None = None, message: str = "nope"):
        err = {"code": code, "message": message, "status": STATUS.get(code, "UNKNOWN")}
        if details:
            err["details"] = details
        _Fixed.answer = (code, json.dumps({"error": err}).encode(), headers or {})
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield answer
    server.shutdown()
    server.server_close()


def call(base_url: str) -> BaseException:
    backend = GeminiBackend("gemini-3.1-flash-lite", api_key=SecretStr("AIzaSECRETKEY"), base_url=base_url,
                            timeout_s=5)
    request = DescribeRequest(key="k", prompt="describe", schema=DESCRIPTION_SCHEMAS["image"],
                              media=(MediaPart(mime="image/jpeg", data=b"\xff\xd8\xff"),), max_output_tokens=64)

    async def go():
        try:
            await backend.describe(request)
        except BaseException as exc:  # noqa: BLE001
            return exc
        finally:
            await backend.aclose()
        raise AssertionError("no error")

    return asyncio.run(go())


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retried(fixed_server, code):
    exc = call(fixed_server(code))
    assert isinstance(exc, RetryableError)
    assert exc.kind == ("rate_limited" if code == 429 else f"http_{code}")


@pytest.mark.parametrize("code, kind", [(401, "auth"), (403, "auth"), (404, "unknown_model")])
def test_bad_credentials_and_unknown_models_stop_the_run(fixed_server, code, kind):
    exc = call(fixed_server(code))
    assert isinstance(exc, FatalRunError) and exc.kind == kind
    assert "SECRET" not in str(exc)


def test_a_bad_request_is_recorded_for_its_item_and_not_retried(fixed_server):
    exc = call(fixed_server(400, message="Request contains an invalid argument."))
    assert isinstance(exc, ItemRequestError) and exc.kind == "http_400"


def test_a_rejected_key_in_a_400_stops_the_run(fixed_server):
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    exc = call(fixed_server(400, details, message="API key not valid. Please pass a valid API key."))
    assert isinstance(exc, FatalRunError) and exc.kind == "auth"


def test_retry_delay_comes_from_retry_info_else_from_the_retry_after_header(fixed_server):
    info = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "53s"}]
    assert call(fixed_server(429, info, {"Retry-After": "7"})).retry_after == 53.0
    assert call(fixed_server(429, None, {"Retry-After": "7"})).retry_after == 7.0
    assert call(fixed_server(503, None, {"Retry-After": "2"})).retry_after == 2.0


def test_a_used_up_daily_quota_stops_the_run_instead_of_retrying(fixed_server):
    details = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
        {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
         "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3600s"}]
    exc = call(fixed_server(429, details))
    assert isinstance(exc, FatalRunError) and exc.kind == "quota_exhausted"
    per_minute = [{**details[0], "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]}]
    assert isinstance(call(fixed_server(429, per_minute)), RetryableError)
