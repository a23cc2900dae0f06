"""Serving `/v1/files` and `/v1/fine_tuning/jobs`: checks, then the stores (finetune/).

Training itself runs elsewhere (the worker, loraswap/finetune_worker.py); the server only
validates and queues. A job's files are validated when it is created, with the training
package's data checks (handed in as `validate`, since server/ never imports training/): a
refused job leaves nothing behind, and every refusal names the field or the line.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finetune import (
    Caller,
    FileNotFound,
    FileRecord,
    FileStore,
    FineTuneError,
    InvalidFile,
    Job,
    JobStore,
)
from server.protocol_finetune import (
    CheckpointView,
    EventView,
    FileView,
    JobCreate,
    JobView,
    LoraswapOptions,
)

__all__ = ["DEFAULTS", "FineTuning", "fine_tuned_name"]

# What `auto` means, per method: the SFT loop's and the preference trainer's own defaults.
DEFAULTS = {
    "supervised": {"n_epochs": 4, "batch_size": 32, "learning_rate_multiplier": 1.0},
    "dpo": {"n_epochs": 1, "batch_size": 16, "learning_rate_multiplier": 1.0, "beta": 0.1},
}
KINDS = {"supervised": "sft", "dpo": "dpo"}
DEFAULT_RANK = 16

Validate = Callable[[Path, str, str], int]  # (path, kind, param) -> usable rows; InvalidFile


def fine_tuned_name(base_id: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's style, `ft:<base>:<suffix>:<job id>` (an empty suffix stays an empty slot)."""
    return f"ft:{base_id}:{suffix or ''}:{job_id}"


def file_view(f: FileRecord) -> FileView:
    return FileView(id=f.id, bytes=f.bytes, created_at=int(f.created_at), filename=f.filename,
                    purpose=f.purpose, sha256=f.sha256)


def job_view(job: Job) -> JobView:
    spec = job.spec
    method = spec["method"]
    return JobView(
        id=job.id, created_at=int(job.created_at), error=job.error,
        fine_tuned_model=job.fine_tuned_model,
        finished_at=int(job.finished_at) if job.finished_at else None,
        hyperparameters=spec["hyperparameters"], model=job.model,
        result_files=job.result_files, seed=spec["seed"], status=job.status,
        trained_tokens=job.trained_tokens, training_file=spec["training_file"],
        validation_file=spec.get("validation_file"), metadata=spec.get("metadata"),
        method={"type": method, method: {"hyperparameters": spec["hyperparameters"]}},
        user_provided_suffix=spec.get("suffix"),
        loraswap={**spec["loraswap"], "ref": job.registered_ref, "parent": spec.get("parent"),
                  "attempts": job.attempts})


def _hyperparameters(body: JobCreate, method: str) -> dict[str, Any]:
    given: dict[str, Any] = {}
    for source in (body.hyperparameters,
                   getattr(body.method, method, None) and getattr(body.method, method)
                   .hyperparameters):
        if source is not None:
            given.update({k: v for k, v in source.model_dump().items() if v not in (None, "auto")})
    if method == "supervised" and "beta" in given:
        raise FineTuneError("hyperparameters.beta applies to the dpo method only",
                            param="hyperparameters.beta")
    return {**DEFAULTS[method], **given}


class FineTuning:
    """The two endpoint families over the stores. `registry`: to check `model` when it names
    an adapter; `base_id`: the base model's id on the API."""

    def __init__(self, files: FileStore, jobs: JobStore, *, validate: Validate, registry: Any,
                 base_id: str, max_rank: int) -> None:
        self.files, self.jobs, self.validate = files, jobs, validate
        self.registry, self.base_id, self.max_rank = registry, base_id, max_rank
        self._serves: Callable[[str], bool] = lambda name: True
        self._refresh: Callable[[], None] = lambda: None

    def bind_models(self, serves: Callable[[str], bool], refresh: Callable[[], None]) -> None:
        """How to tell whether a fine-tuned name is served yet, and how to re-read the
        catalog and aliases now. A job succeeds in the worker, which points the name at the
        version; the server re-reads those every reconcile interval. So that a client that
        sees `succeeded` can call the model at once, a read of such a job re-reads first."""
        self._serves, self._refresh = serves, refresh

    async def _ready(self, job: Job) -> Job:
        if job.status == "succeeded" and job.fine_tuned_model and not self._serves(
                job.fine_tuned_model):
            await asyncio.to_thread(self._refresh)
        return job

    def close(self) -> None:
        self.files.db.conn.close()

    # -- files ---------------------------------------------------------------------------
    async def upload(self, caller: Caller, purpose: str, filename: str, read) -> FileView:
        return file_view(await asyncio.to_thread(
            self.files.create, caller, purpose=purpose, filename=filename, read=read))

    async def file(self, caller: Caller, file_id: str) -> FileRecord:
        return await asyncio.to_thread(self.files.get, caller, file_id)

    async def list_files(self, caller: Caller, **kw) -> list[FileView]:
        return [file_view(f) for f in await asyncio.to_thread(self.files.list, caller, **kw)]

    async def delete_file(self, caller: Caller, file_id: str) -> str:
        busy = [j for j in await asyncio.to_thread(self.jobs.list, caller, limit=10**9)
                if j.status in ("validating_files", "queued", "running")
                and file_id in (j.spec["training_file"], j.spec.get("validation_file"))]
        if busy:
            raise FineTuneError(f"file {file_id} is used by job {busy[0].id}, which has not "
                                "finished", param="file_id", code="file_in_use")
        return (await asyncio.to_thread(self.files.delete, caller, file_id)).id

    # -- jobs ----------------------------------------------------------------------------
    def _parent(self, model: str) -> str | None:
        """None for the base; else the active registry version `model` names."""
        if model == self.base_id:
            return None
        try:
            version = self.registry.get(model)
        except Exception:
            version = None
        if version is None or getattr(version, "status", "active") != "active":
            raise FineTuneError(f"Model {model} is not available for fine-tuning or does not "
                                f"exist: use the base model ({self.base_id}) or a registered "
                                "adapter (name or name@version)", param="model",
                                code="model_not_available")
        return version.ref

    def _input_file(self, caller: Caller, file_id: str, param: str) -> FileRecord:
        try:
            record = self.files.get(caller, file_id, param=param)
        except FileNotFound:
            raise InvalidFile(f"invalid {param}: {file_id} (no such file)", param=param,
                              code="invalid_file") from None
        if record.purpose != "fine-tune":
            raise InvalidFile(f"invalid {param}: {file_id} has purpose {record.purpose!r}, not "
                              "'fine-tune'", param=param, code="invalid_file")
        return record

    def _check(self, train: FileRecord, val: FileRecord | None, kind: str) -> int:
        rows = self.validate(self.files.verify(train), kind, "training_file")
        if val is not None:
            self.validate(self.files.verify(val), kind, "validation_file")
        return rows

    async def create_job(self, caller: Caller, body: JobCreate) -> JobView:
        method = body.method.type if body.method else "supervised"
        hyper = _hyperparameters(body, method)
        options = body.loraswap or LoraswapOptions()
        if options.rank is None:
            options = options.model_copy(update={"rank": min(DEFAULT_RANK, self.max_rank)})
        if options.rank > self.max_rank:
            raise FineTuneError(f"loraswap.rank {options.rank} is over this server's "
                                f"max_lora_rank ({self.max_rank})", param="loraswap.rank")
        parent = await asyncio.to_thread(self._parent, body.model)
        train = await asyncio.to_thread(self._input_file, caller, body.training_file,
                                        "training_file")
        val = None if body.validation_file is None else await asyncio.to_thread(
            self._input_file, caller, body.validation_file, "validation_file")
        spec = {"training_file": train.id, "validation_file": val.id if val else None,
                "method": method, "kind": KINDS[method], "hyperparameters": hyper,
                "suffix": body.suffix, "seed": body.seed if body.seed is not None
                else random.randrange(2**31), "parent": parent, "base_id": self.base_id,
                "metadata": body.metadata,
                "loraswap": options.model_dump()}
        job = await asyncio.to_thread(self.jobs.create, caller, body.model, spec)
        try:
            rows = await asyncio.to_thread(self._check, train, val, KINDS[method])
        except BaseException:
            await asyncio.to_thread(self.jobs.drop, job.id)
            raise
        await asyncio.to_thread(self.jobs.queue, job.id, rows)
        return job_view(await asyncio.to_thread(self.jobs.get, caller, job.id))

    async def job(self, caller: Caller, job_id: str) -> JobView:
        return job_view(await self._ready(await asyncio.to_thread(self.jobs.get, caller,
                                                                   job_id)))

    async def list_jobs(self, caller: Caller, *, after: str | None, limit: int
                        ) -> tuple[list[JobView], bool]:
        found = await asyncio.to_thread(self.jobs.list, caller, after=after, limit=limit + 1)
        return [job_view(await self._ready(j)) for j in found[:limit]], len(found) > limit

    async def cancel(self, caller: Caller, job_id: str) -> JobView:
        return job_view(await asyncio.to_thread(self.jobs.cancel, caller, job_id))

    async def events(self, caller: Caller, job_id: str, *, after: str | None, limit: int
                     ) -> tuple[list[EventView], bool]:
        job = await asyncio.to_thread(self.jobs.get, caller, job_id)
        found = await asyncio.to_thread(self.jobs.events, job, after=after, limit=limit + 1)
        views = [EventView(**{**e, "created_at": int(e["created_at"])}) for e in found[:limit]]
        return views, len(found) > limit

    async def checkpoints(self, caller: Caller, job_id: str, *, after: str | None, limit: int
                          ) -> tuple[list[CheckpointView], bool]:
        job = await asyncio.to_thread(self.jobs.get, caller, job_id)
        found = await asyncio.to_thread(self.jobs.checkpoints, job, after=after,
                                        limit=limit + 1)
        name = fine_tuned_name(job.spec["base_id"], job.spec.get("suffix"), job.id)
        views = [CheckpointView(id=c["id"], created_at=int(c["created_at"]),
                                fine_tuned_model_checkpoint=f"{name}:ckpt-step-{c['step']}",
                                fine_tuning_job_id=job.id, metrics=c["metrics"],
                                step_number=c["step"]) for c in found[:limit]]
        return views, len(found) > limit

