"""Backends, registered in one place. A model spec picks one:

    gemini-3.1-flash-lite            Google Gemini (google-genai SDK)
    mlx:<local-dir-or-hub-repo>      a vision model run locally by mlx-vlm
    openai:<model>@<base_url>        any OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio, mlx_vlm.server)
    openai:<model>@<url1>,<url2>     a fleet of such servers (openai_fleet.py: spread, health checks, failover)

Imports are lazy: choosing Gemini never imports mlx.
"""
from __future__ import annotations

from typing import Callable

from enrich.backends.base import Backend, Capabilities, DescribeRequest, DescribeResult, MediaPart, Usage
from enrich.errors import ConfigError
from enrich.settings import Settings


def _gemini(spec: str, settings: Settings) -> Backend:
    from enrich.backends.gemini import GeminiBackend

    return GeminiBackend(
        spec,
        api_key=settings.api_key,
        base_url=settings.base_url,
        api_version=settings.api_version,
        # the Flex tier answers in 1-15 minutes: a request may take flex_timeout_s
        timeout_s=settings.flex_timeout_s if settings.mode == "flex" else settings.request_timeout_s,
        max_inline_bytes=settings.max_inline_bytes,
        file_active_timeout_s=settings.file_active_timeout_s,
        max_connections=settings.concurrency,
        service_tier="flex" if settings.mode == "flex" else None,
    )


def _mlx(spec: str, settings: Settings) -> Backend:
    from enrich.backends.mlx_local import MlxBackend

    return MlxBackend(spec.split(":", 1)[1], max_inline_bytes=settings.max_inline_bytes)


def _openai(spec: str, settings: Settings) -> Backend:
    from enrich.backends.openai_compat import OpenAICompatBackend

    body = spec.split(":", 1)[1]
    if "@" not in body:
        raise ConfigError(f"openai model spec must be openai:<model>@<base_url>, not {spec!r}")
    model, base_url = body.split("@", 1)
    from enrich.urls import credentials_in_url

    why = credentials_in_url(base_url)
    if why:  # the URL is stored in every row's model column, in runs and in Prefect: never a credential
        raise ConfigError(f"refusing the openai: endpoint URL because {why}: put the key in "
                          "ENRICH_OPENAI_API_KEY (or OPENAI_API_KEY)")
    key = settings.openai_api_key
    if "," in base_url:  # a fleet: several servers of the same model
        from enrich.backends.openai_fleet import OpenAIFleetBackend

        return OpenAIFleetBackend(model, [u for u in base_url.split(",") if u], timeout_s=settings.request_timeout_s,
                                  max_inline_bytes=settings.max_inline_bytes,
                                  api_key=key.get_secret_value() if key is not None else None)
    return OpenAICompatBackend(model=model, base_url=base_url, timeout_s=settings.request_timeout_s,
                               max_inline_bytes=settings.max_inline_bytes,
                               api_key=key.get_secret_value() if key is not None else None)


# prefix -> factory; the empty prefix is the default (Gemini model ids)
REGISTRY: dict[str, Callable[[str, Settings], Backend]] = {
    "mlx:": _mlx,
    "openai:": _openai,
    "": _gemini,
}


def backend_name(spec: str) -> str:
    for prefix in REGISTRY:
        if prefix and spec.startswith(prefix):
            return prefix.rstrip(":")
    return "gemini"


def create_backend(spec: str, settings: Settings) -> Backend:
    for prefix, factory in REGISTRY.items():
        if spec.startswith(prefix):
            return factory(spec, settings)
    raise ConfigError(f"no backend for model {spec!r}")


__all__ = [
    "Backend", "Capabilities", "DescribeRequest", "DescribeResult", "MediaPart", "Usage",
    "REGISTRY", "backend_name", "create_backend",
]
