"""The Typer apps: `store-migrate` (run, verify, rollback, check, prune, compare, schema-diff,
wrappers) and the three drop-in entry points.

This layer parses options, configures logging, calls one command (store_migrate.commands), prints
the drop-in stdout lines and turns errors into exit codes: 0 success, the error's exit_code
otherwise (1 failed or refused, 2 a wrong command line, 128 + N a signal). Two things happen here
before any import, because they must: the cyclic garbage collector is turned off for the whole
short-lived process (below: why), and a first signal handler stops the process cleanly until a
command takes the signals over. Heavy modules are imported inside the commands, so `--help`
stays fast.
"""

from __future__ import annotations

import gc

# Off for the whole short-lived process, before the first import: a store parses into millions
# of objects without reference cycles that the collector would only rescan (run over 270 MB of
# stores: 9.4 s with it, 6.1 s without), and even importing typer triggers collections.
gc.disable()

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402


def _stop(signum: int, _: object) -> None:
    """Until a command that changes stores takes over the signals (interrupts.py), a signal stops
    the process at once with the usual `error:` line: nothing has been changed yet (imports,
    option parsing), or the command only reads (verify, check, a dry run). Once a command has
    completed its changes, only printing is left, and the signal is ignored."""
    interrupts = sys.modules.get("store_migrate.fs.interrupts")
    if interrupts is not None and interrupts.completed():
        return
    message = f"interrupted by {signal.Signals(signum).name}"
    os.write(2, f"error: {message}\n".encode())
    try:
        if (logs := sys.modules.get("store_migrate.logs")) is not None:
            logs.failed(message, None, 128 + signum)
    finally:
        os._exit(128 + signum)


for _signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_signum, _stop)

import contextlib  # noqa: E402
import json  # noqa: E402
from collections.abc import Callable  # noqa: E402
from enum import StrEnum  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any, NoReturn  # noqa: E402

import typer  # noqa: E402
from typer.core import TyperCommand, TyperGroup  # noqa: E402

from store_migrate import __version__  # noqa: E402

EXIT_FAILED, EXIT_USAGE = 1, 2  # and 0 for success, 128 + N for a signal (errors.py)


class LogFormat(StrEnum):
    auto = "auto"
    json = "json"
    console = "console"


class StoreKindName(StrEnum):
    auth = "auth"
    codex_threads = "codex_threads"
    domain = "domain"


def _at_least(lowest: float) -> Callable[[Any], Any]:
    """A check for a number option (instead of Typer's `min=`, which adds `[x>=0]` to the help)."""

    def check(value: Any) -> Any:
        if value is not None and value < lowest:
            raise typer.BadParameter(f"must be {lowest:g} or more, not {value:g}")
        return value

    return check


LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format", envvar="STORE_MIGRATE_LOG_FORMAT", metavar="FORMAT", show_envvar=False, show_default=False,
        help="Logs on stderr as json (one JSON object per line), console (readable lines) or auto (JSON "
        "unless stderr is a terminal). Default auto, or STORE_MIGRATE_LOG_FORMAT.",
    ),
]
LogFileOption = Annotated[
    Path | None,
    typer.Option(
        "--log-file", envvar="STORE_MIGRATE_LOG_FILE", metavar="FILE", show_envvar=False, show_default=False,
        help="Write the logs to FILE instead, as JSON lines (appended; a new file is created 0600; never "
        "through a link); stderr then keeps only the error lines and progress. Or STORE_MIGRATE_LOG_FILE.",
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", envvar="STORE_MIGRATE_QUIET", show_envvar=False,
        help="Log only warnings and errors; what is printed on stdout stays the same. STORE_MIGRATE_QUIET=1 "
        "turns it on.",
    ),
]
LockTimeoutOption = Annotated[
    float,
    typer.Option(
        "--lock-timeout", envvar="STORE_MIGRATE_LOCK_TIMEOUT", metavar="SECONDS", callback=_at_least(0),
        show_envvar=False, show_default=False,
        help="How long to wait for another run, rollback or prune on the same stores to finish; then give "
        "up (exit 1, naming the holder). Default 30, or STORE_MIGRATE_LOCK_TIMEOUT.",
    ),
]
ManifestArgument = Annotated[
    Path,
    typer.Argument(metavar="MANIFEST", show_default=False,
                   help="The manifest a backfill run wrote: WORK_DIR/manifests/TIMESTAMP.json."),
]
ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report", metavar="FILE.md", show_default=False,
        help="Also write the evidence as a Markdown document for the change record (0600; never through a "
        "link, never into manifests/, which holds manifests only).",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"store-migrate {__version__}")
        raise typer.Exit()


VersionOption = Annotated[
    bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
]


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters, broken between words only: never inside a word, a
    hyphenated name (`--allow-missing`, `<store>-<TIMESTAMP>-<sha12>.pre-rollback.json`) or a
    path, which then runs past the width instead."""
    import textwrap

    return textwrap.wrap(text, max(width, 20), break_long_words=False, break_on_hyphens=False) or [""]


def _paragraphs(text: str) -> list[str]:
    """A docstring's paragraphs (separated by empty lines), each as one line of words."""
    import inspect

    return [" ".join(block.split()) for block in inspect.cleandoc(text).split("\n\n") if block.strip()]


class _Prose:
    """Help that reads as prose at any width, whatever Typer and Click would do: each paragraph
    rewrapped between words (no Rich panels, no broken hyphenated names), arguments listed by
    their names in capitals, options by their metavars (no `<bool>` or `<path>`), and defaults
    and variables named in the option's own sentence (no `[env var: ...]` tails)."""

    def format_help_text(self, ctx: Any, formatter: Any) -> None:
        help_text = getattr(self, "help", None)
        if help_text:
            for paragraph in _paragraphs(help_text):
                formatter.write_paragraph()
                for line in _wrap(paragraph, formatter.width - formatter.current_indent - 2):
                    formatter.write(f"{'':>{formatter.current_indent + 2}}{line}\n")

    def format_options(self, ctx: Any, formatter: Any) -> None:
        params = self.get_params(ctx)  # type: ignore[attr-defined]
        arguments = [(_argument_name(p, usage=False), getattr(p, "help", None) or "")
                     for p in params if p.param_type_name == "argument"]
        records = [(p, p.get_help_record(ctx)) for p in params if p.param_type_name == "option"]
        options = [(record[0], p.help or "") for p, record in records if record is not None]  # no extras
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    _write_rows(formatter, rows)


def _write_rows(formatter: Any, rows: list[tuple[str, str]]) -> None:
    """A definition list as Click lays it out (names up to 30 wide, then the text), wrapped by `_wrap`."""
    first = min(max(len(name) for name, _ in rows), 30) + 2
    indent = " " * formatter.current_indent
    for name, text in rows:
        lines = _wrap(text, formatter.width - formatter.current_indent - first)
        if len(name) + 2 <= first:
            formatter.write(f"{indent}{name:<{first}}{lines[0]}\n")
            lines = lines[1:]
        else:
            formatter.write(f"{indent}{name}\n")
        for line in lines:
            formatter.write(f"{indent}{'':<{first}}{line}\n")


class _Command(_Prose, TyperCommand):
    """A command whose usage line names its arguments in capitals: `MANIFEST`, `FILES...`,
    `[OLD]`, never `{manifest}`."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_argument_name(p, usage=True) for p in self.get_params(ctx)
                         if p.param_type_name == "argument"]


class _Group(_Prose, TyperGroup):
    """`store-migrate` itself: its help and options read like its commands'."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        super().format_options(ctx, formatter)
        self.format_commands(ctx, formatter)


def _argument_name(param: Any, *, usage: bool) -> str:
    name = (param.metavar or str(param.name).upper()) + ("..." if param.nargs != 1 else "")
    return f"[{name}]" if usage and not param.required else name


def _tell(message: str, hint: str | None = None, code: int = EXIT_FAILED) -> None:
    """Print `error: <message>` and `  next: <hint>` on stderr, and log them as an `error` event."""
    from store_migrate.logs import failed

    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"  next: {hint}", err=True)
    failed(message, hint, code)


def _fail(message: str, hint: str | None = None, code: int = EXIT_FAILED) -> NoReturn:
    _tell(message, hint, code)
    raise typer.Exit(code)


def _described(exc: BaseException) -> tuple[str, str | None, int]:
    """The message, hint and exit code of a library error an operator reads (a permission error
    names the path, the user and what to do next)."""
    from store_migrate.errors import StoreMigrateError, describe_os_error

    if isinstance(exc, StoreMigrateError):
        return exc.message, exc.hint, exc.exit_code
    if isinstance(exc, PermissionError):
        from store_migrate.core.access import explain

        denied = explain(exc)
        return denied.message, denied.hint, EXIT_FAILED
    assert isinstance(exc, OSError)
    return describe_os_error(exc), None, EXIT_FAILED


def _call(log_format: LogFormat, quiet: bool, log_file: Path | None, work: Callable[[], None]) -> None:
    """Configure logging, run `work`, and turn a library error into its `error:`/`  next:` lines
    and its exit code (StoreMigrateError.exit_code: 1, or 2 for a usage error, 128 + N for a
    signal), without a traceback."""
    from store_migrate.errors import StoreMigrateError
    from store_migrate.logs import configure

    try:
        configure(log_format.value, quiet=quiet, log_file=None if log_file is None else str(log_file))
        work()
        if (done := sys.modules.get("store_migrate.fs.interrupts")) is not None and done.completed():
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # through the interpreter's exit too
                signal.signal(signum, signal.SIG_IGN)
    except (StoreMigrateError, OSError) as exc:
        _fail(*_described(exc))


def _emit(lines: list[str], after: str) -> bool:
    """Print the drop-in stdout lines. When stdout is gone (a closed pipe: `| head -n 1`, or
    closed outright) the work they report is still done: log that they could not be printed
    (`stdout.closed`, with the lines) and return False instead of failing."""
    import errno
    import os

    import structlog

    error = "stdout is closed"
    try:
        if sys.stdout is not None:  # None: started with no stdout at all
            for line in lines:
                typer.echo(line)
            return True
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.EBADF):
            raise
        error = exc.strerror or str(exc)
        with contextlib.suppress(OSError, ValueError):  # nothing more reaches it, not even the flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    structlog.get_logger("store_migrate").warning("stdout.closed", after=after, unprinted=lines, error=error)
    return False


def _progress(quiet: bool) -> Any:
    """Progress bars for a person at a terminal; nothing at all for a pipeline."""
    from store_migrate.cli import progress

    return progress.bars() if sys.stderr.isatty() and not quiet else progress.SILENT


def _write_report(path: Path, text: str) -> None:
    """Write a report atomically, 0600; never into a manifests/ directory, never through a link."""
    from store_migrate.errors import ConfigError
    from store_migrate.fs import durable, ondisk

    target = os.path.abspath(path)
    ondisk.require_printable(target, "report path")
    if os.path.basename(os.path.dirname(os.path.realpath(target))) == "manifests":
        raise ConfigError(f"refusing to write report {path} into a manifests/ directory",
                          hint="pipelines pick the newest file there as the manifest; write the report elsewhere")
    if os.path.islink(target):
        raise ConfigError(f"refusing to write report {path}: it is a symbolic link",
                          hint="give the path of a new or regular file; a report never writes through a link")
    durable.ensure_dir(os.path.dirname(target))
    durable.atomic_replace(target, text.encode())
    typer.echo(f"report: {path}", err=True)


def _warn_leftovers(temps: list[str], done: str = "the next run removes them") -> None:
    """One stderr line naming the temporary files a stopped run left (paths only)."""
    if temps:
        typer.echo(f"warning: {len(temps)} temporary file(s) left by a stopped run: {', '.join(temps)}; {done}",
                   err=True)


# ----------------------------------------------------------------------------------- run


def _counter_before(value: Any) -> str:
    """A counter's value before the run, as an integer only: anything else is a store value
    (an object there could hold a token), so only its JSON type is told."""
    from store_migrate.readable.structs import U64_MAX
    from store_migrate.readable.validate import json_type

    if value is None:
        return "missing"
    if type(value) is int and 0 <= value <= U64_MAX:
        return str(value)
    if type(value) is int:
        return "(an integer outside the u64 range)"
    return f"({json_type(value)})"


def _print_dry_run(prepared: list[Any], settings: Any) -> None:
    sources = {s.kind: settings.origin(s.source) for s in settings.stores}
    for p in prepared:
        before = "missing, would be created" if p.before is None else f"exists, {p.before.size} bytes"
        typer.echo(f"dry run: [{p.store}] {p.path} ({before})")
        typer.echo(f"  path from: {sources[p.store]}")
        if p.reused:
            typer.echo(f"  already migrated (bytes recorded by {p.reused}); nothing to parse")
        if p.added_keys:
            typer.echo(f"  would add keys: {', '.join(p.added_keys)}")
        if p.replaced_keys:
            typer.echo(f"  would replace null or the other empty container: {', '.join(p.replaced_keys)}")
        for name, (old, new) in p.counters.items():
            if old == new and type(old) is int:
                typer.echo(f"  counter {name}: {new} (unchanged)")
            else:
                typer.echo(f"  counter {name}: {_counter_before(old)} -> {new}")
        if not p.report.readable:
            typer.echo(f"  warning: the service could not read {p.report.unreadable} record(s)")
            for item in p.report.problems:
                typer.echo(f"    {item.pointer}: {item.message}")
        old_size = 0 if p.before is None else p.before.size
        change = f"yes ({old_size} -> {p.after_size} bytes)" if p.changed else "no"
        typer.echo(f"  bytes would change: {change}")
    typer.echo("dry run: nothing was written")


def run_command(
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Treat a store file of zero bytes as an empty store instead of "
                           "refusing it.")
    ] = False,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", envvar="ALLOW_MISSING", show_envvar=False,
                           help="This is a new environment: create the stores even when none of the three exists "
                           "(without it the run refuses, naming the paths and where they came from). "
                           "ALLOW_MISSING=1 turns it on.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse (nothing written) when the service could not read a record "
                           "of a migrated store, instead of warning.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", envvar="DRY_RUN", show_envvar=False,
                           help="Do everything but write: report per store what would change, and exit as a real "
                           "run would. DRY_RUN=1 turns it on.")
    ] = False,
    lock_timeout: LockTimeoutOption = 30.0,
    log_format: LogFormatOption = LogFormat.auto,
    log_file: LogFileOption = None,
    quiet: QuietOption = False,
    version: VersionOption = False,
) -> None:
    """Backfill the auth, codex-thread and domain stores to the current shape.

    Each store's path comes from AUTH_STORE_PATH, CODEX_THREAD_STORE_PATH or
    DOMAIN_STORE_PATH; else from the service's OA_AUTH_STORE_PATH, OA_CODEX_THREAD_STORE_PATH
    or OA_DOMAIN_STORE_PATH; else it is the store's file in
    ROOT_DIR/apps/openagents.com/storage/app/. Backups and the manifest go under WORK_DIR
    (default: rust-store-migrate/ in that same directory).

    ROOT_DIR is the checkout that holds the wrapper, when the wrapper sits in the checkout's
    apps/openagents.com/service/scripts/ directory; otherwise $ROOT_DIR, else the git top level
    of the working directory, else the working directory. The dry run shows where each path
    came from.

    A store that does not exist is created, as an empty store, and is a warning; when none of
    the three exists, the run refuses unless --allow-missing.

    Nothing is written, and the exit code is 1, when this user could not read or replace a
    store or write the work directory, or when a store cannot be migrated without losing data.
    Records the service could not read after the migration are logged as warnings and counted
    in the manifest (validation_problems). Safe to rerun. A run that migrated the stores exits
    0 even when stdout is closed (logged as stdout.closed).
    """

    def work() -> None:
        from store_migrate.commands import recovery as cmd_recovery
        from store_migrate.commands import run as cmd_run
        from store_migrate.core import config

        settings = config.resolve()
        if dry_run:
            prepared = cmd_run.dry_run(settings, allow_empty=allow_empty, allow_missing=allow_missing,
                                        strict=strict, progress=_progress(quiet))
            _print_dry_run(prepared, settings)
            _warn_leftovers(cmd_recovery.leftover_temps([s.path for s in settings.stores], settings.work_dir))
            return
        result = cmd_run.run(settings, allow_empty=allow_empty, allow_missing=allow_missing, strict=strict,
                              lock_timeout=lock_timeout, progress=_progress(quiet))
        _emit([
            f"rust-store-migrate: wrote manifest to {result.manifest_path}",
            f"[rust-store-backfill] manifest: {result.manifest_path}",
            f"[rust-store-backfill] backups: {result.backup_dir}",
        ], after=f"run completed, manifest {result.manifest_path}")

    _call(log_format, quiet, log_file, work)


# -------------------------------------------------------------------------------- verify


def verify_command(
    manifest: ManifestArgument,
    strict: Annotated[
        bool, typer.Option("--strict", envvar="VERIFY_STRICT", show_envvar=False,
                           help="Parse and validate every store in full, even where the run recorded its verdict "
                           "for these exact bytes. VERIFY_STRICT=1 turns it on.")
    ] = False,
    allow_unreadable: Annotated[
        bool, typer.Option("--allow-unreadable", envvar="VERIFY_ALLOW_UNREADABLE", show_envvar=False,
                           help="Records the service cannot read are a warning, not a failure (for an environment "
                           "that knowingly carries them). Without it they fail the store, and the first ones are "
                           "listed. VERIFY_ALLOW_UNREADABLE=1 turns it on.")
    ] = False,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", metavar="OTHER_MANIFEST", show_default=False,
                                  help="Compare the counts with another manifest (staging against production, or "
                                  "the previous run) and fail when one dropped by more than --max-drop.")
    ] = None,
    max_drop: Annotated[
        int, typer.Option("--max-drop", metavar="N", callback=_at_least(0), show_default=False,
                          help="How much a count may drop against --baseline. Default 0.")
    ] = 0,
    additive: Annotated[
        bool, typer.Option("--additive", envvar="VERIFY_ADDITIVE", show_envvar=False,
                           help="Also prove that the migration lost and changed nothing: every member and value of "
                           "each store's backup is in the live store and equal (integers exactly, floats as "
                           "doubles; 1 and 1.0 differ), apart from the documented changes (top-level keys filled "
                           "in, counters raised by the counter rule). Prints `additive: [STORE] ...`; differences "
                           "go to stderr by JSON path, never by value, and fail (exit 1). Works on manifests of "
                           "the earlier implementation. VERIFY_ADDITIVE=1 turns it on.")
    ] = False,
    report: ReportOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the evidence as JSON on stdout instead of the drop-in lines.")
    ] = False,
    log_format: LogFormatOption = LogFormat.auto,
    log_file: LogFileOption = None,
    quiet: QuietOption = False,
    version: VersionOption = False,
) -> None:
    """Verify the stores of a manifest: checksums, shape, counts, backups, service readability.

    Prints `ok: [STORE] PATH` for each good store, then `rust store backfill verification
    passed: MANIFEST`; every problem is an `error: [STORE] ...` line on stderr. Records the
    service cannot read fail the store (the first ones are listed), judged from the verdict the
    run recorded for these exact bytes or from a full validation; with --allow-unreadable they
    are `warning: [STORE] ...` lines. A file this user may not read fails too, with what to do.

    With --baseline, the comparison of `store-migrate compare` (this manifest as B) must pass
    too; with --additive, every store must still hold all its backup held.

    Exit 0 when every store passes, 1 otherwise, 2 on a usage error.
    """

    def work() -> None:
        from store_migrate.cli import report as evidence
        from store_migrate.commands import recovery as cmd_recovery
        from store_migrate.commands import verify as cmd_verify

        result = cmd_verify.verify(str(manifest), strict=strict, allow_unreadable=allow_unreadable,
                                 baseline=None if baseline is None else str(baseline), max_drop=max_drop,
                                 additive=additive, progress=_progress(quiet))
        _warn_leftovers(cmd_recovery.manifest_leftovers(str(manifest), result.manifest))
        document = evidence.verify_evidence(result, str(manifest))
        if report is not None:
            _write_report(report, evidence.markdown(document))
        if as_json:
            _emit([json.dumps(document, indent=2, ensure_ascii=False)], after=f"verify of {manifest}")
        else:
            _print_verify(result, str(manifest))
        if not result.ok:
            _fail(f"rust store backfill verification failed: {manifest}", _verify_hint(result, str(manifest)))
        if not as_json:
            _emit([f"rust store backfill verification passed: {manifest}"], after=f"verify of {manifest}")

    _call(log_format, quiet, log_file, work)


def _verify_hint(result: Any, manifest: str) -> str:
    """What to do after a failed verify: a permission problem is no reason to roll back."""
    if result.only_denied:
        return ("this user may not read the files named above (a permission, not the migration): rerun verify "
                "as root or as the stores' owner; do not roll back for this")
    hint = "do not move traffic; roll back with this manifest if the service is affected"
    if any(check.unreadable and not check.unreadable_allowed for check in result.stores):
        hint += ("; records the service cannot read fail verify unless the environment knowingly carries them "
                 "(--allow-unreadable, VERIFY_ALLOW_UNREADABLE=1)")
    if any(check.denied for check in result.stores):
        hint += "; the permission problems named above are not a reason to roll back: fix them and rerun verify"
    return hint


def _print_verify(result: Any, manifest: str) -> None:
    for check in result.stores:
        if not check.failed():
            _emit([f"ok: [{check.store}] {check.path}"], after=f"verify of {manifest}")
        for problem in check.problems:
            typer.echo(f"error: [{check.store}] {problem}", err=True)
        unread = check.report
        if unread is not None and not unread.readable:
            word = "warning" if check.unreadable_allowed else "error"
            typer.echo(f"{word}: [{check.store}] the service cannot read {unread.unreadable} record(s); first:",
                       err=True)
            for item in unread.problems:
                typer.echo(f"  {item.pointer}: {item.message}", err=True)
            if not unread.problems:
                typer.echo("  (as recorded by the run; `verify --strict` or `check` lists them)", err=True)
    for check in result.stores:
        _print_additive(check, manifest)
    for problem in result.problems:
        typer.echo(f"error: {problem}", err=True)


def _print_additive(check: Any, manifest: str) -> None:
    proof = check.additive
    if proof is None:
        return
    if proof.ok:
        _emit([f"additive: [{check.store}] nothing lost or changed ({proof.method})"], after=f"verify of {manifest}")
    elif proof.reason is not None:
        typer.echo(f"error: [{check.store}] not additive: cannot be proven: {proof.reason}", err=True)
    else:
        typer.echo(f"error: [{check.store}] not additive: {proof.count} difference(s) from the backup; first:",
                   err=True)
        for item in proof.differences:
            typer.echo(f"  {item.pointer}: {item.message}", err=True)


# ------------------------------------------------------------------------------ rollback


def rollback_command(
    manifest: ManifestArgument,
    force: Annotated[
        bool, typer.Option("--force", help="Roll back even stores written after the migration (their sha256 "
                           "matches neither hash in the manifest). Each such file is first kept beside the run's "
                           "backups, as <store>-<TIMESTAMP>-<sha12>.pre-rollback.json.")
    ] = False,
    report: ReportOption = None,
    lock_timeout: LockTimeoutOption = 30.0,
    log_format: LogFormatOption = LogFormat.auto,
    log_file: LogFileOption = None,
    quiet: QuietOption = False,
    version: VersionOption = False,
) -> None:
    """Return every store of a manifest to its state before that run.

    Restores the backups (atomically) of the stores that existed and removes the stores the run
    created. Checks every backup and live file before changing anything: a refused rollback
    changes nothing, and with --report its report says that it was refused and why. Prints
    `restored: [STORE] PATH`, `removed: [STORE] PATH` or `skipped: [STORE] PATH (WHY)` for each
    store, then `rollback completed using manifest: MANIFEST`. Safe to rerun.

    Exit 0 when every store is back, 1 when the rollback was refused or failed, 2 on a usage
    error.
    """

    def work() -> None:
        from store_migrate.cli import report as evidence
        from store_migrate.commands import recovery as cmd_recovery
        from store_migrate.commands import rollback as cmd_rollback
        from store_migrate.errors import RollbackRefused, StoreMigrateError

        try:
            leftovers = cmd_recovery.manifest_leftovers(str(manifest), changes=True)
            result = cmd_rollback.rollback(str(manifest), force=force, lock_timeout=lock_timeout,
                                       progress=_progress(quiet))
        except (StoreMigrateError, OSError) as exc:
            if report is not None:
                message, hint, _ = _described(exc)
                document = evidence.rollback_failure_evidence(str(manifest), message, hint,
                                                              refused=isinstance(exc, RollbackRefused))
                try:
                    _write_report(report, evidence.markdown(document))
                except (StoreMigrateError, OSError) as unwritten:  # told, then the rollback's own error
                    _tell(*_described(unwritten))
            raise
        removed = [temp for temp in leftovers if not os.path.lexists(temp)]
        if removed:
            typer.echo(f"warning: removed {len(removed)} temporary file(s) left by a stopped run: "
                       f"{', '.join(removed)}", err=True)
        _warn_leftovers([temp for temp in leftovers if temp not in removed])
        for action in result.actions:
            why = f" ({action.reason})" if action.action == "skipped" else ""
            typer.echo(f"{action.action}: [{action.store}] {action.path}{why}")
        typer.echo(f"rollback completed using manifest: {manifest}")
        if report is not None:
            _write_report(report, evidence.markdown(evidence.rollback_evidence(result, str(manifest))))

    _call(log_format, quiet, log_file, work)


# --------------------------------------------------------------------------- check, prune


def check_command(
    files: Annotated[list[Path], typer.Argument(metavar="FILES", show_default=False,
                                                help="The store files to check, all of one kind.")],
    kind: Annotated[StoreKindName, typer.Option("--kind", metavar="KIND", show_default=False,
                                                help="Which store the files are (required): auth, codex_threads or "
                                                "domain.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array, one object per file: path, kind, readable, "
                           "unreadable (count) and problems ([{pointer, message}]).")
    ] = False,
    max_problems: Annotated[int, typer.Option("--max-problems", metavar="N", callback=_at_least(1),
                                              show_default=False,
                                              help="How many problems to show per file. Default 20.")] = 20,
    log_format: LogFormatOption = LogFormat.auto,
    log_file: LogFileOption = None,
    quiet: QuietOption = False,
    version: VersionOption = False,
) -> None:
    """Can the service read these store files? One verdict per file, with the first problems.

    Prints `readable: FILE (KIND)` or `not readable: FILE (KIND): ...` with the reason: not
    found, empty, does not parse, or how many records the service cannot read, each problem on
    a line of its own. A problem names a JSON path and the reason, never a value or a map key:
    a map's member is named by its place among the map's sorted keys (README: "Can the service
    read it?"). Missing top-level keys are fine (the service fills them in). Reads only.

    Exit 0 when every file is readable, 1 when any is not, 2 on a usage error.
    """

    def work() -> None:
        from store_migrate.commands import check as cmd_check
        from store_migrate.commands import recovery as cmd_recovery

        results = cmd_check.check(kind.value, [str(f) for f in files], limit=max_problems)
        _warn_leftovers(cmd_recovery.leftover_temps([r.path for r in results]))
        if as_json:
            typer.echo(json.dumps([
                {"path": r.path, "kind": r.kind, "readable": r.report.readable,
                 "unreadable": r.report.unreadable, "problems": [p.to_json() for p in r.report.problems]}
                for r in results
            ], indent=2, ensure_ascii=False))
        else:
            for r in results:
                if r.report.readable:
                    typer.echo(f"readable: {r.path} ({r.kind})")
                elif r.failure is not None:
                    typer.echo(f"not readable: {r.path} ({r.kind}): {r.failure}")
                else:
                    typer.echo(f"not readable: {r.path} ({r.kind}): {r.report.unreadable} record(s) the service "
                               "cannot read")
                    for item in r.report.problems:
                        typer.echo(f"  {item.pointer}: {item.message}")
        if not all(r.report.readable for r in results):
            raise typer.Exit(EXIT_FAILED)

    _call(log_format, quiet, log_file, work)


def prune_command(
    keep: Annotated[int, typer.Option("--keep", metavar="N", callback=_at_least(1), show_default=False,
                                      help="How many of the newest manifests to keep (required).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    lock_timeout: LockTimeoutOption = 30.0,
    log_format: LogFormatOption = LogFormat.auto,
    log_file: LogFileOption = None,
    quiet: QuietOption = False,
    version: VersionOption = False,
) -> None:
    """Remove old manifests and their backup directories from WORK_DIR.

    Never the newest --keep, never a pending one, never one with a store it changed that still
    hashes to its after_sha256 (its rollback may still be needed). Removes only what runs make
    (manifests/TIMESTAMP.json, and backups/TIMESTAMP/ holding only backups), never follows a
    link, and holds the stores' lock like a run. Prints every manifest and directory it removes,
    and why it kept the others. WORK_DIR and the stores are found as `run --help` says.
    """

    def work() -> None:
        from store_migrate.commands import prune as cmd_prune
        from store_migrate.core import config

        result = cmd_prune.prune(config.resolve(), keep=keep, dry_run=dry_run, lock_timeout=lock_timeout)
        word = "would remove" if dry_run else "removed"
        for path in result.removed:
            typer.echo(f"{word}: {path}")
        for path, why in result.kept:
            typer.echo(f"kept: {path} ({why})")

    _call(log_format, quiet, log_file, work)


# ------------------------------------------------------------------- compare, schema-diff


JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")]


def compare_command(
    a: Annotated[Path, typer.Argument(metavar="A", show_default=False,
                                      help="The reference manifest: a staging run, or the first run.")],
    b: Annotated[Path, typer.Argument(metavar="B", show_default=False,
                                      help="The manifest judged against A: production, or a rerun.")],
    max_drop: Annotated[int, typer.Option("--max-drop", metavar="N", callback=_at_least(0), show_default=False,
                                          help="How far a count of B may be below A's. Default 0.")] = 0,
    as_json: JsonOption = False,
    log_format: LogFormatOption = LogFormat.auto,
    log_file: LogFileOption = None,
    quiet: QuietOption = False,
    version: VersionOption = False,
) -> None:
    """Compare two manifests side by side; fail when B lost data against A.

    For each store in either manifest: existed, changed, sha256 before and after (first 12
    hex digits; full in --json), every count of both with B - A, the records the service could
    not read, and the tool and transform versions and generated_at of each manifest.

    Verdict: exit 1 (each reason an `error:` line on stderr) when a count of B is below A's by
    more than --max-drop, when a store or count A records is missing from B, when B records
    more records the service cannot read than A, or when either manifest is not complete (its
    run did not finish); exit 0 otherwise; 2 on a usage error. Reads the two manifests only
    (neither needs its backups). `verify --baseline` makes the same comparison.
    """

    def work() -> None:
        from store_migrate.commands import compare

        result = compare.compare_files(str(a), str(b), max_drop=max_drop)
        done = f"compare of {b} against {a}"
        if as_json:
            document = {"kind": "compare", **compare.to_json(result)}
            _emit([json.dumps(document, indent=2, ensure_ascii=False)], after=done)
        else:
            _emit(compare.text(result), after=done)
        for finding in result.findings:
            where = f"[{finding.store}] " if finding.store else ""
            typer.echo(f"error: {where}{finding.message}", err=True)
        if not result.ok:
            _fail(f"compare failed: {len(result.findings)} finding(s) for {b} against {a}",
                  "do not retry production until each one is explained")
        if not as_json:
            _emit([f"compare passed: {b} holds every count of {a} (--max-drop {max_drop})"], after=done)

    _call(log_format, quiet, log_file, work)


def schema_diff_command(
    old: Annotated[Path | None, typer.Argument(
        metavar="OLD", help="The schemas the old release reads: one schema file, or a directory of "
        "*.schema.json files (paired by name).", show_default=False)] = None,
    new: Annotated[Path | None, typer.Argument(
        metavar="NEW", help="The schemas the new release reads: a file or a directory, like OLD.",
        show_default=False)] = None,
    against: Annotated[str | None, typer.Option(
        "--against", metavar="GIT_REV", help="Instead of OLD and NEW: compare schemas/ of the git work tree "
        "here (NEW) with schemas/ at GIT_REV (OLD), read with `git show`.")] = None,
    as_json: JsonOption = False,
    log_format: LogFormatOption = LogFormat.auto,
    log_file: LogFileOption = None,
    quiet: QuietOption = False,
    version: VersionOption = False,
) -> None:
    """Is a schema change safe while the old and the new release both read the stores?

    Every change between two versions of the schemas is listed with its verdict, a JSON pointer
    into the schema file and a sentence:

    safe: a new optional field, a new top-level key (the backfill adds it), an optional field
    removed, documentation only (description, title, ...).

    unsafe for the old release (old readers fail on what the new one writes): a new enum value,
    a wider range, a field made nullable, a removed field that was required, a changed type.

    unsafe for the new release (new readers fail on existing data): a new required field the
    backfill does not add, a narrower range or pattern, a removed enum value, a stricter
    additionalProperties, a changed type.

    A change to a keyword it does not compare one by one (oneOf, if, ...) is unsafe for both.

    Exit 0 when every change is safe, 1 when any is not (or a schema cannot be read), 2 on a
    usage error.
    """

    def work() -> None:
        from store_migrate.commands import schema_diff as schemadiff

        if against is not None and (old is not None or new is not None):
            _fail("give either OLD and NEW or --against GIT_REV, not both", code=EXIT_USAGE)
        if against is None and (old is None or new is None):
            _fail("give OLD and NEW (two schema files or two directories), or --against GIT_REV", code=EXIT_USAGE)
        if against is not None:
            result = schemadiff.diff_against(against)
        else:
            assert old is not None and new is not None
            result = schemadiff.diff_paths(str(old), str(new))
        if as_json:
            _emit([json.dumps({"kind": "schema-diff", **result.to_json()}, indent=2, ensure_ascii=False)],
                  after="schema-diff")
        else:
            _emit([f"{c.verdict}: {c.file}{c.pointer}: {c.sentence}" for c in result.changes], after="schema-diff")
        unsafe = [c for c in result.changes if not c.safe]
        if unsafe:
            _fail(f"{len(unsafe)} of {len(result.changes)} schema change(s) are not safe while both releases run",
                  "keep the change for a later release, or make it additive (a new optional field, a new "
                  "top-level key)")
        if not as_json:
            _emit([f"schema-diff: safe: {len(result.changes)} change(s), each safe while both releases run"],
                  after="schema-diff")

    _call(log_format, quiet, log_file, work)


def wrappers_command(
    directory: Annotated[Path, typer.Argument(
        metavar="DIR", help="The directory to write the wrappers into, such as the service checkout's "
        "apps/openagents.com/service/scripts. It must exist.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace files of the same names; a link is replaced "
                                        "by the file, never written through.")] = False,
) -> None:
    """Write the three drop-in wrapper scripts into a directory, executable (0755).

    run-rust-ownership-backfill.sh, verify-rust-ownership-backfill.sh and
    rollback-rust-ownership-backfill.sh, as this installation carries them. Each finds the entry
    points on PATH (or in STORE_MIGRATE_BIN_DIR). A name already taken is refused and nothing is
    written, unless --force. Prints each file written.
    """

    def work() -> None:
        from store_migrate.commands import wrappers

        _emit([f"wrote: {path}" for path in wrappers.write(str(directory), force=force)], after="wrappers")

    _call(LogFormat.auto, False, None, work)


# ---------------------------------------------------------------------------------- apps


def _single(command: Callable[..., None], name: str) -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, name=name, rich_markup_mode=None)
    app.command(name=name, cls=_Command)(command)
    return app


app = typer.Typer(
    name="store-migrate",
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _main(version: VersionOption = False) -> None:
    """Backfill, verify and roll back the service's JSON store files.

    Each command's --help says what it reads, prints and refuses. Exit status: 0 success; 1
    the operation failed or was refused; 2 the command line was wrong.
    """


for _name, _command, _summary in (
    ("run", run_command, "Backfill the three stores to the current shape."),
    ("verify", verify_command, "Verify the stores of a manifest after a run."),
    ("rollback", rollback_command, "Return the stores of a manifest to their state before."),
    ("check", check_command, "Can the service read these store files?"),
    ("prune", prune_command, "Remove old manifests and their backups."),
    ("compare", compare_command, "Compare two manifests; fail when B lost data against A."),
    ("schema-diff", schema_diff_command, "Is a schema change safe while two releases run?"),
    ("wrappers", wrappers_command, "Write the three drop-in wrapper scripts into a directory."),
):
    app.command(_name, cls=_Command, short_help=_summary)(_command)

backfill_app = _single(run_command, "store-migrate-backfill")
verify_app = _single(verify_command, "store-migrate-verify")
rollback_app = _single(rollback_command, "store-migrate-rollback")


def main() -> None:
    app()


def backfill_main() -> None:
    backfill_app()


def verify_main() -> None:
    verify_app()


def rollback_main() -> None:
    rollback_app()


if __name__ == "__main__":
    main()
