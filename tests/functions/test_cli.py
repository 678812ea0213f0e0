"""``headwater functions test NAME --event FILE``: one event (or request body) through a
function of the workspace file, in a real worker process, without a server."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from headwater.cli import app as cli

runner = CliRunner()

CODE = {
    "crm": """
from headwater.functions import ValidationError

def on_track(event, settings):
    print("got", event["event"], "key", settings["api_key"])
    if not event.get("userId"):
        raise ValidationError("no userId")
""",
    "scrub": """
def on_track(event, settings):
    if event["properties"].get("internal"):
        return None
    return {**event, "properties": {"scrubbed": True}}
""",
    "hook": """
from headwater.functions import analytics

def on_request(request, settings):
    analytics.track(event="Pinged", user_id=request.json()["who"],
                    properties={"sig": request.headers.get("x-signature")})
""",
}


def write(tmp_path: Path) -> Path:
    for name, code in CODE.items():
        (tmp_path / f"{name}.py").write_text(code)
    config = tmp_path / "workspace.yaml"
    config.write_text(
        "sources:\n  - {name: website, write_key: wk_website_cli_1}\n"
        "destinations:\n  - {name: sink, type: devsink, sources: [website]}\n"
        "functions:\n"
        "  - {name: crm, kind: destination, file: crm.py, sources: [website],\n"
        "     settings: {api_key: {env: CRM_KEY}}}\n"
        "  - {name: scrub, kind: insert, file: scrub.py, destination: sink}\n"
        "  - {name: hook, kind: source, file: hook.py, source: website}\n"
    )
    return config


def run(config: Path, *args: str, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    result = runner.invoke(cli, ["functions", "test", *args, "--config", str(config)],
                           env=env or {"CRM_KEY": "k-1"})  # fmt: skip
    return result.exit_code, result.output


def test_functions_test_runs_each_kind_on_one_event(tmp_path: Path) -> None:
    config = write(tmp_path)
    good = tmp_path / "good.json"
    good.write_text('{"type": "track", "event": "Signed Up", "userId": "u1", "properties": {}}')
    code, output = run(config, "crm", "--event", str(good))
    assert code == 0, output
    assert "ok in" in output and "got Signed Up key k-1" in output

    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "track", "event": "Signed Up", "properties": {"internal": true}}')
    code, output = run(config, "crm", "--event", str(bad))
    assert code == 1 and "ValidationError: no userId" in output

    code, output = run(config, "scrub", "--event", str(good), "--json")
    assert code == 0, output
    doc = orjson.loads(output)
    assert doc["result"]["v"]["properties"] == {"scrubbed": True}
    assert doc["result"]["changes"] == ["properties.scrubbed added"]
    code, output = run(config, "scrub", "--event", str(bad))
    assert code == 0 and "dropped (returned None)" in output

    body = tmp_path / "body.json"
    body.write_text('{"who": "u-9"}')
    code, output = run(config, "hook", "--event", str(body), "-H", "X-Signature: abc", "--json")
    assert code == 0, output
    (emitted,) = orjson.loads(output)["emitted"]
    assert emitted == {"type": "track", "event": "Pinged", "userId": "u-9",
                       "properties": {"sig": "abc"}}  # fmt: skip


def test_functions_test_names_what_is_wrong(tmp_path: Path) -> None:
    config = write(tmp_path)
    event = tmp_path / "e.json"
    event.write_text("[1, 2]")
    cases = [
        (("nope", "--event", str(event)), "no function is named 'nope'"),
        (("crm", "--event", str(tmp_path / "missing.json")), "cannot read"),
        (("crm", "--event", str(event)), "must hold one event"),
        (("hook", "--event", str(event), "-H", "no colon"), "is not 'Name: value'"),
    ]
    for args, message in cases:
        code, output = run(config, *args)
        assert code == 2 and message in output, (args, output)
    good = tmp_path / "good.json"
    good.write_text('{"type": "track", "event": "Signed Up", "userId": "u1"}')
    code, output = run(config, "crm", "--event", str(good), env={"CRM_KEY": None})
    assert code == 2 and "CRM_KEY" in output, output
    (tmp_path / "scrub.py").write_text("def on_track(event, settings)\n    pass\n")
    code, output = run(config, "scrub", "--event", str(good))
    assert code == 2 and "scrub.py:1: SyntaxError" in output, output
