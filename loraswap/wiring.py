"""The one way the parts are built from `Settings`: server, engine, registry, router, keys.

The parts take plain values (server/ never imports loraswap), so something has to translate
the settings into their constructors; doing it here, once, keeps the CLI commands, the demo,
the benchmarks and the server from each spelling their own (slightly different) version.

`server_config` and `engine_config` fill a config dataclass field from the setting (or derived
property) of the same name; `unmatched_fields` lists the fields that no setting feeds, which a
test keeps empty, so a field added to either config is either a setting or an explicit value
here, never a silently frozen default.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from loraswap.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from adapters import Registry
    from router import Router
    from server.auth import KeyStore
    from server.config import ServerConfig
    from server.engine import EngineConfig
    from server.serving_finetune import FineTuning

__all__ = [
    "build_app",
    "engine_config",
    "open_keys",
    "open_registry",
    "open_router",
    "serve",
    "server_config",
    "unmatched_fields",
]

T = TypeVar("T")


def _from_settings(cls: type[T], settings: Settings, **explicit: Any) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {n: getattr(settings, n) for n in names if n not in explicit and hasattr(settings, n)}
    return cls(**values, **explicit)


def unmatched_fields(cls: type, explicit: set[str]) -> set[str]:
    """Fields of config dataclass `cls` that neither a setting nor `explicit` provides."""
    provided = set(Settings.model_fields) | explicit | {
        name for name, value in vars(Settings).items() if isinstance(value, property)}
    return {f.name for f in dataclasses.fields(cls)} - provided


SERVER_EXPLICIT = {"settings_summary"}
ENGINE_EXPLICIT = {"model"}


def server_config(settings: Settings) -> ServerConfig:
    from server.config import ServerConfig

    return _from_settings(ServerConfig, settings, settings_summary=settings.describe())


def engine_config(settings: Settings) -> EngineConfig:
    from server.engine import EngineConfig

    return _from_settings(EngineConfig, settings, model=settings.base_model_dir)


def open_registry(settings: Settings) -> Registry:
    """The adapter registry under `home` (created, and proven writable, first)."""
    from adapters import Registry

    settings.ensure_home()
    return Registry(settings.db_path, settings.store_dir, settings.base_model_dir,
                    max_rank=settings.max_lora_rank)


def open_router(settings: Settings, registry: Any = None) -> Router:
    """The experiment router on the same database; `registry` (to check and pin refs, and to
    guard variants' adapters against deletion) may be None for read-only uses."""
    from router import Router

    settings.ensure_home()
    return Router(settings.db_path, registry, base_id=settings.model_id,
                  retention=settings.retention, log_all=settings.log_all_requests)


def open_keys(settings: Settings) -> KeyStore:
    """The API keys, in the same database."""
    from server.auth import KeyStore

    settings.ensure_home()
    return KeyStore(settings.db_path)


def build_app(settings: Settings, *, config: ServerConfig | None = None,
              keys: KeyStore | None = None, engine: Any = None,
              residency_class: Any = None) -> FastAPI:
    """The server's FastAPI app; the app's lifespan starts the engine and closes the parts.
    `engine` and `residency_class`: scaled out, the engine replicas (loraswap/scale_out.py)."""
    from server.app import create_app
    from server.engine import Engine
    from server.residency import Residency

    registry = open_registry(settings)
    try:
        router = open_router(settings, registry)
    except BaseException:
        registry.close()
        raise
    config = config or server_config(settings)
    return create_app(config,
                      engine=engine if engine is not None else Engine(engine_config(settings)),
                      registry=registry, router=router,
                      keys=keys if keys is not None else open_keys(settings),
                      residency_class=residency_class or Residency,
                      fine_tuning=open_fine_tuning(settings, registry, config.model_id),
                      make_mixture=mixture_maker(settings, registry),
                      composer=Composer(settings, registry))


class Composer:
    """The admin API's merges and exports (training/merge.py, training/export.py), with
    their refusals as the server's 400s."""

    def __init__(self, settings: Settings, registry: Any) -> None:
        self.settings, self.registry = settings, registry

    def merge(self, body: Any):
        from adapters import RegistryError
        from server.errors import InvalidRequest
        from training.merge import MergeRefused, MergeSpec, merge_into_registry

        spec = MergeSpec(tuple((p.ref, p.weight) for p in body.parents), body.method,
                         body.density, body.majority_sign_method, body.svd_rank, body.seed)
        try:
            return merge_into_registry(self.registry, body.name, spec,
                                       max_parents=self.settings.max_merge_parents,
                                       evaluate=body.evaluate, description=body.description)
        except MergeRefused as exc:
            raise InvalidRequest(str(exc), param=exc.param, code="merge_refused") from None
        except RegistryError:
            raise  # the error table names it

    def export(self, ref: str, dtype: str, out: Path) -> str:
        from training.export import export_merged

        version = self.registry.get(ref, verify=True)
        export_merged(self.settings.base_model_dir, version, out, dtype=dtype)
        return f"{version.name}-{version.version}-merged"


def mixture_maker(settings: Settings, registry: Any):
    """The server's way to make a `merged_adapters` mixture's version (training/merge.py,
    which server/ cannot import): find it by content hash, else merge and register it."""
    from server.errors import InvalidRequest
    from server.mixtures import MIXTURE_TAG

    def make(spec) -> str:
        from adapters import AdapterNotFound, RegistryError
        from training.merge import MergeRefused, MergeSpec, merge_into_registry, pinned
        from training.merge import spec_hash as content_hash

        try:
            merge, parents = pinned(registry, MergeSpec(spec.parents, spec.method,
                                                        spec.density, spec.majority_sign))
            name = "mix-" + content_hash(merge, parents)[:16]
            try:
                return registry.get(name).ref
            except AdapterNotFound:
                pass
            return merge_into_registry(registry, name, merge,
                                       max_parents=settings.max_merge_parents,
                                       tags=[MIXTURE_TAG]).ref
        except MergeRefused as exc:
            raise InvalidRequest(f"merged_adapters refused [{exc.rule}]: {exc.message}",
                                 param="merged_adapters", code="invalid_mixture") from None
        except RegistryError as exc:
            raise InvalidRequest(f"merged_adapters refused: {exc}", param="merged_adapters",
                                 code="invalid_mixture") from None

    return make


def validate_training_file(path: Path, kind: str, param: str) -> int:
    """The training package's data checks for a job's file (the server cannot import
    training/): the usable rows, or InvalidFile naming the first lines that break a rule."""
    from finetune import InvalidFile
    from training.data import DataError, load_dataset

    try:
        return len(load_dataset(path, kind).rows)
    except DataError as exc:
        raise InvalidFile(f"{param}: " + str(exc).replace(str(path), "the file"), param=param,
                          code="invalid_file_format") from None


def open_fine_tuning(settings: Settings, registry: Any, base_id: str) -> FineTuning:
    """`/v1/files` and `/v1/fine_tuning/jobs` over the project's database."""
    from finetune import open_stores
    from server.serving_finetune import FineTuning

    files, jobs = open_stores(settings.db_path, settings.files_dir,
                              max_bytes=settings.max_file_mib * 2**20)
    return FineTuning(files, jobs, validate=validate_training_file, registry=registry,
                      base_id=base_id, max_rank=settings.max_lora_rank)


def serve(settings: Settings) -> int:
    """Build the app and serve it until SIGTERM; the exit status."""
    from server.app import run

    config = server_config(settings)
    keys = open_keys(settings)
    return run(build_app(settings, config=config, keys=keys), config)
