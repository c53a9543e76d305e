"""The ``herald`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

import attrs
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from .config import SETTINGS, Config, ConfigError, parse_plugin_list
from .plugins import PluginError, PluginHost, available_plugins

__all__ = ["main"]


def _env_help(field: str) -> str:
    setting = next(s for s in SETTINGS if s.field == field)
    return f"{setting.help} [env {setting.env}]"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herald",
        description="Herald: an actor-style event engine. Events in over HTTP, per-user actors with timers, "
        "plugins that decide what events mean.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP server", description="Run the Herald server.")
    serve.add_argument("--host", help=_env_help("host") + " (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help=_env_help("port") + " (default 8000)")
    serve.add_argument("--data-dir", dest="data_dir", help=_env_help("data_dir") + " (default ./herald-data)")
    serve.add_argument("--plugins", help=_env_help("plugins"))
    serve.add_argument("--notify-url", dest="notify_url", help=_env_help("notify_url"))
    serve.add_argument("--max-skew", dest="max_skew", type=float, help=_env_help("max_skew") + " (default 300)")
    serve.add_argument("--log-level", dest="log_level", help=_env_help("log_level") + " (default INFO)")
    serve.add_argument("--durability", choices=["fsync", "batch", "memory"], help=_env_help("durability") + " (default batch)")

    journal = commands.add_parser("journal", help="inspect the journal")
    journal_commands = journal.add_subparsers(dest="journal_command", metavar="COMMAND", required=True)
    stats = journal_commands.add_parser("stats", help="events, snapshots and outbox of a data directory")
    stats.add_argument("--data-dir", dest="data_dir", help=_env_help("data_dir"))

    snapshot = commands.add_parser("snapshot", help="make a running server write a snapshot now")
    snapshot.add_argument("--url", help="the server (default http://HERALD_HOST:HERALD_PORT)")

    plugins = commands.add_parser("plugins", help="list installed plugins and their event types")
    plugins.add_argument("--plugins", help="only these (comma-separated)")
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)],
    )
    # One line per delivery is noise; failures are logged by the outbox.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    import trio

    import server

    config = Config.from_env(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        notify_url=args.notify_url,
        max_skew=args.max_skew,
        log_level=args.log_level.upper() if args.log_level else None,
        durability=args.durability,
    )
    if args.plugins is not None:
        config = attrs.evolve(config, plugins=parse_plugin_list(args.plugins))
    _setup_logging(config.log_level)
    try:
        trio.run(server.serve, config)
    except KeyboardInterrupt:
        pass
    return 0


def _list_plugins(args: argparse.Namespace) -> int:
    config = Config.from_env()
    if args.plugins is not None:
        config = attrs.evolve(config, plugins=parse_plugin_list(args.plugins))
    installed = available_plugins()
    host = PluginHost.from_config(attrs.evolve(config, plugins=list(installed)))
    enabled = set(installed if config.plugins is None else config.plugins)
    table = Table(title="Herald plugins")
    table.add_column("plugin")
    table.add_column("module")
    table.add_column("enabled")
    table.add_column("event types")
    for name in host.names:
        types = [t.name for t in host.event_types(name)]
        table.add_row(name, installed[name], "yes" if name in enabled else "no", ", ".join(types) or "-")
    Console().print(table)
    return 0


def _journal_stats(args: argparse.Namespace) -> int:
    import json

    from .journal import DB_NAME, Journal

    config = Config.from_env(data_dir=args.data_dir)
    journal = Journal(config.data_dir)
    if not (journal.dir / DB_NAME).exists():
        print(f"herald: no journal in {journal.dir}", file=sys.stderr)
        return 2
    journal.open_readonly()
    try:
        print(json.dumps(journal.stats(), indent=2))
    finally:
        journal.close()
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    import httpx

    config = Config.from_env()
    url = (args.url or config.self_url).rstrip("/") + "/v1/admin/snapshot"
    headers = {"Authorization": f"Bearer {config.admin_token}"} if config.admin_token else {}
    try:
        response = httpx.post(url, headers=headers, timeout=120)
    except httpx.HTTPError as exc:
        print(f"herald: cannot reach {url}: {exc}", file=sys.stderr)
        return 2
    print(response.text)
    return 0 if response.is_success else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(f"herald {version('herald')}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "plugins":
            return _list_plugins(args)
        if args.command == "journal":
            return _journal_stats(args)
        if args.command == "snapshot":
            return _snapshot(args)
    except (ConfigError, PluginError) as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
