"""What a flow run's parameters may set: the run options, typed and validated, and nothing else.

Anyone who can create a flow run of a deployment (Prefect's API has no authentication) chooses its
parameters, so they must never reach the settings that decide *where* data and the API key go or *what* is
sent: endpoints (`base_url`, an `openai:...@URL` model), `api_version`, `ENRICH_HOME`, the warehouse, config
folders, `strip_metadata`, limits on what is read. The rule:

- Prefect parameters (`overrides` of `enrich_flow`) are a `RunOptions`: model (a hosted model id, no
  endpoint or local path), budget, concurrency, rpm, tpm, resolution, chunk size, progress, the profiles
  asked (names, or an ad-hoc prompt and fields). Anything else is
  refused before the run opens the warehouse or creates a backend (`extra="forbid"`).
- `roots` must lie inside the folders `enrich serve` was started for (`ENRICH_ALLOWED_ROOTS`).
- Everything else comes from the environment and config/ of the process that runs the flow, or, for an
  in-process call by the CLI (`enrich run`), from the settings the command built (`trusted_settings`): a
  context variable of the calling thread, never a parameter, so nothing outside the process can set it.
  `enrich serve` puts `--warehouse`, `--keep-metadata` and an endpoint model into the environment of the
  serving process (what scheduled runs inherit), never into the deployment's parameters.
"""
from __future__ import annotations

import contextvars
import math
import re
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enrich.errors import ConfigError

if TYPE_CHECKING:
    from enrich.settings import Settings

# A hosted model id (gemini-3.1-flash-lite, models/gemini-2.5-pro): no scheme, host, '@' or backend prefix.
_HOSTED_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}$")


def is_hosted_model_id(model: str) -> bool:
    """True for a plain model id; False for `openai:<model>@<url>` and `mlx:<dir-or-repo>` (an endpoint or a
    path: chosen by whoever starts the process, never by a flow parameter)."""
    return bool(_HOSTED_MODEL.match(model)) and ":" not in model and "@" not in model and ".." not in model


class RunOptions(BaseModel):
    """The run options a flow run may set (the safe subset of `enrich run`'s flags). None: not given."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    model: str | None = None
    budget_usd: float | None = Field(default=None, ge=0)
    concurrency: int | None = Field(default=None, ge=1, le=4096)
    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    resolution: Literal["low", "medium", "high"] | None = None
    chunk_size: int | None = Field(default=None, ge=1, le=100_000)
    progress: Literal["auto", "bar", "log", "off"] | None = None
    # what is asked, not where anything goes: profile names (checked against the known profiles when the run
    # opens) and an ad-hoc profile's prompt and fields
    run_profiles: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")], ...] | None = \
        Field(default=None, max_length=16)
    adhoc_prompt: str | None = Field(default=None, max_length=8000)
    adhoc_schema: str | None = Field(default=None, max_length=4000)

    @field_validator("model")
    @classmethod
    def _hosted_only(cls, value: str | None) -> str | None:
        if value is not None and not is_hosted_model_id(value):
            raise ValueError("a flow parameter may name a hosted model id only (no endpoint URL, openai: or mlx: "
                             "model): set those in the environment of the process that runs the flow (ENRICH_MODEL)")
        return value

    @field_validator("budget_usd")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("the budget must be a finite number")
        return value

    @classmethod
    def from_parameters(cls, overrides: "RunOptions | dict[str, Any] | None") -> "RunOptions":
        """Validate a flow run's `overrides`; ConfigError (one line) naming what was refused."""
        if isinstance(overrides, RunOptions):
            return overrides
        try:
            return cls.model_validate(overrides or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'overrides'}: "
                + ("not a run option a flow run may set" if e["type"] == "extra_forbidden" else e["msg"])
                for e in exc.errors())
            raise ConfigError(f"refused flow parameters ({problems})") from None

    def as_parameters(self) -> dict[str, Any]:
        """The options given, as plain values for Prefect."""
        return self.model_dump(exclude_none=True)

    def apply(self, settings: "Settings") -> "Settings":
        return settings.with_overrides(**self.as_parameters())


ALLOWED_ROOTS_ENV = "ENRICH_ALLOWED_ROOTS"  # set by `enrich serve`: the folders its deployment may describe


def check_roots(roots: list[str], env: "dict[str, str] | None" = None) -> None:
    """Refuse roots outside the folders the serving process was started for (ENRICH_ALLOWED_ROOTS, paths
    separated by os.pathsep; unset: no restriction). Otherwise a flow run created through Prefect's API could
    point the run at ~/.ssh, whose text files would be sent to the model as documents."""
    import os

    allowed = (os.environ if env is None else env).get(ALLOWED_ROOTS_ENV)
    if not allowed:
        return
    bases = [os.path.realpath(p) for p in allowed.split(os.pathsep) if p]
    for root in roots:
        real = os.path.realpath(root)
        if not any(real == b or real.startswith(b.rstrip(os.sep) + os.sep) for b in bases):
            raise ConfigError(f"refused flow parameters (roots: {root!r} is outside the folders this process "
                              f"serves)")


def split_overrides(overrides: dict[str, Any]) -> tuple[RunOptions, dict[str, Any]]:
    """(what may travel as flow parameters, the rest) of a command's overrides (None values dropped)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    safe = {k: v for k, v in given.items() if k in RunOptions.model_fields}
    if "model" in safe and not is_hosted_model_id(safe["model"]):
        safe.pop("model")
    rest = {k: v for k, v in given.items() if k not in safe}
    return RunOptions.model_validate(safe), rest


_trusted: contextvars.ContextVar["Settings | None"] = contextvars.ContextVar("enrich_trusted_settings", default=None)


@contextmanager
def trusted_settings(settings: "Settings") -> Iterator[None]:
    """Inside the block, a flow called in this thread starts from `settings` (built by the CLI from its
    flags) instead of loading them from the environment. Not a Prefect parameter: not stored, not settable
    through Prefect's API."""
    token = _trusted.set(settings)
    try:
        yield
    finally:
        _trusted.reset(token)


def current_trusted_settings() -> "Settings | None":
    return _trusted.get()
