"""Four real processes registering the same name at once get versions 1-4, nothing lost."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters import Registry

WORKER = """
import json, sys, time
from pathlib import Path
import pytest

from adapters import Registry
db, store, base, src, go, tag = sys.argv[1:]
reg = Registry(Path(db), Path(store), Path(base))  # opening races too (WAL switch, migrations)
Path(go + "." + tag).touch()  # ready
while not Path(go).exists():
    time.sleep(0.005)
v = reg.add(Path(src), "same", description=tag)
print(json.dumps({"id": v.id, "version": v.version, "tag": tag}))
"""


@pytest.mark.slow
def test_four_processes_get_distinct_consecutive_versions(
    home: Path, base_dir: Path, make_adapter: Callable[..., Path], tmp_path: Path
) -> None:
    db, store = home / "loraswap.db", home / "store"
    sources = [make_adapter(r=r) for r in (8, 16, 8, 16)]
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db), str(store), str(base_dir), str(src), str(go),
             f"p{i}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for i, src in enumerate(sources)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"go.p{i}").exists() for i in range(4)):  # all open and waiting
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()  # release them together
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert sorted(r["version"] for r in results) == [1, 2, 3, 4]
    assert len({r["id"] for r in results}) == 4
    reg = Registry(db, store, base_dir)
    versions = reg.list()
    assert [v.ref for v in versions] == ["same@1", "same@2", "same@3", "same@4"]
    by_tag = {v.description: v for v in versions}
    for r, src in zip(results, sources, strict=True):
        v = by_tag[r["tag"]]
        assert (v.id, v.version) == (r["id"], r["version"])
        assert v.rank == (8 if src == sources[0] or src == sources[2] else 16)
        assert sorted(p.name for p in v.path.iterdir()) == sorted(v.files)
    assert reg.verify() == []
    assert len([p for p in (store / "same").iterdir()]) == 4
    assert not any((store / ".staging").iterdir())
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM adapter_files").fetchone()[0] == 8
    assert con.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == 1
    reg.close()
