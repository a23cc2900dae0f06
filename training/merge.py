"""Composing adapters: a weighted merge of registered versions into a new one, with peft's
`add_weighted_adapter` (linear, cat, TIES, DARE, SVD), and its cost to each parent's task.

Why peft's merging and not our own maths: the methods are defined by their papers' code,
which peft follows; a hand-written TIES would be ours to get wrong. What is ours: the checks
(each refusal names its rule, before anything is computed or stored), the rank the result
will have, and measuring interference, i.e. how much each parent's task loses in the merge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MERGE_METHODS", "MergeRefused", "MergeSpec", "check_merge", "merge_adapters",
           "merge_into_registry", "merged_rank", "parent_infos", "pinned", "spec_hash"]

MERGE_METHODS = ("linear", "cat", "ties", "dare_linear", "dare_ties", "svd")
DENSITY_METHODS = frozenset({"ties", "dare_linear", "dare_ties"})
SIGN_METHODS = frozenset({"ties", "dare_ties"})
SAME_RANK_METHODS = frozenset({"linear", "ties", "dare_linear", "dare_ties"})
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class MergeRefused(ValueError):
    """A merge that breaks a rule; nothing was computed or stored."""

    def __init__(self, rule: str, message: str, param: str | None = None) -> None:
        super().__init__(f"merge refused [{rule}]: {message}")
        self.rule, self.message, self.param = rule, message, param


@dataclass(frozen=True)
class MergeSpec:
    parents: tuple[tuple[str, float], ...]  # (ref, weight), in order
    method: str = "linear"
    density: float | None = None  # TIES/DARE: the share of each delta kept
    majority_sign: str = "total"  # TIES/DARE-TIES: "total" or "frequency"
    svd_rank: int | None = None  # SVD: the result's rank (default: the largest parent's)
    seed: int = 0  # DARE drops at random: seeded, so a merge is reproducible

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parents"] = [{"ref": r, "weight": w} for r, w in self.parents]
        return d


@dataclass
class ParentInfo:
    """What the checks need of a parent version (the registry's record)."""

    ref: str
    path: Path
    rank: int
    base_fingerprint: str
    files: dict[str, str] = field(default_factory=dict)
    task: str | None = None


def spec_hash(spec: MergeSpec, parents: Sequence[ParentInfo]) -> str:
    """The merge's content hash: the parents' files (by sha256), weights, method, options.
    Equal hashes are equal merges, whatever the parents are called."""
    doc = {"parents": [{"files": p.files, "weight": w} for p, (_, w) in
                       zip(parents, spec.parents, strict=True)],
           **{k: v for k, v in spec.as_dict().items() if k != "parents"}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def merged_rank(method: str, ranks: Sequence[int], svd_rank: int | None = None) -> int:
    if method == "cat":
        return sum(ranks)
    if method == "svd":
        return svd_rank or max(ranks)
    return ranks[0]


def check_merge(spec: MergeSpec, parents: Sequence[ParentInfo], *, base_fingerprint: str,
                max_parents: int, max_rank: int) -> int:
    """Every rule, before any work; the result's rank."""
    if not spec.parents:
        raise MergeRefused("no-parents", "name at least one parent (--from REF=WEIGHT)",
                           "parents")
    if len(spec.parents) > max_parents:
        raise MergeRefused("too-many-parents", f"{len(spec.parents)} parents; at most "
                           f"{max_parents} (max_merge_parents)", "parents")
    refs = [r for r, _ in spec.parents]
    if len(set(refs)) != len(refs):
        raise MergeRefused("duplicate-parent", f"a parent is named twice: {refs}", "parents")
    for ref, weight in spec.parents:
        if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise MergeRefused("weight", f"{ref}: weight {weight!r} must be a finite number "
                               ">= 0", "weights")
    if not any(w > 0 for _, w in spec.parents):
        raise MergeRefused("weight", "at least one weight must be above 0", "weights")
    if spec.method not in MERGE_METHODS:
        raise MergeRefused("method", f"unknown method {spec.method!r}; use one of "
                           f"{', '.join(MERGE_METHODS)}", "method")
    if spec.method in DENSITY_METHODS:
        if spec.density is None or not 0 < spec.density <= 1:
            raise MergeRefused("density", f"{spec.method} needs a density in (0, 1] (the share "
                               "of each delta kept)", "density")
    elif spec.density is not None:
        raise MergeRefused("density", f"{spec.method} takes no density", "density")
    if spec.majority_sign not in ("total", "frequency"):
        raise MergeRefused("majority-sign", "majority_sign must be total or frequency",
                           "majority_sign")
    for p in parents:
        if p.base_fingerprint != base_fingerprint:
            raise MergeRefused("base-mismatch", f"{p.ref} was registered for another base "
                               "model than the registry's; parents must share the base",
                               "parents")
    ranks = [p.rank for p in parents]
    if spec.method in SAME_RANK_METHODS and len(set(ranks)) != 1:
        raise MergeRefused("rank-mismatch", f"{spec.method} needs parents of one rank; got "
                           f"{dict(zip(refs, ranks, strict=True))} (cat or svd take any)",
                           "parents")
    rank = merged_rank(spec.method, ranks, spec.svd_rank)
    if rank > max_rank:
        raise MergeRefused("rank-limit", f"the result's rank would be {rank} ({spec.method}: "
                           f"{'the sum' if spec.method == 'cat' else 'from'} of the parents'), "
                           f"over max_lora_rank {max_rank}", "parents")
    if rank not in VLLM_RANKS:
        raise MergeRefused("rank-unsupported", f"the result's rank would be {rank}, which vLLM "
                           f"does not serve (one of {', '.join(map(str, VLLM_RANKS))})",
                           "parents")
    return rank


def merge_adapters(base_dir: Path, spec: MergeSpec, parents: Sequence[ParentInfo],
                   out_dir: Path, *, evaluate: int = 0) -> dict[str, Any]:
    """Write the merged adapter (peft format) to `out_dir`; with `evaluate` > 0, exact match
    of the merge and of each parent on that many held-out prompts of each parent's task-world
    task. Returns those metrics."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(spec.seed)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    names = [f"p{i}" for i in range(len(parents))]
    model = PeftModel.from_pretrained(base, str(parents[0].path), adapter_name=names[0])
    for name, p in zip(names[1:], parents[1:], strict=True):
        model.load_adapter(str(p.path), adapter_name=name)
    kw: dict[str, Any] = {"combination_type": spec.method}
    if spec.method in DENSITY_METHODS:
        kw["density"] = spec.density
    if spec.method in SIGN_METHODS:
        kw["majority_sign_method"] = spec.majority_sign
    if spec.method == "svd" and spec.svd_rank:
        kw["svd_rank"] = spec.svd_rank
    model.add_weighted_adapter(names, [float(w) for _, w in spec.parents], "merged", **kw)
    model.set_adapter("merged")
    with tempfile.TemporaryDirectory(prefix="loraswap-merge-") as tmp:
        model.save_pretrained(tmp, selected_adapters=["merged"])
        saved = Path(tmp) / "merged"  # peft writes a non-default adapter in its own folder
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in saved.iterdir():
            shutil.copy2(f, out_dir / f.name)
    metrics: dict[str, Any] = {}
    if evaluate:
        tok = AutoTokenizer.from_pretrained(str(base_dir))
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        metrics = _interference(model, tok, names, parents, evaluate, spec.seed)
    return metrics


def _interference(model, tok, names: list[str], parents: Sequence[ParentInfo], n: int,
                  seed: int) -> dict[str, Any]:
    """Exact match per parent task: the merge's, and the parent's own on the same prompts."""
    from training.data import Row
    from training.evaluation import exact_match
    from training.taskworld import TASKS, make_examples

    model.eval()
    out: dict[str, Any] = {}
    for name, p in zip(names, parents, strict=True):
        if p.task not in TASKS or f"exact_match_{p.task}" in out:
            continue
        rows = [Row("sft", {"messages": ex.messages()})
                for ex in make_examples(p.task, "test", n, seed=seed + 17)]
        model.set_adapter("merged")
        merged = exact_match(model, tok, rows, task=p.task, limit=n)
        model.set_adapter(name)
        alone = exact_match(model, tok, rows, task=p.task, limit=n)
        out[f"exact_match_{p.task}"] = round(merged["accuracy"], 4)
        out[f"parent_exact_match_{p.task}"] = round(alone["accuracy"], 4)
        out["merge_eval_prompts"] = n
    model.set_adapter("merged")
    return out


def parent_infos(registry, refs: Sequence[str]) -> list[ParentInfo]:
    """The registry's records of the parents; an unknown one is refused by name."""
    from adapters import AdapterNotFound

    found = []
    for ref in refs:
        try:
            v = registry.get(ref)
        except AdapterNotFound as exc:
            raise MergeRefused("unknown-parent", f"{ref}: {exc}", "parents") from None
        if v.status != "active":
            raise MergeRefused("unknown-parent", f"{v.ref} is {v.status}; only active versions "
                               "can be merged", "parents")
        found.append(ParentInfo(v.ref, Path(v.path), v.rank, v.base_fingerprint, dict(v.files),
                                (v.metrics or {}).get("task")))
    return found


def pinned(registry, spec: MergeSpec) -> tuple[MergeSpec, list[ParentInfo]]:
    """`spec` with each parent named by the exact version it resolves to now, and those
    versions' records."""
    parents = parent_infos(registry, [r for r, _ in spec.parents])
    refs = tuple((p.ref, w) for p, (_, w) in zip(parents, spec.parents, strict=True))
    return dataclasses.replace(spec, parents=refs), parents


def merge_into_registry(registry, name: str, spec: MergeSpec, *, max_parents: int,
                        evaluate: int = 0, description: str = "", tags: Sequence[str] = (),
                        extra_lineage: dict | None = None):
    """Check, merge, evaluate, register as the next version of `name` (one atomic add).
    Raises MergeRefused (or the registry's own refusal) with the registry unchanged."""
    spec, parents = pinned(registry, spec)
    rank = check_merge(spec, parents, base_fingerprint=registry.base_fingerprint(),
                       max_parents=max_parents, max_rank=registry.max_rank)
    with tempfile.TemporaryDirectory(prefix="loraswap-merged-") as tmp:
        out = Path(tmp) / "adapter"
        metrics = merge_adapters(registry.base_model_dir, spec, parents, out,
                                 evaluate=evaluate)
        lineage = {"method": "merge", "parent": None, "parents": [p.ref for p in parents],
                   "merge": {**spec.as_dict(), "rank": rank,
                             "content_hash": spec_hash(spec, parents)},
                   **(extra_lineage or {})}
        metrics = {"method": f"merge:{spec.method}", **metrics}
        return registry.add(out, name, description=description or
                            f"{spec.method} merge of " + " + ".join(
                                f"{w:g}*{r}" for r, w in spec.parents),
                            tags=list(tags), metrics=metrics, lineage=lineage,
                            source_kind="trained")
