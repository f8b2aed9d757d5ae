"""enrich's built-in defaults: enrich.toml (settings), prices.toml (the dated price table) and prompts.toml.

Installed as package data (`enrich.config`). Users override them key by key in their own config folder
($ENRICH_HOME/config, or --config DIR / ENRICH_CONFIG_DIR); see `enrich config`.
"""
