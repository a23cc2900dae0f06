"""What a request's `model` names, and `/v1/models`: the one seam between "what the client
asked for" and "what runs".

Resolution reads memory only: the router's experiment table (an alias routes sticky per
user to a variant), then the model catalog (base id, `name`, `name@v`). No SQL and no file
`stat` on the event loop; the reconcile loop keeps both tables fresh.

One exception: a name neither table knows makes both re-read the database once before the
404 (server/reread.py): another process, such as another ingress replica, may have just
registered it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from adapters import AdapterVersion
from common.timeutil import iso_to_epoch
from router import Route, RouteContext, Router
from server.catalog import ModelCatalog
from server.errors import ModelNotFound
from server.protocol import ModelCard, ModelList
from server.reread import MissReread

__all__ = ["HEADER_EXPERIMENT", "HEADER_MODEL", "HEADER_RULE", "HEADER_VARIANT", "ServingModels",
           "Target"]

HEADER_EXPERIMENT = "X-Loraswap-Experiment"
HEADER_VARIANT = "X-Loraswap-Variant"
HEADER_MODEL = "X-Loraswap-Model"
HEADER_RULE = "X-Loraswap-Rule"


@dataclass(frozen=True)
class Target:
    """What one request runs on: the base (version None) or one adapter version."""

    requested: str
    model_id: str  # the id the response names: the base id or name@version
    version: AdapterVersion | None = None
    user: str | None = None
    request_id: str = "-"
    route: Route | None = None  # set when `requested` was an experiment alias
    api_key_id: str | None = None

    def headers(self) -> dict[str, str]:
        """Response headers: the request id, the version served and, if routed, the variant."""
        headers = {"X-Request-Id": self.request_id, HEADER_MODEL: self.model_id}
        route = self.route
        if route is not None:
            if route.experiment is not None:
                headers[HEADER_EXPERIMENT] = route.experiment
            headers[HEADER_VARIANT] = route.variant
            if route.rule is not None:
                headers[HEADER_RULE] = route.rule
        return headers


class ServingModels:
    def __init__(self, catalog: ModelCatalog, router: Router) -> None:
        self.catalog = catalog
        self.router = router
        self.base_id = catalog.base_id
        self.miss_reread = MissReread(self._reread_tables)

    def resolve(self, model: str, unit: str | None = None,
                context: RouteContext | None = None) -> Target:
        """Aliases first (rules, an experiment sticky per unit, the pointer), then adapter
        names and the base id."""
        route = self.router.route(model, unit, context)
        served = route.target if route is not None else model
        version = self.catalog.lookup(served)
        target = Target(model, self.base_id if version is None else version.ref, version, unit)
        return target if route is None else replace(target, route=route)

    async def resolve_fresh(self, model: str, unit: str | None = None,
                            context: RouteContext | None = None) -> Target:
        """`resolve`, re-reading the tables once if neither knows `model`."""
        try:
            return self.resolve(model, unit, context)
        except ModelNotFound:
            await self.miss_reread.after_miss(time.monotonic())
        return self.resolve(model, unit, context)

    def _reread_tables(self) -> None:
        self.catalog.refresh()
        self.router.refresh()

    def list_models(self) -> ModelList:
        """Inference clients see ids and lineage, never server paths: `root` is the id a
        card's weights come from (the base id for the base, name@version for adapters)."""
        now = int(time.time())
        cards = [ModelCard(id=self.base_id, created=now, root=self.base_id)]
        latest: dict[str, AdapterVersion] = {}
        for v in self.catalog.active():
            cards.append(ModelCard(id=v.ref, created=_created(v, now), root=v.ref,
                                   parent=self.base_id))
            latest[v.name] = v
        for name, v in latest.items():
            cards.append(ModelCard(id=name, created=_created(v, now), root=v.ref,
                                   parent=self.base_id))
        for alias in self.router.aliases():
            cards.append(ModelCard(id=alias, created=now, root=alias, parent=self.base_id))
        return ModelList(data=cards)

    def card(self, model: str) -> ModelCard:
        """One card, as listed; ModelNotFound for anything /v1/models does not list."""
        for card in self.list_models().data:
            if card.id == model:
                return card
        self.catalog.lookup(model)  # raises with the reason when it knows one
        raise ModelNotFound(model)


def _created(v: AdapterVersion, default: int) -> int:
    ts = iso_to_epoch(v.created_at)
    return default if ts is None else int(ts)
