"""Installing: the Makefile's environment (tools/ensure_venv.py), the wheel and the wrappers it writes.

Interpreters here are real ones: the running Python, a link to it (another PYTHON), and the same
Python made to look like Debian's without python3.X-venv (ensurepip cannot be imported) or like
an older release (sys.version_info), through a sitecustomize on PYTHONPATH. The slow tests build
one real environment each (the wheel's is shared by the session).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import EXAMPLES, PROJECT, SCRIPTS, STORE_FILES, STORE_VARS

ENSURE = PROJECT / "tools" / "ensure_venv.py"
WRAPPERS = ("run-rust-ownership-backfill.sh", "verify-rust-ownership-backfill.sh", "rollback-rust-ownership-backfill.sh")
LOOKUP_MARK = "# -- Finding store-migrate:"
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _ensure_venv() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ensure_venv", ENSURE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_python(tmp_path: Path, customize: str) -> Path:
    """The running Python, started through a script with a sitecustomize that changes it."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(customize)
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nPYTHONPATH={hook} exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    return fake


def _make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-C", str(PROJECT), *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, check=False, timeout=600)


def _dry_run(venv: Path, python: str = sys.executable, *extra: str) -> str:
    done = subprocess.run([python, str(ENSURE), "--venv", str(venv), "--dry-run", *extra],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# ------------------------------------------------------------------------- the environment


@needs_make
def test_a_python_without_ensurepip_is_told_which_package_to_install(tmp_path: Path) -> None:
    fake = _fake_python(tmp_path, "import sys\nsys.modules['ensurepip'] = None\n")
    venv = tmp_path / "venv"
    done = _make("install", f"PYTHON={fake}", f"VENV={venv}")
    assert done.returncode != 0
    package = "python{}.{}-venv".format(*sys.version_info[:2])
    assert f"error: {sys.executable} ({'.'.join(map(str, sys.version_info[:3]))}) cannot create a virtual " \
           "environment: its ensurepip module is missing\n" in done.stderr
    assert f"  next: install the package that holds it: `apt-get install {package}` (Debian, Ubuntu; as root)" \
           in done.stderr
    assert not venv.exists(), "nothing half-made is left"


@needs_make
def test_a_python_too_old_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    fake = _fake_python(tmp_path, "import sys\nsys.version_info = (3, 10, 12, 'final', 0)\n")
    venv = tmp_path / "venv"
    done = _make("test", f"PYTHON={fake}", f"VENV={venv}")
    assert done.returncode != 0
    assert "error: store-migrate needs Python 3.11 or newer; PYTHON is 3.10.12" in done.stderr
    assert "next: run make with PYTHON=python3.11 (or newer)" in done.stderr
    assert not venv.exists()
    requires = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11" and _ensure_venv().required_python() == (3, 11)


@needs_make
def test_a_missing_python_is_named() -> None:
    done = _make("install", "PYTHON=/nowhere/python3")
    assert done.returncode != 0
    assert "error: /nowhere/python3 not found (set PYTHON= to a Python 3.11 or newer" in done.stderr


def _stamp(venv: Path, python: str = sys.executable, **changes: Any) -> None:
    """An environment as ensure_venv.py leaves it, made with `python`."""
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "bin" / "python").symlink_to(sys.executable)
    stamp = {
        "python": python, "python_version": ".".join(map(str, sys.version_info[:3])),
        "pyproject_sha256": hashlib.sha256((PROJECT / "pyproject.toml").read_bytes()).hexdigest(), "extras": [],
        **changes,
    }
    (venv / ".installed").write_text(json.dumps(stamp))


def test_the_stamp_records_the_python_and_the_dependency_set(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert _dry_run(venv) == f"{venv}: create (there is no environment yet)"
    _stamp(venv)
    assert _dry_run(venv) == f"{venv}: ok (up to date)"
    # Another PYTHON (here a link to the same interpreter, named otherwise) rebuilds.
    other = tmp_path / "other" / "python3"
    other.parent.mkdir()
    other.symlink_to(sys.executable)
    assert _dry_run(venv, str(other)).startswith(f"{venv}: rebuild (it was made with {sys.executable} ")
    assert f"PYTHON is {other} " in _dry_run(venv, str(other))
    # The developer tools asked for by make test after make install: installed into it as it is.
    assert _dry_run(venv, sys.executable, "--extras", "dev") == f"{venv}: update (it lacks the extras dev)"
    shutil.rmtree(venv)
    _stamp(venv, extras=["dev", "profile"])
    assert _dry_run(venv, sys.executable, "--extras", "dev") == f"{venv}: ok (up to date)"
    shutil.rmtree(venv)
    _stamp(venv, pyproject_sha256="0" * 64)
    assert _dry_run(venv) == f"{venv}: update (pyproject.toml changed since it was installed)"
    shutil.rmtree(venv)
    _stamp(venv, python_version="3.11.0")
    assert _dry_run(venv).startswith(f"{venv}: rebuild (it was made with {sys.executable} 3.11.0;")
    (venv / ".installed").unlink()
    assert _dry_run(venv) == f"{venv}: rebuild (its last install did not finish, or an older Makefile made it)"


def test_a_rebuild_removes_only_a_virtual_environment(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    done = subprocess.run([sys.executable, str(ENSURE), "--venv", str(precious)], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 1
    assert done.stderr == (f"error: {precious} is not a virtual environment (no pyvenv.cfg), so it is not removed\n"
                           "  next: remove it yourself or set VENV= to another path\n")
    assert (precious / "notes.txt").read_text() == "keep me"


def test_an_unreachable_index_is_said_in_one_sentence(tmp_path: Path) -> None:
    """pip's real output when its index refuses connections (loopback, a closed port)."""
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
           "PIP_FIND_LINKS": "", "PIP_RETRIES": "1", "PIP_TIMEOUT": "5"}
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(tmp_path), "typer"],
                          env=env, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode != 0
    stop = _ensure_venv().diagnose(done.stdout + done.stderr, ".venv/install.log", env)
    assert stop.message == ("pip cannot reach the package index, so the packages store-migrate needs cannot be "
                            "downloaded; pip's output: .venv/install.log")
    assert stop.hint.startswith("to install without a package index, point pip at a folder of wheels: "
                                "PIP_FIND_LINKS=/path/to/wheels PIP_NO_INDEX=1 make ...")


@needs_make
@pytest.mark.slow
def test_an_empty_folder_of_wheels_is_named_and_the_next_install_starts_again(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    venv = tmp_path / "venv"
    done = _make("install", f"VENV={venv}", env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)})
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if not line.startswith("make")]
    assert errors == [
        f"error: pip uses no package index (PIP_NO_INDEX) and the folder of wheels {wheels} has no "
        f"hatchling<2,>=1.21; pip's output: {venv}/install.log",
        '  next: add the missing wheels to the folder (README.md, "Installing without a package index" says how '
        "to build it)",
    ]
    assert "likely not a problem with pip" in (venv / "install.log").read_text()
    assert not (venv / ".installed").exists()
    assert _dry_run(venv) == f"{venv}: rebuild (its last install did not finish, or an older Makefile made it)"


@needs_make
def test_operator_targets_install_the_runtime_and_test_runs_lint_first() -> None:
    def commands(target: str) -> list[str]:
        done = _make("-n", target, "MANIFEST=m.json")
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if "ensure_venv.py" in line or "/bin/" in line
                or line.startswith("bash")]

    for target in ("install", "demo", "backfill", "verify", "rollback", "prune"):
        ensure = [line for line in commands(target) if "ensure_venv.py" in line]
        assert len(ensure) == 1 and ensure[0].endswith("tools/ensure_venv.py --venv .venv"), (target, ensure)
    for target in ("dev", "lint", "bench", "test"):
        assert any(line.endswith("--venv .venv --extras dev") for line in commands(target)), target
    steps = commands("test")
    order = [next(i for i, line in enumerate(steps) if word in line)
             for word in ("--extras dev", "ruff check", "mypy store_migrate", "bash -n scripts/*.sh", "pytest")]
    assert order == sorted(order), steps


# ------------------------------------------------------------------------------ wrappers


def _lookup(name: str) -> str:
    text = (SCRIPTS / name).read_text()
    assert text.count(LOOKUP_MARK) == 1, name
    return text[text.index(LOOKUP_MARK):]


def test_the_three_wrappers_share_their_lookup_and_are_all_there_is() -> None:
    assert sorted(p.name for p in SCRIPTS.iterdir()) == sorted(WRAPPERS)
    assert _lookup(WRAPPERS[0]) == _lookup(WRAPPERS[1]) == _lookup(WRAPPERS[2])
    for name in WRAPPERS:
        assert os.access(SCRIPTS / name, os.X_OK)
    # The package reaches the checkout's files, not copies of them.
    assert (PROJECT / "store_migrate" / "scripts").readlink() == Path("..", "scripts")


def _bin() -> Path:
    return Path(sys.executable).parent


def _write_wrappers(bin_dir: Path, directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "store-migrate"), "wrappers", str(directory), *extra],
                          capture_output=True, text=True, check=False, timeout=60)


def test_wrappers_are_written_executable_and_never_over_a_file_or_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "scripts"
    target.mkdir()
    done = _write_wrappers(_bin(), target)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"wrote: {target / name}" for name in WRAPPERS]
    for name in WRAPPERS:
        assert (target / name).read_bytes() == (SCRIPTS / name).read_bytes()
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o755
    assert sorted(p.name for p in target.iterdir()) == sorted(WRAPPERS), "no temporary file is left"

    (target / WRAPPERS[0]).write_text("#!/bin/sh\necho the service's own\n")
    (target / WRAPPERS[1]).unlink()
    secret = tmp_path / "secret"
    secret.write_text("not to be touched")
    (target / WRAPPERS[2]).unlink()
    (target / WRAPPERS[2]).symlink_to(secret)
    refused = _write_wrappers(_bin(), target)
    assert refused.returncode == 1
    assert [line for line in refused.stderr.splitlines() if not line.startswith("{")] == [
        f"error: {target / WRAPPERS[0]}, {target / WRAPPERS[2]} already exist; nothing was written",
        "  next: rerun with --force to replace them",
    ]
    assert (target / WRAPPERS[0]).read_text().endswith("the service's own\n")
    assert not (target / WRAPPERS[1]).exists() and (target / WRAPPERS[2]).is_symlink()
    (target / WRAPPERS[2]).unlink()
    (target / WRAPPERS[2]).symlink_to(tmp_path / "dangling")
    assert _write_wrappers(_bin(), target).returncode == 1, "a dangling link is taken too"
    (target / WRAPPERS[2]).unlink()
    (target / WRAPPERS[2]).symlink_to(secret)

    forced = _write_wrappers(_bin(), target, "--force")
    assert forced.returncode == 0, forced.stderr
    assert secret.read_text() == "not to be touched", "never written through a link"
    for name in WRAPPERS:
        assert not (target / name).is_symlink()
        assert (target / name).read_bytes() == (SCRIPTS / name).read_bytes()
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o755

    missing = _write_wrappers(_bin(), tmp_path / "nowhere")
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error: {tmp_path / 'nowhere'} is not a directory\n")


def test_a_wrapper_without_its_tool_names_make_install_only_in_a_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "store-migrate"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPTS / WRAPPERS[0], checkout / "scripts")
    shutil.copy2(PROJECT / "Makefile", checkout)
    shutil.copy2(PROJECT / "pyproject.toml", checkout)
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(checkout / "scripts" / WRAPPERS[0])], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 1
    assert done.stderr == (f"error: store-migrate-backfill not found; install it with 'make install' in {checkout}, "
                           "or set STORE_MIGRATE_BIN_DIR\n")
    (checkout / "Makefile").unlink()
    done = subprocess.run([str(checkout / "scripts" / WRAPPERS[0])], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.stderr == ("error: store-migrate-backfill not found on PATH; install store-migrate from its wheel "
                           "(pip install store_migrate-<version>-py3-none-any.whl), or set STORE_MIGRATE_BIN_DIR to "
                           "the directory holding store-migrate-backfill\n")


# ------------------------------------------------------------------------------ the wheel


@pytest.fixture(scope="session")
def wheel_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The project's wheel, installed (not editable) into a fresh environment: (wheel, its bin).

    The environment borrows the dependencies of the one running the tests (a .pth line adds its
    site-packages after its own, where the editable install's hook does not run), so the
    store_migrate it imports is the wheel's, and no second download of the dependencies is made."""
    root = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip"]
    quiet = ["--quiet", "--disable-pip-version-check"]
    built = subprocess.run([*pip, "wheel", *quiet, "--no-deps", "-w", str(root / "dist"), str(PROJECT)],
                           capture_output=True, text=True, check=False, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = next((root / "dist").glob("store_migrate-*.whl"))
    venv = root / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True,
                          check=False, timeout=600)
    assert made.returncode == 0, made.stdout + made.stderr
    site = next(venv.glob("lib/python3.*/site-packages"))
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", *quiet, "--no-deps",
                                str(wheel)], capture_output=True, text=True, check=False, timeout=600)
    assert installed.returncode == 0, installed.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import store_migrate; print(store_migrate.__file__)"],
                           cwd=root, capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert Path(where).is_relative_to(site), where
    return wheel, venv / "bin"


@pytest.mark.slow
def test_the_wheel_carries_the_checkout_s_wrappers(wheel_install: tuple[Path, Path]) -> None:
    wheel, _ = wheel_install
    with zipfile.ZipFile(wheel) as archive:
        carried = {name.rsplit("/", 1)[1]: archive.read(name) for name in archive.namelist()
                   if name.startswith("store_migrate/scripts/")}
    assert carried == {name: (SCRIPTS / name).read_bytes() for name in WRAPPERS}


@pytest.mark.slow
def test_wrappers_written_by_the_wheel_run_a_drill_in_the_service_layout(
        wheel_install: tuple[Path, Path], tmp_path: Path) -> None:
    """A deployment without a checkout of store-migrate: the wheel installed, its wrappers
    written where the earlier ones lived, found on PATH."""
    _, bin_dir = wheel_install
    root = tmp_path / "srv"
    scripts = root / "apps" / "openagents.com" / "service" / "scripts"
    storage = root / "apps" / "openagents.com" / "storage" / "app"
    scripts.mkdir(parents=True)
    storage.mkdir(parents=True)
    for name in STORE_FILES.values():
        shutil.copyfile(EXAMPLES / name, storage / name)
    written = _write_wrappers(bin_dir, scripts)
    assert written.returncode == 0, written.stderr
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OA_", "STORE_MIGRATE_")) and key not in (*STORE_VARS.values(), "WORK_DIR", "ROOT_DIR")}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", STORE_MIGRATE_LOG_FORMAT="json")

    def wrapper(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(scripts / name), *args], env=env, cwd="/", capture_output=True, text=True,
                              check=False, timeout=120)
        assert done.returncode == 0, done.stderr
        return done

    run = wrapper(WRAPPERS[0])
    manifest = next((storage / "rust-store-migrate" / "manifests").glob("*.json"))
    backups = storage / "rust-store-migrate" / "backups" / manifest.stem
    assert run.stdout.splitlines() == [
        f"rust-store-migrate: wrote manifest to {manifest}",
        f"[rust-store-backfill] manifest: {manifest}",
        f"[rust-store-backfill] backups: {backups}",
    ]
    verify = wrapper(WRAPPERS[1], str(manifest))
    assert verify.stdout.splitlines() == [
        *(f"ok: [{kind}] {storage / name}" for kind, name in STORE_FILES.items()),
        f"rust store backfill verification passed: {manifest}",
    ]
    rollback = wrapper(WRAPPERS[2], str(manifest))
    assert rollback.stdout.splitlines() == [
        *(f"restored: [{kind}] {storage / name}" for kind, name in STORE_FILES.items()),
        f"rollback completed using manifest: {manifest}",
    ]
    for name in STORE_FILES.values():
        assert (storage / name).read_bytes() == (EXAMPLES / name).read_bytes()
