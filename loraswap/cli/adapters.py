"""`loraswap adapters`: register, inspect, archive, delete and verify LoRA adapters."""

from __future__ import annotations

from pathlib import Path

import click

from adapters import BASE_MATCH_MEANINGS, AdapterVersion, RegistryError
from loraswap.cli.common import exit_on, pass_settings, print_json, print_table
from loraswap.settings import Settings
from loraswap.wiring import open_registry, open_router

__all__ = ["command"]


def _known(exc: BaseException) -> tuple[str, int] | None:
    return (str(exc), 1) if isinstance(exc, RegistryError) else None


_errors = exit_on(_known)  # every registry refusal: one `error: ...` line and exit status 1


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _show(v: AdapterVersion) -> None:
    rows = [
        ("ref", v.ref), ("id", v.id), ("status", v.status), ("rank", v.rank),
        ("alpha", f"{v.alpha:g}"), ("targets", ", ".join(v.target_modules)),
        ("size", f"{_size(v.size_bytes)} ({v.size_bytes} bytes)"),
        ("base", f"{v.base_fingerprint} (matched by {v.base_match})"),
        ("trained on", v.base_name or "-"),
        ("base match", BASE_MATCH_MEANINGS.get(v.base_match, v.base_match)),
        ("source", f"{v.source_kind}: {v.source}"),
        ("description", v.description or "-"), ("tags", ", ".join(v.tags) or "-"),
        ("created", v.created_at), ("path", v.path),
    ]
    if v.archived_at:
        rows.append(("archived", v.archived_at))
    for key, value in rows:
        click.echo(f"{key + ':':<13}{value}")
    click.echo("files:")
    for f, sha in v.files.items():
        click.echo(f"  {f:<28}sha256:{sha}")
    for title, data in (("metrics", v.metrics), ("lineage", v.lineage)):
        click.echo(f"{title}:" + ("" if data else " -"))
        for key, value in data.items():
            click.echo(f"  {key}: {value}")


@click.group("adapters")
def command() -> None:
    """The adapter registry: validated, versioned, checksummed LoRA adapters."""


@command.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", "-n", required=True, help="Adapter name; each add is its next version.")
@click.option("--description", "-d", default="", help="Free text shown by `show`.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--force-base", is_flag=True,
              help="Accept an adapter trained on a different base model (shapes still checked).")
@click.option("--json", "as_json", is_flag=True, help="Print the new version as JSON.")
@pass_settings
@_errors
def add(settings: Settings, path: Path, name: str, description: str, tags: tuple[str, ...],
        force_base: bool, as_json: bool) -> None:
    """Validate a peft LoRA folder (or a .tar.gz/.zip of one) and register it as NAME's next version."""
    with open_registry(settings) as reg:
        v = reg.add(path, name, description=description, tags=tags, force_base=force_base)
    if as_json:
        print_json(v.as_dict())
    else:
        click.echo(f"registered {v.ref} (rank {v.rank}, {len(v.target_modules)} target modules, "
                   f"{_size(v.size_bytes)}, base matched by {v.base_match})")


@command.command("list")
@click.option("--all", "include_archived", is_flag=True, help="Include archived versions.")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@_errors
def list_(settings: Settings, include_archived: bool, as_json: bool) -> None:
    """List registered versions (active ones unless --all)."""
    with open_registry(settings) as reg:
        versions = reg.list(include_archived=include_archived)
    if as_json:
        print_json([v.as_dict() for v in versions])
        return
    print_table(
        ["ref", "status", "rank", "alpha", "targets", "size", "created", "description"],
        [(v.ref, v.status, v.rank, f"{v.alpha:g}", ",".join(v.target_modules),
          _size(v.size_bytes), v.created_at, v.description) for v in versions],
    )


@command.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@_errors
def show(settings: Settings, ref: str, as_json: bool) -> None:
    """Show one version (REF is NAME@VERSION, or NAME for its latest active version)."""
    with open_registry(settings) as reg:
        v = reg.get(ref)
    if as_json:
        print_json(v.as_dict())
    else:
        _show(v)


@command.command("archive")
@click.argument("ref")
@pass_settings
@_errors
def archive(settings: Settings, ref: str) -> None:
    """Stop serving a version but keep it (and its history)."""
    with open_registry(settings) as reg:
        v = reg.archive(ref)
    click.echo(f"archived {v.ref}")


@command.command("delete")
@click.argument("ref")
@pass_settings
@_errors
def delete(settings: Settings, ref: str) -> None:
    """Delete a version's files (refused while a running or paused experiment uses it)."""
    with open_registry(settings) as reg:
        router = open_router(settings, reg)  # installs the experiments' delete guard
        try:
            v = reg.resolve(ref)
            reg.delete(v.ref)
        finally:
            router.close()
    click.echo(f"deleted {v.ref}")


@command.command("verify")
@click.argument("ref", required=False)
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@_errors
def verify(settings: Settings, ref: str | None, as_json: bool) -> None:
    """Re-hash every stored file (or one version's); exit 1 if any differs or is missing."""
    with open_registry(settings) as reg:
        checked = [reg.resolve(ref)] if ref else reg.list(include_archived=True)
        problems = reg.verify(ref)
    if as_json:
        print_json({"checked": [v.ref for v in checked],
                    "problems": [p.as_dict() for p in problems], "ok": not problems})
    else:
        for p in problems:
            click.echo(f"TAMPERED {p.describe()}")
        click.echo(f"{len(checked)} version(s) checked, {len(problems)} problem(s)")
    if problems:
        raise SystemExit(1)
