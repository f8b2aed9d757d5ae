"""An in-process Google Cloud Storage server for tests: the XML API subset that Rust's `object_store`
(under `obstore` and `deltalake`) sends, so `gs://bucket/prefix` works with no network.

Implemented (https://cloud.google.com/storage/docs/xml-api/overview):
  PUT /b/k           upload; `x-goog-copy-source: b/k` makes it a copy
  GET, HEAD /b/k     download/metadata; Range (a-b, a-, -n -> 206), If-Match, If-None-Match,
                     If-Modified-Since, If-Unmodified-Since, ?generation=N
  DELETE /b/k        204, or 404 NoSuchKey
  GET /b?list-type=2 ListBucketResult: prefix, delimiter, start-after, max-keys, continuation-token
  multipart          POST ?uploads, PUT ?partNumber&uploadId, POST ?uploadId, DELETE ?uploadId
Preconditions follow Google's XML API: `x-goog-if-generation-match: 0` means "only if absent", `N` means
"only if the live generation is N"; a miss is 412 PreconditionFailed (object_store maps it to
AlreadyExists for create, Precondition for update). Every request runs its check-and-write under one
lock, so concurrent conditional writes (Delta's create-if-absent commits) are atomic. Generations come
from one server-wide counter, so a deleted-and-recreated object never reuses one.

Usage: start it, `create_bucket("bkt")`, hand object_store `service_account_file(tmp)` as
`google_service_account` (its emulator hook: `gcs_base_url` + `disable_oauth`) plus `allow_http`.
`requests` records every request (method, bucket, key, query, notable headers, status), for assertions.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import pathlib
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

_XML = "<?xml version='1.0' encoding='UTF-8'?>"
# Headers object_store round-trips as attributes (user metadata is every x-goog-meta-*).
_KEPT_HEADERS = ("content-type", "cache-control", "content-disposition", "content-encoding",
                 "content-language")


@dataclass
class _Object:
    data: bytes
    generation: int
    etag: str
    mtime: float = field(default_factory=time.time)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Request:
    method: str
    bucket: str
    key: str
    query: dict[str, str]
    headers: dict[str, str]  # only x-goog-*, If-*, Range
    status: int


class _Failure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


_NO_KEY = (404, "NoSuchKey", "The specified key does not exist.")
_PRECONDITION = (412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.")


def _etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _kept(headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()
            if k.lower() in _KEPT_HEADERS or k.lower().startswith("x-goog-meta-")}


class GcsEmulator:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._lock = threading.Lock()
        self._buckets: dict[str, dict[str, _Object]] = {}
        self._uploads: dict[str, tuple[str, str, dict[str, str], dict[int, bytes]]] = {}
        self._generations = itertools.count(1)
        self._server: _Server | None = None
        self._connections: set[socket.socket] = set()
        self.requests: list[_Request] = []
        self.url = ""

    # -- lifecycle and test helpers ------------------------------------------------------------------
    def start(self) -> GcsEmulator:
        self._server = _Server(self._address, _Handler)
        self._server.emulator = self
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        threading.Thread(target=self._server.serve_forever, name="gcs-emulator", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        # Keep-alive connections would otherwise park their handler threads until the client hangs up.
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._server.server_close()
        self._server = None

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def create_bucket(self, name: str) -> None:
        with self._lock:
            self._buckets.setdefault(name, {})

    def service_account_file(self, folder) -> pathlib.Path:
        path = pathlib.Path(folder) / "gcs-emulator-service-account.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"gcs_base_url": self.url, "disable_oauth": True, "client_email": "",
                                    "private_key": "", "private_key_id": ""}))
        return path

    def object_names(self, bucket: str) -> list[str]:
        with self._lock:
            return sorted(self._buckets[bucket])

    # -- request handling (called with the lock held) ------------------------------------------------
    def _handle(self, method: str, bucket: str, key: str, query: dict[str, str], headers, body: bytes):
        if bucket not in self._buckets:
            raise _Failure(404, "NoSuchBucket", "The specified bucket does not exist.")
        objects = self._buckets[bucket]
        if not key:
            if method != "GET":
                raise _Failure(405, "MethodNotAllowed", f"{method} on a bucket is not supported.")
            return self._list(bucket, objects, query)
        if method == "POST" and "uploads" in query:
            upload_id = uuid.uuid4().hex
            self._uploads[upload_id] = (bucket, key, _kept(headers), {})
            return 200, {}, (f"{_XML}<InitiateMultipartUploadResult><Bucket>{escape(bucket)}</Bucket>"
                             f"<Key>{escape(key)}</Key><UploadId>{upload_id}</UploadId>"
                             "</InitiateMultipartUploadResult>").encode()
        if "uploadId" in query:
            return self._multipart(method, objects, key, query, headers, body)
        current = objects.get(key)
        if method in ("GET", "HEAD"):
            return self._get(current, query, headers)
        if method == "DELETE":
            if current is None:
                raise _Failure(*_NO_KEY)
            self._check_generation(current, headers)
            del objects[key]
            return 204, {}, b""
        if method == "PUT":
            if source := headers.get("x-goog-copy-source"):
                src_bucket, _, src_key = source.lstrip("/").partition("/")
                src = self._buckets.get(unquote(src_bucket), {}).get(unquote(src_key))
                if src is None:
                    raise _Failure(*_NO_KEY)
                self._check_generation(current, headers)
                obj = self._write(objects, key, src.data, src.etag, dict(src.headers))
                result = f"<CopyObjectResult><LastModified>{_iso(obj.mtime)}</LastModified><ETag>{obj.etag}</ETag>"
                return 200, self._put_headers(obj), f"{_XML}{result}</CopyObjectResult>".encode()
            self._check_generation(current, headers)
            obj = self._write(objects, key, body, _etag(body), _kept(headers))
            return 200, self._put_headers(obj), b""
        raise _Failure(405, "MethodNotAllowed", f"{method} is not supported.")

    def _write(self, objects: dict[str, _Object], key: str, data: bytes, etag: str, headers) -> _Object:
        objects[key] = _Object(data, next(self._generations), etag, headers=headers)
        return objects[key]

    @staticmethod
    def _put_headers(obj: _Object) -> dict[str, str]:
        return {"ETag": obj.etag, "x-goog-generation": str(obj.generation), "x-goog-metageneration": "1"}

    @staticmethod
    def _check_generation(current: _Object | None, headers) -> None:
        wanted = headers.get("x-goog-if-generation-match")
        if wanted is None:
            return
        try:
            wanted_generation = int(wanted)
        except ValueError:
            raise _Failure(400, "InvalidArgument", f"Bad x-goog-if-generation-match: {wanted!r}") from None
        if wanted_generation != (current.generation if current else 0):  # 0 is "absent"
            raise _Failure(*_PRECONDITION)

    def _get(self, obj: _Object | None, query: dict[str, str], headers):
        if obj is None or ("generation" in query and query["generation"] != str(obj.generation)):
            raise _Failure(*_NO_KEY)
        self._check_generation(obj, headers)
        meta = {**self._put_headers(obj), "Last-Modified": formatdate(obj.mtime, usegmt=True),
                "x-goog-stored-content-length": str(len(obj.data)), **obj.headers}
        meta.setdefault("content-type", "application/octet-stream")
        if_match, if_none_match = headers.get("If-Match"), headers.get("If-None-Match")
        if if_match is not None and if_match not in ("*", obj.etag):
            raise _Failure(*_PRECONDITION)
        if if_none_match is not None and if_none_match in ("*", obj.etag):
            return 304, meta, b""
        seconds = int(obj.mtime)  # HTTP dates have one-second resolution
        if (since := headers.get("If-Unmodified-Since")) and seconds > parsedate_to_datetime(since).timestamp():
            raise _Failure(*_PRECONDITION)
        if (since := headers.get("If-Modified-Since")) and seconds <= parsedate_to_datetime(since).timestamp():
            return 304, meta, b""
        size, wanted = len(obj.data), headers.get("Range")
        if not wanted:
            return 200, meta, obj.data
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        start, end = (max(size - int(last), 0), size - 1) if first == "" else \
            (int(first), min(int(last), size - 1) if last else size - 1)
        if start >= size or start > end:
            return 416, {"Content-Range": f"bytes */{size}"}, b""
        meta["Content-Range"] = f"bytes {start}-{end}/{size}"
        return 206, meta, obj.data[start:end + 1]

    def _list(self, bucket: str, objects: dict[str, _Object], query: dict[str, str]):
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        max_keys = min(int(query.get("max-keys") or 1000), 1000)
        start_after = query.get("start-after", "")
        # Entries (objects and common prefixes) come out in key order; the token is the last one sent.
        entries: list[tuple[str, _Object | None]] = []
        for key in sorted(k for k in objects if k.startswith(prefix) and k > start_after):
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut < 0:
                entries.append((key, objects[key]))
            elif not entries or entries[-1][0] != key[:cut + len(delimiter)]:
                entries.append((key[:cut + len(delimiter)], None))
        if token := query.get("continuation-token"):
            after = base64.urlsafe_b64decode(token.encode()).decode()
            entries = [entry for entry in entries if entry[0] > after]
        page, truncated = entries[:max_keys], len(entries) > max_keys
        parts = [f"{_XML}<ListBucketResult xmlns='http://doc.s3.amazonaws.com/2006-03-01'>"
                 f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount>"
                 f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{str(truncated).lower()}</IsTruncated>"]
        # All Contents, then all CommonPrefixes: object_store's serde lists must not interleave.
        parts += [f"<Contents><Key>{escape(name)}</Key><Generation>{obj.generation}</Generation>"
                  f"<LastModified>{_iso(obj.mtime)}</LastModified><ETag>{escape(obj.etag)}</ETag>"
                  f"<Size>{len(obj.data)}</Size></Contents>" for name, obj in page if obj is not None]
        parts += [f"<CommonPrefixes><Prefix>{escape(name)}</Prefix></CommonPrefixes>"
                  for name, obj in page if obj is None]
        if truncated:
            token = base64.urlsafe_b64encode(page[-1][0].encode()).decode()
            parts.append(f"<NextContinuationToken>{token}</NextContinuationToken>")
        parts.append("</ListBucketResult>")
        return 200, {"Content-Type": "application/xml"}, "".join(parts).encode()

    def _multipart(self, method: str, objects: dict[str, _Object], key: str, query, headers, body: bytes):
        upload = self._uploads.get(query["uploadId"])
        if upload is None or upload[1] != key:
            raise _Failure(404, "NoSuchUpload", "The requested upload was not found.")
        _, _, kept, parts = upload
        if method == "PUT":
            parts[int(query["partNumber"])] = body
            return 200, {"ETag": _etag(body)}, b""
        if method == "DELETE":
            del self._uploads[query["uploadId"]]
            return 204, {}, b""
        if method != "POST":
            raise _Failure(405, "MethodNotAllowed", f"{method} on an upload is not supported.")
        listed = [(int(p.findtext("PartNumber")), p.findtext("ETag").strip())
                  for p in ElementTree.fromstring(body).iter("Part")]
        if not listed or any(n not in parts or _etag(parts[n]) != tag for n, tag in listed):
            raise _Failure(400, "InvalidPart", "One or more of the specified parts could not be found.")
        self._check_generation(objects.get(key), headers)
        data = b"".join(parts[n] for n, _ in listed)
        digest = hashlib.md5(b"".join(bytes.fromhex(tag.strip('"')) for _, tag in listed)).hexdigest()
        obj = self._write(objects, key, data, f'"{digest}-{len(listed)}"', kept)
        del self._uploads[query["uploadId"]]
        result = f"<Bucket>{escape(upload[0])}</Bucket><Key>{escape(key)}</Key><ETag>{obj.etag}</ETag>"
        tag = "CompleteMultipartUploadResult"
        return 200, self._put_headers(obj), f"{_XML}<{tag}>{result}</{tag}>".encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: GcsEmulator

    def handle_error(self, request, client_address) -> None:
        pass  # clients dropping connections (and stop()) are routine here, not worth a traceback


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as reqwest expects

    def setup(self) -> None:
        super().setup()
        with self.server.emulator._lock:
            self.server.emulator._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.emulator._lock:
            self.server.emulator._connections.discard(self.connection)
        super().finish()

    def log_message(self, format, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self) -> None:
        emulator, url = self.server.emulator, urlsplit(self.path)
        bucket, _, key = url.path.lstrip("/").partition("/")
        bucket, key = unquote(bucket), unquote(key)  # object_store percent-encodes the whole key, "/" too
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        body = self._body()
        notable = {k.lower(): v for k, v in self.headers.items()
                   if k.lower().startswith(("x-goog-", "if-", "range"))}
        with emulator._lock:
            try:
                status, headers, payload = emulator._handle(self.command, bucket, key, query, self.headers, body)
            except _Failure as failure:
                status, headers = failure.status, {"Content-Type": "application/xml"}
                payload = (f"{_XML}<Error><Code>{failure.code}</Code><Message>{escape(failure.message)}"
                           f"</Message></Error>").encode()
            emulator.requests.append(_Request(self.command, bucket, key, query, notable, status))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status not in (204, 304):  # these carry no body, hence no Content-Length
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(payload)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _dispatch
