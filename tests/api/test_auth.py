"""The admin token: generated once and kept only as a SHA-256 (0600), or set through
HEADWATER_ADMIN_TOKEN, which wins; replaced with ``headwater admin-token --reset``."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headwater.cli import app as cli
from headwater.errors import ConfigError
from headwater.state.admin_token import (
    AUTH_DIR,
    ENV_VAR,
    TOKEN_FILE,
    TOKEN_PREFIX,
    ensure_admin_token,
    load_admin_token,
    reset_admin_token,
)

ENV_TOKEN = "operator-chosen-token-0123456789"


def files_under(path: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_a_new_token_is_kept_only_as_its_sha256_readable_by_the_owner(tmp_path: Path) -> None:
    token = ensure_admin_token(tmp_path, {})
    assert token is not None and token.startswith(TOKEN_PREFIX) and len(token) >= 40
    path = tmp_path / AUTH_DIR / TOKEN_FILE
    assert list(files_under(tmp_path)) == [path]  # no temporary file left behind
    assert path.read_text() == hashlib.sha256(token.encode()).hexdigest() + "\n"
    assert token.encode() not in path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_existing_token_is_not_replaced(tmp_path: Path) -> None:
    token = ensure_admin_token(tmp_path, {})
    before = files_under(tmp_path)
    assert ensure_admin_token(tmp_path, {}) is None  # nothing new to print
    assert files_under(tmp_path) == before
    loaded = load_admin_token(tmp_path, {})
    assert loaded.origin == "file"
    assert loaded.check(token)
    assert not loaded.check(token + "x") and not loaded.check("") and not loaded.check(None)


def test_two_data_dirs_get_different_tokens(tmp_path: Path) -> None:
    assert ensure_admin_token(tmp_path / "a", {}) != ensure_admin_token(tmp_path / "b", {})


def test_the_environment_wins_and_nothing_is_written(tmp_path: Path) -> None:
    env = {ENV_VAR: ENV_TOKEN}
    assert ensure_admin_token(tmp_path, env) is None
    assert files_under(tmp_path) == {}
    loaded = load_admin_token(tmp_path, env)
    assert loaded.origin == "env" and loaded.check(ENV_TOKEN)
    # over a token kept in the data dir, too
    file_token = ensure_admin_token(tmp_path, {})
    loaded = load_admin_token(tmp_path, env)
    assert loaded.check(ENV_TOKEN) and not loaded.check(file_token)


def test_a_short_environment_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"{ENV_VAR} is 15 characters; use at least 16"):
        load_admin_token(tmp_path, {ENV_VAR: "x" * 15})
    assert load_admin_token(tmp_path, {ENV_VAR: "x" * 16}).check("x" * 16)


def test_a_damaged_token_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    ensure_admin_token(tmp_path, {})
    (tmp_path / AUTH_DIR / TOKEN_FILE).write_text("hwa_plaintext_token\n")
    with pytest.raises(ConfigError, match="does not hold a SHA-256 digest; delete it"):
        load_admin_token(tmp_path, {})


def test_load_generates_a_token_when_there_is_none(tmp_path: Path) -> None:
    loaded = load_admin_token(tmp_path, {})
    assert loaded.origin == "file"
    assert (tmp_path / AUTH_DIR / TOKEN_FILE).read_text().strip() == loaded.digest


def test_reset_replaces_the_token(tmp_path: Path) -> None:
    old = ensure_admin_token(tmp_path, {})
    new = reset_admin_token(tmp_path)
    assert new != old and new.startswith(TOKEN_PREFIX)
    loaded = load_admin_token(tmp_path, {})
    assert loaded.check(new) and not loaded.check(old)
    assert stat.S_IMODE((tmp_path / AUTH_DIR / TOKEN_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {ENV_TOKEN}", True),
        (f"bearer {ENV_TOKEN}", True),
        (f"BEARER   {ENV_TOKEN}  ", True),
        (f"Basic {ENV_TOKEN}", False),
        (f"Bearer {ENV_TOKEN}x", False),
        (f"Bearer{ENV_TOKEN}", False),
        (ENV_TOKEN, False),
        ("Bearer ", False),
        ("", False),
        (None, False),
    ],
)
def test_the_authorization_header(tmp_path: Path, header: str | None, ok: bool) -> None:
    assert load_admin_token(tmp_path, {ENV_VAR: ENV_TOKEN}).check_header(header) is ok


def test_the_cli_resets_the_token_and_prints_it_once(tmp_path: Path) -> None:
    old = ensure_admin_token(tmp_path, {})
    runner = CliRunner()
    refused = runner.invoke(cli, ["admin-token", "--data-dir", str(tmp_path)])
    assert refused.exit_code == 2 and "--reset" in refused.output
    assert load_admin_token(tmp_path, {}).check(old)  # nothing changed

    done = runner.invoke(cli, ["admin-token", "--reset", "--data-dir", str(tmp_path)])
    assert done.exit_code == 0, done.output
    printed = next(w for w in done.output.split() if w.startswith(TOKEN_PREFIX))
    loaded = load_admin_token(tmp_path, {})
    assert loaded.check(printed) and not loaded.check(old)
