"""Prometheus metrics, kept in a registry per app so tests and apps never share counters."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TPS_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class Metrics:
    """The server's instruments; handlers and the provider update them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlxk2_requests", "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"], registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "mlxk2_prompt_tokens", "Prompt tokens processed.", registry=self.registry,
        )
        self.cached_prompt_tokens = Counter(
            "mlxk2_prompt_tokens_cached", "Prompt tokens taken from the prompt cache "
            "instead of being prefilled.", registry=self.registry,
        )
        self.generated_tokens = Counter(
            "mlxk2_generated_tokens", "Completion tokens generated.", registry=self.registry,
        )
        self.ttft = Histogram(
            "mlxk2_time_to_first_token_seconds", "Time from admission to the first token.",
            buckets=_TTFT_BUCKETS, registry=self.registry,
        )
        self.tokens_per_second = Histogram(
            "mlxk2_tokens_per_second", "Decode speed of each finished request.",
            buckets=_TPS_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mlxk2_queue_depth", "Requests waiting for a batch slot.", registry=self.registry,
        )
        self.active_requests = Gauge(
            "mlxk2_active_requests", "Requests holding a batch slot.", registry=self.registry,
        )
        self.loaded_models = Gauge(
            "mlxk2_loaded_models", "Models currently loaded.", registry=self.registry,
        )
        self.disconnects = Counter(
            "mlxk2_client_disconnects", "Streams whose client went away before the end.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format for ``GET /metrics``."""
        return generate_latest(self.registry)
