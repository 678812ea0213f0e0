"""What recording "where did my event go" costs: ingest-to-delivery with and without it.

The target (issue "Where did my event go?"): recording what the trace needs — the debugger's
ring, the per-minute ingest flow counts, the per-event decisions, the delivery ledger's
windowed index — costs at most 15% of the ingest-to-delivery throughput.

The floor is the same pipeline without that recording: the commit before it landed
(``--base``, default 7e44d52). Both revisions run bench/delivery.py's sustained throughput
figures (``batching``: a webhook taking 500 events a request; ``per-event``: one a request)
on this machine, alternating base and head round by round so that both see the same noise;
each revision's median is kept. The ratio head/base is printed with PASS/FAIL against 0.85.

Run:   .venv/bin/python bench/trace_cost.py [--rounds 3] [--base COMMIT] [--head COMMIT]
Smoke: .venv/bin/python bench/trace_cost.py --quick --rounds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BASE = "7e44d52"  # the commit before the observe package (debugger, flow counts, trace)
TARGET_RATIO = 0.85
FIGURES = ("batching", "per-event")


def run_delivery(at: str, figures: Sequence[str], quick: bool, out: Path) -> dict[str, float]:
    """One round of bench/delivery.py at ``at``; events/s per figure."""
    command = [sys.executable, str(BENCH_DIR / "delivery.py"), "--at", at, "--json", str(out)]
    for figure in figures:
        command += ["--figure", figure]
    if quick:
        command.append("--quick")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench/delivery.py --at {at} failed:\n{done.stdout}\n{done.stderr}")
    found = json.loads(out.read_text())["figures"]
    values: dict[str, float] = {}
    for figure in found:
        name: str = figure["name"]
        key = "batching" if name.startswith("batching") else (
            "per-event" if name.startswith("per-event") else None)  # fmt: skip
        if key is not None:
            values[key] = float(figure["value"])
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", default=BASE, help=f"the floor's commit (default {BASE})")
    parser.add_argument("--head", default="HEAD", help="the measured commit (default HEAD)")
    parser.add_argument("--figure", action="append", choices=FIGURES)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    figures = tuple(args.figure or FIGURES)
    results: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
    with tempfile.TemporaryDirectory(prefix="hw-trace-cost-") as tmp:
        for number in range(1, args.rounds + 1):
            order = [("base", args.base), ("head", args.head)]
            if number % 2 == 0:
                order.reverse()  # neither revision always runs first
            for label, commit in order:
                print(f"round {number}: {label} ({commit}) ...", file=sys.stderr, flush=True)
                values = run_delivery(commit, figures, args.quick, Path(tmp) / f"{label}.json")
                for figure, value in values.items():
                    results[label].setdefault(figure, []).append(value)
    print(
        f"\ningest-to-delivery, {args.rounds} round(s), medians "
        f"(base {args.base} = without the recording, head {args.head} = with it)"
    )
    print(f"{'figure':12} {'base ev/s':>12} {'head ev/s':>12} {'ratio':>7}  target")
    for figure in figures:
        bases, heads = results["base"].get(figure, []), results["head"].get(figure, [])
        base = statistics.median(bases) if bases else 0.0
        head = statistics.median(heads) if heads else 0.0
        ratio = head / base if base else 0.0
        verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
        pairs = ", ".join(f"{b:,.0f}/{h:,.0f}" for b, h in zip(bases, heads, strict=False))
        print(
            f"{figure:12} {base:12,.0f} {head:12,.0f} {ratio:7.2f}  ≥ {TARGET_RATIO} {verdict}"
            f"   (rounds base/head: {pairs})"
        )
    return 0  # the exit status says whether it ran, not the verdict


if __name__ == "__main__":
    sys.exit(main())
