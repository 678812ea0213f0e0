"""A destination's worker as its readers see it, as JSON: what the control channel
(:mod:`headwater.delivery.control`) sends the gateway of the same machine, and what a node
delivering a destination publishes in the shared state for gateway nodes
(:mod:`headwater.state.leases`)."""

from __future__ import annotations

from typing import Any

from headwater.delivery.worker import Buckets, Worker, WorkerStats


def buckets_doc(b: Buckets) -> dict[str, Any]:
    return {"counts": b.counts, "sum": b.sum, "count": b.count}


def stats_doc(s: WorkerStats) -> dict[str, Any]:
    return {
        "delivered": s.delivered, "discarded": s.discarded, "retried": s.retried,
        "dead_lettered": s.dead_lettered, "filtered": s.filtered, "requests": s.requests,
        "last_error": s.last_error, "last_success_ms": s.last_success_ms,
        "duration_secs": buckets_doc(s.duration_secs), "latency_secs": buckets_doc(s.latency_secs),
    }  # fmt: skip


def stats_from(doc: dict[str, Any]) -> WorkerStats:
    stats = WorkerStats(**{k: v for k, v in doc.items() if not k.endswith("_secs")})
    for name in ("duration_secs", "latency_secs"):
        target: Buckets = getattr(stats, name)
        found = doc[name]
        if len(found["counts"]) == len(target.counts):
            target.counts, target.sum, target.count = found["counts"], found["sum"], found["count"]
    return stats


def worker_snapshot(worker: Worker) -> dict[str, Any]:
    committed, position = worker.queued_behind()
    return {
        "alive": worker.alive,
        "committed": committed,
        "position": position,
        "breaker": worker.breaker.state.value,
        "consecutive_failures": worker.breaker.consecutive_failures,
        "stats": stats_doc(worker.stats),
        "filter_stats": worker.stage.stats(),
        "transformed": worker.stage.transformed,
    }
