"""The object stores a warehouse can live on, and the one client layer for all of them.

`s3://bucket/prefix` (Amazon S3, MinIO, any S3-compatible store), `gs://bucket/prefix` (Google Cloud Storage) and
`az://container/prefix` (Azure Blob Storage). Two libraries reach them, both built on the Rust `object_store`
crate, so every store is configured the same way and behaves the same way:
- `deltalake` writes and reads the tables (warehouse/object_store.py);
- `obstore` does the rest: the lock object's conditional writes (warehouse/object_lock.py) and the "can I
  use this bucket" check.

What differs per store is declared here once (`STORES`): its environment (credentials and endpoint are read
from it by both libraries themselves; nothing here passes them on), which of those variables are secrets
(masked in every message: `scrub`), and the table writer's extra options.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from enrich.warehouse.store import WarehouseUnusable


@dataclass(frozen=True)
class ObjectStoreKind:
    scheme: str
    secrets: tuple[str, ...]  # environment variables whose values must never appear in a message
    # deltalake's storage options: S3 needs to be told that it supports conditional writes (If-None-Match), so
    # that Delta commits are a conditional put rather than needing a separate lock service; GCS (generation
    # match) and Azure (If-None-Match) have them natively
    table_options: dict[str, str] = field(default_factory=dict)


# What users set for each store (the README lists them; both libraries read them themselves):
#   s3  Amazon S3 or an S3-compatible store: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
#       AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP
#   gs  Google Cloud Storage: GOOGLE_APPLICATION_CREDENTIALS, GOOGLE_SERVICE_ACCOUNT, GOOGLE_SERVICE_ACCOUNT_KEY
#   az  Azure Blob Storage: AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY,
#       AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID, AZURE_STORAGE_USE_EMULATOR
STORES = {
    "s3": ObjectStoreKind(
        "s3", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"), {"conditional_put": "etag"}),
    "gs": ObjectStoreKind("gs", ("GOOGLE_SERVICE_ACCOUNT_KEY",)),
    "az": ObjectStoreKind(
        "az", ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_SAS_KEY", "AZURE_STORAGE_TOKEN",
               "AZURE_CLIENT_SECRET", "AZURE_STORAGE_CLIENT_SECRET")),
}


def store_kind(url: str) -> ObjectStoreKind:
    scheme = url.split("://", 1)[0]
    try:
        return STORES[scheme]
    except KeyError:
        raise ValueError(f"not an object-storage URL: {url!r}") from None


def secret_values() -> list[str]:
    """The values of every store's secret variables set in this environment."""
    names = {name for kind in STORES.values() for name in kind.secrets}
    return [value for name in sorted(names) if (value := os.environ.get(name)) and len(value) >= 4]


def scrub(text: str) -> str:
    """`text` with every object-store credential of the environment masked (the stores' error bodies can quote
    an access key id; a client's debug output can quote anything), and every secret registered elsewhere."""
    from enrich.redact import scrub as scrub_secrets

    return scrub_secrets(text, tuple(secret_values())) or ""


def register_secrets() -> None:
    """Masked in log lines too (enrich/redact.py), should a client quote one."""
    from enrich.redact import register_secret

    for value in secret_values():
        register_secret(value)


class ObjectStoreError(WarehouseUnusable):
    """The object-storage warehouse cannot be read or written (credentials, endpoint, bucket, network)."""

    kind = "warehouse_unusable"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text.splitlines()[0] if text else ''}"


def fail(what: str, exc: BaseException) -> ObjectStoreError:
    return ObjectStoreError(scrub(f"{what}: {_first_line(exc)}"))


def table_options(url: str) -> dict[str, str]:
    return dict(store_kind(url).table_options)


def open_store(url: str) -> Any:
    """obstore's client for the prefix `url` names (paths given to it are relative to the prefix), configured
    from the store's standard environment."""
    from obstore.store import from_url

    store_kind(url)
    try:
        return from_url(url)
    except Exception as exc:  # noqa: BLE001 - a missing account name, a malformed endpoint: said without secrets
        raise fail(f"cannot use the warehouse {url}", exc) from None


def check_reachable(url: str) -> None:
    """The bucket or container answers a listing with these credentials (before a run writes anything)."""
    import obstore

    store = open_store(url)
    try:
        for _ in obstore.list(store, chunk_size=1):
            break
    except Exception as exc:  # noqa: BLE001
        raise fail(f"cannot use the warehouse {url}", exc) from None
