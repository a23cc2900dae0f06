"""The composition root: every part is built from Settings in one place, and `loraswap serve`
hands the server exactly the settings the environment and the flags say."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from loraswap import wiring
from loraswap.cli import cli
from loraswap.settings import Settings
from server.config import ServerConfig
from server.engine import EngineConfig


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Every value off its default, so a field wired to the wrong setting shows."""
    for key in list(os.environ):
        if key.startswith("LORASWAP_"):
            monkeypatch.delenv(key)
    base = tmp_path / "my-base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return Settings.from_env(
        home=str(tmp_path / "home"), base_model=str(base), host="127.0.0.2", port=9001,
        max_loras=3, max_lora_rank=8, max_cpu_loras=5, max_model_len=256, max_num_seqs=7,
        kv_cache_gib=2.0, max_n=2, log_level="debug", eager_load=True, cpu_base_guard=False,
        cpu_lora_kernels=False, shutdown_timeout=5.0, max_upload_mib=3, reconcile_interval=0.25,
        adapter_wait_timeout=4.0, retention=True, log_all_requests=True,
        tensor_parallel_size=2, gpu_memory_utilization=0.5, dtype="bfloat16", quantization="awq",
        enable_prefix_caching=False, max_num_batched_tokens=4096, enforce_eager=True,
        engine_args='{"kv_cache_dtype": "fp8"}', tool_call_parser="llama3_json")


@pytest.mark.parametrize(("cls", "explicit"), [(ServerConfig, wiring.SERVER_EXPLICIT),
                                               (EngineConfig, wiring.ENGINE_EXPLICIT)])
def test_every_config_field_comes_from_a_setting(cls: type, explicit: set[str]) -> None:
    assert wiring.unmatched_fields(cls, explicit) == set(), (
        f"{cls.__name__} has fields no setting feeds: declare them in loraswap/settings.py "
        "(or pass them explicitly in loraswap/wiring.py)")


def test_server_and_engine_configs(settings: Settings) -> None:
    server = wiring.server_config(settings)
    for field in dataclasses.fields(ServerConfig):
        if field.name != "settings_summary":
            assert getattr(server, field.name) == getattr(settings, field.name), field.name
    assert server.model_id == "my-base" and server.db_path == settings.home / "loraswap.db"
    assert "adapter_wait_timeout" in server.settings_summary
    engine = wiring.engine_config(settings)
    assert engine.model == settings.base_model_dir
    for field in dataclasses.fields(EngineConfig):
        if field.name != "model":
            assert getattr(engine, field.name) == getattr(settings, field.name), field.name
    assert engine.engine_extra == {"kv_cache_dtype": "fp8"}


@pytest.mark.parametrize("bad", ["[1]", "{nope", '"x"'])
def test_engine_args_must_be_a_json_object(tmp_path: Path, bad: str) -> None:
    from loraswap.settings import SettingsError

    with pytest.raises(SettingsError, match="engine_args"):
        Settings.from_env(home=str(tmp_path), engine_args=bad)


def test_pass_through_engine_args_are_checked_against_vllm() -> None:
    from server.engine import check_engine_args

    assert check_engine_args({"kv_cache_dtype": "fp8", "seed": 1}) == []
    problems = check_engine_args({"kv_cache_dtyp": "fp8", "max_loras": 9})
    assert problems == ["kv_cache_dtyp: not a vLLM engine argument",
                        "max_loras: set by loraswap; use its setting"]


def test_registry_and_router_share_the_home(settings: Settings) -> None:
    with wiring.open_registry(settings) as registry:
        assert registry.db_path == settings.db_path and registry.max_rank == 8
        assert registry.store_dir == settings.store_dir
        router = wiring.open_router(settings, registry)
        try:
            assert router.registry is registry
            assert router.base_id == "my-base"
        finally:
            router.close()
    assert settings.db_path.exists()


def test_build_app_hands_the_parts_to_create_app(settings: Settings,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import server.app
    import server.engine

    seen: dict = {}

    class FakeEngine:
        def __init__(self, config: EngineConfig) -> None:
            self.config = config

    def fake_create_app(config: ServerConfig, **parts: object) -> str:
        seen.update(parts, config=config)
        return "app"

    monkeypatch.setattr(server.engine, "Engine", FakeEngine)
    monkeypatch.setattr(server.app, "create_app", fake_create_app)
    assert wiring.build_app(settings) == "app"
    try:
        assert seen["config"] == wiring.server_config(settings)
        assert seen["engine"].config == wiring.engine_config(settings)
        assert seen["registry"].db_path == settings.db_path
        assert seen["router"].registry is seen["registry"]
        assert seen["keys"] is not None
    finally:
        seen["router"].close()
        seen["registry"].close()


def _serve(monkeypatch: pytest.MonkeyPatch, *args: str, **env: str):
    captured: list[Settings] = []

    def fake_serve(s: Settings) -> int:
        captured.append(s)
        return 0

    monkeypatch.setattr(wiring, "serve", fake_serve)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = CliRunner().invoke(cli, ["serve", "--no-demo", *args])
    return out, captured


def test_serve_applies_flags_over_the_environment(settings: Settings,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**settings.to_env(), "LORASWAP_MAX_LORAS": "2"}
    out, captured = _serve(monkeypatch, "--max-loras", "4", "--no-retention",
                           "--log-level", "warning", **env)
    assert out.exit_code == 0, out.output
    [served] = captured
    assert served == settings.replace(max_loras=4, retention=False, log_level="warning")


def test_serve_refusals_are_one_line(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                    tmp_path: Path) -> None:
    env = settings.to_env()
    out, captured = _serve(monkeypatch, "--max-cpu-loras", "2", **env)
    assert out.exit_code == 1 and not captured
    assert "max_cpu_loras (2) must be >= max_loras (3)" in out.output
    out, captured = _serve(monkeypatch, "--base-model", str(tmp_path / "nothing"), **env)
    assert out.exit_code == 1 and "no base model at" in out.output and not captured
    out, captured = _serve(monkeypatch, "--port", "eighty", **env)
    assert out.exit_code == 2 and "eighty" in out.output and not captured
