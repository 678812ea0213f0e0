"""Functions in a real delivery engine (memory log, real worker processes, fakes for HTTP)."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from headwater.config.workspace import parse_workspace
from tests.delivery.conftest import FAST, Pipeline
from tests.fakes import FakeDestination


@pytest.fixture
def code_dir(tmp_path: Path) -> Callable[[str, str], str]:
    """Write a function's code to a file; its absolute path (as the workspace resolves it)."""

    def write(name: str, code: str) -> str:
        path = tmp_path / "functions" / f"{name}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(code))
        return str(path)

    return write


@pytest.fixture
def fake() -> Iterator[FakeDestination]:
    server = FakeDestination().start()
    yield server
    server.stop()


@pytest.fixture
async def make_fn_pipeline(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    pipelines: list[Pipeline] = []

    async def make(
        functions: list[dict[str, Any]], destinations: list[dict[str, Any]] | None = None
    ) -> Pipeline:
        sources = [{"name": "website", "write_key": "wk_website_1"}]
        for f in functions:
            f.setdefault("limits", {"timeout_secs": 2})
        workspace = parse_workspace(
            {"sources": sources, "destinations": destinations or [], "functions": functions}
        )
        for d in workspace.destinations:  # failures retried fast
            assert d.delivery.retry_window_secs > 0
        data = tmp_path / f"data{len(pipelines)}"
        data.mkdir(mode=0o700)
        pipeline = Pipeline(workspace, data / "delivery")
        pipelines.append(pipeline)
        await pipeline.engine.start()
        return pipeline

    yield make
    for pipeline in pipelines:
        await pipeline.engine.stop()


def fast(destination: dict[str, Any]) -> dict[str, Any]:
    return {**destination, "delivery": {**FAST, **destination.get("delivery", {})}}
