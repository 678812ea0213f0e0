"""Raw fsync latency of a directory's disk: append a block, fsync, repeat.

With fsync durability every acknowledged batch of events waits for at least one
fsync, so ``1 / fsync latency`` bounds how many group commits per second the log
can do. ``bench/ingest.py`` prints this beside its results.

Run: ``python bench/fsync_probe.py [DIR] [--count 200]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FsyncStats:
    directory: str
    count: int
    block_bytes: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def measure_fsync(directory: Path, count: int = 200, block_bytes: int = 4096) -> FsyncStats:
    """Time ``count`` fsyncs, each after appending ``block_bytes`` to one file in ``directory``."""
    block = b"\0" * block_bytes
    timings: list[float] = []
    with tempfile.TemporaryDirectory(dir=directory, prefix="fsync-probe-") as scratch:
        fd = os.open(Path(scratch) / "probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for _ in range(count):
                os.write(fd, block)
                started = time.perf_counter()
                os.fsync(fd)
                timings.append(time.perf_counter() - started)
        finally:
            os.close(fd)
    timings.sort()
    return FsyncStats(
        directory=str(directory),
        count=count,
        block_bytes=block_bytes,
        p50_ms=_percentile(timings, 50) * 1000,
        p99_ms=_percentile(timings, 99) * 1000,
        max_ms=timings[-1] * 1000,
    )


def _percentile(sorted_values: list[float], percent: float) -> float:
    index = round(percent / 100 * (len(sorted_values) - 1))
    return sorted_values[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    stats = measure_fsync(args.directory, args.count)
    print(
        f"fsync in {stats.directory}: p50 {stats.p50_ms:.3f} ms, p99 {stats.p99_ms:.3f} ms, "
        f"max {stats.max_ms:.3f} ms ({stats.count} × {stats.block_bytes} B appends)"
    )


if __name__ == "__main__":
    main()
