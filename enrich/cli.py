"""The `enrich` command line: a thin layer over the library. Each subcommand lives in enrich/commands/
and is registered in COMMANDS below; heavy imports (Prefect, the SDK) happen inside the handlers, so
read-only commands (`query`, `estimate`) start fast and never import Prefect.

Exit codes: 0 success (per-item errors are reported in the summary, not as failure); 1 a run that started
but stopped early (bad key or unknown model mid-run, endpoint down); 2 a run that could not start (bad
arguments, bad key, unreachable endpoint, unknown model, an estimate over the budget without --yes) with a
one-line reason; 130 / 143 a run interrupted by Ctrl-C / SIGTERM (every finished result is written; the run
is recorded as interrupted).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> module in enrich.commands; each module has `register(subparsers)` and `main(args) -> int`
COMMANDS: dict[str, str] = {
    "run": "enrich.commands.run",
    "estimate": "enrich.commands.estimate",
    "query": "enrich.commands.query",
    "emulator": "enrich.commands.emulator",
    "runs": "enrich.commands.runs",
    "jobs": "enrich.commands.jobs",
    "compact": "enrich.commands.compact",
    "migrate": "enrich.commands.migrate",
    "serve": "enrich.commands.serve",
    "config": "enrich.commands.config",
    "eval": "enrich.commands.eval",
    "export": "enrich.commands.export",
    "search": "enrich.commands.search",
    "browse": "enrich.commands.browse",
    "report": "enrich.commands.report",
}

EPILOG = """\
environment:
  GEMINI_API_KEY / GOOGLE_API_KEY   API key for Gemini (never stored or logged)
  GOOGLE_GEMINI_BASE_URL            another Gemini endpoint (e.g. the local emulator)
  ENRICH_HOME                       where all state lives (default ~/.enrich)
  ENRICH_WAREHOUSE                  the warehouse folder (default $ENRICH_HOME/warehouse)
  ENRICH_CONFIG_DIR                 the user config folder (default $ENRICH_HOME/config; --config DIR wins)

examples:
  enrich estimate ~/Pictures
  enrich run ~/Pictures --budget 2.00
  enrich run samples/library --emulator
  enrich query "SELECT caption, cost_usd FROM items WHERE status = 'ok' LIMIT 5"
  enrich run ~/Pictures --reprocess stale    # after changing the model or a prompt
  enrich runs                                # recent runs: status, items, spend
  enrich serve ~/Pictures --cron "0 2 * * *" --budget 1   # nightly (needs a Prefect server)
  enrich config                              # every setting, its value and where it came from
  enrich --config ~/work/enrich-config run ~/Pictures   # another user config folder
  enrich eval --emulator                     # score a model on the bundled golden set
  enrich search "red bicycle" --since 2023-01-01   # full-text search over every description
  enrich export xmp ~/Pictures --dry-run           # XMP sidecars for photo managers
  enrich browse                              # gallery, search, items, runs in a local browser
  enrich report --out report.html            # one self-contained HTML report of the latest run
"""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes no abbreviations: an unknown flag is an error, never the nearest known one
    (`enrich run --mode batch` must not be read as `--model batch`). Subparsers are made with the parser's own
    class, so every command and sub-subcommand gets this too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="enrich",
        description="Describe photos, audio and documents with cheap multimodal models; "
        "exact cost per item; results in Parquet, queryable with DuckDB.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="DIR",
                        help="user config folder: its enrich.toml, prices.toml and prompts.toml override the "
                        "built-in defaults key by key (default: $ENRICH_CONFIG_DIR or $ENRICH_HOME/config)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        importlib.import_module(module).register(sub)
    return parser


def fail(message: str, code: int = 2) -> int:
    from enrich.terminal import safe_text

    print(f"enrich: error: {safe_text(message)}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    from enrich.errors import ConfigError, FatalRunError, UsageError, WarehouseLocked
    from enrich.settings import config_dir_flag

    import logging

    # A log handler that fails (its stream closed under it) would otherwise print "--- Logging error ---" with
    # the exception being handled at the time: the text of a model's answer, which may echo the API key.
    logging.raiseExceptions = False
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        with config_dir_flag(args.config):
            return int(args.handler(args) or 0)
    except (UsageError, ConfigError, FatalRunError, WarehouseLocked) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted", 130)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
