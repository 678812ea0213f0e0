"""Write keys that the workspace file leaves out: generated once, kept in the data dir.

A source without ``write_key`` gets a random one at first start. It is stored in
``<data-dir>/write_keys.json`` so it stays the same across restarts, and printed only when it
is generated. A key written in the workspace file always wins.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from headwater.config.workspace import SourceConfig, Workspace
from headwater.errors import ConfigError

KEYS_FILE = "write_keys.json"


def generate_write_key(source_name: str) -> str:
    prefix = "".join(c for c in source_name if c.isalnum())[:12] or "src"
    return f"wk_{prefix}_{secrets.token_urlsafe(18)}"


def assign_write_keys(workspace: Workspace, data_dir: Path) -> tuple[Workspace, list[SourceConfig]]:
    """Fill in missing write keys; returns the workspace and the sources given a new key."""
    path = data_dir / KEYS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(stored, dict) or not all(isinstance(v, str) for v in stored.values()):
                raise ValueError("expected an object of source names to write keys")
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{path} is unreadable ({exc}); restore it from a backup or delete it to "
                "generate new write keys for sources that have none in the workspace file"
            ) from exc
    taken = {s.write_key for s in workspace.sources if s.write_key}
    sources: list[SourceConfig] = []
    generated: list[SourceConfig] = []
    for source in workspace.sources:
        if source.write_key is None:
            key = stored.get(source.name)
            if key is None or key in taken:
                key = generate_write_key(source.name)
                stored[source.name] = key
                source = source.model_copy(update={"write_key": key})
                generated.append(source)
            else:
                source = source.model_copy(update={"write_key": key})
            taken.add(key)
        sources.append(source)
    if generated:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(stored, indent=2, sort_keys=True), encoding="utf-8")
            os.chmod(tmp, 0o600)
            tmp.replace(path)
        except OSError as exc:
            raise ConfigError(
                f"cannot save generated write keys to {path} ({exc.strerror}); make the data "
                "directory writable or set write_key on every source"
            ) from exc
    return workspace.model_copy(update={"sources": sources}), generated
