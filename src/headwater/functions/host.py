"""The functions of one process: their pools, their stats on disk, their reloads.

The gateway hosts the source functions (they answer HTTP); the delivery engine hosts the
destination and insert functions (they run in the destination's worker). Each host writes
its functions' stats to ``<data>/functions/<role>.json`` every second, which the API, the
console, ``/metrics`` and the CLI read (:func:`read_stats`), whichever process runs them.

Reloads without a restart: a host checks each function's file every second and loads a
changed one in fresh workers; ``headwater functions reload`` (the API) touches
``<data>/functions/reload``, which makes every host reload every function. A version that
fails to load is reported (``loadError``) and the previous one keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from headwater.config.workspace import FunctionConfig
from headwater.errors import ConfigError
from headwater.functions.pool import FunctionPool, FunctionSpec, LoadFailed

logger = logging.getLogger(__name__)

WATCH_SECS = 1.0
STATS_DIR = "functions"
RELOAD_FILE = "reload"


def spec_of(config: FunctionConfig, environ: Mapping[str, str]) -> FunctionSpec:
    limits = config.limits
    return FunctionSpec(config.name, config.kind, config.file,
                        config.resolved_settings(environ), limits.timeout_secs, limits.cpu_secs,
                        int(limits.memory_bytes), limits.workers)  # fmt: skip


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


class FunctionHost:
    """Pools for the functions of ``kinds``; ``state_dir`` (``<data>/functions``) for the
    stats file ``<role>.json`` and the reload request, None for neither (tests, the CLI)."""

    def __init__(
        self,
        functions: Iterable[FunctionConfig],
        kinds: Iterable[str],
        state_dir: Path | None = None,
        role: str = "gateway",
    ) -> None:
        wanted = set(kinds)
        self.configs = {f.name: f for f in functions if f.kind in wanted}
        self.pools: dict[str, FunctionPool] = {}
        self.state_dir = state_dir
        self.role = role
        self._mtimes: dict[str, int] = {}
        self._reload_seen = 0
        self._task: asyncio.Task[None] | None = None

    def __bool__(self) -> bool:
        return bool(self.configs)

    async def start(self) -> None:
        """Start every pool; ConfigError with the file and line when one cannot load."""
        try:
            for name, config in self.configs.items():
                pool = FunctionPool(spec_of(config, os.environ))
                self._mtimes[name] = _mtime(Path(config.file))
                await pool.start()
                self.pools[name] = pool
        except LoadFailed as exc:
            await self.close()
            raise ConfigError(f"function {name!r} cannot be loaded: {exc}") from None
        if self.state_dir is not None and self.configs:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._reload_seen = _mtime(self.state_dir / RELOAD_FILE)
            self._write_stats()
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="functions")

    def pool(self, name: str) -> FunctionPool | None:
        return self.pools.get(name)

    def inserts_for(self, destination: str) -> list[FunctionPool]:
        return [
            self.pools[n]
            for n, c in self.configs.items()
            if c.kind == "insert" and c.destination == destination and n in self.pools
        ]

    def snapshot(self) -> list[dict[str, Any]]:
        return [pool.stats.snapshot() for pool in self.pools.values()]

    async def reload(
        self, names: Iterable[str] | None = None,
        declared: Mapping[str, FunctionConfig] | None = None,
    ) -> dict[str, str]:  # fmt: skip
        """Reload these functions (all by default): ``reloaded``, ``unchanged`` or the
        load error (the previous version keeps running). With ``declared`` (the workspace
        file read again), their settings, limits and file too — not where they sit in the
        pipeline, which needs a restart (:func:`restart_needed`)."""
        outcome: dict[str, str] = {}
        for name in list(names or self.pools):
            pool = self.pools.get(name)
            if pool is None:
                continue
            config = self.configs[name]
            new = (declared or {}).get(name)
            if new is not None and all(getattr(new, k) == getattr(config, k) for k in FIXED):
                config = new
            try:
                spec = spec_of(config, os.environ)
                changed = await pool.reload(spec)
            except ConfigError as exc:  # an {env: X} setting this process lacks
                logger.error("function %s: cannot reload: %s", name, exc)
                pool.stats.load_error = str(exc)
                outcome[name] = f"error: {exc}"
                continue
            except LoadFailed as exc:
                logger.error("function %s: the new version cannot be loaded, the previous one "
                             "keeps running: %s", name, exc)  # fmt: skip
                outcome[name] = f"error: {exc}"
                continue
            self.configs[name] = config
            self._mtimes[name] = _mtime(Path(config.file))
            if changed:
                logger.info("function %s: reloaded (version %s)", name, pool.stats.version)
            outcome[name] = "reloaded" if changed else "unchanged"
        self._write_stats()
        return outcome

    async def _watch(self) -> None:
        assert self.state_dir is not None
        while True:
            await asyncio.sleep(WATCH_SECS)
            try:
                requested = _mtime(self.state_dir / RELOAD_FILE)
                changed = [n for n, c in self.configs.items()
                           if _mtime(Path(c.file)) != self._mtimes.get(n)]  # fmt: skip
                for name in changed:
                    self._mtimes[name] = _mtime(Path(self.configs[name].file))
                declared = None
                if requested != self._reload_seen:
                    self._reload_seen = requested
                    changed = list(self.pools)
                    declared = await asyncio.to_thread(read_request, self.state_dir)
                if changed:
                    await self.reload(changed, declared)
                self._write_stats()
            except Exception:
                logger.exception("functions: the reload check failed; going on")

    def _write_stats(self) -> None:
        if self.state_dir is None:
            return
        path = self.state_dir / f"{self.role}.json"
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_bytes(orjson.dumps(self.snapshot()))
            os.replace(tmp, path)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._write_stats()
        await asyncio.gather(*(p.close() for p in self.pools.values()), return_exceptions=True)
        self.pools.clear()


def request_reload(state_dir: Path, functions: Iterable[FunctionConfig] | None = None) -> None:
    """Ask every host on this data directory to reload every function: its code, and its
    settings and limits from ``functions`` (the workspace file read again) when given."""
    state_dir.mkdir(parents=True, exist_ok=True)
    request = {"pid": os.getpid(),
               "functions": None if functions is None else
               [f.model_dump(mode="json") for f in functions]}  # fmt: skip
    path = state_dir / RELOAD_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(request))
    tmp.chmod(0o600)  # settings written in the file itself may be secrets
    os.replace(tmp, path)  # a host never reads half a request
    os.utime(path)


def read_request(state_dir: Path) -> dict[str, FunctionConfig] | None:
    """The function declarations a reload request carries, by name; None for a request of
    the code only (or one that cannot be read: then the code reloads and nothing else)."""
    try:
        request = orjson.loads((state_dir / RELOAD_FILE).read_bytes())
        found = request.get("functions") if isinstance(request, dict) else None
        if found is None:
            return None
        return {c.name: c for c in (FunctionConfig.model_validate(f) for f in found)}
    except (OSError, orjson.JSONDecodeError, ValueError):
        logger.warning("functions: the reload request cannot be read; reloading the code only")
        return None


FIXED = ("kind", "source", "sources", "destination")
"""What a reload does not change: where a function sits in the pipeline (a restart does)."""


def restart_needed(running: Iterable[FunctionConfig], wanted: Iterable[FunctionConfig]
                   ) -> list[str]:  # fmt: skip
    """What a reload cannot apply, one line each: a function added or removed, or one moved
    in the pipeline."""
    now = {f.name: f for f in running}
    new = {f.name: f for f in wanted}
    lines = [f"function {n!r} is new" for n in new if n not in now]
    lines += [f"function {n!r} was removed" for n in now if n not in new]
    for name in now.keys() & new.keys():
        moved = [k for k in FIXED if getattr(now[name], k) != getattr(new[name], k)]
        if moved:
            lines.append(f"function {name!r}: its {', '.join(moved)} changed")
    return sorted(lines)


def read_stats(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Every host's stats on this data directory, by function name."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(state_dir.glob("*.json")):
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            items = orjson.loads(path.read_bytes())
            if not isinstance(items, list):  # not a stats file (secrets.json)
                continue
            for item in items:
                found[item["name"]] = item
    return found


class FunctionMetrics:
    """The functions' figures for ``/metrics``, from every host's stats file (so the gateway
    shows the delivery worker's functions too). :meth:`refresh` before each scrape."""

    def __init__(self, functions: Iterable[FunctionConfig], state_dir: Path) -> None:
        self.kinds = {f.name: f.kind for f in functions}
        self.state_dir = state_dir
        self.snapshot: dict[str, dict[str, Any]] = {}

    async def refresh(self) -> None:
        if self.kinds:
            self.snapshot = await asyncio.to_thread(read_stats, self.state_dir)

    def collect(self) -> Iterator[Metric]:
        if not self.kinds:  # a workspace without functions serves no function metric
            return
        labels = ["function", "kind"]
        invocations = CounterMetricFamily(
            "headwater_function_invocations",
            "Events (or requests, for source functions) handed to each function.",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "headwater_function_errors",
            "Invocations that ended in an error, by the error raised (ValidationError, "
            "RetryError, Timeout, WorkerLost, Exception, ...).",
            labels=[*labels, "error"],
        )
        dropped = CounterMetricFamily(
            "headwater_function_dropped",
            "Events an insert function dropped (returned None).",
            labels=labels,
        )
        changed = CounterMetricFamily(
            "headwater_function_changed",
            "Events an insert function returned changed.",
            labels=labels,
        )
        restarts = CounterMetricFamily(
            "headwater_function_restarts", "Workers replaced after dying or hanging.", labels=labels
        )
        duration = GaugeMetricFamily(
            "headwater_function_duration_seconds",
            "Call duration over the last 2,048 calls, at the 0.5 and 0.99 quantiles.",
            labels=[*labels, "quantile"],
        )
        load_error = GaugeMetricFamily(
            "headwater_function_load_error",
            "1 when the function's file changed and the new version could not be loaded "
            "(the previous one keeps running).", labels=labels)  # fmt: skip
        for name, kind in sorted(self.kinds.items()):
            stats = self.snapshot.get(name)
            if stats is None:
                continue
            key = [name, kind]
            invocations.add_metric(key, stats["invocations"])
            for error, n in sorted(stats["errorsByKind"].items()):
                errors.add_metric([*key, error], n)
            dropped.add_metric(key, stats["dropped"])
            changed.add_metric(key, stats["changed"])
            restarts.add_metric(key, stats["restarts"])
            for quantile, field in (("0.5", "p50Ms"), ("0.99", "p99Ms")):
                if stats[field] is not None:
                    duration.add_metric([*key, quantile], stats[field] / 1000)
            load_error.add_metric(key, 1 if stats["loadError"] else 0)
        yield from (invocations, errors, dropped, changed, restarts, duration, load_error)
