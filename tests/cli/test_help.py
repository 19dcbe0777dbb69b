"""Every --help reads as prose at 80 and 120 columns, and --version works on every entry point."""

from __future__ import annotations

import re

import pytest
from conftest import Stores

SUBCOMMANDS = ("run", "verify", "rollback", "check", "prune", "compare", "schema-diff")
HELPS = [("store-migrate",), *(("store-migrate", sub) for sub in SUBCOMMANDS),
         ("store-migrate-backfill",), ("store-migrate-verify",), ("store-migrate-rollback",)]
ENTRY_POINTS = ("store-migrate", "store-migrate-backfill", "store-migrate-verify", "store-migrate-rollback")

# What Typer and Click add on their own: type placeholders after flags and arguments, `{manifest}`
# for an argument, bracketed tails that repeat what the sentence says.
PLACEHOLDERS = re.compile(r"<(?:bool|path|int|float|text|str|file|dir|list\[[^>]*\]|[a-z]+ range)>|\{[a-z_]+\}|"
                          r"\[env var:|\[default:|\[x[<>]=|\[required\]|x>=\d")
VARIABLES = ("STORE_MIGRATE_LOG_FORMAT", "STORE_MIGRATE_LOG_FILE", "STORE_MIGRATE_QUIET", "STORE_MIGRATE_LOCK_TIMEOUT",
             "DRY_RUN", "ALLOW_MISSING", "VERIFY_STRICT", "VERIFY_ALLOW_UNREADABLE", "VERIFY_ADDITIVE")


def render(stores: Stores, command: tuple[str, ...], columns: int) -> str:
    done = stores.call(*command, "--help", env={"COLUMNS": str(columns)}, check=0)
    assert done.stderr == ""
    return done.stdout


def text_column(line: str) -> int:
    """Where a line's text starts: after a definition list's name (two spaces or more), else its indent."""
    row = re.match(r"(\s*)(\S.*?)(\s{2,})\S", line)  # prose is rewrapped: two spaces end a name
    if row:
        return len(row.group(1)) + len(row.group(2)) + len(row.group(3))
    return len(line) - len(line.lstrip())


def ragged_lines(text: str, width: int) -> list[str]:
    """Lines broken early: the next line of the same paragraph or item begins with a word that
    would have fitted at their end (Rich kept the docstring's own breaks, then wrapped again)."""
    lines = text.splitlines()
    ragged = []
    for line, following in zip(lines, lines[1:], strict=False):
        if not line.strip() or not following.strip() or following.startswith(" " * text_column(line) + " "):
            continue
        indent = len(following) - len(following.lstrip())
        if indent != text_column(line) or following.lstrip().startswith("-"):
            continue  # a new item, not the rest of this one
        if len(line.rstrip()) + 1 + len(following.split()[0]) <= width:
            ragged.append(f"{line!r} / {following!r}")
    return ragged


@pytest.mark.parametrize("columns", [80, 120])
def test_every_help_reads_as_prose(stores: Stores, columns: int) -> None:
    for command in HELPS:
        text = render(stores, command, columns)
        name = " ".join(command)
        assert not PLACEHOLDERS.findall(text), (name, PLACEHOLDERS.findall(text))
        assert all(len(line) <= columns for line in text.splitlines()), name
        assert not re.search(r"\w-\n", text), f"{name}: a word broken at its hyphen"
        assert not ragged_lines(text, min(columns, 80) - 2), (name, ragged_lines(text, min(columns, 80) - 2))
        assert "\x1b[" not in text and "╭" not in text, name
        for variable in VARIABLES:  # each variable and its default said once, in the option's own sentence
            assert len(re.findall(rf"(?<![A-Z_]){variable}(?![A-Z_])", text)) <= 1, (name, variable)
        assert text.count("Default 30") <= 1 and text.count("[default") == 0


def test_the_sentences_an_operator_looks_for(stores: Stores) -> None:
    helps = {command: render(stores, command, 80) for command in HELPS}
    run = helps[("store-migrate", "run")]
    assert run == helps[("store-migrate-backfill",)].replace("store-migrate-backfill", "store-migrate run")
    flat = " ".join(run.split())
    assert "ROOT_DIR is the checkout that holds the wrapper, when the wrapper sits in the checkout's " \
           "apps/openagents.com/service/scripts/ directory; otherwise $ROOT_DIR, else the git top level" in flat
    assert "A store that does not exist is created, as an empty store, and is a warning" in flat
    for variable in ("AUTH_STORE_PATH", "OA_AUTH_STORE_PATH", "WORK_DIR", "DRY_RUN", "ALLOW_MISSING",
                     "STORE_MIGRATE_LOCK_TIMEOUT", "STORE_MIGRATE_LOG_FILE", "STORE_MIGRATE_QUIET"):
        assert re.search(rf"(?<![A-Z_]){variable}(?![A-Z_])", run), variable
    rollback = helps[("store-migrate", "rollback")]
    assert any(line.strip().endswith("<store>-<TIMESTAMP>-<sha12>.pre-rollback.json.") for line in rollback.splitlines())
    check = helps[("store-migrate", "check")]
    assert "drop-in" not in check and "-q, --quiet" in check
    verify = " ".join(helps[("store-migrate", "verify")].split())
    assert "VERIFY_ADDITIVE=1 turns it on" in verify and "Default 0" in verify
    usages = {command: text.splitlines()[0] for command, text in helps.items()}
    assert usages[("store-migrate", "verify")] == "Usage: store-migrate verify [OPTIONS] MANIFEST"
    assert usages[("store-migrate-rollback",)] == "Usage: store-migrate-rollback [OPTIONS] MANIFEST"
    assert usages[("store-migrate", "check")] == "Usage: store-migrate check [OPTIONS] FILES..."
    assert usages[("store-migrate", "compare")] == "Usage: store-migrate compare [OPTIONS] A B"
    assert usages[("store-migrate", "schema-diff")] == "Usage: store-migrate schema-diff [OPTIONS] [OLD] [NEW]"
    assert "\nArguments:\n  MANIFEST  The manifest a backfill run wrote:" in helps[("store-migrate-verify",)]
    listing = helps[("store-migrate",)]
    for sub in SUBCOMMANDS:  # each command's summary whole, not cut with "..."
        line = next(line for line in listing.splitlines() if line.startswith(f"  {sub} "))
        assert not line.endswith("..."), line


def test_version_on_every_entry_point(stores: Stores) -> None:
    from store_migrate import __version__

    for command in ENTRY_POINTS:
        assert stores.call(command, "--version", check=0).stdout == f"store-migrate {__version__}\n"
    assert stores.call("store-migrate", "verify", "--version", check=0).stdout == f"store-migrate {__version__}\n"


def test_usage_errors_name_arguments_in_capitals_and_numbers_are_checked(stores: Stores) -> None:
    missing = stores.call("store-migrate-verify", check=2)
    assert "Usage: store-migrate-verify [OPTIONS] MANIFEST" in missing.stderr
    assert "Missing argument 'MANIFEST'" in missing.stderr
    negative = stores.call("store-migrate", "run", "--lock-timeout", "-1", check=2)
    assert "must be 0 or more" in negative.stderr
    assert "must be 1 or more" in stores.call("store-migrate", "prune", "--keep", "0", check=2).stderr
    assert "must be 1 or more" in stores.call("store-migrate", "check", "--kind", "auth", "--max-problems", "0",
                                              "x.json", check=2).stderr
