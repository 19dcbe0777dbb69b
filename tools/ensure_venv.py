"""Make the project's virtual environment ready for a make target, or say exactly why not.

Run by the Makefile with the Python it was given (`PYTHON`, default python3):

    python3 tools/ensure_venv.py --venv .venv [--extras dev,profile] [--dry-run]

The environment is recorded in a stamp, <venv>/.installed (JSON): the Python that made it (its
path and version), a hash of pyproject.toml and the extras installed. The stamp is written last,
so an install that did not finish leaves none. Then, by what the stamp says:

- no environment: create it;
- no stamp (an install that failed half-way, or an older Makefile's), another Python (a change
  of PYTHON, an upgraded or removed interpreter): remove the environment and create it again;
- pyproject.toml changed, or extras asked for that are not installed (make test after make
  install adds the developer tools): install into the environment as it is;
- otherwise nothing (about 30 ms).

What stops it is said in one sentence and a `next:` line, as the tool itself does: a Python older
than the project needs; a Python that cannot create an environment because its ensurepip module
is missing (Debian and Ubuntu ship it in the python3.X-venv package: the name is given); a
package index that cannot be reached, or a folder of wheels (PIP_FIND_LINKS with PIP_NO_INDEX=1)
that lacks a package. pip's own output is kept in <venv>/install.log.

This file runs on whatever Python the machine has, so that an old one is told so: it keeps to
the syntax of Python 3.6.
"""

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYPROJECT = os.path.join(PROJECT, "pyproject.toml")
STAMP = ".installed"
LOG = "install.log"
README_OFFLINE = 'README.md, "Installing without a package index"'

# Words pip prints when it cannot reach an index (urllib3's and the resolver's).
_NETWORK = (
    "NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
    "Name or service not known", "No address associated with hostname", "ConnectTimeoutError",
    "ReadTimeoutError", "ProxyError", "SSLError", "Network is unreachable", "Connection refused",
    "No route to host", "Max retries exceeded",
)
_NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")


class Stop(Exception):
    """What stops the install: a sentence, and what to do next."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def required_python() -> Tuple[int, int]:
    """The lowest Python pyproject.toml's requires-python allows (">=3.11" gives (3, 11))."""
    with open(PYPROJECT, encoding="utf-8") as handle:
        found = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)', handle.read(), re.MULTILINE)
    if found is None:
        raise Stop("pyproject.toml has no requires-python of the form \">=3.N\"", "restore pyproject.toml")
    return int(found.group(1)), int(found.group(2))


def wanted(extras: List[str]) -> Dict[str, Any]:
    """The stamp an environment ready for this target carries (extras: at least these)."""
    with open(PYPROJECT, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    return {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "pyproject_sha256": digest,
        "extras": sorted(set(extras)),
    }


def read_stamp(venv: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(venv, STAMP), encoding="utf-8") as handle:
            stamp = json.load(handle)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def plan(venv: str, want: Dict[str, Any]) -> Tuple[str, str]:
    """What to do with `venv`: ("ok" | "create" | "rebuild" | "update", why)."""
    if not os.path.lexists(venv):
        return "create", "there is no environment yet"
    stamp = read_stamp(venv)
    if stamp is None:
        return "rebuild", "its last install did not finish, or an older Makefile made it"
    made_with = (stamp.get("python"), stamp.get("python_version"))
    if made_with != (want["python"], want["python_version"]):
        return "rebuild", "it was made with {} {}; PYTHON is {} {}".format(
            made_with[0], made_with[1], want["python"], want["python_version"])
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        return "rebuild", "its bin/python is gone"
    if stamp.get("pyproject_sha256") != want["pyproject_sha256"]:
        return "update", "pyproject.toml changed since it was installed"
    extras = stamp.get("extras")
    missing = sorted(set(want["extras"]) - set(extras if isinstance(extras, list) else []))
    if missing:
        return "update", "it lacks the extras {}".format(", ".join(missing))
    return "ok", "up to date"


def check_python() -> None:
    need = required_python()
    if sys.version_info[:2] < need:
        raise Stop(
            "store-migrate needs Python {}.{} or newer; PYTHON is {} ({})".format(
                need[0], need[1], ".".join(str(part) for part in sys.version_info[:3]), sys.executable),
            "run make with PYTHON=python3.{} (or newer), after installing it if needed".format(need[1]),
        )


def venv_package() -> str:
    """The Debian/Ubuntu package that holds ensurepip for this Python: python3.11-venv."""
    return "python{}.{}-venv".format(*sys.version_info[:2])


def check_ensurepip() -> None:
    if importlib.util.find_spec("ensurepip") is None:
        raise Stop(
            "{} ({}) cannot create a virtual environment: its ensurepip module is missing".format(
                sys.executable, platform.python_version()),
            "install the package that holds it: `apt-get install {}` (Debian, Ubuntu; as root), then run "
            "make again".format(venv_package()),
        )


def remove(venv: str) -> None:
    """Remove an environment this script made; never a directory that is not one."""
    if os.path.islink(venv) or not os.path.isdir(venv):
        raise Stop("{} is not a directory".format(venv), "remove it or set VENV= to another path")
    if os.listdir(venv) and not os.path.exists(os.path.join(venv, "pyvenv.cfg")):
        raise Stop("{} is not a virtual environment (no pyvenv.cfg), so it is not removed".format(venv),
                   "remove it yourself or set VENV= to another path")
    shutil.rmtree(venv)


def create(venv: str) -> None:
    check_ensurepip()
    done = subprocess.run([sys.executable, "-m", "venv", venv], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    if done.returncode != 0:
        output = done.stdout.strip()
        if "ensurepip" in output:
            raise Stop("{} could not create a virtual environment: ensurepip is not available".format(
                sys.executable), "install it with `apt-get install {}` (Debian, Ubuntu; as root), then run "
                "make again".format(venv_package()))
        raise Stop("`{} -m venv {}` failed: {}".format(sys.executable, venv, output.splitlines()[-1] if output
                                                       else "exit {}".format(done.returncode)),
                   "fix what it says, then run make again (the half-made environment is rebuilt)")


def requirement(extras: List[str]) -> str:
    return "{}[{}]".format(PROJECT, ",".join(extras)) if extras else PROJECT


def pip_install(venv: str, extras: List[str]) -> None:
    log = os.path.join(venv, LOG)
    command = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--disable-pip-version-check",
               "--editable", requirement(extras)]
    with open(log, "w", encoding="utf-8") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=PROJECT)
    if done.returncode != 0:
        with open(log, encoding="utf-8", errors="replace") as handle:
            raise diagnose(handle.read(), log, os.environ)


def truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def diagnose(output: str, log: str, environ: Mapping[str, str]) -> Stop:
    """One sentence for a failed `pip install`, from its output."""
    offline = ("to install without a package index, point pip at a folder of wheels: PIP_FIND_LINKS=/path/to/wheels "
               "PIP_NO_INDEX=1 make ... ({} says how to build the folder)".format(README_OFFLINE))
    missing = _NOT_FOUND.search(output)
    if truthy(environ.get("PIP_NO_INDEX")) and missing is not None:
        folder = environ.get("PIP_FIND_LINKS") or "(PIP_FIND_LINKS is not set)"
        return Stop("pip uses no package index (PIP_NO_INDEX) and the folder of wheels {} has no {}; pip's output: "
                    "{}".format(folder, missing.group(1), log),
                    "add the missing wheels to the folder ({} says how to build it)".format(README_OFFLINE))
    if any(word in output for word in _NETWORK):
        return Stop("pip cannot reach the package index, so the packages store-migrate needs cannot be downloaded; "
                    "pip's output: {}".format(log), offline)
    if missing is not None:
        return Stop("pip found no {} on the package index it uses; pip's output: {}".format(missing.group(1), log),
                    "check pip's index settings (PIP_INDEX_URL, pip.conf), or " + offline)
    tail = [line for line in output.splitlines() if line.strip()][-15:]
    return Stop("pip could not install store-migrate; the end of its output ({}):\n  {}".format(
        log, "\n  ".join(tail)), "fix what it says, then run make again")


def write_stamp(venv: str, stamp: Dict[str, Any]) -> None:
    path = os.path.join(venv, STAMP)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(stamp, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(path + ".tmp", path)


def ensure(venv: str, extras: List[str], dry_run: bool) -> str:
    check_python()
    want = wanted(extras)
    action, why = plan(venv, want)
    if dry_run:
        return "{}: {} ({})".format(venv, action, why)
    if action == "ok":
        return ""
    if action == "update":
        stamp = read_stamp(venv) or {}
        had = stamp.get("extras")
        want["extras"] = sorted(set(want["extras"]) | set(had if isinstance(had, list) else []))
        os.unlink(os.path.join(venv, STAMP))  # written again only once the install is complete
    else:
        if action == "rebuild":
            print("{}: rebuilding: {}".format(venv, why), flush=True)
            remove(venv)
        create(venv)
    extras = want["extras"]
    print("{}: installing store-migrate{} (pip's output: {})".format(
        venv, " with " + ", ".join(extras) if extras else "", os.path.join(venv, LOG)), flush=True)
    pip_install(venv, extras)
    write_stamp(venv, want)
    return "{}: ready".format(venv)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=".venv", help="the environment's directory")
    parser.add_argument("--extras", default="", help="extras of pyproject.toml to install as well: dev,profile")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done; do nothing")
    args = parser.parse_args(argv)
    extras = [name for name in args.extras.split(",") if name]
    try:
        said = ensure(args.venv, extras, args.dry_run)
        if said:
            print(said, flush=True)
    except Stop as stop:
        sys.stderr.write("error: {}\n  next: {}\n".format(stop.message, stop.hint))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
