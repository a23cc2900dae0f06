"""`loraswap keys`: API keys for the server (stored hashed; the plaintext is shown once)."""

from __future__ import annotations

import click

from loraswap.cli.common import fail, pass_settings, print_json, print_table
from loraswap.settings import Settings
from loraswap.wiring import open_keys

__all__ = ["command"]


@click.group("keys")
def command() -> None:
    """API keys: with none, the server binds to loopback only and needs no key."""


@command.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["inference", "analyst", "fine-tune", "admin"]),
              default="inference", show_default=True,
              help="inference: /v1; analyst: read experiments and results only; fine-tune: "
              "/v1 plus its own files and fine-tuning jobs; admin: everything.")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def create(settings: Settings, name: str, scope: str, as_json: bool) -> None:
    """Create a key and print it (once: only its hash is stored)."""
    row, token = open_keys(settings).create(name, scope)
    if as_json:
        print_json({**row, "key": token})
    else:
        click.echo(token)
        click.echo(f"created key {row['id']} ({name}, scope {scope}); store it now, it is "
                   "not shown again", err=True)


@command.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def list_keys(settings: Settings, include_revoked: bool, as_json: bool) -> None:
    """List keys (id, name, prefix, scope); never the keys themselves."""
    rows = open_keys(settings).list(include_revoked=include_revoked)
    if as_json:
        print_json(rows)
    else:
        print_table(["id", "name", "prefix", "scope", "created_at", "revoked_at"],
                    [[r["id"], r["name"], r["prefix"], r["scope"], r["created_at"],
                      r["revoked_at"]] for r in rows])


@command.command("revoke")
@click.argument("key")
@pass_settings
def revoke(settings: Settings, key: str) -> None:
    """Revoke a key by id, name or prefix."""
    n = open_keys(settings).revoke(key)
    if not n:
        fail(f"no active key matches {key!r}")
    click.echo(f"revoked {n} key(s)", err=True)
