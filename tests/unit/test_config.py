"""config.py on its own: where ROOT_DIR, WORK_DIR and the three stores resolve from a given
environment and working directory, and `check_present` (a wrong root must not make three empty
stores)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from structlog.testing import capture_logs

# One line per module: the modules are moving into packages, and a script rewrites these lines.
# isort: off
from store_migrate.core import config
from store_migrate import errors
# isort: on

STORAGE = ("apps", "openagents.com", "storage", "app")
SCRIPTS = ("apps", "openagents.com", "service", "scripts")
KINDS = ("auth", "codex_threads", "domain")
FILES = {"auth": "rust-auth-store.json", "codex_threads": "rust-codex-thread-store.json",
         "domain": "rust-domain-store.json"}
OWN = {"auth": "AUTH_STORE_PATH", "codex_threads": "CODEX_THREAD_STORE_PATH", "domain": "DOMAIN_STORE_PATH"}


def storage(root: Path) -> Path:
    return root.joinpath(*STORAGE)


def paths(settings: config.Settings) -> dict[str, str]:
    return {s.kind: s.path for s in settings.stores}


def sources(settings: config.Settings) -> dict[str, str]:
    return {s.kind: s.source for s in settings.stores}


def test_root_dir_gives_every_default(tmp_path: Path) -> None:
    """Catches: a default file name, storage directory or work directory that is not where the service keeps it."""
    settings = config.resolve({"ROOT_DIR": str(tmp_path / "srv")}, cwd=str(tmp_path))
    assert settings.root_dir == str(tmp_path / "srv")
    assert settings.root_source == "ROOT_DIR"
    assert [s.kind for s in settings.stores] == list(KINDS)
    assert paths(settings) == {k: str(storage(tmp_path / "srv") / FILES[k]) for k in KINDS}
    assert set(sources(settings).values()) == {"default"}
    assert settings.work_dir == str(storage(tmp_path / "srv") / "rust-store-migrate")
    assert settings.work_source == "default"


def test_a_relative_root_dir_is_taken_from_the_working_directory(tmp_path: Path) -> None:
    """Catches: a relative ROOT_DIR resolved against the process's own cwd instead of the one given."""
    settings = config.resolve({"ROOT_DIR": "srv/../srv2"}, cwd=str(tmp_path))
    assert settings.root_dir == str(tmp_path / "srv2")
    assert paths(settings)["auth"] == str(storage(tmp_path / "srv2") / FILES["auth"])


@pytest.mark.parametrize("kind", KINDS)
def test_each_store_variable_overrides_its_store_only(tmp_path: Path, kind: str) -> None:
    """Catches: a store variable read under the wrong name, or applied to another store."""
    settings = config.resolve({"ROOT_DIR": str(tmp_path), OWN[kind]: "/elsewhere/store.json"}, cwd=str(tmp_path))
    assert paths(settings)[kind] == "/elsewhere/store.json"
    assert sources(settings)[kind] == OWN[kind]
    for other in set(KINDS) - {kind}:
        assert paths(settings)[other] == str(storage(tmp_path) / FILES[other])
        assert sources(settings)[other] == "default"


@pytest.mark.parametrize("kind", KINDS)
def test_the_service_variable_is_the_fallback_and_the_own_variable_wins(tmp_path: Path, kind: str) -> None:
    """Catches: OA_* ignored (the service's own setting), or preferred over the tool's variable."""
    env = {"ROOT_DIR": str(tmp_path), f"OA_{OWN[kind]}": "/service/setting.json"}
    settings = config.resolve(env, cwd=str(tmp_path))
    assert (paths(settings)[kind], sources(settings)[kind]) == ("/service/setting.json", f"OA_{OWN[kind]}")
    settings = config.resolve({**env, OWN[kind]: "/tool/setting.json"}, cwd=str(tmp_path))
    assert (paths(settings)[kind], sources(settings)[kind]) == ("/tool/setting.json", OWN[kind])


def test_an_empty_variable_counts_as_unset(tmp_path: Path) -> None:
    """Catches: `AUTH_STORE_PATH=` (as a template leaves it) read as the working directory itself."""
    env = {"ROOT_DIR": str(tmp_path), "AUTH_STORE_PATH": "", "OA_AUTH_STORE_PATH": "/service/auth.json",
           "DOMAIN_STORE_PATH": "", "OA_DOMAIN_STORE_PATH": "", "WORK_DIR": ""}
    settings = config.resolve(env, cwd=str(tmp_path))
    assert paths(settings)["auth"] == "/service/auth.json"
    assert sources(settings)["domain"] == "default"
    assert settings.work_source == "default"
    assert config.resolve({"ROOT_DIR": ""}, cwd=str(tmp_path)).root_source == (
        "the working directory (no ROOT_DIR, no git checkout)")


def test_relative_store_and_work_paths_are_taken_from_the_working_directory(tmp_path: Path) -> None:
    """Catches: relative paths left relative (they would change meaning when a later step changes directory)."""
    env = {"ROOT_DIR": "/unused", "AUTH_STORE_PATH": "a/auth.json", "OA_CODEX_THREAD_STORE_PATH": "../codex.json",
           "WORK_DIR": "work"}
    settings = config.resolve(env, cwd=str(tmp_path / "here"))
    assert paths(settings)["auth"] == str(tmp_path / "here" / "a" / "auth.json")
    assert paths(settings)["codex_threads"] == str(tmp_path / "codex.json")
    assert (settings.work_dir, settings.work_source) == (str(tmp_path / "here" / "work"), "WORK_DIR")


def test_work_dir_is_independent_of_the_stores(tmp_path: Path) -> None:
    """Catches: WORK_DIR derived from a store variable, or store defaults moved by WORK_DIR."""
    settings = config.resolve({"ROOT_DIR": str(tmp_path), "WORK_DIR": "/var/lib/migrate",
                               "AUTH_STORE_PATH": "/data/auth.json"}, cwd="/")
    assert settings.work_dir == "/var/lib/migrate"
    assert paths(settings)["domain"] == str(storage(tmp_path) / FILES["domain"])


def test_the_wrapper_in_the_service_checkout_gives_the_root_whatever_root_dir_says(tmp_path: Path) -> None:
    """Catches: ROOT_DIR (or the cwd) winning over the wrapper's location, as the earlier wrappers never let it."""
    root = tmp_path / "checkout"
    wrapper = root.joinpath(*SCRIPTS)
    env = {config.WRAPPER_DIR_VAR: str(wrapper), "ROOT_DIR": str(tmp_path / "other")}
    settings = config.resolve(env, cwd="/")
    assert settings.root_dir == str(root)
    assert settings.root_source == f"the wrapper's location ({wrapper})"
    assert paths(settings)["auth"] == str(storage(root) / FILES["auth"])
    assert settings.work_dir == str(storage(root) / "rust-store-migrate")
    assert config.resolve({**env, config.WRAPPER_DIR_VAR: f"{wrapper}/"}, cwd="/").root_dir == str(root)


@pytest.mark.parametrize("wrapper", [
    "/opt/store-migrate/scripts",  # this project's own scripts/
    "/x/apps/openagents.com/service/bin",
    "/x/apps/other.com/service/scripts",
    "apps/openagents.com/service/scripts",  # relative: says nothing about where the checkout is
    "",
])
def test_a_wrapper_elsewhere_leaves_root_dir_in_charge(tmp_path: Path, wrapper: str) -> None:
    """Catches: a root derived from any wrapper directory (this project's scripts/ would give /opt)."""
    settings = config.resolve({config.WRAPPER_DIR_VAR: wrapper, "ROOT_DIR": str(tmp_path)}, cwd="/")
    assert (settings.root_dir, settings.root_source) == (str(tmp_path), "ROOT_DIR")


def test_service_root() -> None:
    """Catches: a suffix match on the last component only, or one that accepts a relative directory."""
    assert config.service_root("/srv/app/apps/openagents.com/service/scripts") == "/srv/app"
    assert config.service_root("/apps/openagents.com/service/scripts") == "/"
    assert config.service_root("/srv/app/apps/openagents.com/service/scripts/../scripts") == "/srv/app"
    assert config.service_root("/srv/app/openagents.com/service/scripts") is None
    assert config.service_root("apps/openagents.com/service/scripts") is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_without_root_dir_the_git_top_level_of_the_working_directory(tmp_path: Path) -> None:
    """Catches: a root taken from the working directory inside a checkout (stores under the subdirectory)."""
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    (tmp_path / "repo" / "deep" / "er").mkdir(parents=True)
    settings = config.resolve({}, cwd=str(tmp_path / "repo" / "deep" / "er"))
    assert settings.root_dir == os.path.realpath(tmp_path / "repo")
    assert settings.root_source.startswith("the git top level of the working directory")


def test_without_root_dir_or_git_the_working_directory(tmp_path: Path) -> None:
    """Catches: a root invented (home, /, the package's directory) when nothing names one."""
    settings = config.resolve({}, cwd=str(tmp_path))
    assert settings.root_dir == str(tmp_path)
    assert settings.root_source == "the working directory (no ROOT_DIR, no git checkout)"


def test_origin_says_where_a_default_came_from(tmp_path: Path) -> None:
    """Catches: an error or log line that says "default" without the root it was taken under."""
    settings = config.resolve({"ROOT_DIR": str(tmp_path), "AUTH_STORE_PATH": "/a.json"}, cwd="/")
    assert settings.origin("AUTH_STORE_PATH") == "AUTH_STORE_PATH"
    assert settings.origin("default") == f"default under ROOT_DIR {tmp_path}, from ROOT_DIR"


def test_no_store_at_all_is_refused_naming_every_path_and_its_origin(tmp_path: Path) -> None:
    """Catches: a wrong root quietly accepted (a run would then create three empty stores)."""
    settings = config.resolve({"ROOT_DIR": str(tmp_path), "DOMAIN_STORE_PATH": str(tmp_path / "d.json")}, cwd="/")
    with capture_logs() as logs, pytest.raises(errors.ConfigError) as raised:
        config.check_present(settings)
    message = raised.value.message
    assert message.startswith("no store file exists, refusing to create 3 new empty stores:")
    for kind in ("auth", "codex_threads"):
        assert f"[{kind}] {storage(tmp_path) / FILES[kind]} (default under ROOT_DIR {tmp_path}, from ROOT_DIR)" in message
    assert f"[domain] {tmp_path / 'd.json'} (DOMAIN_STORE_PATH)" in message
    assert raised.value.hint is not None and "--allow-missing" in raised.value.hint and "ALLOW_MISSING=1" in raised.value.hint
    assert sorted(e["store"] for e in logs if e["event"] == "store.missing") == list(KINDS)
    assert not os.path.exists(storage(tmp_path))  # checking creates nothing


def test_allow_missing_accepts_a_new_environment(tmp_path: Path) -> None:
    """Catches: --allow-missing ignored (a new environment could never be set up)."""
    settings = config.resolve({"ROOT_DIR": str(tmp_path)}, cwd="/")
    with capture_logs() as logs:
        missing = config.check_present(settings, allow_missing=True)
    assert [s.kind for s in missing] == list(KINDS)
    warnings = [e for e in logs if e["event"] == "store.missing"]
    assert [(e["store"], e["allow_missing"]) for e in warnings] == [(k, True) for k in KINDS]


def test_one_store_present_is_enough_and_each_missing_one_is_a_warning(tmp_path: Path) -> None:
    """Catches: refusing an environment where one store is simply not created yet, or missing it silently."""
    storage(tmp_path).mkdir(parents=True)
    (storage(tmp_path) / FILES["codex_threads"]).write_text("{}")
    settings = config.resolve({"ROOT_DIR": str(tmp_path)}, cwd="/")
    with capture_logs() as logs:
        missing = config.check_present(settings)
    assert [s.kind for s in missing] == ["auth", "domain"]
    assert [e["store"] for e in logs if e["event"] == "store.missing" and e["log_level"] == "warning"] == [
        "auth", "domain"]
    for kind in KINDS:
        (storage(tmp_path) / FILES[kind]).write_text("{}")
    assert config.check_present(settings) == []
