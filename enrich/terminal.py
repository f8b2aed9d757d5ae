"""Text for a terminal: file names and model output are untrusted, so control and bidi characters are shown
escaped, never sent raw.

An OSC sequence in a file name (`ESC ] 0 ; title BEL`) sets the terminal's title, other escape sequences move
the cursor or rewrite what was printed, and a right-to-left override (U+202E) shows `photo\u202egnp.exe` as
`photoexe.png`. `safe_text` writes C0 and C1 controls (ESC, BEL, DEL, CR...), the bidi embeddings, overrides,
isolates and marks (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) and the line and paragraph
separators as visible escapes (`\\x1b`, `\\u202e`). Newlines and tabs are escaped too unless
`keep_newlines`, so a name cannot fake a line of its own. Used by the table formatter, the run summary,
error lines, progress and log records.
"""
from __future__ import annotations

import re

_BIDI = "\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\u2028\u2029"
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
_UNSAFE_KEEP_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe_text(text: object, *, keep_newlines: bool = False) -> str:
    """`text` (any value, str() of it) with control and bidi characters shown as escapes."""
    s = "" if text is None else str(text)
    pattern = _UNSAFE_KEEP_LINES if keep_newlines else _UNSAFE
    return pattern.sub(_escape, s) if pattern.search(s) else s
