"""The Typer apps: `store-migrate` (run, verify, rollback, check, prune) and the three drop-in
entry points.

This layer parses options, configures logging, calls one function of `commands`, prints the
drop-in stdout lines and turns errors into exit codes: 0 success, 1 the operation failed or was
refused, 2 the command line was wrong. Nothing else happens here. Heavy modules are imported
inside the commands, so `--help` stays fast.
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
    interrupts = sys.modules.get("store_migrate.interrupts")
    if interrupts is not None and interrupts.completed():
        return
    os.write(2, f"error: interrupted by {signal.Signals(signum).name}\n".encode())
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

from . import __version__  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class LogFormat(StrEnum):
    auto = "auto"
    json = "json"
    console = "console"


class StoreKindName(StrEnum):
    auth = "auth"
    codex_threads = "codex_threads"
    domain = "domain"


LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar="STORE_MIGRATE_LOG_FORMAT",
        help="Structured logs on stderr: json (one JSON object per line), console (readable), "
        "or auto (JSON unless stderr is a terminal).",
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", envvar="STORE_MIGRATE_QUIET",
        help="Only warnings and errors in the logs; the drop-in stdout lines are still printed.",
    ),
]
LockTimeoutOption = Annotated[
    float,
    typer.Option(
        "--lock-timeout", envvar="STORE_MIGRATE_LOCK_TIMEOUT", min=0,
        help="Seconds to wait for another run or rollback on the same stores to finish before "
        "giving up (exit 1, naming the holder's pid).",
    ),
]
ManifestArgument = Annotated[
    Path,
    typer.Argument(help="Manifest written by a backfill run: $WORK_DIR/manifests/<TIMESTAMP>.json.",
                   show_default=False),
]
ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report", metavar="FILE.md",
        help="Also write the evidence as a Markdown document for the change record (not inside "
        "manifests/, which holds manifests only).",
    ),
]


def _fail(message: str, hint: str | None = None, code: int = EXIT_FAILED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"  next: {hint}", err=True)
    raise typer.Exit(code)


def _call(log_format: LogFormat, quiet: bool, work: Callable[[], None]) -> None:
    """Configure logging, run `work`, and map library errors to exit code 1 without a traceback
    (a permission error names the path, the user and what to do next)."""
    from .errors import StoreMigrateError
    from .logs import configure

    configure(log_format.value, quiet=quiet)
    try:
        work()
        if (done := sys.modules.get("store_migrate.interrupts")) is not None and done.completed():
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # through the interpreter's exit too
                signal.signal(signum, signal.SIG_IGN)
    except StoreMigrateError as exc:
        _fail(exc.message, exc.hint, exc.exit_code)
    except PermissionError as exc:
        from .access import explain

        denied = explain(exc)
        _fail(denied.message, denied.hint)
    except OSError as exc:
        from .errors import describe_os_error

        _fail(describe_os_error(exc))


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
    from . import progress

    return progress.bars() if sys.stderr.isatty() and not quiet else progress.SILENT


def _write_report(path: Path, text: str) -> None:
    """Write a report atomically, 0600; never into a manifests/ directory, never through a link."""
    from . import durable, ondisk

    target = os.path.abspath(path)
    ondisk.require_printable(target, "report path")
    if os.path.basename(os.path.dirname(os.path.realpath(target))) == "manifests":
        _fail(f"refusing to write report {path} into a manifests/ directory",
              "pipelines pick the newest file there as the manifest; write the report elsewhere")
    if os.path.islink(target):
        _fail(f"refusing to write report {path}: it is a symbolic link",
              "give the path of a new or regular file; a report never writes through a link")
    durable.ensure_dir(os.path.dirname(target))
    durable.atomic_replace(target, text.encode())
    typer.echo(f"report: {path}", err=True)


# ----------------------------------------------------------------------------------- run


def _counter_before(value: Any) -> str:
    """A counter's value before the run, as an integer only: anything else is a store value
    (an object there could hold a token), so only its JSON type is told."""
    from .structs import U64_MAX
    from .validate import json_type

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
        before = "missing (would be created)" if p.before is None else f"exists, {p.before.size} bytes"
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
        bool, typer.Option("--allow-missing", envvar="ALLOW_MISSING", help="This is a new environment: create "
                           "the stores even when none of the three exists (without it the run refuses, naming "
                           "the paths and where they came from). ALLOW_MISSING=1 turns it on.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse (nothing written) when the service could not read a record "
                           "of a migrated store, instead of warning.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", envvar="DRY_RUN", help="Do everything but write: report per store what "
                           "would change, and exit as a real run would. DRY_RUN=1 turns it on.")
    ] = False,
    lock_timeout: LockTimeoutOption = 30.0,
    log_format: LogFormatOption = LogFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Backfill the auth, codex-thread and domain stores to the current shape.

    Store paths come from AUTH_STORE_PATH, CODEX_THREAD_STORE_PATH and DOMAIN_STORE_PATH (else
    the service's OA_* variables, else defaults under $ROOT_DIR: the checkout holding the
    wrapper when it sits in apps/openagents.com/service/scripts/); backups and the manifest go
    under $WORK_DIR. Each missing store is a warning; when none exists the run refuses unless
    --allow-missing. Refused up front, with what to do, when this user could not read or replace
    a store or write the work directory. A store that cannot be migrated without losing data is
    refused: exit 1 and nothing is written. Records the service could not read after the
    migration are logged as warnings and counted in the manifest (validation_problems). Safe to
    rerun. A run that migrated the stores exits 0 even when stdout is closed (logged as
    stdout.closed).
    """

    def work() -> None:
        from . import commands, config

        settings = config.resolve()
        if dry_run:
            prepared = commands.dry_run(settings, allow_empty=allow_empty, allow_missing=allow_missing,
                                        strict=strict, progress=_progress(quiet))
            _print_dry_run(prepared, settings)
            return
        result = commands.run(settings, allow_empty=allow_empty, allow_missing=allow_missing, strict=strict,
                              lock_timeout=lock_timeout, progress=_progress(quiet))
        _emit([
            f"rust-store-migrate: wrote manifest to {result.manifest_path}",
            f"[rust-store-backfill] manifest: {result.manifest_path}",
            f"[rust-store-backfill] backups: {result.backup_dir}",
        ], after=f"run completed, manifest {result.manifest_path}")

    _call(log_format, quiet, work)


# -------------------------------------------------------------------------------- verify


def verify_command(
    manifest: ManifestArgument,
    strict: Annotated[
        bool, typer.Option("--strict", envvar="VERIFY_STRICT", help="Parse and validate every store in full, "
                           "even where the run recorded its verdict for these exact bytes. VERIFY_STRICT=1 turns "
                           "it on.")
    ] = False,
    allow_unreadable: Annotated[
        bool, typer.Option("--allow-unreadable", envvar="VERIFY_ALLOW_UNREADABLE", help="Records the service "
                           "cannot read are a warning, not a failure (for an environment that knowingly carries "
                           "them). Without it they fail the store, and the first ones are listed. "
                           "VERIFY_ALLOW_UNREADABLE=1 turns it on.")
    ] = False,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", metavar="OTHER_MANIFEST", help="Compare the counts with another "
                                  "manifest (staging against production, or the previous run) and fail when one "
                                  "dropped by more than --max-drop.")
    ] = None,
    max_drop: Annotated[
        int, typer.Option("--max-drop", min=0, help="How much a count may drop against --baseline.")
    ] = 0,
    additive: Annotated[
        bool, typer.Option("--additive", envvar="VERIFY_ADDITIVE", help="Also prove that the migration lost and "
                           "changed nothing: every member and value of each store's backup is in the live store "
                           "and equal (integers exactly, floats as doubles; 1 and 1.0 differ), apart from the "
                           "documented changes (top-level keys filled in, counters raised by the counter rule). "
                           "Prints `additive: [<store>] ...`; differences go to stderr by JSON path, never by "
                           "value, and fail (exit 1). Works on manifests of the earlier implementation. "
                           "VERIFY_ADDITIVE=1 turns it on.")
    ] = False,
    report: ReportOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the evidence as JSON on stdout instead of the drop-in lines.")
    ] = False,
    log_format: LogFormatOption = LogFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Verify the stores of a manifest: checksums, shape, counts, backups, service readability.

    Prints `ok: [<store>] <path>` for each good store and every problem as `error: [<store>] ...`
    on stderr. Records the service cannot read fail the store (with the first ones listed),
    from the verdict the run recorded for these exact bytes or from a full validation; with
    --allow-unreadable they are `warning: [<store>] ...`. A file this user may not read fails
    too, with what to do. With --baseline, the comparison of `store-migrate compare` (this
    manifest as B) must pass too; with --additive, every store must hold all its backup held.
    Exit 0 when all stores pass, 1 otherwise, 2 on a usage error.
    """

    def work() -> None:
        from . import commands
        from . import report as evidence

        result = commands.verify(str(manifest), strict=strict, allow_unreadable=allow_unreadable,
                                 baseline=None if baseline is None else str(baseline), max_drop=max_drop,
                                 additive=additive, progress=_progress(quiet))
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

    _call(log_format, quiet, work)


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
                           "matches neither hash in the manifest). Each such file is first kept as "
                           "<store>-<TIMESTAMP>-<sha12>.pre-rollback.json beside the run's backups.")
    ] = False,
    report: ReportOption = None,
    lock_timeout: LockTimeoutOption = 30.0,
    log_format: LogFormatOption = LogFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Return every store of a manifest to its state before that run.

    Restores backups (atomically) for stores that existed and removes stores the run created.
    Checks every backup and live file before changing anything; safe to rerun.
    """

    def work() -> None:
        from . import commands
        from . import report as evidence

        result = commands.rollback(str(manifest), force=force, lock_timeout=lock_timeout, progress=_progress(quiet))
        for action in result.actions:
            why = f" ({action.reason})" if action.action == "skipped" else ""
            typer.echo(f"{action.action}: [{action.store}] {action.path}{why}")
        typer.echo(f"rollback completed using manifest: {manifest}")
        if report is not None:
            _write_report(report, evidence.markdown(evidence.rollback_evidence(result, str(manifest))))

    _call(log_format, quiet, work)


# --------------------------------------------------------------------------- check, prune


def check_command(
    files: Annotated[list[Path], typer.Argument(help="Store files to check.", show_default=False)],
    kind: Annotated[StoreKindName, typer.Option("--kind", help="Which store the files are.", show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array, one object per file: path, kind, readable, "
                           "unreadable (count) and problems ([{pointer, message}]).")
    ] = False,
    max_problems: Annotated[int, typer.Option("--max-problems", min=1, help="Problems to show per file.")] = 20,
    log_format: LogFormatOption = LogFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Can the service read these store files? One verdict per file, with the first problems.

    Each problem names a JSON path and the reason, never a value or a map key: a map's member
    is named by its place among the map's sorted keys (README: "Can the service read it?").
    Missing top-level keys are fine (the service fills them in). Exit 0 when every file is
    readable, 1 when any is not, 2 on a usage error. Reads only.
    """

    def work() -> None:
        from . import commands

        results = commands.check(kind.value, [str(f) for f in files], limit=max_problems)
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
                    continue
                typer.echo(f"not readable: {r.path} ({r.kind}): {r.report.unreadable} record(s) the service "
                           "cannot read")
                for item in r.report.problems:
                    typer.echo(f"  {item.pointer}: {item.message}")
        if not all(r.report.readable for r in results):
            raise typer.Exit(EXIT_FAILED)

    _call(log_format, quiet, work)


def prune_command(
    keep: Annotated[int, typer.Option("--keep", min=1, help="How many of the newest manifests to keep.",
                                      show_default=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    lock_timeout: LockTimeoutOption = 30.0,
    log_format: LogFormatOption = LogFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Remove old manifests and their backup directories from $WORK_DIR.

    Never the newest --keep, never a pending one, never one with a store it changed that still
    hashes to its after_sha256 (its rollback may still be needed). Removes only what runs make
    (manifests/<TIMESTAMP>.json, backups/<TIMESTAMP>/ holding only backups), never follows a link,
    and holds the stores' lock like a run. Prints every manifest and directory it removes, and
    why it kept the others.
    """

    def work() -> None:
        from . import commands, config

        result = commands.prune(config.resolve(), keep=keep, dry_run=dry_run, lock_timeout=lock_timeout)
        word = "would remove" if dry_run else "removed"
        for path in result.removed:
            typer.echo(f"{word}: {path}")
        for path, why in result.kept:
            typer.echo(f"kept: {path} ({why})")

    _call(log_format, quiet, work)


# ------------------------------------------------------------------- compare, schema-diff


JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")]


def compare_command(
    a: Annotated[Path, typer.Argument(metavar="A.json", help="The reference manifest: a staging run, or the "
                                      "first run.", show_default=False)],
    b: Annotated[Path, typer.Argument(metavar="B.json", help="The manifest judged against A: production, or a "
                                      "rerun.", show_default=False)],
    max_drop: Annotated[int, typer.Option("--max-drop", min=0, help="How far a count of B may be below A's.")] = 0,
    as_json: JsonOption = False,
    log_format: LogFormatOption = LogFormat.auto,
    quiet: QuietOption = False,
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
        from . import compare

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

    _call(log_format, quiet, work)


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
    quiet: QuietOption = False,
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
        from . import schemadiff

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

    _call(log_format, quiet, work)


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
        from . import wrappers

        _emit([f"wrote: {path}" for path in wrappers.write(str(directory), force=force)], after="wrappers")

    _call(LogFormat.auto, False, work)


# ---------------------------------------------------------------------------------- apps


def _version(value: bool) -> None:
    if value:
        typer.echo(f"store-migrate {__version__}")
        raise typer.Exit()


VersionOption = Annotated[
    bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
]


def _single(command: Callable[..., None], name: str) -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, name=name)
    app.command(name=name)(command)
    return app


app = typer.Typer(
    name="store-migrate",
    help="Backfill, verify and roll back the service's JSON store files.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(version: VersionOption = False) -> None:
    """Backfill, verify and roll back the service's JSON store files.

    Exit status: 0 success; 1 the operation failed or was refused; 2 the command line was wrong.
    Shell completion: `store-migrate --install-completion`.
    """


app.command("run")(run_command)
app.command("verify")(verify_command)
app.command("rollback")(rollback_command)
app.command("check")(check_command)
app.command("prune")(prune_command)
app.command("compare")(compare_command)
app.command("schema-diff")(schema_diff_command)
app.command("wrappers")(wrappers_command)

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
