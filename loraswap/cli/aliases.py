"""`loraswap aliases`: what an alias serves outside experiments, its routing rules, history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from loraswap.cli.common import (
    pass_settings,
    print_json,
    print_table,
    router_errors,
    router_session,
)
from loraswap.settings import Settings

__all__ = ["command"]


_errors = router_errors


def _show(alias: Any) -> None:
    click.echo(f"{alias.name} -> {alias.served()}  (revision {alias.revision})")
    if alias.system_prompt:
        click.echo(f"  system prompt: {alias.system_prompt}")
    for rule in alias.rules:
        click.echo(f"  rule {rule.name}: {json.dumps(dict(rule.when))} -> {rule.target}"
                   + ("+prompt" if rule.system_prompt else ""))


@click.group("aliases")
def command() -> None:
    """Aliases: a public model name pointing at a version, with routing rules and history."""


@command.command("set")
@click.argument("alias")
@click.argument("target")
@click.option("--system-prompt", default=None, help="Answer with this system prompt first.")
@click.option("--reason", default=None, help="Why, for the history.")
@pass_settings
@_errors
def set_(settings: Settings, alias: str, target: str, system_prompt: str | None,
         reason: str | None) -> None:
    """Point ALIAS at TARGET (name@version, name for its latest version now, or 'base')."""
    with router_session(settings) as router:
        _show(router.set_alias(alias, target, system_prompt, reason=reason))


@command.command("rules")
@click.argument("alias")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reason", default=None, help="Why, for the history.")
@pass_settings
@_errors
def rules(settings: Settings, alias: str, file: Path, reason: str | None) -> None:
    """Replace ALIAS's routing rules with the JSON list in FILE ([] removes them)."""
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{file} is not JSON: {exc}", param_hint="FILE") from None
    with router_session(settings) as router:
        _show(router.set_rules(alias, raw, reason=reason))


@command.command("rollback")
@click.argument("alias")
@pass_settings
@_errors
def rollback(settings: Settings, alias: str) -> None:
    """Put ALIAS back to its previous pointer and rules (as a new revision)."""
    with router_session(settings) as router:
        _show(router.rollback_alias(alias))


@command.command("delete")
@click.argument("alias")
@pass_settings
@_errors
def delete(settings: Settings, alias: str) -> None:
    """Delete ALIAS (refused while an experiment runs on it); its history stays."""
    with router_session(settings) as router:
        router.delete_alias(alias)
    click.echo(f"deleted alias {alias}")


@command.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@_errors
def list_(settings: Settings, as_json: bool) -> None:
    """List aliases."""
    with router_session(settings, with_registry=False) as router:
        found = router.list_aliases()
    if as_json:
        print_json([a.as_dict() for a in found])
        return
    print_table(["alias", "serves", "rules", "revision", "updated"],
                [(a.name, a.served(), len(a.rules), a.revision, a.as_dict()["updated_at"])
                 for a in found])


@command.command("show")
@click.argument("alias")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@_errors
def show(settings: Settings, alias: str, as_json: bool) -> None:
    """Show ALIAS: its pointer and rules."""
    with router_session(settings, with_registry=False) as router:
        found = router.get_alias(alias)
    print_json(found.as_dict()) if as_json else _show(found)


@command.command("history")
@click.argument("alias")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@_errors
def history(settings: Settings, alias: str, as_json: bool) -> None:
    """Every change to ALIAS: when, who (API key id), from -> to, and why."""
    with router_session(settings, with_registry=False) as router:
        rows = router.alias_history(alias)
    if as_json:
        print_json(rows)
        return
    print_table(["rev", "at", "by", "kind", "from", "to", "reason"],
                [(r["revision"], r["at"], r["by"] or "-", r["kind"], r["from"] or "-",
                  r["to"] or "-", r["reason"]) for r in rows])
