"""Helpers every command module shares: the settings from the context, error exits, the
router as a context manager."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from loraswap.settings import Settings, SettingsError

__all__ = ["exit_on", "fail", "pass_settings", "print_json", "print_table", "ref_weight",
           "router_errors", "router_session"]

F = TypeVar("F", bound=Callable[..., Any])


def ref_weight(text: str, number: Callable[[str], Any], example: str) -> tuple[str, Any]:
    """`REF=WEIGHT` (an experiment variant, a merge parent) as (ref, number(weight))."""
    ref, sep, weight = text.rpartition("=")
    if not sep or not ref:
        raise click.BadParameter(f"{text!r}: expected REF=WEIGHT, e.g. {example}")
    try:
        return ref, number(weight)
    except ValueError:
        kind = "an integer" if number is int else "a number"
        raise click.BadParameter(f"{text!r}: weight {weight!r} is not {kind}") from None


def fail(message: str, code: int = 1) -> None:
    """One line on stderr and a non-zero exit: what a script and a person both want."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def pass_settings(func: Callable[..., Any]) -> Callable[..., Any]:
    """Inject the root group's Settings, and turn SettingsError into a one-line exit."""

    @functools.wraps(func)
    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        settings = ctx.find_root().obj
        if not isinstance(settings, Settings):
            settings = Settings.from_env()
        try:
            return func(settings, *args, **kwargs)
        except SettingsError as exc:
            fail(str(exc), code=2)

    return wrapper


def exit_on(known: Callable[[BaseException], tuple[str, int] | None]) -> Callable[[F], F]:
    """Decorate a command so each failure `known` recognises is one `error:` line and the exit
    status it names; anything else (a bug) keeps its traceback."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except (Exception, KeyboardInterrupt) as exc:
                verdict = known(exc)
                if verdict is None:
                    raise
                fail(*verdict)

        return wrapper  # type: ignore[return-value]

    return decorate


def _router_known(exc: BaseException) -> tuple[str, int] | None:
    from router import RouterError

    return (exc.message, 1) if isinstance(exc, RouterError) else None


router_errors = exit_on(_router_known)  # a router refusal: one `error: ...` line, status 1


@contextmanager
def router_session(settings: Settings, *, with_registry: bool = True) -> Iterator[Any]:
    """The router on the settings' database, closed after use; with the registry (to check
    and pin refs) unless the command only reads experiments."""
    from loraswap.wiring import open_registry, open_router

    registry = open_registry(settings) if with_registry else None
    try:
        router = open_router(settings, registry)
        try:
            yield router
        finally:
            router.close()
    finally:
        if registry is not None:
            registry.close()


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=False))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain aligned table for people; scripts use --json."""
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=False)]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=False))
    click.echo(line.rstrip())
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())


__all__ += ["SettingsError"]
