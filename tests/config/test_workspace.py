"""The workspace file: what loads, and the message each fault stops start-up with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from headwater.config import load_workspace, parse_workspace
from headwater.config.keys import assign_write_keys
from headwater.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "workspace.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_workspace_and_defaults(tmp_path: Path) -> None:
    ws = load_workspace(
        write(tmp_path, "sources:\n  - name: website\n    write_key: wk_website_123\n")
    )
    assert ws.sources[0].name == "website" and ws.sources[0].cors_origins == ["*"]
    assert ws.log.durability == "fsync"
    assert ws.log.retention_max_age_secs == 7 * 86400
    assert ws.log.retention_max_bytes == 10 * 1000**3


def test_sizes_and_durations_with_units() -> None:
    ws = parse_workspace({
        "sources": [{"name": "a"}],
        "log": {"retention_max_age_secs": "36h", "retention_max_bytes": "2GiB",
                "disk_budget_bytes": "500 MB", "segment_max_age_secs": 90},
    })  # fmt: skip
    assert ws.log.retention_max_age_secs == 36 * 3600
    assert ws.log.retention_max_bytes == 2 * 1024**3
    assert ws.log.disk_budget_bytes == 500 * 1000**2
    assert ws.log.segment_max_age_secs == 90
    assert "Lower log.retention_max_bytes or raise the budget" in ws.log.warnings()[0]


def test_no_disk_budget_by_default() -> None:
    ws = parse_workspace({"sources": [{"name": "a"}]})
    assert ws.log.disk_budget_bytes is None
    assert ws.log.warnings() == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sources: [\n", "invalid YAML at line"),
        ("- just\n- a list\n", "expected a mapping"),
        ("name: demo\n", "sources: required field is missing"),
        ("sources: []\n", "sources: List should have at least 1 item"),
        ("sources:\n  - name: Website\n", "sources[0].name"),
        ("sources:\n  - name: web\n    write_key: short\n", "sources[0].write_key"),
        ("sources:\n  - name: web\n    wirte_key: wk_web_1234\n", "sources[0].wirte_key: unknown field"),
        ("sources:\n  - name: a\n  - name: a\n", "sources[1].name: 'a' is used by two sources"),
        ("sources:\n  - {name: a, write_key: wk_same_123}\n  - {name: b, write_key: wk_same_123}\n",
         "sources[1].write_key: the same write key"),
        ("sources:\n  - {name: a, cors_origins: [shop.example.com]}\n", "sources[0].cors_origins"),
        ("sources: [{name: a}]\nlog: {durability: sometimes}\n", "log.durability"),
        ("sources: [{name: a}]\nlog: {retention_max_bytes: lots}\n",
         "log.retention_max_bytes: 'lots' is not a size"),
        ("sources: [{name: a}]\nlog: {retention_max_age_secs: 0}\n", "log.retention_max_age_secs"),
        ("sources: [{name: a}]\ngateway: {trusted_proxies: [not-an-ip]}\n", "gateway.trusted_proxies[0]"),
    ],
)  # fmt: skip
def test_faults_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_workspace(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read workspace file"):
        load_workspace(tmp_path / "nope.yaml")


def test_write_keys_are_generated_once_and_kept(tmp_path: Path) -> None:
    ws = parse_workspace(
        {"sources": [{"name": "mobile"}, {"name": "web", "write_key": "wk_web_12345"}]}
    )
    first, generated = assign_write_keys(ws, tmp_path)
    assert [s.name for s in generated] == ["mobile"]
    key = first.sources[0].write_key
    assert key and key.startswith("wk_mobile_")
    again, generated_again = assign_write_keys(ws, tmp_path)
    assert generated_again == [] and again.sources[0].write_key == key
    assert json.loads((tmp_path / "write_keys.json").read_text()) == {"mobile": key}
    assert (tmp_path / "write_keys.json").stat().st_mode & 0o077 == 0


def test_serve_refuses_to_start_on_a_bad_field(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  - name: web\n    write_key: 'no spaces allowed'\n")
    result = subprocess.run(
        [sys.executable, "-m", "headwater.cli", "serve", "--config", str(path),
         "--data-dir", str(tmp_path / "data"), "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "sources[0].write_key" in result.stderr
    assert "did not start" in result.stderr


def test_a_keys_file_that_is_not_an_object_is_reported(tmp_path: Path) -> None:
    (tmp_path / "write_keys.json").write_text('["not", "a", "mapping"]')
    ws = parse_workspace({"sources": [{"name": "mobile"}]})
    with pytest.raises(ConfigError, match=r"write_keys\.json is unreadable"):
        assign_write_keys(ws, tmp_path)
