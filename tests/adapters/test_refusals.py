"""Every refusal names the adapter, the rule and the offending value, and changes nothing."""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters import AdapterRejected, Registry


def _edit_config(path: Path, **changes: object) -> Path:
    config = json.loads((path / "adapter_config.json").read_text())
    config.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


def _tar(path: Path, adapter: Path, extra: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(adapter.iterdir()):
            tar.add(f, arcname=f"adapter/{f.name}")
        extra(tar)
    return path


def _dotdot(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("adapter/../../evil.txt")
    info.size = 4
    tar.addfile(info, io.BytesIO(b"evil"))


def _symlink(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("adapter/README.md")
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    tar.addfile(info)


def _hardlink(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("adapter/copy.json")
    info.type = tarfile.LNKTYPE
    info.linkname = "/etc/shadow"
    tar.addfile(info)


def _fifo(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("adapter/pipe")
    info.type = tarfile.FIFOTYPE
    tar.addfile(info)


def _absolute(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("/tmp/evil.txt")
    info.size = 4
    tar.addfile(info, io.BytesIO(b"evil"))


def _zip_symlink(path: Path, adapter: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(adapter.iterdir()):
            zf.write(f, arcname=f.name)
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    return path


def _truncate(path: Path) -> Path:
    weights = path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    return path


def _rename_tensor(path: Path, old: str, new: str) -> Path:
    weights = path / "adapter_model.safetensors"
    raw = weights.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header = {(new if k == old else k): v for k, v in header.items()}
    encoded = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + n :])
    return path


Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"

# case id -> (build the source from (make_adapter, other_base_dir, twin_base_dir, tmp_path),
#             expected rule, a string the message must contain)
CASES: dict[str, tuple[Callable, str, str]] = {
    "different-base-shapes": (lambda mk, other, twin, tmp: mk(other), "shape", "expected [8, 512]"),
    "rank-above-max": (lambda mk, o, t, tmp: mk(r=128), "rank-max", "maximum 64"),
    "rank-vllm-refuses": (lambda mk, o, t, tmp: mk(r=4), "rank-unsupported", "rank r 4"),
    "dora": (lambda mk, o, t, tmp: mk(use_dora=True), "dora", "DoRA"),
    "lm-head-modules-to-save": (
        lambda mk, o, t, tmp: mk(modules_to_save=["lm_head"]), "modules-to-save", "lm_head"),
    "no-adapter-config": (
        lambda mk, o, t, tmp: (lambda p: ((p / "adapter_config.json").unlink(), p)[1])(mk()),
        "config-missing", "adapter_config.json"),
    "truncated-safetensors": (lambda mk, o, t, tmp: _truncate(mk()), "weights-invalid", "truncated"),
    "archive-dotdot": (
        lambda mk, o, t, tmp: _tar(tmp / "a.tar.gz", mk(), _dotdot), "archive-path", "../../evil.txt"),
    "archive-symlink": (
        lambda mk, o, t, tmp: _tar(tmp / "a.tar.gz", mk(), _symlink), "archive-link", "/etc/passwd"),
    "target-base-lacks": (
        lambda mk, o, t, tmp: _edit_config(mk(), target_modules=["q_proj", "rotary_proj"]),
        "target-missing", "rotary_proj"),
    # Beyond the acceptance list:
    "archive-hardlink": (
        lambda mk, o, t, tmp: _tar(tmp / "a.tgz", mk(), _hardlink), "archive-link", "copy.json"),
    "archive-fifo": (
        lambda mk, o, t, tmp: _tar(tmp / "a.tgz", mk(), _fifo), "archive-member-type", "pipe"),
    "archive-absolute": (
        lambda mk, o, t, tmp: _tar(tmp / "a.tgz", mk(), _absolute), "archive-path", "/tmp/evil.txt"),
    "zip-symlink": (lambda mk, o, t, tmp: _zip_symlink(tmp / "a.zip", mk()), "archive-link", "link"),
    "pickled-bin": (
        lambda mk, o, t, tmp: (lambda p: ((p / "adapter_model.bin").write_bytes(b"\x80"), p)[1])(mk()),
        "weights-pickled", "adapter_model.bin"),
    "no-weights": (
        lambda mk, o, t, tmp: (lambda p: ((p / "adapter_model.safetensors").unlink(), p)[1])(mk()),
        "weights-missing", "adapter_model.safetensors"),
    "not-lora": (lambda mk, o, t, tmp: _edit_config(mk(), peft_type="IA3"), "peft-type", "IA3"),
    "config-not-json": (
        lambda mk, o, t, tmp: (lambda p: ((p / "adapter_config.json").write_text("{r: 8"), p)[1])(mk()),
        "config-invalid", "not valid JSON"),
    "rank-config-disagrees": (lambda mk, o, t, tmp: _edit_config(mk(), r=16), "rank-mismatch", "rank 16"),
    "tensor-for-missing-module": (
        lambda mk, o, t, tmp: _rename_tensor(
            mk(), Q_A, "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"),
        "tensor-module", "layers.7"),
    "tensor-not-lora": (
        lambda mk, o, t, tmp: _rename_tensor(mk(), Q_A, "model.layers.0.weird"), "tensor-name", "weird"),
    "lora-bias": (lambda mk, o, t, tmp: _edit_config(mk(), lora_bias=True), "unsupported-feature", "lora_bias"),
    "pissa-init": (
        lambda mk, o, t, tmp: _edit_config(mk(), init_lora_weights="pissa"), "unsupported-feature", "pissa"),
    "layers-outside-transform": (
        lambda mk, o, t, tmp: _edit_config(mk(), layers_to_transform=[1]), "layers", "layers.0"),
    "different-base-same-shapes": (
        lambda mk, o, twin, tmp: mk(twin), "base-mismatch", "a different base model"),
    "not-an-archive": (
        lambda mk, o, t, tmp: (lambda p: (p.write_text("x"), p)[1])(tmp / "a.txt"), "source", "a.txt"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_reason_and_nothing_changes(
    case: str, registry: Registry, make_adapter: Callable[..., Path], other_base_dir: Path,
    twin_base_dir: Path, tmp_path: Path, snapshot: Callable,
) -> None:
    registry.add(make_adapter(), "bot")  # a populated registry: rows and store files exist
    build, rule, needle = CASES[case]
    source = build(make_adapter, other_base_dir, twin_base_dir, tmp_path)
    before = snapshot(registry)
    with pytest.raises(AdapterRejected) as caught:
        registry.add(source, "bot")
    err = caught.value
    assert err.rule == rule, str(err)
    assert err.adapter == "bot"
    message = str(err)
    assert message.startswith("adapter 'bot' refused [" + rule + "]")
    assert needle in message
    assert snapshot(registry) == before
    assert [v.ref for v in registry.list()] == ["bot@1"]
    assert not any((registry.store_dir / ".staging").iterdir())


def test_force_base_overrides_identity_but_never_shapes(
    registry: Registry, make_adapter: Callable[..., Path], other_base_dir: Path,
    twin_base_dir: Path,
) -> None:
    forced = registry.add(make_adapter(twin_base_dir), "twin", force_base=True)
    assert forced.base_match == "forced"
    with pytest.raises(AdapterRejected) as caught:
        registry.add(make_adapter(other_base_dir), "other", force_base=True)
    assert caught.value.rule == "shape"


def test_recorded_base_fingerprint_must_match(
    registry: Registry, make_adapter: Callable[..., Path]
) -> None:
    with pytest.raises(AdapterRejected) as caught:
        registry.add(make_adapter(), "a", lineage={"base_fingerprint": "sha256:" + "0" * 64})
    assert caught.value.rule == "base-fingerprint"
    good = registry.add(make_adapter(), "a", lineage={"base_fingerprint": registry.base_fingerprint()})
    assert good.base_match == "fingerprint"


def test_archive_limits(home: Path, base_dir: Path, make_adapter: Callable[..., Path], tmp_path: Path) -> None:
    from adapters import ArchiveLimits

    reg = Registry(home / "db", home / "store", base_dir,
                   archive_limits=ArchiveLimits(max_members=10, max_member_bytes=100_000,
                                                max_total_bytes=10**9))
    archive = _tar(tmp_path / "big.tar.gz", make_adapter(), lambda tar: None)
    with pytest.raises(AdapterRejected, match="over the 100000-byte limit") as caught:
        reg.add(archive, "big")
    assert caught.value.rule == "archive-limit"
    many = _tar(tmp_path / "many.tar.gz", make_adapter(), lambda tar: [
        tar.addfile(tarfile.TarInfo(f"adapter/d{i}"), io.BytesIO(b"")) for i in range(12)])
    reg2 = Registry(home / "db", home / "store", base_dir,
                    archive_limits=ArchiveLimits(max_members=10))
    with pytest.raises(AdapterRejected, match="more than 10 members"):
        reg2.add(many, "many")
    reg3 = Registry(home / "db", home / "store", base_dir,
                    archive_limits=ArchiveLimits(max_total_bytes=200_000))
    with pytest.raises(AdapterRejected, match="over the 200000-byte limit"):
        reg3.add(archive, "big")
    assert reg.list() == []
    assert os.listdir(reg.store_dir) == [".staging"]
    assert reg3.add(make_adapter(), "big").ref == "big@1"  # a folder is not an archive
    for r in (reg, reg2, reg3):
        r.close()
