"""Changing the running configuration: one way for the write API, ``headwater apply`` and
the workspace file at start.

Every change builds the whole candidate workspace (the stored resources with the change
made), validates it with :func:`~headwater.config.workspace.parse_workspace` — the same code
as the workspace file — and only then writes it to the store (one transaction, checked
against the versions the caller read) and hands it to the running process. An invalid
change is refused whole with each fault's field; nothing is half-applied.

Secrets: what the API shows is masked (:data:`MASK`); a masked value sent back means "keep
the stored one". ``headwater export`` writes each secret as an environment reference
(``${HEADWATER_SECRET_...}``) that ``apply`` and ``serve`` expand.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from headwater.config.keys import generate_write_key
from headwater.config.resources import KINDS, SETTINGS, Kind, Resources, join, section, split
from headwater.config.workspace import ENV_REF, Workspace, parse_workspace
from headwater.errors import ConfigError
from headwater.state.audit import AuditLog, change_action, diff_of
from headwater.state.config import ConfigStore, Conflict, Key, Snapshot, Written

logger = logging.getLogger("headwater.config")

MASK = "**********"
ENV_PREFIX = "HEADWATER_SECRET_"
DEFAULT_GRACE_SECS = 24 * 3600.0

Path_ = tuple[str | int, ...]


# ---------------------------------------------------------------------- secrets


def _secret_fields(model: type[BaseModel]) -> set[str]:
    return {n for n, f in model.model_fields.items() if "SecretStr" in str(f.annotation)}


def secret_paths(kind: str, doc: dict[str, Any]) -> list[Path_]:
    """Where a resource keeps secrets: write keys, secret-typed settings, header values."""
    if kind == "sources":
        return [("write_key",)] if doc.get("write_key") else []
    settings = doc.get("settings")
    if not isinstance(settings, dict):
        return []
    model: type[BaseModel] | None = None
    if kind == "destinations":
        from headwater.destinations import TYPES

        found = TYPES.get(str(doc.get("type")))
        model = found.settings_model if found is not None else None
    elif kind == "alert-notifiers":
        from headwater.status.config import SETTINGS_MODELS

        model = SETTINGS_MODELS.get(str(doc.get("type")))
    if model is None:
        return []
    paths: list[Path_] = [("settings", n) for n in _secret_fields(model) if settings.get(n)]
    headers = settings.get("headers")
    if isinstance(headers, dict):
        paths += [("settings", "headers", h) for h in headers]
    return paths


def _at(doc: Any, path: Path_) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _put(doc: Any, path: Path_, value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def masked(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for path in secret_paths(kind, doc):
        _put(out, path, MASK)
    return out


def mask_all(document: dict[str, Any]) -> dict[str, Any]:
    """A workspace document with every resource's secrets masked (:func:`masked`)."""
    out = copy.deepcopy(document)
    for kind in KINDS.values():
        items = section(out, kind.path)
        for i, doc in enumerate(items if isinstance(items, list) else []):
            if isinstance(doc, dict):
                items[i] = masked(kind.plural, doc)
    return out


def keep_masked(
    kind: str, new: dict[str, Any], old: dict[str, Any] | None, where: str = ""
) -> dict[str, Any]:
    """A masked value sent back (as read from the API) keeps the stored secret — for the
    same target only: a destination or notifier whose type or other settings changed needs
    its secrets sent again, so a token that may change settings but not read secrets cannot
    point a stored credential at a server of its own. A mask with nothing stored, or a
    ``${NAME}`` left unexpanded, is refused with its field (``where``: the resource's place,
    for a whole workspace)."""
    out = copy.deepcopy(new)
    faults = []
    for path in secret_paths(kind, new):
        value = _at(out, path)
        field_ = ".".join(str(p) for p in path)
        field_ = f"{where}.{field_}" if where else field_
        if value == MASK:
            stored = _lookup(old, path)
            if stored is None or stored == MASK:
                faults.append(
                    fault(
                        "invalid",
                        "this secret is masked and none is stored to keep: send the secret itself",
                        field_,
                    )
                )
            elif kind != "sources" and not _same_target(kind, new, old):
                faults.append(
                    fault(
                        "invalid",
                        "send this secret again: the type or the other "
                        "settings changed, and a masked secret is kept only for "
                        "the same target",
                        field_,
                    )
                )
            else:
                _put(out, path, stored)
        elif isinstance(value, str) and ENV_REF.match(value):
            faults.append(
                fault(
                    "invalid",
                    f"{value} is not expanded: `headwater apply` "
                    "expands it from its own environment; send the value",
                    field_,
                )
            )
    if faults:
        raise ChangeError(400, faults)
    return out


def _lookup(doc: Any, path: Path_) -> Any:
    try:
        return _at(doc, path)
    except (KeyError, IndexError, TypeError):
        return None


def _same_target(kind: str, new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Same type and the same settings but for the secrets."""
    if old is None or new.get("type") != old.get("type"):
        return False

    def public(doc: dict[str, Any]) -> Any:
        out = copy.deepcopy(doc.get("settings"))
        for path in secret_paths(kind, doc):
            if path[0] == "settings":
                _put({"settings": out}, path, None)
        return out

    return bool(public(new) == public(old))


def env_name(kind: str, name: str, path: Path_) -> str:
    raw = "_".join(str(p) for p in (kind, name, *path))
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]+", "_", raw.upper()).strip("_")


def with_env_refs(document: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The workspace with every secret as ``${HEADWATER_SECRET_...}``; and those names.
    Only the secrets change: a section the document leaves out stays out."""
    out = copy.deepcopy(document)
    names: list[str] = []
    for kind in KINDS.values():
        items = section(out, kind.path)
        for i, doc in enumerate(items if isinstance(items, list) else []):
            if not isinstance(doc, dict):
                continue
            for path in secret_paths(kind.plural, doc):
                ref = env_name(kind.plural, kind.key(doc, i), path)
                _put(doc, path, f"${{{ref}}}")
                names.append(ref)
    return out, names


def record_pauses(
    store: ConfigStore, old: Workspace, new: Workspace, end: int, live: bool = True
) -> None:
    """A destination disabled or deleted now gets an open pause after ``end`` (the log's
    last offset): nothing accepted from here on is sent to it; enabled again, the pause
    ends — what it had not delivered before the pause (kept until purged) goes out, what was
    accepted during the pause never does. Created under the name of a deleted one while
    running (``live``), it is a new destination: its old pauses are forgotten and the engine
    starts it at the log's end. At a start (``live=False``: the file re-added it) it takes
    up its old place instead, its pauses kept."""
    for dest in new.destinations:
        before = old.destination(dest.name)
        if before is None and live:
            store.forget(dest.name)
            if not dest.enabled:
                store.pause(dest.name, end)
        elif not dest.enabled and (before is None or before.enabled):
            store.pause(dest.name, end)
        elif dest.enabled and (before is None or not before.enabled):
            store.resume(dest.name, end)
    for dest in old.destinations:
        if new.destination(dest.name) is None:
            store.pause(dest.name, end)


@functools.cache
def _defaults() -> dict[str, Any]:
    """The model's defaults as a workspace document, made once (read, never changed)."""
    return parse_workspace({"sources": [{"name": "x"}]}).model_dump(mode="json", by_alias=True)


def with_defaults(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with each list section it leaves out set to the model's default."""
    base = _defaults()
    out = copy.deepcopy(document)
    for kind in KINDS.values():
        if kind.plural == "sources":  # required: its absence is the document's fault
            continue
        parent, default = out, base
        for part in kind.path[:-1]:
            if part not in parent:
                parent[part] = {}
            if not isinstance(parent[part], dict):
                break  # not a mapping: validation names it
            parent, default = parent[part], default[part]
        else:
            if kind.path[-1] not in parent:
                parent[kind.path[-1]] = copy.deepcopy(default[kind.path[-1]])
    return out


# ---------------------------------------------------------------------- faults and plans


class ChangeError(Exception):
    """A change refused whole: ``faults`` are ``{"type", "message", "field"}``."""

    def __init__(
        self, status: int, faults: list[dict[str, Any]], extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__("; ".join(f["message"] for f in faults))
        self.status, self.faults = status, faults
        self.extra = extra or {}  # more fields of the answer (a rotated key stored anyway)


def fault(kind: str, message: str, where: str | None = None) -> dict[str, Any]:
    return {"type": kind, "message": message, "field": where}


def _faults(exc: ConfigError, target: Resources, changed: Key | None) -> list[dict[str, Any]]:
    """The validation's lines as faults; a fault inside the changed resource names its
    field relative to the request's body (``settings.url``)."""
    prefix = None
    if changed is not None and changed[0] in KINDS:
        kind = KINDS[changed[0]]
        names = [n for (k, n) in target if k == kind.plural]
        if changed[1] in names:
            prefix = f"{kind.where}[{names.index(changed[1])}]"
    out = []
    for line in str(exc).splitlines():
        rest = line.removeprefix("workspace: ")
        where, sep, message = rest.partition(": ")
        if not sep or " " in where:
            where, message = "", rest
        if prefix is not None and (
            where == prefix or where.startswith((prefix + ".", prefix + "["))
        ):
            where = where[len(prefix) :].lstrip(".") or None  # type: ignore[assignment]
        out.append(fault("invalid", message, where or None))
    return out


@dataclass(frozen=True)
class Step:
    """One line of a plan: ``create``, ``change`` or ``delete`` of a resource."""

    action: str
    kind: str
    name: str
    fields: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "resource": f"{self.kind}/{self.name}",
            "fields": self.fields,
        }


def _changed_fields(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += _changed_fields(old.get(k), new.get(k), f"{where}.{k}" if where else str(k))
        return out
    return [] if old == new else [where or "(whole)"]


def plan(current: Resources, target: Resources) -> list[Step]:
    steps = [Step("create", k, n) for (k, n) in target if (k, n) not in current]
    for key, doc in target.items():
        if key in current and current[key] != doc:
            steps.append(Step("change", key[0], key[1], _changed_fields(current[key], doc)))
    steps += [Step("delete", k, n) for (k, n) in current if (k, n) not in target]
    return steps


# ---------------------------------------------------------------------- the service


Apply = Callable[[Workspace, Snapshot, Snapshot], Awaitable[dict[str, Any]]]
"""Run a validated workspace in this process (app.py): the snapshots before and after."""


LIVE = frozenset({"sources", "destinations", "transformations", "tracking-plans",
                  "alert-rules", "alert-notifiers", "watch", "warehouses", "spaces"})  # fmt: skip
"""Kinds a running server applies at once; a change to ``settings`` (the log, state,
gateway, status and functions sections, the workspace's name) is stored and takes effect
at the next start, and the answer lists it under ``restartRequired``."""


class ConfigService:
    """The configuration as the API changes it: the store, validation, the live apply,
    the audit trail.

    ``read_only``: why changes are refused (with ``state: {backend: postgres}`` every node
    runs the workspace file it reads; the API's writes would change one node only).
    ``base_dir``: where the workspace file is, against which function files are checked."""

    def __init__(
        self,
        store: ConfigStore,
        apply: Apply,
        audit: AuditLog | None = None,
        read_only: str | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.store = store
        self._apply = apply
        self._audit_log = audit
        self.read_only = read_only
        self.base_dir = base_dir
        self._lock = asyncio.Lock()  # one change at a time: each sees the one before
        self._unapplied: str | None = None  # why the stored revision does not run yet

    def _writable(self) -> None:
        if self.read_only is not None:
            raise ChangeError(409, [fault("read_only", self.read_only)])

    def snapshot(self) -> Snapshot:
        return self.store.snapshot()

    def kind(self, plural: str) -> Kind:
        return KINDS[plural]

    def get(self, kind: str, name: str) -> tuple[dict[str, Any], int]:
        snap = self.snapshot()
        doc = snap.resources.get((kind, name))
        if doc is None:
            raise ChangeError(404, [fault("not_found", self._missing(snap, kind, name))])
        return doc, snap.versions[(kind, name)]

    def _missing(self, snap: Snapshot, kind: str, name: str) -> str:
        names = [n for (k, n) in snap.resources if k == kind]
        return (
            f"no {KINDS[kind].singular} is named {name!r}; the {kind} are "
            f"{', '.join(names) or 'none'}"
        )

    async def put(
        self,
        kind: str,
        name: str,
        doc: dict[str, Any] | None,
        if_match: int | None,
        create: bool = False,
        actor: str = "admin",
        origin: str = "api",
        change: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Create (``create``), replace or (``doc`` None) delete one resource; or, with
        ``change``, replace it by ``change(stored)``, read under the lock (a toggle or new
        filters never undo a change made a moment before)."""
        self._writable()
        async with self._lock:
            snap = self.snapshot()
            key = (kind, name)
            old = snap.resources.get(key)
            if create and old is not None:
                raise ChangeError(409, [fault("conflict", f"{kind}/{name} exists already; "
                                              "update it with PUT, or choose another name",
                                              "name")])  # fmt: skip
            if not create and old is None:
                raise ChangeError(404, [fault("not_found", self._missing(snap, kind, name))])
            if change is not None:
                assert old is not None
                doc = change(copy.deepcopy(old))
            target = dict(snap.resources)
            if doc is None:
                del target[key]
            else:
                named = kind != "alert-rules" or "name" in doc or create
                doc = keep_masked(kind, {**doc, "name": doc.get("name", name)} if named else doc,
                                  old)  # fmt: skip
                if kind == "sources" and not doc.get("write_key"):
                    doc["write_key"] = (old or {}).get("write_key") or generate_write_key(name)
                target[key] = doc
            expected = {key: snap.versions.get(key)} if if_match is not None or create else {}
            if if_match is not None:
                expected[key] = if_match
            result = await self._write(snap, target, expected, key, actor, origin)
            result["version"] = self.snapshot().versions.get(key)
            if doc is not None and kind == "sources" and (old or {}).get("write_key") is None:
                result["writeKey"] = doc["write_key"]  # shown once, at creation
            return result

    async def rotate(
        self, name: str, grace_secs: float, if_match: int | None, actor: str, origin: str
    ) -> dict[str, Any]:
        """A new write key for source ``name``; the old one is accepted ``grace_secs`` more
        (it is retired before the new configuration runs, so no request falls between)."""
        retired: dict[str, Any] = {}

        def new_key(doc: dict[str, Any]) -> dict[str, Any]:
            old_key = doc.get("write_key")
            if old_key:
                retired["key"] = old_key
                retired["until"] = self.store.retire_key(name, old_key, grace_secs)
            retired["new"] = generate_write_key(name)
            return {**doc, "write_key": retired["new"]}

        try:
            result = await self.put("sources", name, None, if_match, actor=actor, origin=origin,
                                    change=new_key)  # fmt: skip
        except ChangeError as exc:
            if exc.status == 500 and "new" in retired:  # stored, not yet running: the new key
                exc.extra["writeKey"] = retired["new"]  # is the key from now on; shown once
                raise
            if "key" in retired:  # the rotation did not happen: the old key stays the key
                self.store.unretire(retired["key"])
            raise
        except BaseException:
            if "key" in retired:
                self.store.unretire(retired["key"])
            raise
        result["writeKey"] = retired["new"]  # shown once
        if "until" in retired:
            result["previousKeyValidUntilMs"] = retired["until"]
        return result

    async def replace_all(
        self,
        document: dict[str, Any],
        if_revision: int | None,
        actor: str = "admin",
        origin: str = "api",
    ) -> dict[str, Any]:
        """``headwater apply``: the whole workspace, in one change."""
        self._writable()
        async with self._lock:
            snap = self.snapshot()
            if if_revision is not None and if_revision != snap.revision:
                raise ChangeError(412, [fault("precondition_failed", (
                    f"the workspace changed since revision {if_revision} (it is at "
                    f"{snap.revision}); run headwater diff again"))])  # fmt: skip
            target = self.candidate(document, snap)
            return await self._write(snap, target, {}, None, actor, origin)

    def candidate(self, document: dict[str, Any], snap: Snapshot) -> Resources:
        """A whole workspace as resources, masked secrets and missing write keys taken
        from what is stored; a list section the document leaves out has its default, as
        in the workspace file (no ``alerts.rules``: the default rule)."""
        target = split(with_defaults(document))
        places: dict[str, int] = {}
        faults: list[dict[str, Any]] = []
        for (kind, name), doc in target.items():
            old = snap.resources.get((kind, name))
            index = places[kind] = places.get(kind, -1) + 1
            where = f"{KINDS[kind].where}[{index}]" if kind in KINDS else ""
            try:
                target[(kind, name)] = keep_masked(kind, doc, old, where)
            except ChangeError as exc:  # every resource's faults, in one answer
                faults += exc.faults
                continue
            if kind == "sources" and not doc.get("write_key"):
                stored = (old or {}).get("write_key")
                target[(kind, name)]["write_key"] = stored or generate_write_key(name)
        if faults:
            raise ChangeError(400, faults)
        return target

    def plan_for(self, document: dict[str, Any], compare_secrets: bool = True) -> dict[str, Any]:
        """What applying ``document`` would change (validated like the change itself).
        ``compare_secrets=False`` (a token that may read, not write): a secret that differs
        is not reported, so a plan cannot confirm a guessed secret."""
        snap = self.snapshot()
        target = self.candidate(document, snap)
        workspace = self._validate(target, None)
        target = split(workspace.model_dump(mode="json", by_alias=True))
        current = {k: masked(k[0], v) for k, v in snap.resources.items()}
        steps = plan(current, {k: masked(k[0], v) for k, v in target.items()})
        if compare_secrets:  # a secret that differs shows as a changed field, never its value
            for step in plan(snap.resources, target):
                if step.action == "change" and not any(
                    s.kind == step.kind and s.name == step.name for s in steps
                ):
                    steps.append(Step("change", step.kind, step.name, ["(a secret)"]))
        return {"revision": snap.revision, "steps": [s.as_dict() for s in steps]}

    def _validate(self, target: Resources, changed: Key | None) -> Workspace:
        try:
            workspace = parse_workspace(join(target), "workspace")
            if workspace.functions and self.base_dir is not None:
                from headwater.functions.check import check_files  # no function code runs

                workspace = check_files(workspace, self.base_dir, os.environ)
            return workspace
        except ConfigError as exc:
            raise ChangeError(400, _faults(exc, target, changed)) from None

    async def _write(
        self,
        snap: Snapshot,
        target: Resources,
        expected: dict[Key, int | None],
        changed: Key | None,
        actor: str,
        origin: str,
    ) -> dict[str, Any]:
        workspace = self._validate(target, changed)
        # stored as the model writes it (defaults filled in): a resource sent with or
        # without its defaults is the same resource, and `headwater diff` shows no noise
        target = split(workspace.model_dump(mode="json", by_alias=True))
        try:
            written = await self.store.replace(target, expected)
        except Conflict as exc:
            raise ChangeError(412, [fault("precondition_failed", str(exc), None)]) from None
        after = self.snapshot()
        await self._audit(snap, after, written, actor, origin)  # stored: recorded, come what may
        applied: dict[str, Any] = {}
        if not written.empty or self._unapplied is not None:
            try:
                applied = await self._apply(workspace, snap, after)
            except Exception as exc:
                logger.exception("configuration revision %d is stored but not running",
                                 after.revision)  # fmt: skip
                self._unapplied = str(exc) or type(exc).__name__
                raise ChangeError(500, [fault("not_applied", (
                    f"the change is stored (revision {after.revision}) but applying it to the "
                    f"running server failed: {self._unapplied}; send a change again (the same "
                    "one will do) to retry, or restart the server, which runs the stored "
                    "configuration"))]) from None  # fmt: skip
            self._unapplied = None
        touched = [*written.created, *written.changed, *written.deleted]
        restart = [_name(k) for k in touched if k[0] not in LIVE]
        return {
            "revision": written.revision,
            **_summary(written),
            "applied": applied,
            "restartRequired": restart,
        }

    async def _audit(
        self, before: Snapshot, after: Snapshot, written: Written, actor: str, origin: str
    ) -> None:
        """One entry per resource changed, its secrets masked (the settings model's secret
        fields here; :meth:`AuditLog.record` masks what names a secret)."""
        if self._audit_log is None:
            return
        for key in [*written.created, *written.changed, *written.deleted]:
            old, new = before.resources.get(key), after.resources.get(key)
            old = masked(key[0], old) if old is not None else None
            new = masked(key[0], new) if new is not None else None
            action = change_action(old, new)
            where = self._audit_log.where
            try:
                await asyncio.to_thread(
                    self._audit_log.record, actor, action, _name(key), diff_of(old, new), origin
                )
            except Exception as exc:  # the change stands; say what the trail misses
                logger.error(
                    "audit trail at %s: could not record %s %s by %s (%s): %s",
                    where,
                    action,
                    _name(key),
                    actor,
                    origin,
                    exc,
                )


def _name(key: Key) -> str:
    return SETTINGS if key[0] == SETTINGS else f"{key[0]}/{key[1]}"


def _summary(written: Written) -> dict[str, list[str]]:
    def names(keys: list[Key]) -> list[str]:
        return [_name(k) for k in keys]

    return {
        "created": names(written.created),
        "changed": names(written.changed),
        "deleted": names(written.deleted),
    }
