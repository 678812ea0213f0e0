"""The status of ``headwater serve``'s child processes."""

from __future__ import annotations

from headwater.config.workspace import StatusConfig
from headwater.status.model import ProcessSignal, Signals, Status, components, evaluate

NOW_MS = 10_000_000


def states(*processes: ProcessSignal) -> dict[str, tuple[Status, str]]:
    found = evaluate(Signals(NOW_MS, None, 1.0, [], None, list(processes)), StatusConfig())
    return {s.component.id: (s.status, s.reason) for s in found}


def test_processes_are_components_only_when_there_are_children() -> None:
    assert "processes" not in states()
    ids = [c.id for c in components([], ["writer", "worker"])]
    assert ids[-3:] == ["processes", "process:writer", "process:worker"]
    assert "processes" not in [c.id for c in components([])]


def test_a_dead_child_is_an_outage_and_a_recent_restart_degraded() -> None:
    dead = ProcessSignal("worker", "restarting", 0, "killed by SIGKILL", None)
    restarted = ProcessSignal("writer", "running", 2, "exit code 1", NOW_MS - 5_000)
    found = states(dead, restarted)
    status, reason = found["process:worker"]
    assert status is Status.MAJOR and "killed by SIGKILL" in reason and "wait in the log" in reason
    status, reason = found["process:writer"]
    assert status is Status.DEGRADED and "restarted 2 time(s)" in reason
    assert found["processes"][0] is Status.MAJOR


def test_a_restart_long_ago_is_operational_again() -> None:
    old = ProcessSignal("worker", "running", 1, "killed by SIGKILL", NOW_MS - 3_600_000)
    never = ProcessSignal("writer", "running", 0, None, None)
    found = states(old, never)
    assert found["process:worker"] == (Status.OPERATIONAL, "")
    assert found["process:writer"] == (Status.OPERATIONAL, "")
    assert found["processes"] == (Status.OPERATIONAL, "")
