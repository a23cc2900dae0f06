"""Prometheus metrics, on a registry of our own (so tests and two apps in one process don't clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("loraswap_requests", "HTTP requests answered",
                                ["route", "status"], registry=r)
        self.inference = Counter("loraswap_inference_requests",
                                 "Inference requests by served model (base id or name@version)",
                                 ["model", "endpoint", "stream"], registry=r)
        self.prompt_tokens = Counter("loraswap_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter("loraswap_completion_tokens", "Tokens generated",
                                         registry=r)
        self.latency = Histogram("loraswap_request_latency_seconds",
                                 "Inference request latency, start to last byte",
                                 ["endpoint"], buckets=_LATENCY, registry=r)
        self.ttft = Histogram("loraswap_time_to_first_token_seconds",
                              "Time to the first generated token", buckets=_LATENCY, registry=r)
        self.in_flight = Gauge("loraswap_requests_in_flight", "Inference requests running",
                               registry=r)
        self.loaded = Gauge("loraswap_loaded_adapters", "Adapters loaded in the engine", registry=r)
        self.load_seconds = Histogram("loraswap_adapter_load_seconds",
                                      "Time to verify and load an adapter into the engine",
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
                                      registry=r)
        self.adapter_loads = Counter("loraswap_adapter_loads", "Adapter loads into the engine",
                                     registry=r)
        self.adapter_unloads = Counter("loraswap_adapter_unloads",
                                       "Adapter removals from the engine", ["reason"], registry=r)

    def show_replicas(self, replicas: list[dict]) -> None:
        """Scaled out: which adapter versions each engine replica holds, as of now."""
        if not hasattr(self, "replica_adapters"):
            self.replica_adapters = Gauge(
                "loraswap_replica_adapter_loaded", "1 for each adapter version an engine "
                "replica holds", ["replica", "adapter"], registry=self.registry)
            self.replica_running = Gauge(
                "loraswap_replica_running_requests", "Requests each engine replica runs",
                ["replica"], registry=self.registry)
        self.replica_adapters.clear()
        self.replica_running.clear()
        for r in replicas:
            self.replica_running.labels(r["replica"]).set(r.get("running_requests", 0))
            for ref in r.get("loaded", []):
                self.replica_adapters.labels(r["replica"], ref).set(1)

    # Each ingress replica's beat (server/cluster_state.py): metric, help, the beat's key.
    _INGRESS = (
        ("loraswap_ingress_generations", "Generations each ingress replica sent to the "
         "engine replicas since it started", "requests"),
        ("loraswap_ingress_retries", "Requests an ingress replica retried on another engine "
         "replica after one died", "retries"),
        ("loraswap_ingress_queue_timeouts", "Requests an ingress replica answered 503 "
         "queue_timeout", "queue_timeouts"),
        ("loraswap_ingress_leader", "1 for the ingress replica that runs the experiment "
         "decisions", "leader"),
    )

    def show_ingresses(self, ingresses: list[dict]) -> None:
        """Scaled out: every ingress replica's counts as it last beat, so a scrape of any
        ingress shows them all (each ingress's own request counters above are its own)."""
        if not hasattr(self, "ingress_gauges"):
            self.ingress_gauges = [(Gauge(name, doc, ["ingress"], registry=self.registry), key)
                                   for name, doc, key in self._INGRESS]
        for gauge, key in self.ingress_gauges:
            gauge.clear()
            for i in ingresses:
                gauge.labels(i["ingress"]).set(float(i.get(key) or 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
