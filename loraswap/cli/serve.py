"""`loraswap serve`: the OpenAI-compatible server (vLLM engine, registry adapters per request)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from loraswap.cli.common import fail, pass_settings
from loraswap.settings import Settings

__all__ = ["command", "register_demo_adapters"]

log = logging.getLogger("loraswap.server")


def register_demo_adapters(settings: Settings) -> list[str]:
    """Register `<home>/demo-adapters/<name>/` folders (task-world adapters) not yet registered."""
    root = settings.home / "demo-adapters"
    if not root.is_dir():
        return []
    from adapters import Registry, RegistryError

    added = []
    with Registry(settings.db_path, settings.store_dir, settings.base_model_dir,
                  max_rank=settings.max_lora_rank) as reg:
        known = {v.name for v in reg.list(include_archived=True)}
        for folder in sorted(p for p in root.iterdir() if (p / "adapter_config.json").exists()):
            if folder.name in known:
                continue
            try:
                added.append(reg.add(folder, folder.name, description="task-world demo",
                                     tags=["demo"]).ref)
            except RegistryError as exc:
                click.echo(f"warning: demo adapter {folder.name} not registered: {exc}", err=True)
    return added


@click.command("serve")
@click.option("--host", default=None, help="Bind address (loopback only unless API keys exist).")
@click.option("--port", type=int, default=None)
@click.option("--base-model", type=click.Path(path_type=Path), default=None,
              help="A Hugging Face causal LM directory (default: the embedded base).")
@click.option("--base-model-name", default=None, help="The base model's id on the API.")
@click.option("--max-loras", type=int, default=None, help="Adapters in one batch (engine slots).")
@click.option("--max-lora-rank", type=int, default=None)
@click.option("--max-cpu-loras", type=int, default=None, help="Adapters kept loaded (LRU).")
@click.option("--max-model-len", type=int, default=None)
@click.option("--max-num-seqs", type=int, default=None)
@click.option("--kv-cache-gib", type=float, default=None)
@click.option("--max-n", type=int, default=None, help="Most choices (n) per request.")
@click.option("--eager-load", is_flag=True, default=None, help="Load every active adapter at start.")
@click.option("--cpu-base-guard/--no-cpu-base-guard", default=None,
              help="CPU: serve base requests through an all-zero adapter (default on).")
@click.option("--cpu-lora-kernels/--no-cpu-lora-kernels", default=None,
              help="CPU: loraswap's LoRA matmuls instead of vLLM's torch ops (default on).")
@click.option("--shutdown-timeout", type=float, default=None,
              help="Seconds SIGTERM waits for in-flight requests.")
@click.option("--demo/--no-demo", default=True, show_default=True,
              help="Register the task-world demo adapters from <home>/demo-adapters if present.")
@click.option("--log-level", default=None)
@pass_settings
def command(settings: Settings, demo: bool, **flags: object) -> None:
    """Start the OpenAI-compatible server on one base model."""
    settings = settings.replace(**{k: v for k, v in flags.items() if v is not None})
    if flags.get("base_model") is not None:
        settings = settings.replace(base_model=Path(str(flags["base_model"])).expanduser())
    settings.ensure_home()
    if not (settings.base_model_dir / "config.json").exists():
        hint = "run `loraswap base build` first" if settings.uses_embedded_base else ""
        fail(f"no base model at {settings.base_model_dir} {hint}".strip())
    if settings.max_cpu_loras < settings.max_loras:
        fail(f"max_cpu_loras ({settings.max_cpu_loras}) must be >= max_loras "
             f"({settings.max_loras})")
    if demo:
        for ref in register_demo_adapters(settings):
            click.echo(f"registered demo adapter {ref}", err=True)
    from server.app import run

    raise SystemExit(run(settings))
