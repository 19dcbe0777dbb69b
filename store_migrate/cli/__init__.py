"""The command line: the Typer apps and entry points (`apps`), the cutover evidence reports
(`report`) and progress at a terminal (`progress`). Only this layer prints; it parses options,
calls one command, and maps errors to exit codes."""

from store_migrate.cli.apps import backfill_main, main, rollback_main, verify_main

__all__ = ["backfill_main", "main", "rollback_main", "verify_main"]
