"""`loraswap serve`: the OpenAI-compatible server (vLLM engine, registry adapters per request)."""

from __future__ import annotations

import json

import click

from loraswap.cli.common import fail, pass_settings
from loraswap.cli.options import setting_options, with_flags
from loraswap.settings import SERVE, Settings

__all__ = ["command", "register_demo_adapters"]


def register_demo_adapters(settings: Settings) -> list[str]:
    """Register `<home>/demo-adapters/<name>/` folders (task-world adapters) not yet registered."""
    root = settings.home / "demo-adapters"
    if not root.is_dir():
        return []
    from adapters import RegistryError
    from loraswap.wiring import open_registry

    added = []
    with open_registry(settings) as reg:
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


def _pairs(items: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            fail(f"--engine-arg {item!r}: expected KEY=VALUE")
        try:
            value: object = json.loads(raw)
        except ValueError:
            value = raw
        out[key.strip().replace("-", "_")] = value
    return out


@click.command("serve")
@setting_options(SERVE)
@click.option("--demo/--no-demo", default=True, show_default=True,
              help="Register the task-world demo adapters from <home>/demo-adapters if present.")
@click.option("--engine-arg", "engine_arg", multiple=True, metavar="KEY=VALUE",
              help="One more vLLM engine argument (repeatable; VALUE is read as JSON when it "
              "parses, else as a string), added to --engine-args.")
@pass_settings
def command(settings: Settings, demo: bool, engine_arg: tuple[str, ...],
            **flags: object) -> None:
    """Start the OpenAI-compatible server on one base model.

    Each option overrides its environment variable (named in its help); `loraswap config`
    prints the values in force.
    """
    settings = with_flags(settings, flags)
    if engine_arg:
        settings = settings.replace(
            engine_args=json.dumps({**settings.engine_extra, **_pairs(engine_arg)}))
    if settings.engine_extra:
        from server.engine import check_engine_args

        problems = check_engine_args(settings.engine_extra)
        if problems:
            fail("engine arguments refused: " + "; ".join(problems))
    if settings.tool_call_parser:
        from server.engine_tools import known_parsers

        if settings.tool_call_parser not in known_parsers():
            fail(f"unknown tool_call_parser {settings.tool_call_parser!r}; vLLM knows: "
                 f"{', '.join(known_parsers())}")
    settings.ensure_home()
    if not (settings.base_model_dir / "config.json").exists():
        hint = "run `loraswap base build` first" if settings.uses_embedded_base else ""
        fail(f"no base model at {settings.base_model_dir} {hint}".strip())
    if settings.max_loras is not None and settings.max_cpu_loras < settings.max_loras:
        fail(f"max_cpu_loras ({settings.max_cpu_loras}) must be >= max_loras "
             f"({settings.max_loras})")
    if demo:
        for ref in register_demo_adapters(settings):
            click.echo(f"registered demo adapter {ref}", err=True)
    from loraswap.finetune_worker import WorkerSupervisor

    # Fine-tuning jobs train in the worker, not here.
    worker = WorkerSupervisor(settings).start() if settings.finetune_worker else None
    try:
        if settings.replicas is not None or settings.max_replicas is not None:
            from loraswap.scale_out import serve_on_ray

            code = serve_on_ray(settings)
        else:
            from loraswap.wiring import serve

            code = serve(settings)
    finally:
        if worker is not None:
            worker.stop()
    raise SystemExit(code)
