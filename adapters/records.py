"""What the registry hands out: immutable descriptions of adapter versions and problems."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["AdapterVersion", "VerifyProblem"]


@dataclass(frozen=True)
class AdapterVersion:
    id: int  # never reused: the server passes it to vLLM as lora_int_id
    name: str
    version: int
    path: Path  # the version's directory in the store
    status: str  # "active" | "archived"
    rank: int
    alpha: float
    target_modules: list[str]
    size_bytes: int
    files: dict[str, str]  # file name -> sha256
    base_fingerprint: str
    base_name: str  # what the adapter itself says it was trained on ("" if nothing)
    source_kind: str  # "trained" | "imported"
    description: str
    tags: list[str]
    metrics: dict
    lineage: dict
    created_at: str  # ISO-8601 UTC
    # Additions to the contract:
    base_match: str = ""  # how the base was matched: fingerprint|path|quantized|name|hub|shapes|forced
    source: str = ""  # where it was registered from
    archived_at: str | None = None
    peft_config: dict = field(default_factory=dict, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def __hash__(self) -> int:  # the generated hash would trip over the list/dict fields
        return hash((self.id, self.status))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["ref"] = self.ref
        return d


@dataclass(frozen=True)
class VerifyProblem:
    ref: str
    file: str
    expected: str
    actual: str | None  # None: the file is missing

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.actual is None:
            return f"{self.ref}: {self.file} is missing"
        return f"{self.ref}: {self.file} sha256 {self.actual} != recorded {self.expected}"
