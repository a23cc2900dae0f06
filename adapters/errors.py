"""The registry's exceptions: each message is the one line an operator reads, so it says why."""

from __future__ import annotations

__all__ = [
    "AdapterInUse",
    "AdapterNotFound",
    "AdapterRejected",
    "AdapterTampered",
    "RegistryError",
]


class RegistryError(Exception):
    """Anything the registry refuses or cannot do; `str(exc)` is a complete sentence."""


class AdapterNotFound(RegistryError):
    """No such name or version (or the reference itself is malformed)."""


class AdapterRejected(RegistryError):
    """An adapter was refused at the door; nothing was stored.

    `rule` is a stable short identifier (tests and scripts match on it), `value` the
    offending value, `adapter` the name being registered.
    """

    def __init__(self, adapter: str, rule: str, detail: str, value: object = None) -> None:
        self.adapter = adapter
        self.rule = rule
        self.detail = detail
        self.value = value
        shown = "" if value is None else f" (offending value: {value!r})"
        super().__init__(f"adapter {adapter!r} refused [{rule}]: {detail}{shown}")


class AdapterTampered(RegistryError):
    """A stored file no longer matches the sha256 recorded at registration: never serve it."""

    def __init__(self, ref: str, problems: list) -> None:
        self.ref = ref
        self.problems = problems
        parts = []
        for p in problems:
            if p.actual is None:
                parts.append(f"{p.file} is missing")
            else:
                parts.append(
                    f"{p.file} changed after registration (sha256 {p.actual[:12]}..., "
                    f"expected {p.expected[:12]}...)"
                )
        super().__init__(f"adapter {ref} refused: " + "; ".join(parts) + " (its files no "
                         "longer match the checksums recorded at registration; re-register it)")


class AdapterInUse(RegistryError):
    """A delete guard (e.g. a running experiment) still references the version."""
