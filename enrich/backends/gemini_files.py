"""The Gemini Files API path for media over the inline limit: resumable upload, wait for ACTIVE, delete.

Used by GeminiBackend.describe: each upload's name is recorded in `uploaded` as soon as it exists, so the
caller's `finally` deletes it whatever happens next (a failed poll, a 5xx on generateContent, cancellation).
Errors are left as the SDK raises them; the backend maps them onto retry / record / stop.
"""
from __future__ import annotations

import asyncio
import io
import logging
import time

from google import genai
from google.genai import types

from enrich.schemas.vocab import ErrorKind
from enrich.backends.base import MediaPart
from enrich.errors import ItemRequestError, RetryableError
from enrich.settings import default

log = logging.getLogger("enrich.gemini.files")

POLL_FIRST_S = 0.1
POLL_MAX_S = 5.0


async def upload_active(client: genai.Client, media: MediaPart, uploaded: list[str], *,
                        active_timeout_s: float = default("file_active_timeout_s")) -> types.File:
    """Upload one media part (its file, or its bytes) and return it once the service says ACTIVE."""
    media.check_unchanged()  # a file sent as is must still be the one hashed and reserved for
    source = str(media.path) if media.data is None else io.BytesIO(media.data)
    file = await client.aio.files.upload(file=source, config=types.UploadFileConfig(mime_type=media.mime))
    if file.name:
        uploaded.append(file.name)
    deadline = time.monotonic() + active_timeout_s
    delay = POLL_FIRST_S
    while _state(file) == "PROCESSING":
        if time.monotonic() + delay > deadline:
            raise RetryableError(f"the uploaded file was still PROCESSING after {active_timeout_s:g} s",
                                 kind=ErrorKind.FILE_PROCESSING_TIMEOUT)
        await asyncio.sleep(delay)
        delay = min(POLL_MAX_S, delay * 2)
        file = await client.aio.files.get(name=file.name)
    state = _state(file)
    if state == "FAILED":
        why = file.error.message if file.error is not None and file.error.message else "no reason given"
        raise ItemRequestError(f"the Files API could not process the file: {why}", kind=ErrorKind.FILE_PROCESSING_FAILED)
    if state not in ("ACTIVE", "STATE_UNSPECIFIED", None):
        raise ItemRequestError(f"the uploaded file is in state {state}", kind=ErrorKind.FILE_PROCESSING_FAILED)
    return file


def _state(file: types.File) -> str | None:
    state = file.state
    return None if state is None else str(getattr(state, "value", state))


async def delete_quietly(client: genai.Client, names: list[str]) -> None:
    """Delete uploaded files; a failure is logged, never raised (files expire on their own after 48 h)."""
    for name in names:
        try:
            await client.aio.files.delete(name=name)
        except Exception as exc:  # best effort: the describe outcome matters more than the cleanup
            log.warning("could not delete uploaded file %s: %s", name, exc.__class__.__name__)
