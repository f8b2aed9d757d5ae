"""Secrets out of every string built from a response: one scrubbing function for rows, errors and log lines.

A misbehaving endpoint or proxy can echo the API key anywhere in a 200 answer (the model's text, a field the
SDK's validation error then quotes), so scrubbing only error bodies is not enough. Backends register the
secrets they send (`register_secret`) when they are created; `scrub` replaces each with `***` in a string,
`scrub_value` in the strings of a row (nested dicts, lists, pydantic models), and `ScrubFilter` in log
records (whose control characters it also escapes, enrich/terminal.py). The describer scrubs every row and error it builds from a backend's answer; the run's messages
(summary, stderr) are built from those.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from pydantic import BaseModel

MASK = "***"
_MIN_SECRET_LEN = 6  # shorter values (test keys like "x") would mask ordinary text

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secret(secret: str | None) -> None:
    """Scrub `secret` from now on (process-wide). Too-short values are ignored."""
    global _secrets
    if not secret or len(secret) < _MIN_SECRET_LEN:
        return
    with _lock:
        if secret not in _secrets:
            # longest first, so a key that contains another is masked whole
            _secrets = tuple(sorted((*_secrets, secret), key=len, reverse=True))


def scrub(text: str | None, extra: tuple[str, ...] = ()) -> str | None:
    """`text` with every registered secret (and `extra`) replaced by ***."""
    if not text:
        return text
    for secret in (*_secrets, *extra):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_value(value: Any) -> Any:
    """The same value with secrets scrubbed from every string in it (dicts, lists, tuples, pydantic models)."""
    if not _secrets:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(scrub_value(v) for v in value)
    if isinstance(value, BaseModel):
        dumped = value.model_dump()
        cleaned = scrub_value(dumped)
        return value if cleaned == dumped else value.model_validate(cleaned)
    return value


def scrub_exception_text(exc: BaseException) -> str:
    return scrub(f"{exc.__class__.__name__}: {exc}") or ""


class ScrubFilter(logging.Filter):
    """Masks registered secrets in a log record's final message (arguments included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from enrich.terminal import safe_text

        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging
            return True
        cleaned = safe_text(scrub(message), keep_newlines=True)  # log lines reach terminals too
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def scrubbed_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with ScrubFilter attached (a logger's filters are not inherited by its
    children, so each module that logs text from responses takes its logger from here)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, ScrubFilter) for f in logger.filters):
        logger.addFilter(ScrubFilter())
    return logger
