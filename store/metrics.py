"""Prometheus metrics for the whole deployment, kept in Redis.

Workers record outcomes and histograms into Redis (``record_*``); the API's
``/metrics`` reads them at scrape time, so one scrape sees every worker, and
nothing is lost when a worker restarts.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis import Redis

from contract.keys import HISTOGRAM_KEY, OUTCOMES_KEY

HISTOGRAMS = {
    "batch_size": (1, 2, 4, 8, 16, 32),
    "run_seconds": (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    "queue_seconds": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300),
    # edit time a running fit gave to one batch of queued edits (worker.yielding)
    "fit_yield_seconds": (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
}


def _bound(value: float) -> str:
    """Bucket labels as Prometheus writes them (1 -> "1.0")."""
    return repr(float(value))


def _hist_key(name: str) -> str:
    return HISTOGRAM_KEY.format(name=name)


def record_outcome(redis: Any, status: str) -> None:
    redis.hincrby(OUTCOMES_KEY, status, 1)


def read_outcomes(redis: Any) -> dict[str, int]:
    """Jobs by outcome so far (succeeded, failed, handed_back, lease_lost, ...)."""
    return {_text(k): int(v) for k, v in redis.hgetall(OUTCOMES_KEY).items()}


def record_observation(redis: Any, name: str, value: float) -> None:
    bounds = HISTOGRAMS[name]
    index = bisect.bisect_left(bounds, value)
    bucket = _bound(bounds[index]) if index < len(bounds) else "+Inf"
    with redis.pipeline() as pipe:
        pipe.hincrby(_hist_key(name), bucket, 1)
        pipe.hincrbyfloat(_hist_key(name), "sum", value)
        pipe.hincrby(_hist_key(name), "count", 1)
        pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisCollector(Collector):
    def __init__(self, redis: Redis, queue_depth: Any) -> None:
        self.redis = redis
        self.queue_depth = queue_depth

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("editserve_queue_depth", "Jobs waiting in the queues")
        depth.add_metric([], float(self.queue_depth()))
        yield depth
        outcomes = CounterMetricFamily(
            "editserve_jobs", "Jobs that ended, by outcome", labels=["status"]
        )
        for status, count in read_outcomes(self.redis).items():
            outcomes.add_metric([status], float(count))
        yield outcomes
        for name, bounds in HISTOGRAMS.items():
            raw = {_text(k): float(v) for k, v in self.redis.hgetall(_hist_key(name)).items()}
            cumulative, buckets = 0.0, []
            for bound in [*(_bound(b) for b in bounds), "+Inf"]:
                cumulative += raw.get(bound, 0.0)
                buckets.append((bound, cumulative))
            hist = HistogramMetricFamily(f"editserve_{name}", f"Distribution of {name}")
            hist.add_metric([], buckets, sum_value=raw.get("sum", 0.0))
            yield hist


def render(redis: Redis, queue_depth: Any) -> bytes:
    registry = CollectorRegistry()
    registry.register(RedisCollector(redis, queue_depth))
    output: bytes = generate_latest(registry)
    return output
