"""``headwater export | diff | apply``: the running configuration as code.

They talk to a running server's management API (``--url`` / ``HEADWATER_URL``, a token in
``HEADWATER_ADMIN_TOKEN``: the admin token or one with ``workspace:read`` / ``workspace:write``):

- ``export`` prints the running configuration as a workspace file, each secret as a
  ``${HEADWATER_SECRET_...}`` reference (the names go to stderr);
- ``diff -f FILE`` prints what ``apply`` would create, change and delete;
- ``apply -f FILE`` shows that plan, asks (unless ``--auto-approve``) and applies it in one
  change, guarded by the revision the plan was made against: a change made by someone else
  in between makes the apply fail (412) instead of undoing theirs.

``diff`` and ``apply`` expand ``${NAME}`` references from this command's environment (a CI
runner's secrets), so secrets never need to be written in the file. ``diff`` exits 0 when
nothing would change and 3 when something would, so CI can use it as a drift check.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from headwater.cli.common import DEFAULT_URL, Api, UrlOption, err, fail, out, refuse
from headwater.config.workspace import expand_env
from headwater.errors import ConfigError

FileOption = Annotated[Path, typer.Option("--file", "-f", help="The workspace YAML file.")]
DRIFT_EXIT = 3
MARKS = {"create": "[green]+[/]", "change": "[yellow]~[/]", "delete": "[red]-[/]"}


def export(url: UrlOption = DEFAULT_URL) -> None:
    """Print the running configuration as a workspace file (secrets as ${ENV} references)."""
    answer = Api(url).get("/api/v1/workspace")
    sys.stdout.write(f"# exported from {url} at revision {answer['revision']}\n")
    sys.stdout.write(yaml.safe_dump(answer["workspace"], sort_keys=False, allow_unicode=True))
    if answer["secrets"]:
        err.print("set these environment variables before `headwater apply`: "
                  + ", ".join(answer["secrets"]), highlight=False)  # fmt: skip


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise refuse(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise refuse(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise refuse(f"{path}: expected a mapping with 'sources:' at the top level")
    try:
        expanded: dict[str, Any] = expand_env(data, str(path))
    except ConfigError as exc:
        raise refuse(str(exc)) from exc
    return expanded


def _show(plan: dict[str, Any]) -> None:
    steps = plan["steps"]
    if not steps:
        out.print(f"No changes: the running configuration (revision {plan['revision']}) "
                  "matches the file.")  # fmt: skip
        return
    out.print(f"Against revision {plan['revision']}:")
    for step in steps:
        fields = f"  ({', '.join(step['fields'])})" if step["fields"] else ""
        out.print(f"  {MARKS[step['action']]} {step['action']} {escape(step['resource'])}"
                  f"{escape(fields)}", highlight=False)  # fmt: skip
    counts = {a: sum(1 for s in steps if s["action"] == a) for a in MARKS}
    out.print(f"Plan: {counts['create']} to create, {counts['change']} to change, "
              f"{counts['delete']} to delete.")  # fmt: skip


def diff(file: FileOption, url: UrlOption = DEFAULT_URL) -> None:
    """What `headwater apply` would create, change and delete (exit 3 if anything)."""
    plan = Api(url).post("/api/v1/workspace/plan", _read(file))
    _show(plan)
    if plan["steps"]:
        raise typer.Exit(DRIFT_EXIT)


def apply(
    file: FileOption,
    url: UrlOption = DEFAULT_URL,
    auto_approve: Annotated[bool, typer.Option(help="Apply without asking.")] = False,
) -> None:
    """Make the running configuration what the file says, in one change."""
    api = Api(url)
    document = _read(file)
    plan = api.post("/api/v1/workspace/plan", document)
    _show(plan)
    if not plan["steps"]:
        return
    if not auto_approve and not typer.confirm("Apply these changes?"):
        raise fail("not applied", 1)
    answer = api.call("PUT", "/api/v1/workspace", {}, document,
                      headers={"if-match": f'"{plan["revision"]}"'})  # fmt: skip
    out.print(f"Applied: revision {answer['revision']}.")
    for name, what in sorted(answer.get("applied", {}).get("destinations", {}).items()):
        out.print(f"  destination {escape(name)}: {escape(what)}", highlight=False)
    for name, what in sorted(answer.get("applied", {}).get("kept", {}).items()):
        out.print(f"  destination {escape(name)}: {escape(what)}", highlight=False)
    if answer.get("restartRequired"):
        out.print("Takes effect at the next start: " + ", ".join(answer["restartRequired"]))
