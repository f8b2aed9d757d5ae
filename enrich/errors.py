"""Errors shared by every stage. The split decides what the pipeline does next:

- MediaError: this one input file is bad (corrupt, too large, mislabelled); record and go on.
- RetryableError: a transient failure of one request (429, 5xx, timeout, garbage body); retry it.
- ItemRequestError: the provider refused this one request for good (400); record and go on.
- FatalRunError: nothing in this run can succeed (bad key, unknown model, endpoint down); stop the run.
"""
from __future__ import annotations

from enrich.schemas.vocab import ErrorKind


class EnrichError(Exception):
    """Base class. `kind` is the `ErrorKind` stored in the `error_kind` column (schemas/vocab.py); whether the
    next run retries the item follows from the kind's declared retry class, not from this class."""

    kind: str = "error"

    def __init__(self, message: str, *, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def message(self) -> str:
        return str(self)


class MediaError(EnrichError):
    kind = ErrorKind.BAD_MEDIA


class RetryableError(EnrichError):
    kind = ErrorKind.TRANSIENT

    def __init__(self, message: str, *, kind: ErrorKind | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, kind=kind)
        self.retry_after = retry_after


class ItemRequestError(EnrichError):
    kind = ErrorKind.REQUEST_REJECTED


class FatalRunError(EnrichError):
    kind = ErrorKind.FATAL


class ConfigError(EnrichError):
    kind = ErrorKind.CONFIG


class WarehouseLocked(EnrichError):
    """Another process holds the warehouse's writer lock (raised by the warehouse; the CLI reports it with
    exit code 2, like a usage error, since nothing was started)."""

    kind = "warehouse_busy"


class UsageError(EnrichError):
    """Bad command-line arguments. Raised by the command line (enrich/cli.py, enrich/commands/) only: lower
    layers raise their own errors (ConfigError, WarehouseLocked, ...) and the CLI maps them to exit codes."""

    kind = ErrorKind.USAGE
