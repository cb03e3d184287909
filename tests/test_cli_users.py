"""`formwork user list | create | passwd | disable | enable`: operators manage accounts from the shell.

Each command runs as the real CLI does (its own app from FORMWORK_* variables) against the test database;
routine mistakes are one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from formwork.cli import main


@pytest.fixture
def cli(app: Any, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("FORMWORK_DATABASE_URL", database_url)
    monkeypatch.setenv("FORMWORK_SECRET_KEY", "test-secret")
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(main, list(args), catch_exceptions=False)

    return run


def login(app: Any, username: str, password: str) -> int:
    return int(app.test_client().post("/api/v1/auth/login", json={"username": username,
                                                                  "password": password}).status_code)


def test_create_list_disable_enable(cli: Any, app: Any) -> None:
    r = cli("user", "create", "lina", "--name", "李娜", "--email", "lina@example.com",
            "--password", "a-long-pass-123")
    assert r.exit_code == 0, r.output
    assert "created user 'lina'" in r.output
    r = cli("user", "list")
    assert r.exit_code == 0
    assert "lina\t李娜\tlina@example.com" in r.output
    assert login(app, "lina", "a-long-pass-123") == 200

    assert cli("user", "disable", "lina").exit_code == 0
    assert login(app, "lina", "a-long-pass-123") == 401
    assert "lina" in cli("user", "list", "--inactive").output
    assert cli("user", "enable", "lina").exit_code == 0
    assert login(app, "lina", "a-long-pass-123") == 200


def test_passwd_recovers_a_locked_out_admin_and_ends_their_tokens(cli: Any, app: Any, admin: Any) -> None:
    assert admin.get("/me")[0] == 200
    for _ in range(6):
        login(app, "admin", "wrong-password")
    assert login(app, "admin", "admin-pass-1") in (401, 429)  # locked out now
    r = cli("user", "passwd", "admin", "--password", "a-new-long-pass-9")
    assert r.exit_code == 0, r.output
    assert login(app, "admin", "a-new-long-pass-9") == 200
    assert admin.get("/me")[0] == 401  # the old API token ended with the reset


@pytest.mark.parametrize("args, message", [
    (("user", "create", "x1", "--password", "short"), "password"),
    (("user", "passwd", "nobody", "--password", "a-long-pass-123"), "no user 'nobody'"),
    (("user", "disable", "nobody"), "no user 'nobody'"),
    (("user", "create", "x2", "--password", "a-long-pass-123", "--role", "no_such_role"), "no_such_role"),
])
def test_routine_mistakes_are_one_line_and_exit_1(cli: Any, args: tuple[str, ...], message: str) -> None:
    r = cli(*args)
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], r.output
    assert "Traceback" not in r.output


def test_a_duplicate_username_is_refused(cli: Any) -> None:
    assert cli("user", "create", "dup", "--password", "a-long-pass-123").exit_code == 0
    r = cli("user", "create", "dup", "--password", "a-long-pass-123")
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "dup" in r.output


def test_every_option_has_help() -> None:
    import click

    group = main.commands["user"]
    assert isinstance(group, click.Group)
    for command in group.commands.values():
        assert command.help, command.name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{command.name} {param.name}"
