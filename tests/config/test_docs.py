"""The workspace examples in the docs and in examples/ load as they are written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from headwater.config import load_workspace, parse_workspace
from headwater.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_doc_example_loads() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    ws = parse_workspace(yaml.safe_load(block), "docs/configuration.md")
    assert [s.name for s in ws.sources] == ["website", "backend", "legacy-app"]
    assert ws.log.disk_budget_bytes == 20 * 1000**3
    assert ws.log.warnings() == []
    assert ws.log.segment_max_age_secs == 3600
    assert [(d.name, d.type) for d in ws.destinations] == [
        ("my-webhook", "webhook"),
        ("tee", "segment"),
        ("inspector", "devsink"),
    ]
    assert ws.destinations[0].delivery.retry_window_secs == 4 * 3600
    assert [n.name for n in ws.alerts.notifiers] == ["oncall"]
    assert [t.name for t in ws.watch] == ["segment"]


def test_demo_workspace_loads() -> None:
    ws = load_workspace(ROOT / "examples" / "workspace.yaml")
    assert {s.name for s in ws.sources} >= {"website", "backend"}


def test_destinations_doc_quotes_the_message_headwater_gives() -> None:
    text = (ROOT / "docs" / "destinations.md").read_text(encoding="utf-8")
    [quoted] = re.findall(r"`(destinations\[0\]\.settings\.url: [^`]*)`", text)
    quoted = " ".join(quoted.split())  # the quote wraps across lines
    url = re.findall(r"'([^']*)'", quoted)[0]
    data = {"sources": [{"name": "website"}],
            "destinations": [{"name": "d", "type": "webhook", "sources": ["website"],
                              "settings": {"url": url}}]}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_workspace(data, "docs")
    assert str(caught.value) == f"docs: {quoted}"
