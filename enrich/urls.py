"""Credentials never travel in an endpoint URL: a URL is stored (the `model` column of every row, `runs`,
Prefect parameters) and printed, a key is not. Keys come from the environment."""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

# query parameter names that carry credentials (compared without case, '-' and '_')
_SECRET_PARAMS = {"key", "apikey", "accesskey", "token", "accesstoken", "authtoken", "auth", "authorization",
                  "secret", "clientsecret", "password", "pass", "pwd", "sig", "signature", "bearer",
                  "xgoogapikey", "session", "sessiontoken", "credential", "credentials"}


def credentials_in_url(url: str) -> str | None:
    """Why `url` carries credentials (user:password@host, a key-looking query parameter), or None."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "it is not a valid URL"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "it has a user name or password in it (user:password@host)"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower().replace("-", "").replace("_", "") in _SECRET_PARAMS:
            return f"its query parameter {name!r} looks like a credential"
    if parts.fragment:
        return "it has a #fragment"
    return None
