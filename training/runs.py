"""What every training method shares: the checks before any data is read, data sets and
splits, the run directory, the starting adapter (new, or continuing a version), lineage,
and registering the result only once training and evaluation both finished.

Why a run directory: a checkpoint must survive an interrupted run (so it can be
resumed) but must never look like a version. The registry only ever sees the
final adapter folder, after evaluation, in one `Registry.add` call; a failure
before that leaves the registry untouched and the checkpoint in the run directory.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from training.data import (
    DataError,
    Dataset,
    Problem,
    Row,
    fingerprint,
    load_dataset,
    overlapping,
    split_rows,
)
from training.lora import (
    LoadedBase,
    LoraOptions,
    TrainingConfigError,
    build_lora_config,
    check_qlora,
    check_servable,
    load_base_for_training,
)
from training.tracking import TRACKING_DIR

__all__ = [
    "RunDir",
    "Splits",
    "Start",
    "TrainResult",
    "check_base",
    "check_start",
    "library_versions",
    "load_splits",
    "register_run",
    "register_version",
    "start_adapter",
]


@dataclass(frozen=True)
class Start:
    """What a run starts from, checked before any data is read or a model loaded."""

    base_fingerprint: str | None
    parent: Any = None  # the registry's version to continue; None: a new adapter on the base


def check_start(registry, lora: LoraOptions, base: Path, parent: str | None, *,
                max_rank: int) -> Start:
    """Refuse unservable options, a base the registry does not serve, an unknown parent."""
    lora.check(max_rank)
    check_qlora(lora)
    base_fingerprint = check_base(registry, base)
    if parent is None:
        return Start(base_fingerprint)
    if registry is None:
        raise TrainingConfigError(f"--from {parent}: continuing a version needs the registry")
    return Start(base_fingerprint, registry.get(parent))


def start_adapter(start: Start, base: Path, lora: LoraOptions, *, device: str, seed: int
                  ) -> tuple[LoadedBase, Any]:
    """The base with a trainable adapter: the parent's weights, or a new LoRA seeded by `seed`."""
    import torch
    from peft import PeftModel, get_peft_model

    loaded = load_base_for_training(base, qlora=lora.qlora, device=device)
    torch.manual_seed(seed)  # the adapter's initial weights come from torch's generator
    if start.parent is not None:
        model = PeftModel.from_pretrained(loaded.model, str(start.parent.path), is_trainable=True)
    else:
        model = get_peft_model(loaded.model, build_lora_config(lora, loaded.model))
    check_servable(model)
    return loaded, model


@dataclass
class Splits:
    train: list[Row]
    val: list[Row]
    test: list[Row]
    reports: list[dict[str, Any]]
    how: str
    overlap: dict[str, Any] = field(default_factory=dict)

    def lineage(self) -> dict[str, Any]:
        return {
            "overlap_check": self.overlap,
            "dataset_fingerprint": fingerprint(self.train + self.val + self.test),
            "splits": {"train": len(self.train), "val": len(self.val), "test": len(self.test),
                       "how": self.how,
                       "train_fingerprint": fingerprint(self.train),
                       "val_fingerprint": fingerprint(self.val),
                       "test_fingerprint": fingerprint(self.test)},
            "cleaning": self.reports,
        }


def load_splits(data: Path, kind: str, *, val: Path | None, test: Path | None, seed: int,
                strict: bool, too_long: Callable[[Row], bool] | None,
                allow_overlap: bool = False) -> Splits:
    """Load each file; split what is missing from the training file (seeded); refuse a test
    split that asks what training asks (`check_overlap`)."""
    main = load_dataset(data, kind, strict=strict, too_long=too_long)
    extra: dict[str, Dataset] = {}
    for label, path in (("val", val), ("test", test)):
        if path is not None:
            extra[label] = load_dataset(path, kind, strict=strict, too_long=too_long, min_rows=1)
    train, val_rows, test_rows = split_rows(main.rows, seed, need_val="val" not in extra,
                                            need_test="test" not in extra)
    if "val" in extra:
        val_rows = extra["val"].rows
    if "test" in extra:
        test_rows = extra["test"].rows
    if not train:
        raise DataError([Problem(str(data), 0, "too-few-rows", "no rows left for training")])
    given = [k for k in ("val", "test") if k in extra]
    how = "given" if len(given) == 2 else (
        f"seeded split of {data.name} ({len(main.rows)} rows; "
        f"{'70/15/15' if len(main.rows) <= 10_000 else '80/10/10'} rule"
        f"{'; given: ' + ', '.join(given) if given else ''})")
    overlap = check_overlap(train, val_rows, test_rows, allow=allow_overlap)
    return Splits(train, val_rows, test_rows,
                  [main.report(), *(d.report() for d in extra.values())], how, overlap)


def check_overlap(train: list[Row], val: list[Row], test: list[Row], *, allow: bool
                  ) -> dict[str, Any]:
    """A score on test rows that training saw measures memory, not learning: refuse it
    (unless `allow`, which the lineage then records). Validation overlap is only recorded."""
    leaked = overlapping(train, test)
    record = {"normalisation": "prompt turns, NFKC, case-folded, whitespace collapsed",
              "test_rows": len(test), "test_rows_seen_in_training": len(leaked),
              "val_rows_seen_in_training": len(overlapping(train, val)),
              "allowed": allow}
    if leaked and not allow:
        problems = [Problem(row.source, row.line, "train-test-overlap",
                            "this test row's prompt is also a training prompt") for row in leaked]
        raise DataError(problems, f"{len(leaked)} of {len(test)} test rows ask what a training "
                        "row asks (after normalisation), so the test score would measure "
                        "memory; remove them, or pass --allow-overlap to train anyway")
    return record


def check_base(registry, base_dir: Path) -> str | None:
    """The training base must be the registry's base (same weights), else the version would
    be refused after training; checked first. Returns the fingerprint for the lineage."""
    if registry is None:
        return None
    from adapters.basemodel import load_base

    ours = load_base(Path(base_dir)).fingerprint()
    if ours != registry.base_fingerprint():
        raise TrainingConfigError(
            f"--base {base_dir}: not the base model the registry serves ({registry.base_model_dir}); "
            "an adapter trained on it could not be registered")
    return ours


def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("loraswap", "torch", "transformers", "peft", "trl", "bitsandbytes", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class RunDir:
    """home/runs/<name>: checkpoint + config while training; removed after registration."""

    path: Path
    config: dict[str, Any]
    resume: bool = False
    resumed: bool = field(default=False, init=False)

    def __enter__(self) -> RunDir:
        cfg_file = self.path / "config.json"
        if cfg_file.exists():
            old = json.loads(cfg_file.read_text())
            if self.resume and old != _jsonable(self.config):
                raise TrainingConfigError(
                    f"--resume: the run in {self.path} was started with a different configuration; "
                    "run again without --resume to start over")
            if self.resume:
                self.resumed = True
            else:
                _clear(self.path)
        elif self.resume:
            raise TrainingConfigError(f"--resume: no interrupted run in {self.path}")
        elif self.path.exists():
            _clear(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        cfg_file.write_text(json.dumps(_jsonable(self.config), indent=1, sort_keys=True))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            _clear(self.path)
        else:
            # Keep the checkpoint to resume from; drop anything that looks like an output.
            shutil.rmtree(self.path / "adapter", ignore_errors=True)

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"


def _clear(path: Path) -> None:
    """Everything of a run directory but its tracking logs (training/tracking.py), which
    outlive the run."""
    for child in path.iterdir():
        if child.name == TRACKING_DIR:
            continue
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


@dataclass
class TrainResult:
    name: str
    ref: str | None
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    adapter_dir: Path | None = None
    version: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ref": self.ref, "metrics": self.metrics,
                "lineage": self.lineage,
                "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None}


def register_version(registry, adapter_dir: Path, name: str, *, metrics: dict, lineage: dict,
                     description: str = "", tags: tuple[str, ...] = (),
                     output_dir: Path | None = None) -> TrainResult:
    """Hand the finished adapter to the registry (one atomic add), or copy it to output_dir."""
    metrics = _jsonable(metrics)
    lineage = _jsonable(lineage)
    if registry is None:
        if output_dir is None:
            raise ValueError("register_version: give a registry or an output_dir")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        shutil.copytree(adapter_dir, output_dir)
        (output_dir / "loraswap_training.json").write_text(
            json.dumps({"metrics": metrics, "lineage": lineage}, indent=1, sort_keys=True))
        return TrainResult(name, None, metrics, lineage, output_dir)
    version = registry.add(adapter_dir, name, description=description, tags=list(tags),
                           metrics=metrics, lineage=lineage, source_kind="trained")
    return TrainResult(name, version.ref, metrics, lineage, Path(version.path), version)


def register_run(registry, run: RunDir, model, *, name: str, method: str, start: Start,
                 loaded: LoadedBase, splits: Splits, config: dict, metrics: dict,
                 lineage: dict | None = None, description: str = "", tags: tuple[str, ...] = (),
                 output_dir: Path | None = None) -> TrainResult:
    """Save the trained adapter and register it with the lineage every method records
    (`lineage` adds the method's own entries)."""
    model.save_pretrained(str(run.adapter_dir), selected_adapters=["default"])
    recorded = {"method": method, "parent": start.parent.ref if start.parent else None,
                "base_fingerprint": start.base_fingerprint,
                **splits.lineage(), "training_config": config,
                "libraries": library_versions(), "wall_seconds": metrics["wall_seconds"],
                **(lineage or {}), "quantized_base": loaded.quantized}
    return register_version(registry, run.adapter_dir, name, metrics=metrics, lineage=recorded,
                            description=description, tags=tags, output_dir=output_dir)


def elapsed(started: float) -> float:
    return round(time.monotonic() - started, 2)
