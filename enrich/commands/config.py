"""`enrich config`: every effective setting, its value and where it came from, and the paths in use.
`enrich config init` writes a commented user config to edit. Read-only apart from init; never imports Prefect."""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="show every setting and where it came from; `config init` writes a user config",
        description="Print every effective setting with its value and its source (flag, environment, user "
        "file, default), the prices and prompts in use, and the paths (home, warehouse, user config folder, "
        "packaged defaults). Precedence: flags > environment > user config folder > packaged defaults, key by "
        "key. `enrich config init` writes a commented enrich.toml, prices.toml and prompts.toml into the user "
        "config folder ($ENRICH_HOME/config, ENRICH_CONFIG_DIR, or enrich --config DIR); it never overwrites.",
    )
    p.add_argument("action", nargs="?", choices=["show", "init"], default="show",
                   help="show (default) or init")
    p.add_argument("--json", action="store_true", help="print the settings as JSON")
    p.set_defaults(handler=main)


def _shown(value: Any) -> Any:
    """A JSON-able, secret-free rendering of a setting's value."""
    from pydantic import SecretStr

    from enrich.settings import RateLimit

    if isinstance(value, SecretStr):
        return "set"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: ({"rpm": v.rpm, "tpm": v.tpm} if isinstance(v, RateLimit) else v) for k, v in value.items()}
    return value


def describe(settings) -> dict[str, Any]:
    """What `enrich config` prints, as data: paths, settings, prices and prompts, each with its source."""
    from enrich.pricing import load_prices
    from enrich.settings import DEFAULT, DEFAULT_CONFIG_DIR, SETTINGS, user_layer

    config_dir = settings.config_dir
    prices = load_prices(config_dir)
    prices_path, user_prices = user_layer("prices.toml", config_dir)
    prompts_path, user_prompts = user_layer("prompts.toml", config_dir)
    out: dict[str, Any] = {
        "paths": {
            "home": {"value": str(settings.home), "source": settings.source("home")},
            "warehouse": {"value": str(settings.warehouse), "source": settings.source("warehouse")},
            "user_config": {"value": str(config_dir), "source": settings.source("config_dir"),
                            "exists": config_dir.is_dir(),
                            "files": [n for n in ("enrich.toml", "prices.toml", "prompts.toml")
                                      if (config_dir / n).is_file() and config_dir.resolve() != DEFAULT_CONFIG_DIR]},
            "packaged_defaults": {"value": str(DEFAULT_CONFIG_DIR), "source": DEFAULT},
        },
        "price_table": {"date": prices.date, "source": prices.source},
        "settings": {},
        "prices": {},
        "prompts": {},
    }
    for spec in SETTINGS.values():
        value = getattr(settings, spec.name)
        entry = {"value": ("set" if value is not None else "unset") if spec.secret else _shown(value),
                 "source": settings.source(spec.name), "env": list(spec.env), "toml": spec.where(),
                 "help": spec.help}
        out["settings"][spec.name] = entry
    user_models = user_prices.get("models", {})
    for name, p in sorted(prices.models.items()):
        out["prices"][name] = {"input": str(p.input), "output": str(p.output), "input_audio": str(p.input_audio),
                               "cached_input": str(p.cached_input), "batch_factor": str(p.batch_factor),
                               "source": f"{prices_path} [models.\"{name}\"]" if name in user_models else DEFAULT}
    for kind, prompt in settings.prompts.items():
        out["prompts"][kind] = {"prompt": prompt,
                                "source": f"{prompts_path} [{kind}]" if kind in user_prompts else DEFAULT}
    return out


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 4] + '..."'


def print_text(info: dict[str, Any]) -> None:
    paths = info["paths"]
    print("paths")
    uc = paths["user_config"]
    notes = {"user_config": ("" if uc["exists"] else "  (does not exist: `enrich config init` creates it)")
             + (f"  files: {', '.join(uc['files'])}" if uc["files"] else "")}
    for name, entry in paths.items():
        print(f"  {name:<18} {entry['value']}  [{entry['source']}]{notes.get(name, '')}")
    pt = info["price_table"]
    print(f"  {'price_table':<18} {pt['date']}  ({pt['source'][:80]})")
    print("\nsettings  (name = value  [source]  env / enrich.toml key)")
    for name, e in info["settings"].items():
        where = " / ".join(x for x in (", ".join(e["env"]), e["toml"]) if x)
        print(f"  {name} = {_short(e['value'])}  [{e['source']}]  {where}")
    print("\nprices  (USD per 1M tokens: input / output)")
    for name, e in info["prices"].items():
        print(f"  {name:<28} {e['input']} / {e['output']}  [{e['source']}]")
    print("\nprompts")
    for kind, e in info["prompts"].items():
        print(f"  {kind:<9} {_short(e['prompt'], 50)}  [{e['source']}]")


# ---------------------------------------------------------------------------------------------------------
# init


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, (float, str)):
        return json.dumps(value)
    raise TypeError(value)


def commented_enrich_toml() -> str:
    """enrich.toml with every setting commented out at its default, with its environment variable and help."""
    from enrich.settings import SETTINGS

    lines = [
        "# enrich user settings. Uncomment a line to change it; anything left commented keeps the built-in default.",
        "# Precedence, key by key: command-line flags > environment (ENRICH_*) > this folder > built-in defaults.",
        "# `enrich config` shows every effective value and where it came from.",
    ]
    section = None
    for spec in SETTINGS.values():
        if not spec.toml or spec.secret:
            continue
        *sec, key = spec.toml
        env = f"  (env {', '.join(spec.env)})" if spec.env else ""
        if isinstance(spec.default, dict):
            lines += ["", f"# {spec.help}", f"# [{'.'.join(spec.toml)}]"]
            if not spec.default:  # rate limits: show the shape
                lines += ['# [rate_limits."gemini-3.1-flash-lite"]', "# rpm = 4000", "# tpm = 4_000_000"]
            for k, v in spec.default.items():
                lines.append(f"# {k} = {_toml_value(v)}")
            section = None
            continue
        if tuple(sec) != section:
            section = tuple(sec)
            lines += ["", f"[{'.'.join(sec)}]"]
        placeholder = {str: '"<text>"', int: "<integer>", float: "<number>"}
        value = placeholder[spec.type] if spec.default is None else _toml_value(spec.default)
        unset = "  (not set by default)" if spec.default is None else ""
        lines.append(f"# {key} = {value}    # {spec.help}{unset}{env}")
    return "\n".join(lines) + "\n"


EXAMPLE_PRICES = """\
# Your prices, merged over the built-in table model by model (`enrich config` shows the table in use).
# A file that sets prices must give [meta] date: every row records the date of the table that priced it.
# USD per 1M tokens; thinking tokens are billed as output.
#
# [meta]
# date = "2026-12-01"
# source = "my contract"
#
# [models."gemini-3.1-flash-lite"]
# input = 0.25
# output = 1.50
#
# [models."openai:*"]      # a local server: free
# input = 0
# output = 0
"""

EXAMPLE_PROMPTS = """\
# Your prompts, one per media kind (image, audio, document, video), each overriding the built-in one.
# A prompt's hash is part of each row's enrichment version: `enrich run --reprocess stale` redoes old rows.
#
# [image]
# prompt = \"\"\"Describe this photo for a searchable personal library. Be concrete and plain.
# Return the JSON fields: caption (one short sentence), description (2-4 sentences), tags (up to 10 lowercase
# keywords), objects (main visible objects), visible_text (legible text, or empty), people_count, setting.\"\"\"
"""


def write_new(path: Path, text: str) -> bool:
    """Write `text` to `path` atomically unless it exists (never overwrites). True when written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if the file exists
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def init(settings) -> int:
    from enrich.errors import UsageError
    from enrich.settings import DEFAULT_CONFIG_DIR

    folder = settings.config_dir
    if folder.resolve() == DEFAULT_CONFIG_DIR:
        raise UsageError(f"{folder} holds the packaged defaults; choose another folder for your config")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("enrich.toml", commented_enrich_toml()), ("prices.toml", EXAMPLE_PRICES),
                       ("prompts.toml", EXAMPLE_PROMPTS)):
        path = folder / name
        print(f"wrote {path}" if write_new(path, text) else f"kept {path} (exists; not overwritten)")
    return 0


def main(args: argparse.Namespace) -> int:
    from enrich.settings import load_settings

    if args.action == "init":
        return init(load_settings(require_config_dir=False))
    info = describe(load_settings())
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_text(info)
    return 0
