"""The workspace file: what loads, and the message each fault stops start-up with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from headwater.config import load_workspace, parse_workspace
from headwater.config.keys import assign_write_keys
from headwater.destinations import TYPES
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
        ("sources: [{name: a}]\nstate: {backend: postgres}\n", "state: backend postgres needs dsn"),
        ("sources: [{name: a}]\nstate: {backend: postgres, dsn: 'postgresql://hw:secret@db/hw'}\n",
         "dsn: remove the password"),
        ("sources: [{name: a}]\nstate: {dsn: 'postgresql://hw@db/hw'}\n", "dsn and password_env are for backend: postgres"),
        ("sources: [{name: a}]\nstate: {backend: postgres, dsn: 'postgresql://hw@db/hw', schema: Ws-1}\n",
         "state.schema"),
        ("sources: [{name: a}]\nstate: {backend: mysql}\n", "state.backend"),
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


SOURCES = "sources:\n  - {name: website, write_key: wk_website_123}\n  - {name: backend}\n"


def test_destinations_load_with_their_settings_and_defaults() -> None:
    ws = parse_workspace({
        "sources": [{"name": "website"}, {"name": "backend"}],
        "destinations": [
            {"name": "my-webhook", "type": "webhook", "sources": ["website"],
             "settings": {"url": "http://127.0.0.1:9000/hook", "headers": {"X-Team": "growth"},
                          "shared_secret": "s3cret"}},
            {"name": "tee", "type": "segment", "sources": ["website", "backend"], "enabled": False,
             "settings": {"write_key": "wk_other_1234"},
             "delivery": {"retry_window_secs": "1h", "batch_max_events": 2500}},
            {"name": "inspector", "type": "devsink", "sources": ["backend"]},
        ],
    })  # fmt: skip
    hook, tee, sink = ws.destinations
    assert (hook.enabled, hook.settings["url"], hook.delivery.retry_window_secs) == (
        True, "http://127.0.0.1:9000/hook", 4 * 3600)  # fmt: skip
    assert hook.delivery.batch_max_events is None  # the type's own default
    assert (tee.enabled, tee.delivery.retry_window_secs, tee.delivery.batch_max_events) == (
        False, 3600, 2500)  # fmt: skip
    assert sink.settings == {} and ws.destination("inspector") is sink


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("destinations:\n  - {name: d, type: webhok, sources: [website], settings: {url: 'http://h/'}}\n",
         "destinations[0].type: unknown destination type 'webhok'; the types are " + ", ".join(sorted(TYPES))),
        ("destinations:\n  - {name: d, type: webhook, sources: [website], settings: {url: 'ftp://x'}}\n",
         "destinations[0].settings.url: 'ftp://x' is not an http:// or https:// URL"),
        ("destinations:\n  - {name: d, type: webhook, sources: [website], settings: {url: 'https://u:p@h/'}}\n",
         "destinations[0].settings.url: 'https://u:p@h/' has credentials in it"),
        ("destinations:\n  - {name: d, type: webhook, sources: [website], settings: {url: 'http://h/', method: GET}}\n",
         "destinations[0].settings.method: Input should be 'POST', 'PUT' or 'PATCH'"),
        ("destinations:\n  - {name: d, type: webhook, sources: [website], settings: {url: 'http://h/', headers: {Content-Type: text/plain}}}\n",
         "destinations[0].settings.headers: header 'Content-Type' is set by Headwater"),
        ("destinations:\n  - {name: d, type: webhook, sources: [website], settings: {url: 'http://h/', headers: {X-Count: 5}}}\n",
         "destinations[0].settings.headers.X-Count: Input should be a valid string"),
        ("destinations:\n  - {name: d, type: webhook, sources: [website], settings: {url: 'http://h/', secret: x}}\n",
         "destinations[0].settings.secret: unknown setting for a webhook destination"),
        ("destinations:\n  - {name: d, type: webhook, sources: [website], settings: {}}\n",
         "destinations[0].settings.url: required setting is missing"),
        ("destinations:\n  - {name: d, type: segment, sources: [website]}\n",
         "destinations[0].settings.write_key: required setting is missing"),
        ("destinations:\n  - {name: d, type: devsink, sources: [website], settings: {keep: 0}}\n",
         "destinations[0].settings.keep: Input should be greater than or equal to 1"),
        ("destinations:\n  - {name: d, type: devsink, sources: [web]}\n",
         "destinations[0].sources[0]: no source is named 'web'; the sources are backend, website"),
        ("destinations:\n  - {name: d, type: devsink, sources: [website, mobile]}\n",
         "destinations[0].sources[1]: no source is named 'mobile'"),
        ("destinations:\n  - {name: d, type: devsink, sources: []}\n",
         "destinations[0].sources: List should have at least 1 item"),
        ("destinations:\n  - {name: d, type: devsink, sources: [website]}\n  - {name: d, type: devsink, sources: [backend]}\n",
         "destinations[1].name: 'd' is used by two destinations"),
        ("destinations:\n  - {name: My Hook, type: devsink, sources: [website]}\n", "destinations[0].name"),
        ("destinations:\n  - {name: d, type: webhook, sources: [website], settings: {url: 'http://h/'}, delivery: {batch_max_events: 4001}}\n",
         "destinations[0].delivery.batch_max_events: a webhook destination takes at most 4000 events per request, not 4001"),
        ("destinations:\n  - {name: d, type: segment, sources: [website], settings: {write_key: k}, delivery: {batch_max_events: 2501}}\n",
         "destinations[0].delivery.batch_max_events: a segment destination takes at most 2500"),
        ("destinations:\n  - {name: d, type: devsink, sources: [website], delivery: {timeout_secs: 0}}\n",
         "destinations[0].delivery.timeout_secs: Input should be greater than 0"),
        ("destinations:\n  - {name: d, type: devsink, sources: [website], delivery: {retry_window_secs: soon}}\n",
         "destinations[0].delivery.retry_window_secs"),
        ("destinations:\n  - {name: d, type: devsink, sources: [website], delivery: {retries: 3}}\n",
         "destinations[0].delivery.retries: unknown field"),
        ("destinations:\n  - {name: d, type: devsink, sources: [website], setings: {}}\n",
         "destinations[0].setings: unknown field"),
        ("destinations:\n  - {name: a, type: devsink, sources: [website]}\n  - {name: b, type: webhook, sources: [website], settings: {urll: 'http://h/'}}\n",
         "destinations[1].settings.urll: unknown setting for a webhook destination"),
    ],
)  # fmt: skip
def test_destination_faults_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, SOURCES + text)
    with pytest.raises(ConfigError) as caught:
        load_workspace(path)
    assert expected in str(caught.value)
    assert f"{path}: {expected}" in str(caught.value)  # each fault on a line of its own


def test_every_fault_in_a_destinations_settings_is_named(tmp_path: Path) -> None:
    text = "destinations:\n  - {name: d, type: webhook, sources: [website], settings: {url: 'x', method: GET, extra: 1}}\n"  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load_workspace(write(tmp_path, SOURCES + text))
    fields = [line.split(": ")[1] for line in str(caught.value).splitlines()]
    assert sorted(fields) == [
        "destinations[0].settings.extra", "destinations[0].settings.method",
        "destinations[0].settings.url",
    ]  # fmt: skip


def test_state_on_postgres_keeps_its_schema_through_the_workers_dump() -> None:
    doc = {
        "sources": [{"name": "a"}],
        "state": {
            "backend": "postgres",
            "schema": "shop_eu",
            "dsn": "postgresql://headwater@10.0.0.5:5432/headwater",
            "password_env": "HW_PG",
        },
    }
    ws = parse_workspace(doc, "test")
    assert (ws.state.backend, ws.state.schema_name, ws.state.reconnect_secs) == (
        "postgres", "shop_eu", 60)  # fmt: skip
    # The worker process gets the workspace as JSON (by alias): the schema survives.
    again = type(ws).model_validate_json(ws.model_dump_json(by_alias=True))
    assert again.state == ws.state
