"""An engine replica's copy of a version: read in place, or fetched and checked first."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from adapters.errors import AdapterTampered
from adapters.records import AdapterVersion
from adapters.replica_files import ReplicaFiles

FILES = {"adapter_config.json": b'{"r": 8}', "adapter_model.safetensors": b"\x00weights\x01"}


def _version(path: Path) -> AdapterVersion:
    return AdapterVersion(
        id=7, name="support", version=3, path=path, status="active", rank=8, alpha=16,
        target_modules=["q_proj"], size_bytes=20,
        files={n: hashlib.sha256(b).hexdigest() for n, b in FILES.items()},
        base_fingerprint="x", base_name="", source_kind="imported", description="", tags=[],
        metrics={}, lineage={}, created_at="2026-12-06T00:00:00Z")


def test_a_node_with_the_store_reads_the_files_where_the_registry_put_them(tmp_path):
    store = tmp_path / "store" / "support-3"
    store.mkdir(parents=True)
    for name, blob in FILES.items():
        (store / name).write_bytes(blob)
    files = ReplicaFiles(tmp_path / "cache")
    v = _version(store)
    assert files.local(v).path == store
    files.verify(v, fetch=lambda _: pytest.fail("nothing to fetch"))
    assert files.fetched == 0


def test_a_node_without_them_fetches_checks_and_caches_once(tmp_path):
    v = _version(tmp_path / "elsewhere" / "support-3")  # not on this node
    files = ReplicaFiles(tmp_path / "cache")
    calls = []

    def fetch(version):
        calls.append(version.ref)
        return dict(FILES)

    files.verify(v, fetch)
    files.verify(v, fetch)
    local = files.local(v).path
    assert calls == ["support@3"] and files.fetched == 1
    assert local.parent == tmp_path / "cache"
    assert {p.name: p.read_bytes() for p in local.iterdir()} == FILES


def test_fetched_bytes_that_do_not_match_are_refused_and_never_written(tmp_path):
    v = _version(tmp_path / "elsewhere" / "support-3")
    files = ReplicaFiles(tmp_path / "cache")
    bad = dict(FILES, **{"adapter_model.safetensors": b"\x00tampered"})
    with pytest.raises(AdapterTampered) as caught:
        files.verify(v, lambda _: bad)
    assert "adapter_model.safetensors" in str(caught.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_cached_copy_changed_on_disk_is_refused_at_the_next_load(tmp_path):
    v = _version(tmp_path / "elsewhere" / "support-3")
    files = ReplicaFiles(tmp_path / "cache")
    files.verify(v, lambda _: dict(FILES))
    (files.local(v).path / "adapter_model.safetensors").write_bytes(b"\x00swapped")
    with pytest.raises(AdapterTampered):
        files.verify(v, lambda _: dict(FILES))


def test_without_a_control_plane_missing_files_are_refused(tmp_path):
    v = _version(tmp_path / "elsewhere" / "support-3")
    with pytest.raises(AdapterTampered):
        ReplicaFiles(None).verify(v)
