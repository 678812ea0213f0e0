"""The examples in docs/mapping.md and docs/destinations/http.md run as they are written."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from headwater.config import parse_workspace
from headwater.errors import ConfigError
from headwater.mapping import MISSING, compile_mapping

DOCS = Path(__file__).resolve().parents[2] / "docs"
MAPPING = (DOCS / "mapping.md").read_text(encoding="utf-8")


def table_examples() -> list[tuple[str, Any, Any]]:
    rows = []
    for line in MAPPING.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 3 and cells[1].startswith("`{") and cells[2] != "gives":
            spec = json.loads(cells[1].strip("`"))
            gives = MISSING if cells[2] == "(key dropped)" else json.loads(cells[2].strip("`"))
            rows.append((cells[1], spec, gives))
    return rows


EXAMPLES = table_examples()


def test_every_directive_has_an_example() -> None:
    assert len(EXAMPLES) >= 13
    used = {next(iter(spec)) for _, spec, _ in EXAMPLES}
    assert used == {"@path", "@template", "@literal", "@if", "@case", "@replace", "@arrayPath",
                    "@json", "@flatten", "@merge", "@excludeWhenNull"}  # fmt: skip


@pytest.mark.parametrize(("text", "spec", "gives"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_directive_examples_give_what_the_doc_says(text: str, spec: Any, gives: Any) -> None:
    [event_text] = re.findall(r"```json\n(.*?)```", MAPPING, flags=re.S)
    event = json.loads(event_text)
    assert compile_mapping({"f": spec}).resolve(event).get("f", MISSING) == gives


@pytest.mark.parametrize("doc", ["mapping.md", "destinations/http.md"])
def test_yaml_examples_load(doc: str) -> None:
    text = (DOCS / doc).read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        ws = parse_workspace(yaml.safe_load(block), doc)
        assert ws.destinations[0].type == "http"


def test_the_quoted_error_messages_are_headwaters() -> None:
    data = {"sources": [{"name": "w"}],
            "destinations": [{"name": "d", "type": "http", "sources": ["w"], "settings": {
                "url": "http://127.0.0.1:9/", "mapping": {"a": {"@case": {"operator": "title",
                                                                          "value": 1}}}}}]}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_workspace(data, "doc")
    message = str(caught.value).removeprefix("doc: destinations[0].settings.")
    assert f"`….{message}`" in MAPPING
