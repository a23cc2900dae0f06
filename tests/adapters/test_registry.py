"""Registering, resolving, archiving, deleting: the registry's life cycle."""

from __future__ import annotations

import json
import sqlite3
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters import (
    AdapterInUse,
    AdapterNotFound,
    AdapterRejected,
    AdapterVersion,
    Registry,
    RegistryError,
)
from adapters.store import sha256_file

LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_add_stores_a_checked_immutable_copy(
    registry: Registry, make_adapter: Callable[..., Path], base_dir: Path
) -> None:
    src = make_adapter()
    v = registry.add(src, "support", description="first try", tags=["cs", "cs", "exp"],
                     metrics={"accuracy": 0.97})
    assert (v.name, v.version, v.ref, v.status) == ("support", 1, "support@1", "active")
    assert v.id > 0
    assert (v.rank, v.alpha, v.target_modules) == (8, 8.0, LINEAR)
    assert v.tags == ["cs", "exp"] and v.metrics == {"accuracy": 0.97}
    assert v.base_match == "path" and v.base_name == str(base_dir)
    assert v.base_fingerprint.startswith("sha256:") and len(v.base_fingerprint) == 71
    assert v.path.is_relative_to(registry.store_dir) and v.path.name.startswith("1-")
    assert sorted(p.name for p in v.path.iterdir()) == sorted(v.files)
    for name, sha in v.files.items():
        assert sha256_file(v.path / name) == sha == sha256_file(src / name)
        assert stat.S_IMODE((v.path / name).stat().st_mode) == 0o444
    assert v.size_bytes == sum((src / f).stat().st_size for f in v.files)
    assert v.created_at.endswith("Z")
    assert registry.get("support") == v == registry.get("support@1", verify=True)
    json.dumps(v.as_dict())  # JSON-ready for the admin API and --json
    assert v.as_dict()["ref"] == "support@1"


def test_database_is_wal_and_migrated(registry: Registry) -> None:
    con = sqlite3.connect(registry.db_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    applied = [r[0] for r in con.execute(
        "SELECT name FROM _sqlite_migrations WHERE migration_set = 'loraswap.adapters'")]
    assert applied == ["m001_adapters"]
    # Opening again applies nothing twice.
    Registry(registry.db_path, registry.store_dir, registry.base_model_dir).close()
    assert con.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == 1


def test_versions_latest_active_archive_and_delete(
    registry: Registry, make_adapter: Callable[..., Path]
) -> None:
    v1 = registry.add(make_adapter(), "bot")
    v2 = registry.add(make_adapter(r=16), "bot", lineage={"parent": "bot@1"})
    other = registry.add(make_adapter(), "other")
    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    assert len({v1.id, v2.id, other.id}) == 3
    assert registry.get("bot").ref == "bot@2" and registry.get("bot").rank == 16
    assert registry.get("bot@2").lineage == {"parent": "bot@1"}

    archived = registry.archive("bot@2")
    assert archived.status == "archived" and archived.archived_at
    assert registry.get("bot").ref == "bot@1"  # bare name: latest *active*
    assert registry.get("bot@2").status == "archived"  # explicit: still resolvable
    assert [v.ref for v in registry.list()] == ["bot@1", "other@1"]
    assert [v.ref for v in registry.list(include_archived=True)] == ["bot@1", "bot@2", "other@1"]
    registry.archive("bot@1")
    with pytest.raises(AdapterNotFound, match="no active version.*bot@2, bot@1"):
        registry.get("bot")

    registry.delete("bot@2")
    assert not v2.path.exists()
    with pytest.raises(AdapterNotFound, match="bot@2 was deleted"):
        registry.get("bot@2")
    v3 = registry.add(make_adapter(), "bot")
    assert v3.version == 3 and v3.id > other.id  # neither versions nor ids are reused
    with pytest.raises(AdapterNotFound, match="no adapter named 'nope'"):
        registry.get("nope")
    with pytest.raises(AdapterNotFound, match="no adapter bot@9"):
        registry.get("bot@9")


def test_delete_guard_refuses_while_referenced(
    registry: Registry, make_adapter: Callable[..., Path]
) -> None:
    v = registry.add(make_adapter(), "bot")
    seen: list[AdapterVersion] = []

    def guard(version: AdapterVersion) -> str | None:
        seen.append(version)
        return "experiment 'exp1' uses it" if version.ref == "bot@1" else None

    registry.add_delete_guard(guard)
    with pytest.raises(AdapterInUse, match="cannot delete bot@1: experiment 'exp1' uses it"):
        registry.delete("bot")
    assert seen == [v] and registry.get("bot@1", verify=True) == v
    registry.add(make_adapter(), "bot")
    registry.delete("bot@2")
    assert [x.ref for x in registry.list()] == ["bot@1"]


def test_update_metrics_merges(registry: Registry, make_adapter: Callable[..., Path]) -> None:
    registry.add(make_adapter(), "bot", metrics={"train_loss": 0.1})
    updated = registry.update_metrics("bot@1", {"accuracy": 0.9})
    assert updated.metrics == {"train_loss": 0.1, "accuracy": 0.9}
    assert registry.get("bot").metrics == updated.metrics
    with pytest.raises(RegistryError, match="JSON-serializable"):
        registry.update_metrics("bot", {"x": object()})


def test_trained_source_and_lineage_columns(
    registry: Registry, make_adapter: Callable[..., Path]
) -> None:
    lineage = {"parent": None, "dataset_fingerprint": "sha256:abc",
               "training_config": {"lr": 2e-4, "epochs": 1}}
    v = registry.add(make_adapter(), "t", source_kind="trained", lineage=lineage)
    assert v.source_kind == "trained" and v.lineage == lineage
    row = sqlite3.connect(registry.db_path).execute(
        "SELECT dataset_fingerprint, source_kind FROM adapters WHERE id = ?", [v.id]).fetchone()
    assert row == ("sha256:abc", "trained")
    for kwargs, rule in [({"source_kind": "downloaded"}, "source-kind"),
                         ({"tags": "oops"}, "tags"),
                         ({"lineage": {"parent": "not a ref"}}, "lineage"),
                         ({"metrics": {"x": {1, 2}}}, "metrics")]:
        with pytest.raises(AdapterRejected) as caught:
            registry.add(make_adapter(), "t", **kwargs)
        assert caught.value.rule == rule
    with pytest.raises(AdapterRejected, match="invalid adapter name") as caught:
        registry.add(make_adapter(), "bad/name")
    assert caught.value.rule == "name"


@pytest.mark.parametrize("kind", ["tar.gz", "tgz-flat", "zip"])
def test_archives_register(
    kind: str, registry: Registry, make_adapter: Callable[..., Path], tmp_path: Path
) -> None:
    src = make_adapter()
    if kind == "zip":
        archive = tmp_path / "a.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in src.iterdir():
                zf.write(f, arcname=f"my-adapter/{f.name}")
    else:
        archive = tmp_path / ("a.tar.gz" if kind == "tar.gz" else "a.tgz")
        with tarfile.open(archive, "w:gz") as tar:
            for f in src.iterdir():
                tar.add(f, arcname=f"my-adapter/{f.name}" if kind == "tar.gz" else f.name)
    v = registry.add(archive, "zipped")
    assert v.files["adapter_model.safetensors"] == sha256_file(src / "adapter_model.safetensors")
    assert v.source == str(archive)
    assert not any((registry.store_dir / ".staging").iterdir())


def test_adapter_without_a_known_base_is_judged_by_shapes(
    registry: Registry, make_adapter: Callable[..., Path], base_dir: Path
) -> None:
    src = make_adapter()
    config = json.loads((src / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "meta-llama/Some-Hub-Model"
    (src / "adapter_config.json").write_text(json.dumps(config))
    assert registry.add(src, "hub").base_match == "hub"
    config["base_model_name_or_path"] = "/home/someone-else/models/llama"  # another machine's path
    (src / "adapter_config.json").write_text(json.dumps(config))
    assert registry.add(src, "elsewhere").base_match == "shapes"
    config["base_model_name_or_path"] = base_dir.name  # the directory's name: counts as ours
    (src / "adapter_config.json").write_text(json.dumps(config))
    assert registry.add(src, "named").base_match == "name"


def test_same_weights_elsewhere_match_by_fingerprint(
    registry: Registry, make_adapter: Callable[..., Path], base_dir: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copied-base"
    shutil.copytree(base_dir, copy)
    src = make_adapter()
    config = json.loads((src / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(copy)
    (src / "adapter_config.json").write_text(json.dumps(config))
    assert registry.add(src, "copy").base_match == "fingerprint"


def test_missing_base_model_is_a_clear_error(home: Path, tmp_path: Path,
                                             make_adapter: Callable[..., Path]) -> None:
    reg = Registry(home / "db", home / "store", tmp_path / "no-base")
    assert reg.list() == []  # listing does not need the base
    with pytest.raises(RegistryError, match="no config.json"):
        reg.add(make_adapter(), "x")
    reg.close()


def test_versions_are_hashable_and_stale_staging_is_swept(
    registry: Registry, make_adapter: Callable[..., Path]
) -> None:
    import os

    v = registry.add(make_adapter(), "h")
    assert {v: 1}[registry.get("h")] == 1
    stale = registry.store_dir / ".staging" / "crashed-add"
    (stale / "version").mkdir(parents=True)
    old = 1_000_000_000
    os.utime(stale, (old, old))
    young = registry.store_dir / ".staging" / "in-flight"
    young.mkdir()
    Registry(registry.db_path, registry.store_dir, registry.base_model_dir).close()
    assert not stale.exists() and young.exists()
