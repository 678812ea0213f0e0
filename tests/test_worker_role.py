"""The workspace reaches the worker process as JSON on its stdin: it must arrive whole."""

from __future__ import annotations

from pathlib import Path

from headwater.config.workspace import Workspace, load_workspace

EXAMPLE = Path(__file__).parent.parent / "examples" / "workspace.yaml"


def test_the_example_workspace_survives_the_trip_to_the_worker() -> None:
    workspace = load_workspace(EXAMPLE)
    assert workspace.tracking_plans, "the example should exercise aliased fields (jsonSchema)"
    sent = workspace.model_dump_json(by_alias=True)  # what app.py writes to the worker
    assert Workspace.model_validate_json(sent).model_dump() == workspace.model_dump()
