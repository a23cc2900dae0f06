"""Click options generated from the settings declaration, so a flag cannot drift from its setting.

Every option defaults to None: a flag left out leaves the environment's value (or the
declared default) in force, which `with_flags` relies on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from loraswap.settings import Settings, SettingSpec, specs

__all__ = ["setting_options", "with_flags"]

F = TypeVar("F", bound=Callable[..., Any])


def _click_type(spec: SettingSpec) -> Any:
    if spec.choices:
        return click.Choice(spec.choices)
    if spec.annotation is Path:
        return click.Path(path_type=Path)
    if spec.annotation in (int, float, str):
        return spec.annotation
    raise TypeError(f"setting {spec.name}: no click type for {spec.annotation!r}")


def _option(spec: SettingSpec) -> Callable[[F], F]:
    shown = spec.shown_default.replace("`", "")
    text = f"{spec.help} [env: {spec.env}; default: {shown}]"
    if spec.is_flag:
        return click.option(spec.flag, spec.name, default=None, help=text)
    return click.option(spec.flag, spec.name, type=_click_type(spec), default=None, help=text)


def setting_options(scope: str) -> Callable[[F], F]:
    """Decorate a command with one option per setting of `scope`, in declaration order."""
    options = [_option(spec) for spec in specs(scope)]

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def with_flags(settings: Settings, flags: Mapping[str, object]) -> Settings:
    """`settings` with the flags that were given (not None) applied on top."""
    given = {k: v for k, v in flags.items() if v is not None}
    return settings.replace(**given) if given else settings
