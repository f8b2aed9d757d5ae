"""Running the enrich flow in tests with any setting: like `enrich run`, the settings the test wants travel
in-process (`trusted_settings`), and only the safe run options become the flow run's Prefect parameters."""
from __future__ import annotations

from typing import Any


def run_enrich_flow(roots, settings: dict[str, Any] | None = None, *, reprocess=None,
                    wait_for_lock: bool = False, allow_mass_removal: bool = False) -> dict[str, Any]:
    from enrich.flows.enrich_flow import enrich_flow
    from enrich.flows.run_options import split_overrides, trusted_settings
    from enrich.settings import load_settings

    settings = dict(settings or {})
    options, _ = split_overrides(settings)
    with trusted_settings(load_settings().with_overrides(**settings)):
        return enrich_flow([str(r) for r in roots], options.as_parameters(), reprocess=reprocess,
                           wait_for_lock=wait_for_lock, allow_mass_removal=allow_mass_removal)
