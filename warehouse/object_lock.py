"""One run per warehouse on object storage: a lock object `<prefix>/_lock` written with a conditional put.

- acquire: PUT with `If-None-Match: *` (only one writer can create it); the body names the holder and an expiry;
- renew: a thread rewrites it every LEASE_S / 4 with `If-Match: <our ETag>` (fails if anyone replaced it);
- a stale lock (its expiry passed: the holder died without releasing it) is taken over with a PUT
  `If-Match: <the stale ETag>`, so of two machines taking over at once only one wins;
- release: DELETE with `If-Match: <our ETag>`.
`verify()` (called before every commit, as the folder lock's) fails the run once its lease is lost or has run
out: a holder that was paused past its expiry must not write beside a new one. Expiry is judged on the
clock of the machine that looks at the lock, so clocks must agree to well within LEASE_S (60 s).
Supported by AWS S3, MinIO and moto (conditional writes).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone

from enrich.errors import WarehouseLocked
from enrich.warehouse.lock import POLL_S, PROBE_GRACE_S, WarehouseChanged
from enrich.warehouse.object_store import fail, s3_client, split_url

LOCK_KEY = "_lock"
LEASE_S = 60.0


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _status(exc: BaseException) -> int:
    return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _refused(exc: BaseException) -> bool:
    """A conditional write lost (412 PreconditionFailed, or 409 ConditionalRequestConflict on S3)."""
    return _status(exc) in (409, 412) or _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict")


def _missing(exc: BaseException) -> bool:
    return _status(exc) == 404 or _code(exc) in ("NoSuchKey", "404")


class ObjectLock:
    """`ObjectLock(url, "enrich run X").acquire(wait=...)`; same interface as warehouse/lock.py WarehouseLock."""

    def __init__(self, url: str, purpose: str = "enrich run", lease_s: float | None = None) -> None:
        self.root = url
        self.purpose = purpose
        self.lease_s = float(lease_s if lease_s is not None else LEASE_S)
        self.bucket, prefix = split_url(url)
        self.key = f"{prefix}/{LOCK_KEY}" if prefix else LOCK_KEY
        self._client = None
        self._etag: str | None = None
        self._expires = 0.0  # monotonic time our lease runs out
        self._lost: str | None = None
        self._stop = threading.Event()
        self._mutex = threading.Lock()  # a renewal and the release never interleave
        self._thread: threading.Thread | None = None

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client()
        return self._client

    @property
    def held(self) -> bool:
        return self._etag is not None

    def _body(self) -> bytes:
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return json.dumps({"holder": f"pid {os.getpid()} on {socket.gethostname()}, {self.purpose}",
                           "since": getattr(self, "_since", since), "expires_at": time.time() + self.lease_s}).encode()

    def read(self) -> tuple[dict, str] | None:
        """(the lock's body, its ETag), or None when there is no lock."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
            body = got["Body"].read()
        except Exception as exc:  # noqa: BLE001
            if _missing(exc):
                return None
            raise self._fail("cannot read the warehouse lock", exc) from None
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        return doc, got["ETag"]

    def _fail(self, what: str, exc: BaseException):
        return fail(f"{what} {self.root}/{LOCK_KEY}", exc)

    def _put(self, **cond) -> str:
        started = time.monotonic()
        got = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(), **cond)
        self._expires = started + self.lease_s
        return got["ETag"]

    def acquire(self, wait: bool | float = False) -> "ObjectLock":
        if self._etag is not None:
            return self
        limit = PROBE_GRACE_S if wait is False else (None if wait is True else float(wait))
        deadline = None if limit is None else time.monotonic() + limit
        told = False
        self._since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        while True:
            try:
                self._etag = self._put(IfNoneMatch="*")
                break
            except Exception as exc:  # noqa: BLE001
                if not _refused(exc):
                    raise self._fail("cannot write the warehouse lock", exc) from None
            current = self.read()
            if current is not None and float(current[0].get("expires_at") or 0) < time.time():
                try:  # stale: its holder stopped renewing it; take it over unless someone else just did
                    self._etag = self._put(IfMatch=current[1])
                    print(f"enrich: took over the warehouse lock of {self.root} from a holder that stopped renewing "
                          f"it ({current[0].get('holder', 'unknown')})", file=sys.stderr, flush=True)
                    break
                except Exception as exc:  # noqa: BLE001
                    if not (_refused(exc) or _missing(exc)):
                        raise self._fail("cannot write the warehouse lock", exc) from None
                continue
            if current is None:
                continue  # released meanwhile: try again at once
            if deadline is not None and time.monotonic() >= deadline:
                raise WarehouseLocked(self._busy_message(wait, current[0]))
            if wait is not False and not told:
                told = True
                print(f"enrich: waiting for the warehouse {self.root} ({current[0].get('holder', 'in use')})",
                      file=sys.stderr, flush=True)
            time.sleep(POLL_S)
        self._lost = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="enrich-lock-renew", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        every = self.lease_s / 4
        while not self._stop.wait(every):
            with self._mutex:
                etag = self._etag
                if etag is None:
                    return
                try:
                    self._etag = self._put(IfMatch=etag)
                except Exception as exc:  # noqa: BLE001
                    if _refused(exc) or _missing(exc):
                        self._lost = "another process replaced or deleted the lock"
                        return
                    # a network error: keep trying while the lease lasts (verify() fails the run once it ran out)

    def verify(self) -> None:
        """Raise WarehouseChanged once this run's lease is lost or ran out (before every commit)."""
        if self._etag is None:
            return
        reason = self._lost or ("its lease ran out before it could be renewed"
                                if time.monotonic() >= self._expires else None)
        if reason:
            raise WarehouseChanged(f"this run lost the lock of the warehouse {self.root} ({reason}); stopped "
                                   "instead of writing beside another run")

    def _busy_message(self, wait: bool | float, doc: dict) -> str:
        holder = doc.get("holder") or "another process"
        hint = "wait for it to finish, or pass --wait to queue behind it"
        if wait not in (False, True):
            hint = f"gave up after waiting {wait} s"
        return f"the warehouse {self.root} is in use ({holder}); {hint}"

    def release(self) -> None:
        with self._mutex:
            etag, self._etag = self._etag, None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if etag is None:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)
        except Exception:  # noqa: BLE001 - replaced by a taker, or unreachable: it expires by itself
            pass

    def __enter__(self) -> "ObjectLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(url: str) -> bool:
    current = ObjectLock(url).read()
    return current is not None and float(current[0].get("expires_at") or 0) >= time.time()


def refuse_if_locked(url: str) -> None:
    lock = ObjectLock(url)
    current = lock.read()
    if current is not None and float(current[0].get("expires_at") or 0) >= time.time():
        raise WarehouseLocked(lock._busy_message(False, current[0]))
