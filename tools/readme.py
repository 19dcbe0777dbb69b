"""Run the README's transcripts and check them (--check) or write what the tool prints now (--write).

A transcript is a fenced block right after a line `<!-- transcript -->`: each line starting with
`$ ` is a command, the lines after it what the terminal showed (stdout and stderr, in order),
up to the next command. The comment may hold hidden shell lines, run before the block's commands
(`<!-- transcript` on its own line, the lines, then `-->`). A line starting with `... ` in an
output stands for any lines (an elision); `--write` leaves blocks with one as they are, for an
edit by hand.

Every transcript runs, in the README's order, in one bash session in a demo directory built by
`scenario` (shown as /tmp/demo): the sample stores of examples/ as they are (the dry run), a
staging and a production copy migrated (production lost a shout), a copy migrated by the earlier
implementation (a manifest without this tool's fields, an integer beyond 64 bits made a float),
the schemas with a safe and an unsafe next version, two files the service cannot read, and the
wrappers written by `store-migrate wrappers`. Shell variables name the manifests: $staging, $prod,
$earlier. The entry points are those beside the running Python (a checkout's .venv/bin).

Compared modulo what changes from run to run: manifest timestamps (20261129T005406Z), times
(2026-11-29T00:54:06Z, with fractions) and durations (duration_ms).

    .venv/bin/python tools/readme.py --check     # exit 1 with a diff when a transcript is stale
    .venv/bin/python tools/readme.py --write     # rewrite the outputs in README.md (make readme)
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
SAMPLES = PROJECT / "examples" / "stores"
SHOWN_AS = "/tmp/demo"
BIN = Path(sys.executable).parent
FILES = {"auth": "rust-auth-store.json", "codex_threads": "rust-codex-thread-store.json",
         "domain": "rust-domain-store.json"}
VARS = {"auth": "AUTH_STORE_PATH", "codex_threads": "CODEX_THREAD_STORE_PATH", "domain": "DOMAIN_STORE_PATH"}
MARK = re.compile(r"^<!-- transcript(?P<inline> -->|\n(?P<hidden>(?:.*\n)*?)-->)\n```\n", re.MULTILINE)
_VOLATILE = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"), "<TIME>"),
    (re.compile(r"\d{8}T\d{6}Z"), "<TIMESTAMP>"),
    (re.compile(r"duration_ms[=:] ?[\d.]+"), "duration_ms=<N>"),
)
BIG = 123456789012345678901234567890


@dataclass
class Command:
    line: str
    output: list[str] = field(default_factory=list)


@dataclass
class Block:
    start: int  # offset of the block's first line in the README
    end: int  # offset of its closing fence
    hidden: str
    commands: list[Command]


def parse(text: str) -> list[Block]:
    blocks = []
    for mark in MARK.finditer(text):
        end = text.index("```\n", mark.end())
        commands: list[Command] = []
        for line in text[mark.end():end].splitlines():
            if line.startswith("$ "):
                commands.append(Command(line[2:]))
            elif not commands:
                raise SystemExit(f"README.md: a transcript starts with output, not `$ `: {line!r}")
            else:
                commands[-1].output.append(line)
        blocks.append(Block(mark.end(), end, mark.group("hidden") or "", commands))
    return blocks


# ---------------------------------------------------------------------------------- scenario


def _run(demo: Path, name: str, *extra: str) -> str:
    """Migrate demo/<name>/ (WORK_DIR demo/<name>/work); the manifest's path, relative to demo."""
    env = {**os.environ, **{VARS[k]: str(demo / name / f) for k, f in FILES.items()},
           "WORK_DIR": str(demo / name / "work"), "STORE_MIGRATE_LOG_FORMAT": "json", "STORE_MIGRATE_QUIET": "1"}
    subprocess.run([str(BIN / "store-migrate"), "run", *extra], env=env, check=True, capture_output=True)
    return str(max((demo / name / "work" / "manifests").glob("*.json")).relative_to(demo))


def _copy_samples(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        shutil.copyfile(SAMPLES / name, directory / name)


def _edit(path: Path, change: Callable[[Any], object]) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=2))


def _earlier(demo: Path) -> str:
    """A migration as the earlier implementation made it: a manifest with the v1 fields only, and
    an integer beyond 64 bits in a user integration's metadata written back as a float."""
    _copy_samples(demo / "earlier")
    _edit(demo / "earlier" / FILES["domain"],
          lambda d: d["user_integrations"]["user-1::resend"]["metadata"].update(region=BIG))
    manifest = demo / _run(demo, "earlier")
    live = demo / "earlier" / FILES["domain"]
    data = live.read_bytes().replace(str(BIG).encode(), repr(float(BIG)).encode())
    live.write_bytes(data)
    document = json.loads(manifest.read_text())
    v1 = ("store", "path", "existed", "backup_path", "before_sha256", "after_sha256", "changed", "counts")
    stores = [{key: entry[key] for key in v1} for entry in document["stores"]]
    stores[-1]["after_sha256"] = hashlib.sha256(data).hexdigest()
    manifest.write_text(json.dumps({"schema": document["schema"], "generated_at": document["generated_at"],
                                    "stores": stores}, indent=2))
    return str(manifest.relative_to(demo))


def _schemas(demo: Path) -> None:
    """schemas/ as they are; schemas-next/ with two safe changes; schemas-unsafe/ with unsafe ones too."""
    shutil.copytree(PROJECT / "schemas", demo / "schemas")

    def device_name(required: bool) -> Callable[[Any], None]:
        def change(schema: Any) -> None:
            session = schema["$defs"]["SessionRecord"]
            session["properties"]["device_name"] = {"type": ["string", "null"]}
            if required:
                session["required"].append("device_name")
                session["properties"]["status"]["enum"].append("locked")
        return change

    for name, unsafe in (("schemas-next", False), ("schemas-unsafe", True)):
        shutil.copytree(PROJECT / "schemas", demo / name)
        _edit(demo / name / "auth.schema.json", device_name(unsafe))
        _edit(demo / name / "domain.schema.json",
              lambda s: s["properties"].update(shout_reactions={"type": "array", "items": {"type": "object"}}))
        if unsafe:
            _edit(demo / name / "codex_threads.schema.json",
                  lambda s: s["$defs"]["ThreadProjectionRecord"]["properties"]["message_count"].update(
                      maximum=18446744073709551615))


def _unreadable(demo: Path) -> None:
    """bad.json (domain) and auth.json: records the service cannot read."""
    shutil.copyfile(SAMPLES / FILES["domain"], demo / "bad.json")

    def shout(d: Any) -> None:
        d["shouts"][1].update(id=7.0, visibility=None)
        d["whispers"] = []

    _edit(demo / "bad.json", shout)
    shutil.copyfile(SAMPLES / FILES["auth"], demo / "auth.json")

    def auth(d: Any) -> None:
        session = d["sessions"]["sess-1"]
        d["sessions"] = {f"sess-{n}": {**session, "session_id": f"sess-{n}"} for n in range(1, 5)}
        d["sessions"]["sess-4"]["status"] = "paused"
        d["access_index"] = {f"oa_at_demo_{n:02}": f"sess-{n % 4 + 1}" for n in range(13)}
        d["access_index"]["oa_at_demo_12"] = {}
        d["personal_access_tokens"] = {}

    _edit(demo / "auth.json", auth)


def scenario(demo: Path) -> dict[str, str]:
    """Build the demo directory; the shell variables the transcripts use."""
    _copy_samples(demo)
    _copy_samples(demo / "staging")
    _copy_samples(demo / "prod")
    _edit(demo / "prod" / FILES["domain"], lambda d: d["shouts"].pop())
    variables = {"staging": _run(demo, "staging"), "prod": _run(demo, "prod"), "earlier": _earlier(demo)}
    _schemas(demo)
    _unreadable(demo)
    (demo / "scripts").mkdir()
    subprocess.run([str(BIN / "store-migrate"), "wrappers", str(demo / "scripts")], check=True, capture_output=True)
    return variables


# -------------------------------------------------------------------------------- running


def run(blocks: list[Block]) -> list[list[list[str]]]:
    """Every command's output (lines, shown with /tmp/demo), block by block."""
    with tempfile.TemporaryDirectory(prefix="store-migrate-readme.") as temp:
        demo = Path(temp) / "demo"
        variables = scenario(demo)
        marker = "@@store-migrate-readme@@"
        script = ["set -u", f"cd {demo}", "exec 2>&1"]
        script += [f"{name}={value}" for name, value in variables.items()]
        script += [f"export {VARS[k]}={demo / f}" for k, f in FILES.items()]
        script.append(f"export WORK_DIR={demo / 'work'}")
        for b, block in enumerate(blocks):
            script.append(f"printf '\\n{marker} hidden\\n'")
            script.append(block.hidden.replace(SHOWN_AS, str(demo)))
            for c, command in enumerate(block.commands):
                script.append(f"printf '\\n{marker} {b} {c}\\n'")
                script.append(command.line.replace(SHOWN_AS, str(demo)))
        unset = (*VARS.values(), "WORK_DIR", "ROOT_DIR")
        environ = {key: value for key, value in os.environ.items()
                   if not key.startswith(("OA_", "STORE_MIGRATE_")) and key not in unset}
        environ.update(PATH=f"{BIN}:{environ.get('PATH', '/usr/bin:/bin')}", STORE_MIGRATE_LOG_FORMAT="auto",
                       COLUMNS="100", NO_COLOR="1",
                       # the logs go to a file of their own, so stderr shows what an operator reads
                       STORE_MIGRATE_LOG_FILE=str(demo / "store-migrate.log"))
        done = subprocess.run(["bash", "-c", "\n".join(script)], env=environ, capture_output=True, text=True,
                              timeout=600, check=False)
        text = done.stdout.replace(str(demo), SHOWN_AS)
    outputs: list[list[list[str]]] = [[[] for _ in block.commands] for block in blocks]
    current: list[str] | None = None
    for line in text.split("\n"):
        if line.startswith(marker):
            where = line.split()[1:]
            current = None if where == ["hidden"] else outputs[int(where[0])][int(where[1])]
            continue
        if current is not None:
            current.append(line)
    for block_outputs in outputs:
        for lines in block_outputs:
            while lines and not lines[-1].strip():
                lines.pop()
    return outputs


def normal(line: str) -> str:
    for pattern, replacement in _VOLATILE:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` is `expected` modulo the volatile parts, `... ` lines standing for any lines."""
    if not expected:
        return not actual
    if expected[0].startswith("... "):
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and normal(expected[0]) == normal(actual[0]) and matches(expected[1:], actual[1:])


def check(text: str) -> list[str]:
    """The diffs of the stale transcripts (none when the README is current)."""
    blocks = parse(text)
    problems = []
    for block, outputs in zip(blocks, run(blocks), strict=True):
        for command, actual in zip(block.commands, outputs, strict=True):
            if not matches(command.output, actual):
                diff = difflib.unified_diff(command.output, actual, "README.md", "now", lineterm="")
                problems.append(f"$ {command.line}\n" + "\n".join(diff))
    return problems


def _keep(expected: list[str], actual: list[str]) -> list[str]:
    """`actual`, keeping the README's line wherever only a volatile part differs (no churn)."""
    return [old if i < len(expected) and normal(old := expected[i]) == normal(line) else line
            for i, line in enumerate(actual)]


def write(text: str) -> tuple[str, int]:
    """The README with every transcript's output as the tool prints it now (blocks with an
    elision are left as they are); and how many blocks were left."""
    blocks = parse(text)
    left = 0
    for block, outputs in reversed(list(zip(blocks, run(blocks), strict=True))):
        if any(line.startswith("... ") for command in block.commands for line in command.output):
            left += 1
            continue
        body = "".join(f"$ {command.line}\n" + "".join(f"{line}\n" for line in _keep(command.output, actual))
                       for command, actual in zip(block.commands, outputs, strict=True))
        text = text[:block.start] + body + text[block.end:]
    return text, left


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff when a transcript is stale")
    mode.add_argument("--write", action="store_true", help="rewrite the transcripts' outputs in README.md")
    args = parser.parse_args()
    text = README.read_text()
    if args.write:
        new, left = write(text)
        README.write_text(new)
        print(f"README.md: {len(parse(text))} transcript(s) run, {left} with an elision left as they were")
        return 0
    problems = check(text)
    for problem in problems:
        print(problem, end="\n\n")
    if problems:
        print(f"README.md: {len(problems)} transcript command(s) print something else now; "
              "`make readme` rewrites them (blocks with `... ` elisions by hand)")
        return 1
    print(f"README.md: {len(parse(text))} transcript(s) current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
