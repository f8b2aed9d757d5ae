"""Issue 12, security and privacy: what a hostile endpoint, a flow run started from outside, or odd files
could leak. Real Prefect, the real SDK over HTTP to the emulator (or to a tiny capturing server), real Parquet."""
from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.media_factory import make_jpeg, make_wav

CANARY = "canary-key-7f3a9c1e5b"  # a fake API key: it must never come back out


class Capture:
    """A local HTTP server that records every request and answers with `answer(path, body)` (code, dict)."""

    def __init__(self, answer=None) -> None:
        self.requests: list[dict] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                capture.requests.append({"method": self.command, "path": self.path,
                                         "headers": dict(self.headers.items()), "body": body})
                code, obj = answer(self.path, body) if answer else (404, {"error": {"code": 404, "message": "no"}})
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------------------
# 1. flow parameters


def test_a_flow_run_with_a_forbidden_override_is_refused_and_sends_nothing(tmp_path, enrich_home, monkeypatch,
                                                                           prefect_harness):
    from enrich.flows.enrich_flow import enrich_flow

    lib = tmp_path / "lib"
    lib.mkdir()
    make_jpeg(lib / "a.jpg", exif_gps=True)
    monkeypatch.setenv("GEMINI_API_KEY", CANARY)
    proxy = Capture()
    try:
        for overrides in ({"base_url": proxy.url, "strip_metadata": False},  # the issue's repro
                          {"model": f"openai:some-model@{proxy.url}/v1"},
                          {"warehouse": str(tmp_path / "other-wh")}):
            with pytest.raises(Exception, match="refused flow parameters"):
                enrich_flow([str(lib)], overrides)
        secrets = tmp_path / "dot-ssh"
        secrets.mkdir()
        (secrets / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        monkeypatch.setenv("ENRICH_ALLOWED_ROOTS", str(lib))  # what `enrich serve LIB` sets
        with pytest.raises(Exception, match="outside the folders this process serves"):
            enrich_flow([str(secrets)], {})
    finally:
        proxy.close()
    assert proxy.requests == []
    assert not (enrich_home / "warehouse").exists() and not (tmp_path / "other-wh").exists()


def test_run_options_accept_the_cli_run_options_and_nothing_else(tmp_path):
    from enrich.errors import ConfigError
    from enrich.flows.run_options import RunOptions

    ok = {"model": "gemini-2.5-flash", "budget_usd": 1.5, "concurrency": 8, "rpm": 60, "tpm": 0,
          "resolution": "medium", "chunk_size": 50, "progress": "log"}
    assert RunOptions.from_parameters(ok).as_parameters() == ok
    for bad in ({"strip_metadata": False}, {"api_version": "v1alpha"}, {"home": str(tmp_path)},
                {"config_dir": str(tmp_path)}, {"api_key": "x"}, {"max_inline_bytes": 1},
                {"model": "mlx:/tmp/weights"}, {"model": "openai:m@http://127.0.0.1:9/v1"},
                {"budget_usd": float("inf")}, {"concurrency": 0}, {"resolution": "ultra"}):
        with pytest.raises(ConfigError, match="refused flow parameters"):
            RunOptions.from_parameters(bad)


def test_the_cli_keeps_its_trusted_options_out_of_prefect_parameters(tmp_path):
    from enrich.cli import build_parser
    from enrich.commands.serve import flow_parameters, prefect_server_env, process_environment
    from enrich.flows.run_options import RunOptions

    lib, wh = str(tmp_path / "lib"), str(tmp_path / "wh")
    args = build_parser().parse_args(["serve", lib, "--cron", "0 2 * * *", "--warehouse", wh,
                                      "--keep-metadata", "--budget", "2", "--model", "openai:m@http://h:1/v1"])
    params = flow_parameters([lib], args)
    assert params["overrides"] == {"budget_usd": 2.0}
    RunOptions.from_parameters(params["overrides"])  # what the deployment carries validates
    assert process_environment(args) == {"ENRICH_WAREHOUSE": wh, "ENRICH_STRIP_METADATA": "false",
                                         "ENRICH_MODEL": "openai:m@http://h:1/v1", "ENRICH_ALLOWED_ROOTS": lib}
    env = prefect_server_env(4321, {"PREFECT_API_URL": "http://x/api"})
    assert env["PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED"] == "true"
    assert env["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"] == "http://127.0.0.1:4321"
    assert "PREFECT_API_URL" not in env


# ---------------------------------------------------------------------------------------------------------
# 3. the file name of an upload


def test_an_upload_never_sends_the_file_name(gemini, tmp_path):
    import asyncio

    from pydantic import SecretStr

    from enrich.backends.base import DescribeRequest, MediaPart
    from enrich.backends.gemini import GeminiBackend
    from enrich.schemas.descriptions import AudioDescription

    wav = make_wav(tmp_path / "Anna Schmidt - therapy session 2024-03-02.wav", 30)
    backend = GeminiBackend("gemini-3.1-flash-lite", api_key=SecretStr("test-key-123"), base_url=gemini.base_url,
                            max_inline_bytes=10_000)
    request = DescribeRequest(key="k", prompt="Describe it.", schema=AudioDescription,
                              media=(MediaPart(mime="audio/wav", path=wav),), max_output_tokens=256)

    async def go():
        try:
            return await backend.describe(request)
        finally:
            await backend.aclose()

    assert asyncio.run(go()).status == "ok"
    (start,) = gemini.upload_starts()
    sent = json.dumps(start)
    assert "Anna" not in sent and "therapy" not in sent and ".wav" not in sent, sent
    assert not any(k.lower() == "x-goog-upload-file-name" for k in start["headers"])


# ---------------------------------------------------------------------------------------------------------
# 5. the key echoed in a 200 answer


def _echoing_gemini(mode: str):
    """A Gemini endpoint that echoes the key it receives in a 200 answer: as the model's (invalid) text, or
    in a field the SDK's validation then quotes."""

    def answer(path: str, body: bytes):
        if ":countTokens" in path:
            return 200, {"totalTokens": 3}
        if ":generateContent" in path:
            usage = {"promptTokenCount": 300, "candidatesTokenCount": 20, "totalTokenCount": 320}
            if mode == "invalid_output":
                text = f"not json, your key is {CANARY}"
                return 200, {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                             "finishReason": "STOP"}], "usageMetadata": usage}
            if mode == "caption":
                text = json.dumps({"caption": f"key {CANARY}", "description": CANARY, "tags": [CANARY],
                                   "objects": [], "visible_text": "", "people_count": 0, "setting": "indoor"})
                return 200, {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                             "finishReason": "STOP"}], "usageMetadata": usage}
            return 200, {"candidates": [{"content": {"role": "model", "parts": [{"text": "{}"}]},
                                         "finishReason": "STOP"}],
                         "usageMetadata": {**usage, "promptTokenCount": {"echo": CANARY}}}
        return 404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}

    return Capture(answer)


@pytest.mark.parametrize("mode", ["invalid_output", "caption", "sdk_validation"])
def test_a_key_echoed_in_a_200_answer_reaches_neither_parquet_nor_the_terminal(mode, tmp_path, enrich_home,
                                                                                monkeypatch, capfd,
                                                                                prefect_harness):
    from enrich.cli import main

    lib = tmp_path / "lib"
    lib.mkdir()
    make_jpeg(lib / "a.jpg")
    server = _echoing_gemini(mode)
    monkeypatch.setenv("GEMINI_API_KEY", CANARY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
    try:
        rc = main(["run", str(lib), "--yes", "--progress", "log", "--concurrency", "2"])
        rc_json = 0
        if mode == "sdk_validation":  # the summary as JSON too (its message, fatal and error fields)
            rc_json = main(["run", str(lib), "--yes", "--json", "--reprocess", "all", "--progress", "off"])
    finally:
        server.close()
    out, err = capfd.readouterr()
    assert rc in (0, 1) and rc_json in (0, 1), (out, err)
    assert any(CANARY in str(r["headers"]) for r in server.requests)  # the server did receive (and echo) it
    assert CANARY not in out and CANARY not in err
    leaked = [p for p in (enrich_home / "warehouse").rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert leaked == []
    from enrich.warehouse.views import connect

    rows = connect(enrich_home / "warehouse").execute("SELECT status, error, raw_text FROM results").fetchall()
    assert rows and all(CANARY not in str(r) for r in rows)
    if mode == "invalid_output":
        assert any(r[2] and "***" in r[2] for r in rows), rows  # kept, but scrubbed


# ---------------------------------------------------------------------------------------------------------
# 2. PDFs: the camera's JPEG inside, annotation authors; 4. detection by the parser


def _photo_pdf(tmp_path: Path, *, jpeg: bool = True, annotation: bool = True, cmyk: bool = False) -> tuple[Path, bytes]:
    """A photo-to-PDF document: a page showing a camera JPEG (EXIF GPS, serial, XMP, ICC, a comment), and a
    comment annotation by a named author with a popup. No /Info (pypdf's /Producer removed)."""
    from pypdf import PdfWriter
    from pypdf.generic import (ArrayObject, DictionaryObject, FloatObject, NameObject, NumberObject,
                               StreamObject, TextStringObject)

    photo = tmp_path / "photo.jpg"
    make_jpeg(photo, (64, 48))
    data = photo.read_bytes()
    if cmyk:  # a CMYK JPEG with an Adobe APP14 segment (needed to decode its colours) and EXIF
        from PIL import Image

        from tests.media_factory import build_exif

        Image.new("CMYK", (64, 48), (0, 120, 200, 10)).save(photo, "JPEG", exif=build_exif())
        data = photo.read_bytes()
    writer = PdfWriter()
    page = writer.add_blank_page(width=200, height=200)
    if jpeg:
        image = StreamObject()
        image._data = data
        image.update({NameObject("/Type"): NameObject("/XObject"), NameObject("/Subtype"): NameObject("/Image"),
                      NameObject("/Width"): NumberObject(64), NameObject("/Height"): NumberObject(48),
                      NameObject("/ColorSpace"): NameObject("/DeviceCMYK" if cmyk else "/DeviceRGB"),
                      NameObject("/BitsPerComponent"): NumberObject(8), NameObject("/Filter"): NameObject("/DCTDecode")})
        ref = writer._add_object(image)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/XObject"): DictionaryObject({NameObject("/Im0"): ref})})
        content = StreamObject()
        content._data = b"q 64 0 0 48 10 10 cm /Im0 Do Q"
        page[NameObject("/Contents")] = writer._add_object(content)
    if annotation:
        rect = ArrayObject([FloatObject(10), FloatObject(10), FloatObject(30), FloatObject(30)])
        popup = DictionaryObject({NameObject("/Type"): NameObject("/Annot"), NameObject("/Subtype"): NameObject("/Popup"),
                                  NameObject("/Rect"): rect, NameObject("/T"): TextStringObject("Alice Example")})
        note = DictionaryObject({
            NameObject("/Type"): NameObject("/Annot"), NameObject("/Subtype"): NameObject("/Text"),
            NameObject("/Rect"): rect, NameObject("/Contents"): TextStringObject("check the figures"),
            NameObject("/T"): TextStringObject("Alice Example"), NameObject("/M"): TextStringObject("D:20240302101500+01'00'"),
            NameObject("/CreationDate"): TextStringObject("D:20240301090000+01'00'"),
            NameObject("/Popup"): writer._add_object(popup)})
        page[NameObject("/Annots")] = ArrayObject([writer._add_object(note)])
    writer.metadata = None
    path = tmp_path / "scan.pdf"
    with open(path, "wb") as fh:
        writer.write(fh)
    return path, data


def test_pdf_embedded_jpeg_exif_and_annotation_authors_are_stripped(tmp_path):
    import io

    from PIL import Image
    from pypdf import PdfReader

    from enrich.tasks.strip_metadata import strip_metadata
    from tests.media_factory import CAMERA_SERIAL, XMP_PACKET

    pdf, jpeg = _photo_pdf(tmp_path)
    raw = pdf.read_bytes()
    assert CAMERA_SERIAL.encode() in raw and b"Alice Example" in raw
    copy = strip_metadata(pdf, "application/pdf")
    assert copy is not None
    out = copy.read_bytes()
    for secret in (CAMERA_SERIAL.encode(), b"Alice Example", b"Exif\x00\x00", XMP_PACKET[-40:], b"TestCam"):
        assert secret not in out, secret
    page = PdfReader(copy).pages[0]
    note = page["/Annots"][0].get_object()
    assert note["/Contents"] == "check the figures"  # the comment itself is content: it stays
    assert not {"/T", "/M", "/CreationDate"} & set(note) and "/T" not in note["/Popup"].get_object()
    image = page["/Resources"]["/XObject"]["/Im0"].get_object()
    cleaned = image._data
    assert Image.open(io.BytesIO(cleaned)).tobytes() == Image.open(io.BytesIO(jpeg)).tobytes()  # same pixels
    assert cleaned[cleaned.index(b"\xff\xda"):] == jpeg[jpeg.index(b"\xff\xda"):]  # scan data untouched
    copy.unlink()


@pytest.mark.parametrize("jpeg, annotation", [(True, False), (False, True)])
def test_a_pdf_with_only_a_camera_jpeg_or_only_an_annotation_is_not_judged_clean(tmp_path, jpeg, annotation):
    from enrich.tasks.strip_metadata import strip_metadata

    pdf, _ = _photo_pdf(tmp_path, jpeg=jpeg, annotation=annotation)
    assert b"/Info" not in pdf.read_bytes() and b"/Metadata" not in pdf.read_bytes()
    copy = strip_metadata(pdf, "application/pdf")
    assert copy is not None
    assert b"Alice Example" not in copy.read_bytes() and b"SN-0042-1337" not in copy.read_bytes()
    copy.unlink()


def test_a_cmyk_jpeg_keeps_its_adobe_segment(tmp_path):
    import io

    from PIL import Image
    from pypdf import PdfReader

    from enrich.tasks.strip_metadata import strip_metadata

    pdf, jpeg = _photo_pdf(tmp_path, annotation=False, cmyk=True)
    copy = strip_metadata(pdf, "application/pdf")
    image = PdfReader(copy).pages[0]["/Resources"]["/XObject"]["/Im0"].get_object()._data
    assert b"SN-0042-1337" not in image and b"Adobe" in image
    assert Image.open(io.BytesIO(image)).convert("RGB").tobytes() == Image.open(io.BytesIO(jpeg)).convert("RGB").tobytes()
    copy.unlink()


def test_pdf_metadata_hidden_behind_name_escapes_is_found(tmp_path):
    from pypdf import PdfReader

    from enrich.tasks.strip_metadata import strip_metadata

    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
               b"<< /Auth#6fr (Alice Example) /Cr#65ator (Pixel 7 Pro Scanner) >>"]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 5\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size 5 /Root 1 0 R /I#6efo 4 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    pdf = tmp_path / "escaped.pdf"
    pdf.write_bytes(out)
    assert b"/Info" not in out and PdfReader(pdf).metadata.author == "Alice Example"  # what a reader sees
    copy = strip_metadata(pdf, "application/pdf")
    assert copy is not None and b"Alice Example" not in copy.read_bytes()
    assert len(PdfReader(copy).pages) == 1
    copy.unlink()


# ---------------------------------------------------------------------------------------------------------
# 17. state is private


def test_enrich_home_and_the_warehouse_are_created_private(tmp_path, gemini, enrich_home, prefect_harness):
    import stat

    from tests.support.flows import run_enrich_flow

    lib = tmp_path / "lib"
    lib.mkdir()
    make_jpeg(lib / "a.jpg")
    shared = tmp_path / "shared-wh"  # a warehouse folder the user made readable on purpose, with an old results/
    (shared / "results").mkdir(parents=True)
    os.chmod(shared, 0o755)
    os.chmod(shared / "results", 0o755)
    old = os.umask(0o022)
    try:
        assert run_enrich_flow([lib], {"chunk_size": 2})["status"] == "finished"
        assert run_enrich_flow([lib], {"warehouse": str(shared)})["status"] == "finished"
    finally:
        os.umask(old)
    checked = 0
    for top in (enrich_home, shared / "results", shared / "runs", shared / ".lock"):
        for p in [top, *top.rglob("*")] if top.is_dir() else [top]:
            mode = stat.S_IMODE(os.lstat(p).st_mode)
            assert mode & 0o077 == 0, (p, oct(mode))
            checked += 1
    assert checked > 6 and any(p.suffix == ".parquet" for p in enrich_home.rglob("*"))
    assert any(p.name == "hashes.sqlite" for p in enrich_home.rglob("*"))
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o755  # the folder the user chose keeps its mode


# ---------------------------------------------------------------------------------------------------------
# 18. control and bidi characters never reach the terminal raw


HOSTILE_NAME = "bad\x1b]0;pwned\x07\u202egpj.exe\u2066\x9b"


def test_control_and_bidi_characters_are_escaped_in_tables_summaries_and_progress(tmp_path, gemini, enrich_home,
                                                                                  capfd, prefect_harness):
    import io
    import logging

    from enrich.cli import main
    from enrich.progress import ProgressReporter, RunProgress
    from enrich.redact import scrubbed_logger
    from tests.media_factory import make_truncated_jpeg

    lib = tmp_path / "lib"
    lib.mkdir()
    make_truncated_jpeg(lib / f"{HOSTILE_NAME}.jpg")
    assert main(["run", str(lib), "--progress", "log"]) == 0
    assert main(["query", "SELECT path, status, error FROM items"]) == 0
    assert main(["query", "SELECT 1 AS x", "--warehouse", str(tmp_path / f"no\x1b[2Jwh\u202e")]) in (0, 2)
    out, err = capfd.readouterr()
    for text in (out, err):
        assert not any(c in text for c in "\x1b\x07\u202e\u2066\x9b"), repr(text)
    assert "bad\\x1b]0;pwned\\x07\\u202egpj.exe\\u2066\\x9b" in out  # shown, visibly escaped

    stream = io.StringIO()  # progress lines and notices
    reporter = ProgressReporter(RunProgress(), "log", notice=lambda: f"stopping: {HOSTILE_NAME}", stream=stream,
                                interval_s=0)
    reporter._tick(final=True)
    assert "\x1b" not in stream.getvalue() and "\\x1b" in stream.getvalue()

    records: list[str] = []  # log lines (Prefect prints them to the terminal)
    handler = logging.Handler()
    handler.emit = lambda record: records.append(handler.format(record))
    logger = scrubbed_logger("enrich.test-terminal")
    logger.addHandler(handler)
    try:
        logger.warning("unexpected error preparing %s", HOSTILE_NAME)
    finally:
        logger.removeHandler(handler)
    assert records and "\x1b" not in records[0] and "\u202e" not in records[0]


# ---------------------------------------------------------------------------------------------------------
# 19. the openai: backend's key comes from the environment, never from (or into) the URL


def _openai_server():
    def answer(path: str, body: bytes):
        if path.endswith("/models"):
            return 200, {"object": "list", "data": [{"id": "m", "object": "model"}]}
        if path.endswith("/chat/completions"):
            text = json.dumps({"caption": "a blue square", "description": "blue", "tags": ["blue"], "objects": [],
                               "visible_text": "", "people_count": 0, "setting": "indoor"})
            return 200, {"id": "x", "object": "chat.completion", "model": "m",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}}
        return 404, {"error": {"message": "no route"}}

    return Capture(answer)


def test_the_openai_backend_sends_the_environment_key_as_bearer_and_stores_it_nowhere(tmp_path, enrich_home,
                                                                                     monkeypatch, capfd,
                                                                                     prefect_harness):
    from enrich.cli import main
    from enrich.warehouse.views import connect

    lib = tmp_path / "lib"
    lib.mkdir()
    make_jpeg(lib / "a.jpg")
    server = _openai_server()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("ENRICH_OPENAI_API_KEY", CANARY)
    model = f"openai:m@{server.url}/v1"
    try:
        refused = [main(["run", str(lib), "--model", f"openai:m@{url}"]) for url in (
            server.url.replace("http://", f"http://user:{CANARY}@") + "/v1",
            f"{server.url}/v1?api_key={CANARY}", f"{server.url}/v1?access-token={CANARY}")]
        _, err = capfd.readouterr()
        assert refused == [2, 2, 2] and server.requests == []
        assert err.count("refusing the openai: endpoint URL") == 3 and err.count("\n") == 3
        assert main(["run", str(lib), "--model", model, "--yes", "--progress", "off"]) == 0
    finally:
        server.close()
    out, err = capfd.readouterr()
    posts = [r for r in server.requests if r["path"].endswith("/chat/completions")]
    assert posts and all(r["headers"].get("Authorization") == f"Bearer {CANARY}" for r in posts)
    rows = connect(enrich_home / "warehouse").execute("SELECT status, model FROM items").fetchall()
    assert rows == [("ok", model)]
    assert CANARY not in out + err
    assert [p for p in enrich_home.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()] == []


# ---------------------------------------------------------------------------------------------------------
# 21. temporary copies of killed runs are swept at every start, by owner and liveness, not host name


def test_copies_of_killed_runs_are_swept_at_every_run_start(tmp_path, gemini, enrich_home, monkeypatch,
                                                            prefect_harness):
    import fcntl
    import subprocess
    import sys
    import tempfile
    import time as _time

    from enrich.tasks import strip_metadata as sm
    from tests.support.flows import run_enrich_flow

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    # a run on another host (a shared $TMPDIR) killed with a copy in flight: its lock is free
    code = ("import os, sys; from enrich.tasks.strip_metadata import new_temp_file; p = new_temp_file('.mp3'); "
            "p.write_bytes(b'ID3 Alice Example'); print(p, flush=True); os._exit(9)")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(tmp)},
                          capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    killed = Path(proc.stdout.strip())
    root = killed.parent.parent
    assert root == sm.media_root() and killed.exists()
    renamed = root / "otherhost-4242"  # the host name in a folder name must not matter
    killed.parent.rename(renamed)
    live = root / "live-1"  # a live run's folder (its lock is held)
    live.mkdir()
    (live / "copy.mp4").write_bytes(b"in flight")
    fd = os.open(live / ".alive", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    legacy_old, legacy_new = root / "host-1", root / "host-2"  # an older enrich's folders (no lock file)
    for folder, age in ((legacy_old, 7 * 3600), (legacy_new, 60)):
        folder.mkdir()
        (folder / "x.wav").write_bytes(b"RIFF")
        then = _time.time() - age
        os.utime(folder / "x.wav", (then, then))
        os.utime(folder, (then, then))
    lib = tmp_path / "lib"
    lib.mkdir()
    make_jpeg(lib / "a.jpg")  # a run that strips nothing: the sweep must not wait for a run that does
    try:
        assert run_enrich_flow([lib])["status"] == "finished"
        assert not renamed.exists() and not legacy_old.exists()
        assert (live / "copy.mp4").exists() and legacy_new.exists()
    finally:
        os.close(fd)
    assert sm.sweep_media_temp(root) == [live]  # once its process is gone, the next start removes it


# ---------------------------------------------------------------------------------------------------------
# 20. bounded memory: bytes in flight, pixels decoded at once


def test_media_bytes_in_flight_stay_under_the_limit(tmp_path, gemini, enrich_home, prefect_harness):
    from tests.support.flows import run_enrich_flow

    lib = tmp_path / "lib"
    lib.mkdir()
    for n in range(8):
        make_wav(lib / f"talk{n}.wav", 250 + n)  # about 2 MB each (distinct bytes), sent inline from the file
    size = (lib / "talk0.wav").stat().st_size
    limit = int(2.5 * size)  # room for two at once, with 16 request slots and 8 preparation threads
    gemini.set_config(latency_ms=(150, 150))
    summary = run_enrich_flow([lib], {"max_inflight_bytes": limit, "concurrency": 16, "prepare_workers": 8,
                                      "progress": "off", "rpm": 0, "tpm": 0})
    assert summary["status"] == "finished" and summary["by_status"] == {"ok": 8}
    peak = summary["inflight_bytes"]["peak"]
    assert summary["inflight_bytes"]["limit"] == limit
    assert 2 * size <= peak <= limit  # bounded, and the bound still let requests overlap
    assert summary["requests"] == 8


def test_pixels_decoded_at_once_are_bounded_across_preparation_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from enrich.inflight import WeightBudget
    from enrich.tasks.prepare_image import prepare_image

    paths = []
    for n in range(6):  # PNGs: no draft scaling, every pixel is decoded
        path = tmp_path / f"big{n}.png"
        Image.new("RGB", (1200, 1000), (n * 40, 90, 200)).save(path)
        paths.append(path)
    budget = WeightBudget(int(1.5 * 1200 * 1000))  # one image at a time fits, two do not
    huge = tmp_path / "huge.png"
    Image.new("RGB", (2000, 1000), (1, 2, 3)).save(huge)  # heavier than the whole budget: goes alone
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda p: prepare_image(p, max_side=500, decode_budget=budget), [*paths, huge]))
    assert [d.width for d in done] == [500] * 7
    assert budget.peak <= budget.limit and budget.in_use == 0
    assert budget.waited > 0  # threads did wait for each other
