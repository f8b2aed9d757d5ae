"""OpenAICompatBackend over real HTTP: against `python -m mlx_vlm.server` serving the tiny random-weight
model (structure, usage, statuses), and against a scripted stdlib HTTP server (request shape, every
answer path, error mapping)."""
from __future__ import annotations

import os

os.environ["MLX_DISABLE_COMPILE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import asyncio
import base64
import io
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from enrich.backends.base import Backend, DescribeRequest, MediaPart
from enrich.backends.openai_compat import OpenAICompatBackend, strict_json_schema
from enrich.errors import FatalRunError, ItemRequestError, RetryableError
from enrich.schemas.descriptions import ImageDescription
from tests.support import tiny_vlm_dir
from tests.support.net import free_port

GOOD = ImageDescription(
    caption="A red square.",
    description="A plain red square.",
    tags=["red"],
    objects=["square"],
    visible_text="",
    people_count=0,
    setting="unknown",
)
SECRET = "sk-test-secret-123"


def _jpeg(color=(200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (80, 60), color).save(buf, "JPEG")
    return buf.getvalue()


def _request(max_tokens=16, mime="image/jpeg") -> DescribeRequest:
    return DescribeRequest(
        key="k1",
        prompt="Describe the image.",
        schema=ImageDescription,
        media=(MediaPart(mime=mime, data=_jpeg()),),
        max_output_tokens=max_tokens,
    )


def _run(coro):
    return asyncio.run(coro)


async def _describe(backend: OpenAICompatBackend, request: DescribeRequest):
    try:
        return await backend.describe(request)
    finally:
        await backend.aclose()


async def _preflight(backend: OpenAICompatBackend) -> None:
    try:
        await backend.preflight()
    finally:
        await backend.aclose()


# --------------------------------------------------------------------------------------------- mlx_vlm.server


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    pytest.importorskip("mlx_vlm")
    return tiny_vlm_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def mlx_server(tiny_vlm, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("mlx-server") / "server.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", MLX_DISABLE_COMPILE="1")
    cmd = [sys.executable, "-m", "mlx_vlm.server", "--model", str(tiny_vlm),
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlx_vlm.server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlx_vlm.server not healthy after 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_real_server_gibberish_is_kept_with_usage(mlx_server, tiny_vlm):
    backend = OpenAICompatBackend(model=str(tiny_vlm), base_url=mlx_server)
    assert isinstance(backend, Backend)
    assert backend.capabilities.local and backend.capabilities.default_concurrency == 4
    assert backend.model == f"openai:{tiny_vlm}@{mlx_server}"

    async def go():
        await backend.preflight()
        return await _describe(backend, _request(max_tokens=16))

    r = _run(go())
    # random weights never write valid JSON; with no EOS in sight the answer is cut at max_tokens
    assert r.status == "error" and r.error_kind == "max_tokens" and r.finish_reason == "length"
    assert r.raw_text and r.description is None
    assert r.usage.output_tokens == 16
    assert r.usage.input_tokens > 16  # image tokens + prompt + schema instructions
    assert r.model_version == str(tiny_vlm)
    assert r.extra["latency_ms"] > 0 and r.extra["attempts"] == 1


def test_real_server_unknown_model_is_fatal(mlx_server):
    # mlx_vlm.server tries to load any model name it is sent (HTTP 400 "Failed to load model")
    backend = OpenAICompatBackend(model="no-such/model", base_url=mlx_server)
    with pytest.raises(FatalRunError) as info:
        _run(_describe(backend, _request()))
    assert info.value.kind == "model_not_found"


@pytest.mark.skipif(sys.platform == "darwin", reason="Metal can do structured output")
def test_real_server_structured_output_needs_metal(mlx_server, tiny_vlm):
    backend = OpenAICompatBackend(model=str(tiny_vlm), base_url=mlx_server, structured_output=True)
    with pytest.raises(RetryableError) as info:  # HTTP 500 "[metal_kernel] No Metal back-end."
        _run(_describe(backend, _request()))
    assert "500" in str(info.value)


# --------------------------------------------------------------------------------------------- scripted server


class _Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[dict] = []
        self.requests: list[dict] = []

    def handle_error(self, request, client_address):  # a client that gave up (timeout test): not news
        pass

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: _Scripted

    def log_message(self, *args):  # quiet
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers),
             "json": json.loads(body) if body else None}
        )
        step = self.server.script.pop(0) if self.server.script else {"status": 200, "json": _reply("{}")}
        if step.get("sleep"):
            time.sleep(step["sleep"])
        payload = step.get("body")
        if payload is None:
            payload = json.dumps(step.get("json", {})).encode()
        self.send_response(step.get("status", 200))
        for k, v in (step.get("headers") or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _answer
    do_POST = _answer


def _reply(content, finish="stop", prompt_tokens=300, completion_tokens=40, **usage_extra):
    return {
        "id": "x", "object": "chat.completion", "model": "served-model",
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, **usage_extra},
    }


@pytest.fixture(scope="module")
def scripted_server():
    srv = _Scripted()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def scripted(scripted_server):
    scripted_server.script.clear()
    scripted_server.requests.clear()
    return scripted_server


def _backend(srv, **kw) -> OpenAICompatBackend:
    kw.setdefault("api_key", SECRET)
    return OpenAICompatBackend(model="m", base_url=srv.base_url + "/", **kw)


def test_request_shape(scripted):
    scripted.script.append({"json": _reply("```json\n" + GOOD.model_dump_json() + "\n```")})
    r = _run(_describe(_backend(scripted), _request(max_tokens=77)))
    assert r.status == "ok" and r.description == GOOD
    req = scripted.requests[0]
    assert req["method"] == "POST" and req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = req["json"]
    assert body["model"] == "m" and body["max_tokens"] == 77 and body["temperature"] == 0
    assert "response_format" not in body
    parts = body["messages"][-1]["content"]
    image = [p for p in parts if p["type"] == "image_url"][0]["image_url"]["url"]
    assert image.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(image.split(",", 1)[1]) == _jpeg()
    text = [p for p in parts if p["type"] == "text"][0]["text"]
    assert text.startswith("Describe the image.") and '"people_count": integer' in text


def test_structured_output_request(scripted):
    scripted.script.append({"json": _reply(GOOD.model_dump_json())})
    backend = _backend(scripted, structured_output=True)
    assert backend.capabilities.structured_output
    r = _run(_describe(backend, _request()))
    assert r.status == "ok"
    body = scripted.requests[0]["json"]
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["name"] == "ImageDescription"
    assert rf["json_schema"]["schema"] == strict_json_schema(ImageDescription)
    assert rf["json_schema"]["schema"]["additionalProperties"] is False
    assert set(rf["json_schema"]["schema"]["required"]) == set(ImageDescription.model_fields)
    text = [p for p in body["messages"][-1]["content"] if p["type"] == "text"][0]["text"]
    assert text == "Describe the image."  # no schema instructions when the server enforces it


def test_usage_mapping(scripted):
    scripted.script.append({"json": _reply(GOOD.model_dump_json(), prompt_tokens=321, completion_tokens=50,
                                           completion_tokens_details={"reasoning_tokens": 20},
                                           prompt_tokens_details={"cached_tokens": 100})})
    r = _run(_describe(_backend(scripted), _request()))
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.thinking_tokens, r.usage.cached_tokens) == (
        321, 30, 20, 100)
    assert r.model_version == "served-model" and r.finish_reason == "stop"


def test_invalid_output_is_retried_once_then_kept(scripted):
    scripted.script += [{"json": _reply("I see a red square.")}, {"json": _reply("Still prose.")}]
    r = _run(_describe(_backend(scripted), _request()))
    assert r.status == "error" and r.error_kind == "invalid_output"
    assert r.raw_text == "Still prose." and r.extra["attempts"] == 2
    assert r.usage.input_tokens == 600 and r.usage.output_tokens == 80
    second = [p for p in scripted.requests[1]["json"]["messages"][-1]["content"] if p["type"] == "text"][0]["text"]
    assert "ONLY the JSON object" in second


def test_invalid_then_valid(scripted):
    scripted.script += [{"json": _reply("prose")}, {"json": _reply(GOOD.model_dump_json())}]
    r = _run(_describe(_backend(scripted), _request()))
    assert r.status == "ok" and r.description == GOOD and r.extra["attempts"] == 2


def test_cut_answer_is_max_tokens_without_retry(scripted):
    scripted.script.append({"json": _reply(GOOD.model_dump_json()[:30], finish="length")})
    r = _run(_describe(_backend(scripted), _request()))
    assert r.status == "error" and r.error_kind == "max_tokens" and r.raw_text
    assert len(scripted.requests) == 1


def test_content_filter_is_blocked(scripted):
    scripted.script.append({"json": _reply(None, finish="content_filter")})
    r = _run(_describe(_backend(scripted), _request()))
    assert r.status == "blocked" and r.error_kind == "safety"


def test_no_choices(scripted):
    scripted.script.append({"json": {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 0}}})
    r = _run(_describe(_backend(scripted), _request()))
    assert r.status == "error" and r.error_kind == "no_candidates" and r.usage.input_tokens == 5


@pytest.mark.parametrize(
    "status, headers, body, exc, kind, retry_after",
    [
        (429, {"Retry-After": "7"}, b'{"error": "slow down"}', RetryableError, "rate_limited", 7.0),
        (429, {}, b"", RetryableError, "rate_limited", None),
        (500, {}, b'{"detail": "Generation failed"}', RetryableError, "server_error", None),
        (503, {"Retry-After": "2"}, b"busy", RetryableError, "server_error", 2.0),
        (401, {}, f'{{"error": "bad key {SECRET}"}}'.encode(), FatalRunError, "auth", None),
        (403, {}, b"forbidden", FatalRunError, "auth", None),
        (404, {}, b'{"error": "The model `m` does not exist."}', FatalRunError, "model_not_found", None),
        (400, {}, b'{"error": "model \'m\' not found"}', FatalRunError, "model_not_found", None),
        (400, {}, b'{"error": "image too small"}', ItemRequestError, "request_rejected", None),
        (422, {}, b'{"error": "bad field"}', ItemRequestError, "request_rejected", None),
        (413, {}, b"too big", ItemRequestError, "too_large", None),
    ],
)
def test_error_mapping(scripted, status, headers, body, exc, kind, retry_after):
    scripted.script.append({"status": status, "headers": headers, "body": body})
    with pytest.raises(exc) as info:
        _run(_describe(_backend(scripted), _request()))
    assert info.value.kind == kind
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    if exc is RetryableError:
        assert info.value.retry_after == retry_after


def test_garbage_body_is_retryable(scripted):
    scripted.script.append({"status": 200, "body": b"<html>oops</html>"})
    with pytest.raises(RetryableError) as info:
        _run(_describe(_backend(scripted), _request()))
    assert info.value.kind == "garbage_response"


def test_timeout_is_retryable(scripted):
    scripted.script.append({"sleep": 1.0, "json": _reply("late")})
    with pytest.raises(RetryableError) as info:
        _run(_describe(_backend(scripted, timeout_s=0.2), _request()))
    assert info.value.kind == "timeout"


def test_connection_refused_is_retryable_and_preflight_fatal():
    base = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(RetryableError) as info:
        _run(_describe(OpenAICompatBackend(model="m", base_url=base, api_key=SECRET), _request()))
    assert info.value.kind == "connection" and SECRET not in str(info.value)
    with pytest.raises(FatalRunError) as info:
        _run(_preflight(OpenAICompatBackend(model="m", base_url=base)))
    assert info.value.kind == "endpoint_unreachable"


def test_preflight(scripted):
    scripted.script.append({"json": {"object": "list", "data": [{"id": "m"}]}})
    _run(_preflight(_backend(scripted)))
    assert scripted.requests[0]["method"] == "GET" and scripted.requests[0]["path"] == "/v1/models"
    scripted.script.append({"status": 401, "body": b"no"})
    with pytest.raises(FatalRunError):
        _run(_preflight(_backend(scripted)))
    scripted.script.append({"status": 404, "body": b"no such route"})
    _run(_preflight(_backend(scripted)))  # servers without /models are fine


def test_unsupported_mime_is_an_item_error(scripted):
    with pytest.raises(ItemRequestError):
        _run(_describe(_backend(scripted), _request(mime="audio/mpeg")))
    assert scripted.requests == []


def test_key_never_in_repr():
    backend = OpenAICompatBackend(model="m", base_url="https://api.example.com/v1", api_key=SECRET)
    assert SECRET not in repr(backend) and not backend.capabilities.local
