"""One run per warehouse on object storage: a lock object `<prefix>/_lock` written with conditional writes.

The same code on every store (obstore, warehouse/object_stores.py); the store turns each mode into its own
precondition: S3 and Azure `If-None-Match: *` / `If-Match: <ETag>`, GCS a generation match.
- acquire: create the object only if it does not exist (one writer wins); the body names the holder and an expiry;
- renew: a thread rewrites it every LEASE_S / 4, only if it is still the version we wrote (fails if anyone
  replaced it);
- a stale lock (its expiry passed: the holder died without releasing it) is taken over by a write conditional
  on the stale version, so of two machines taking over at once only one wins;
- release: the holder rewrites it, conditional on its own version, as released (expired at once). It is not
  deleted: the stores offer no conditional delete, and an unconditional one could delete the lock of a
  newcomer who took it over meanwhile. The next run takes a released lock over without a word.
`verify()` (called before every commit, as the folder lock's) fails the run once its lease is lost or has run
out: a holder that was paused past its expiry must not write beside a new one. Expiry is judged on the
clock of the machine that looks at the lock, so clocks must agree to well within LEASE_S (60 s).
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
from enrich.warehouse.object_stores import fail, open_store

LOCK_KEY = "_lock"
LEASE_S = 60.0


def _refused(exc: BaseException) -> bool:
    """A conditional write lost: the object exists (create) or is not the version we named (update)."""
    from obstore.exceptions import AlreadyExistsError, PreconditionError

    return isinstance(exc, (AlreadyExistsError, PreconditionError))


def _missing(exc: BaseException) -> bool:
    return isinstance(exc, FileNotFoundError)


def _version(meta: dict) -> dict:
    """The put mode 'replace only this version' (GCS needs its generation, the others the ETag)."""
    mode = {"e_tag": meta["e_tag"]}
    if meta.get("version") is not None:
        mode["version"] = meta["version"]
    return mode


class ObjectLock:
    """`ObjectLock(url, "enrich run X").acquire(wait=...)`; same interface as warehouse/lock.py WarehouseLock."""

    def __init__(self, url: str, purpose: str = "enrich run", lease_s: float | None = None) -> None:
        self.root = url
        self.purpose = purpose
        self.lease_s = float(lease_s if lease_s is not None else LEASE_S)
        self._store = None
        self._etag: dict | None = None  # the version we wrote last (put mode "update only this version")
        self._expires = 0.0  # monotonic time our lease runs out
        self._lost: str | None = None
        self._stop = threading.Event()
        self._mutex = threading.Lock()  # a renewal and the release never interleave
        self._thread: threading.Thread | None = None

    @property
    def store(self):
        if self._store is None:
            self._store = open_store(self.root)
        return self._store

    @property
    def held(self) -> bool:
        return self._etag is not None

    def _body(self, released: bool = False) -> bytes:
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return json.dumps({"holder": f"pid {os.getpid()} on {socket.gethostname()}, {self.purpose}",
                           "since": getattr(self, "_since", since), "released": released,
                           "expires_at": 0 if released else time.time() + self.lease_s}).encode()

    def read(self) -> tuple[dict, dict] | None:
        """(the lock's body, its version), or None when there is no lock."""
        import obstore

        try:
            got = obstore.get(self.store, LOCK_KEY)
            body = bytes(got.bytes())
        except Exception as exc:  # noqa: BLE001
            if _missing(exc):
                return None
            raise self._fail("cannot read the warehouse lock", exc) from None
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        return doc, _version(got.meta)

    def _fail(self, what: str, exc: BaseException):
        return fail(f"{what} {self.root}/{LOCK_KEY}", exc)

    def _put(self, mode, released: bool = False) -> dict:
        """Write the lock with `mode` ("create", or the version it must still be); the version written."""
        import obstore

        started = time.monotonic()
        got = obstore.put(self.store, LOCK_KEY, self._body(released), mode=mode)
        self._expires = started + self.lease_s
        return _version(got)

    def acquire(self, wait: bool | float = False) -> "ObjectLock":
        if self._etag is not None:
            return self
        limit = PROBE_GRACE_S if wait is False else (None if wait is True else float(wait))
        deadline = None if limit is None else time.monotonic() + limit
        told = False
        self._since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        while True:
            try:
                self._etag = self._put("create")
                break
            except Exception as exc:  # noqa: BLE001
                if not _refused(exc):
                    raise self._fail("cannot write the warehouse lock", exc) from None
            current = self.read()
            if current is not None and float(current[0].get("expires_at") or 0) < time.time():
                try:  # released, or stale (its holder stopped renewing it): take it over unless someone just did
                    self._etag = self._put(current[1])
                    if not current[0].get("released"):
                        print(f"enrich: took over the warehouse lock of {self.root} from a holder that stopped "
                              f"renewing it ({current[0].get('holder', 'unknown')})", file=sys.stderr, flush=True)
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
                    self._etag = self._put(etag)
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
            self._put(etag, released=True)
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
