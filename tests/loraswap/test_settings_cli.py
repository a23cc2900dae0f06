"""The settings object and the CLI skeleton: overrides, and clear errors for a bad data directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loraswap.settings import Settings, SettingsError, ensure_writable_dir

LORASWAP = [sys.executable, "-m", "loraswap"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*LORASWAP, *args], capture_output=True, text=True, env=full_env, timeout=120)


def test_env_then_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LORASWAP_HOME", str(tmp_path / "from-env"))
    monkeypatch.setenv("LORASWAP_MAX_LORAS", "3")
    settings = Settings.from_env()
    assert settings.home == tmp_path / "from-env"
    assert settings.max_loras == 3
    assert settings.base_model_dir == tmp_path / "from-env" / "base"
    assert settings.db_path.parent == settings.home
    flagged = Settings.from_env(home=str(tmp_path / "flag"), max_loras=None)
    assert flagged.home == tmp_path / "flag"
    assert flagged.max_loras == 3  # a None override leaves the environment's value


def test_bad_integer_in_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORASWAP_PORT", "eighty")
    with pytest.raises(SettingsError, match="LORASWAP_PORT='eighty'"):
        Settings.from_env()


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    with pytest.raises(SettingsError, match="not a directory"):
        ensure_writable_dir(target)


def test_cli_version_and_help() -> None:
    out = run_cli("version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("loraswap 0.")
    assert "transformers" in out.stdout
    helped = run_cli("--help")
    assert helped.returncode == 0
    assert "base" in helped.stdout


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_cli_bad_data_directory_gives_one_line_naming_the_path(tmp_path: Path, kind: str) -> None:
    if kind == "file":
        home = tmp_path / "home-is-a-file"
        home.write_text("not a directory")
    else:
        # Root ignores permission bits, so use a place nobody can create files in.
        home = Path("/proc/loraswap-home")
    out = run_cli("--home", str(home), "base", "build")
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert str(home) in lines[0]
    assert lines[0].startswith("error:")
    # The environment variable is refused the same way.
    via_env = run_cli("base", "build", env={"LORASWAP_HOME": str(home)})
    assert via_env.returncode != 0 and str(home) in via_env.stderr


@pytest.mark.parametrize(("name", "raw", "words"), [
    ("MAX_LORAS", "2.5", "is not an integer"),
    ("KV_CACHE_GIB", "lots", "is not a number"),
    ("CPU_BASE_GUARD", "maybe", "is not a boolean"),
    ("PORT", "70000", "less than or equal to 65535"),
    ("LOG_LEVEL", "loud", "'critical', 'error', 'warning', 'info' or 'debug'"),
])
def test_every_kind_of_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                                    raw: str, words: str) -> None:
    monkeypatch.setenv(f"LORASWAP_{name}", raw)
    with pytest.raises(SettingsError) as info:
        Settings.from_env()
    assert f"LORASWAP_{name}={raw!r}" in str(info.value)
    assert words in str(info.value)


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORASWAP_BASE_MODEL", "")
    monkeypatch.setenv("LORASWAP_PORT", "")
    settings = Settings.from_env()
    assert settings.uses_embedded_base and settings.port == 8000


def test_replace_validates_and_does_not_reread_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings.from_env(home=str(tmp_path), base_model="~/models/llama")
    assert settings.base_model == Path.home() / "models" / "llama"
    assert settings.model_id == "llama" and not settings.uses_embedded_base
    monkeypatch.setenv("LORASWAP_MAX_LORAS", "7")  # read by from_env, not by replace
    changed = settings.replace(port="9000", base_model_name="bot")
    assert (changed.port, changed.model_id, changed.max_loras) == (9000, "bot", None)  # None: auto
    assert settings.port == 8000  # frozen: replace made a copy
    with pytest.raises(SettingsError, match="port='x' is not an integer"):
        settings.replace(port="x")
    with pytest.raises(TypeError, match="no_such_setting"):
        Settings.from_env(no_such_setting=1)


def test_to_env_reproduces_the_settings_in_a_child(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("LORASWAP_BASE_MODEL", str(tmp_path / "inherited"))
    settings = Settings.from_env(home=str(tmp_path), max_loras=3, cpu_base_guard=False,
                                 kv_cache_gib=2.5).replace(base_model=None)
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    # "" for an unset optional setting: the inherited base model does not leak through
    assert Settings.from_env() == settings


def test_describe_lists_every_setting_and_the_derived_base_dir(tmp_path: Path) -> None:
    settings = Settings.from_env(home=str(tmp_path))
    names = [line.split()[0] for line in settings.describe().splitlines()]
    assert names == [*Settings.model_fields, "base_model_dir"]
    assert f"base_model_dir {tmp_path / 'base'}" in " ".join(settings.describe().split())
