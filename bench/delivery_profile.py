"""``bench/delivery.py --profile DIR``: where Headwater spends its CPU in a measured window.

py-spy (``pip install py-spy`` into the venv) samples the server and its writer process
(``--subprocesses``, ``--nonblocking`` so the server is not paused) 100 times a second
for the window, and writes the stacks in collapsed form (``DIR/<label>.txt``, readable by
flamegraph tools and speedscope). This module then sums them per function, by process:
*self* (the function was running) and *total* (it was on the stack), in % of one core,
into ``DIR/<label>-top.txt``, which it also prints. Idle threads are not sampled, so the
figures are CPU, not wall time; a blocking call that releases the GIL (SQLite, fsync,
socket reads) shows as its caller's self time.

Run alone on collapsed stacks: ``python bench/delivery_profile.py DIR/batching.txt``
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from contextlib import suppress
from pathlib import Path
from types import TracebackType

RATE_PER_S = 100
TOP = 25
_LINE_NUMBER = re.compile(r":\d+\)$")


class Profiler:
    """A context manager that py-spies ``pid`` for ``seconds`` (a no-op without a directory)."""

    def __init__(self, directory: Path | None, label: str, pid: int, seconds: float) -> None:
        self.directory, self.label, self.pid, self.seconds = directory, label, pid, seconds
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def maybe(cls, directory: Path | None, label: str, pid: int, seconds: float) -> Profiler:
        return cls(directory, label, pid, seconds)

    @property
    def output(self) -> Path:
        assert self.directory is not None
        return self.directory / f"{self.label}.txt"

    def __enter__(self) -> Profiler:
        if self.directory is None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        command = [py_spy, "record", "--pid", str(self.pid), "--rate", str(RATE_PER_S)]
        command += ["--duration", str(round(self.seconds)), "--format", "raw"]
        command += ["--output", str(self.output), "--subprocesses", "--nonblocking"]
        log = (self.directory / f"{self.label}-py-spy.log").open("wb")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is None:
            return
        try:  # on an error, at once; else py-spy stops by itself after its duration
            self.process.wait(timeout=self.seconds + 30 if exc_type is None else 0)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if exc_type is None and self.output.exists():
            summary = summarize(self.output.read_text(), self.seconds)
            (self.output.parent / f"{self.label}-top.txt").write_text(summary)
            print(f"\nprofile of {self.label} ({self.output}):\n{summary}", file=sys.stderr)


def summarize(collapsed: str, seconds: float, top: int = TOP) -> str:
    """Self and total CPU per function, per process, from py-spy's collapsed stacks."""
    self_counts: dict[str, Counter[str]] = defaultdict(Counter)
    total_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        process = "?"
        while frames and frames[0].startswith("process "):  # a child: its parent's, then its own
            process, frames = frames[0], frames[1:]
        names = [_LINE_NUMBER.sub(")", frame) for frame in frames]
        count = int(count_text)
        if names:
            self_counts[process][names[-1]] += count
        for name in set(names):
            total_counts[process][name] += count
    per_core = RATE_PER_S * seconds / 100  # samples that make 1% of a core
    out: list[str] = []
    for process, selfs in sorted(self_counts.items(), key=lambda kv: -sum(kv[1].values())):
        busy = sum(selfs.values()) / per_core
        out.append(f"{process[:110]}: {busy:.0f}% of a core sampled")
        out.append("  self (% of a core):")
        out += [f"    {n / per_core:5.1f}%  {name[:140]}" for name, n in selfs.most_common(top)]
        out.append("  total, on the stack (% of a core):")
        totals = total_counts[process].most_common(top * 2)
        out += [f"    {n / per_core:5.1f}%  {name[:140]}" for name, n in totals]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collapsed", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--seconds", type=float, required=True, help="how long it sampled")
    parser.add_argument("--top", type=int, default=TOP)
    args = parser.parse_args()
    print(summarize(args.collapsed.read_text(), args.seconds, args.top), end="")


if __name__ == "__main__":
    main()
