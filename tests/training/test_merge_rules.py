"""The merge rules, each refused by name before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.merge import MergeRefused, MergeSpec, ParentInfo, check_merge, spec_hash

BASE = "sha256:base"


def _parent(ref: str, rank: int = 8, base: str = BASE, sha: str = "aa") -> ParentInfo:
    return ParentInfo(ref, Path("/nowhere"), rank, base, {"adapter_model.safetensors": sha})


def _check(spec: MergeSpec, parents, **kw) -> int:
    args = dict(base_fingerprint=BASE, max_parents=4, max_rank=64)
    return check_merge(spec, parents, **{**args, **kw})


def test_the_result_rank_follows_the_method() -> None:
    two = [_parent("a@1"), _parent("b@1")]
    assert _check(MergeSpec((("a@1", 1.0), ("b@1", 1.0)), "linear"), two) == 8
    assert _check(MergeSpec((("a@1", 1.0), ("b@1", 1.0)), "cat"), two) == 16
    assert _check(MergeSpec((("a@1", 1.0), ("b@1", 1.0)), "ties", density=0.5), two) == 8
    mixed = [_parent("a@1", 8), _parent("b@1", 16)]
    assert _check(MergeSpec((("a@1", 1.0), ("b@1", 1.0)), "svd"), mixed) == 16


@pytest.mark.parametrize(("spec", "parents", "kw", "rule"), [
    (MergeSpec(()), [], {}, "no-parents"),
    (MergeSpec((("a@1", 1.0), ("b@1", 1.0))), [_parent("a@1"), _parent("b@1")],
     {"max_parents": 1}, "too-many-parents"),
    (MergeSpec((("a@1", 1.0), ("a@1", 1.0))), [_parent("a@1"), _parent("a@1")], {},
     "duplicate-parent"),
    (MergeSpec((("a@1", -1.0),)), [_parent("a@1")], {}, "weight"),
    (MergeSpec((("a@1", float("nan")),)), [_parent("a@1")], {}, "weight"),
    (MergeSpec((("a@1", 0.0),)), [_parent("a@1")], {}, "weight"),
    (MergeSpec((("a@1", 1.0),), "avg"), [_parent("a@1")], {}, "method"),
    (MergeSpec((("a@1", 1.0),), "ties"), [_parent("a@1")], {}, "density"),
    (MergeSpec((("a@1", 1.0),), "linear", density=0.5), [_parent("a@1")], {}, "density"),
    (MergeSpec((("a@1", 1.0), ("b@1", 1.0))), [_parent("a@1"), _parent("b@1", base="other")],
     {}, "base-mismatch"),
    (MergeSpec((("a@1", 1.0), ("b@1", 1.0))), [_parent("a@1", 8), _parent("b@1", 16)], {},
     "rank-mismatch"),
    (MergeSpec((("a@1", 1.0), ("b@1", 1.0)), "cat"), [_parent("a@1", 32), _parent("b@1", 64)],
     {}, "rank-limit"),
    (MergeSpec((("a@1", 1.0), ("b@1", 1.0)), "cat"), [_parent("a@1", 8), _parent("b@1", 16)],
     {}, "rank-unsupported"),
])
def test_each_rule_is_refused_by_name(spec, parents, kw, rule) -> None:
    with pytest.raises(MergeRefused) as refused:
        _check(spec, parents, **kw)
    assert refused.value.rule == rule


def test_the_content_hash_names_what_is_merged_not_what_it_is_called() -> None:
    spec = MergeSpec((("a@1", 0.5), ("b@1", 0.5)))
    same = spec_hash(spec, [_parent("a@1", sha="x"), _parent("b@1", sha="y")])
    renamed = spec_hash(MergeSpec((("c@3", 0.5), ("d@1", 0.5))),
                        [_parent("c@3", sha="x"), _parent("d@1", sha="y")])
    other_weight = spec_hash(MergeSpec((("a@1", 0.6), ("b@1", 0.4))),
                             [_parent("a@1", sha="x"), _parent("b@1", sha="y")])
    assert same == renamed != other_weight
