"""The `formwork` command: init, serve, worker, run, template install, demo, export, import, user."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import click
from flask import Flask


def _app() -> Flask:
    from formwork import create_app

    return create_app()


def _system_service(conn: Any, cat: Any) -> Any:
    from formwork.metadata.service import Actor, MetadataService

    return MetadataService(conn, Actor.system(), cat)


def ensure_admin(app: Flask, username: str | None, password: str | None) -> str | None:
    """Create the first admin from arguments or FORMWORK_ADMIN_* when there is no user yet."""
    from sqlalchemy import func, select

    from formwork import db
    from formwork.runtime import auth

    p = app.extensions["formwork"]
    with db.transaction(p.engine) as conn:
        if conn.execute(select(func.count()).select_from(db.users)).scalar():
            return None
        username = username or os.environ.get("FORMWORK_ADMIN_USERNAME") or "admin"
        password = password or os.environ.get("FORMWORK_ADMIN_PASSWORD")
        if not password:
            import secrets

            password = secrets.token_urlsafe(12)
            click.echo(f"created user '{username}' with password: {password}  "
                       "(change it after logging in: your name, top right → Change password)")
        auth.create_user(conn, {"username": username, "name": "Administrator", "password": password},
                         is_admin=True)
        auth.audit(conn, "user_created", username=username, target=f"user:{username}", details={"by": "init"})
        return username


def install_if_missing(app: Flask, template: str, demo: bool, language: str = "zh-CN") -> bool:
    from formwork import db
    from formwork.metadata.portable import load_template
    from formwork.runtime.demo import install_template

    p = app.extensions["formwork"]
    key = load_template(template)["app"]["key"]
    with db.transaction(p.engine) as conn:
        cat = p.catalogs.get(conn)
        if key in cat.apps_by_key:
            return False
        install_template(_system_service(conn, cat), template, key, demo, language)
    return True


@click.group()
def main() -> None:
    """Formwork: zero-code business apps with a bundled CRM."""


@main.command()
@click.option("--username", default=None, help="first admin (default FORMWORK_ADMIN_USERNAME or admin)")
@click.option("--password", default=None, help="first admin's password (default FORMWORK_ADMIN_PASSWORD)")
@click.option("--with-crm/--no-crm", default=False, help="also install the CRM template with demo data")
@click.option("--language", type=click.Choice(["zh-CN", "en"]), envvar="FORMWORK_LANGUAGE", default="zh-CN",
              show_default=True, help="the language the demo data is written in (FORMWORK_LANGUAGE)")
def init(username: str | None, password: str | None, with_crm: bool, language: str) -> None:
    """Create or upgrade the database and the first admin user."""
    app = _app()
    ensure_admin(app, username, password)
    if with_crm and install_if_missing(app, "crm", demo=True, language=language):
        click.echo("installed the CRM with demo data")
    click.echo("database ready")


@main.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=5000, type=int)
@click.option("--threads", default=8, type=int)
def serve(host: str, port: int, threads: int) -> None:
    """Serve the web app and the API until stopped (SIGTERM ends it cleanly); no automations run here."""
    import logging

    from waitress.server import create_server

    signal.signal(signal.SIGTERM, _exit_cleanly)  # before the app exists: a stop during start-up is clean too
    app = _app()
    logging.basicConfig()
    try:
        server = create_server(app, host=host, port=port, threads=threads, ident="Formwork")
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    click.echo(f"Formwork on http://{host}:{port}/")
    server.run()  # returns after SIGTERM/SIGINT, once the requests in progress are answered


def _exit_cleanly(*_: Any) -> None:
    sys.exit(0)


def _log_info() -> None:
    """Formwork's own INFO lines; the libraries' routine ones (each migration check, each schedule tick)
    only from WARNING on."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in ("alembic", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)


@main.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=5000, type=int)
@click.option("--threads", default=8, type=int)
@click.option("--worker/--no-worker", default=True, help="also run the automations (default: yes)")
@click.option("--stop-timeout", default=30.0, type=float, show_default=True,
              help="seconds the children get to finish their work when stopping")
def run(host: str, port: int, threads: int, worker: bool, stop_timeout: float) -> None:
    """Serve the app and run the automations in one command (single machine; see docs/operations.md).

    Supervises `formwork serve` and `formwork worker` as child processes; Ctrl-C or SIGTERM stops both.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from formwork.supervise import Supervisor, port_problem

    _log_info()
    problem = port_problem(host, port)
    if problem:
        raise click.ClickException(problem)
    try:
        app = _app()  # creates or upgrades the database once, before two processes could race to
    except SQLAlchemyError as e:
        raise click.ClickException(f"cannot open the database: {str(e).splitlines()[0][:300]}") from None
    app.extensions["formwork"].engine.dispose()
    me = [sys.executable, "-m", "formwork"]
    web = [*me, "serve", "--host", host, "--port", str(port), "--threads", str(threads)]
    code = Supervisor(web, [*me, "worker"] if worker else None, stop_timeout=stop_timeout).run()
    sys.exit(code)


@main.command()
@click.option("--poll", default=0.5, type=float, help="seconds to sleep when there is no work")
@click.option("--tick", default=15.0, type=float, help="seconds between schedule checks")
@click.option("--grace", default=None, type=float,
              help="missed schedule firings older than this many seconds are skipped (default 3600)")
@click.option("--lease", default=None, type=float, help="seconds a claimed delivery stays reserved (default 30)")
def worker(poll: float, tick: float, grace: float | None, lease: float | None) -> None:
    """Run automations until stopped (SIGTERM finishes the current work and exits)."""
    import datetime as dt

    from formwork.automation.settings import Settings
    from formwork.automation.worker import run_worker

    signal.signal(signal.SIGTERM, _exit_cleanly)  # until run_worker installs its own (finish, then stop)
    _log_info()
    app = _app()
    settings = Settings.from_config(app.config)
    if grace is not None:
        settings.grace = dt.timedelta(seconds=grace)
    if lease is not None:
        settings.lease = lease
    run_worker(app, poll=poll, tick=tick, settings=settings)


@main.group()
def template() -> None:
    """Bundled app templates."""


@template.command("install")
@click.argument("name")
@click.option("--key", default=None)
@click.option("--demo", is_flag=True, help="add demo data")
@click.option("--language", type=click.Choice(["zh-CN", "en"]), envvar="FORMWORK_LANGUAGE", default="zh-CN",
              show_default=True, help="the language the demo data is written in (FORMWORK_LANGUAGE)")
def template_install(name: str, key: str | None, demo: bool, language: str) -> None:
    from formwork import db
    from formwork.runtime.demo import install_template

    app = _app()
    p = app.extensions["formwork"]
    with db.transaction(p.engine) as conn:
        a = install_template(_system_service(conn, p.catalogs.get(conn)), name, key, demo, language)
        click.echo(f"installed app '{a.key}'")


@template.command("upgrade")
@click.argument("name")
@click.option("--app", "app_key", default=None, help="the installed app (default: the template's key)")
def template_upgrade(name: str, app_key: str | None) -> None:
    """Bring an installed app up to the bundled template's version (additive; edits are kept)."""
    import json

    from formwork import db
    from formwork.metadata.portable import load_template
    from formwork.metadata.upgrade import upgrade_app

    app = _app()
    p = app.extensions["formwork"]
    key = app_key or load_template(name)["app"]["key"]
    with db.transaction(p.engine) as conn:
        report = upgrade_app(_system_service(conn, p.catalogs.get(conn)), key, name)
    click.echo(json.dumps(report, ensure_ascii=False, indent=1))


@main.command("demo")
@click.argument("template_name")
@click.option("--app", "app_key", default=None, help="app to fill (default: the template's key; installed if missing)")
@click.option("--size", type=click.Choice(["small", "medium", "large"]), default="small")
@click.option("--customers", type=click.IntRange(1, 10_000_000), default=None, help="exact number of customers")
@click.option("--seed", type=int, default=None, help="random seed (same seed, same data)")
def demo_cmd(template_name: str, app_key: str | None, size: str, customers: int | None, seed: int | None) -> None:
    """Generate demo data; from 5000 customers on rows are bulk-loaded (e.g. --customers 1000000)."""
    from formwork import db
    from formwork.metadata.portable import install_template, load_template
    from formwork.runtime.demo import DEFAULT_SEED, generate_demo

    app = _app()
    p = app.extensions["formwork"]
    key = app_key or load_template(template_name)["app"]["key"]
    with db.transaction(p.engine) as conn:
        cat = p.catalogs.get(conn)
        if key not in cat.apps_by_key:
            install_template(_system_service(conn, cat), template_name, key)
            click.echo(f"installed app '{key}'")
            cat = p.catalogs.get(conn)

        def progress(what: str, n: int) -> None:
            click.echo(f"  {n} {what}...")

        r = generate_demo(conn, cat, key, template_name, size=size, scale=customers,
                          seed=DEFAULT_SEED if seed is None else seed, progress=progress)
    for table, n in r["tables"].items():
        click.echo(f"{table:>20}: {n}")
    click.echo(f"{r['rows']} rows in {r['seconds']} s ({r['rows_per_second']} rows/s, {r['mode']} mode)")


@main.command("export")
@click.argument("app_key")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None)
def export_cmd(app_key: str, output: str | None) -> None:
    """Write an app definition as one JSON document."""
    from formwork import db
    from formwork.metadata.portable import export_app

    app = _app()
    p = app.extensions["formwork"]
    with db.transaction(p.engine, write=False) as conn:
        doc = export_app(conn, p.catalogs.get(conn), app_key)
    text = json.dumps(doc, ensure_ascii=False, indent=1)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        click.echo(text)


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", default=None, help="a new key for the app")
def import_cmd(file: str, key: str | None) -> None:
    """Recreate an app from an exported JSON document."""
    from formwork import db
    from formwork.metadata.portable import import_app

    app = _app()
    p = app.extensions["formwork"]
    with open(file, encoding="utf-8") as fh:
        doc = json.load(fh)
    with db.transaction(p.engine) as conn:
        a = import_app(_system_service(conn, p.catalogs.get(conn)), doc, key)
        click.echo(f"imported app '{a.key}'")


@main.group()
def user() -> None:
    """User accounts, for operators: list, create, set a password, disable, enable.

    A lost admin password is recovered with `formwork user passwd admin`. Every command acts as the
    system (all rights) and leaves an entry in the audit log.
    """


@contextlib.contextmanager
def _as_system() -> Iterator[tuple[Any, Any]]:
    """One transaction acting as the system; a refused change is one line on stderr and exit code 1."""
    from formwork import db
    from formwork.errors import FormworkError
    from formwork.runtime.permissions import Access

    app = _app()
    engine = app.extensions["formwork"].engine
    try:
        with db.transaction(engine) as conn:
            yield conn, Access.system()
    except FormworkError as err:
        raise click.ClickException(_one_line(err)) from None
    finally:
        engine.dispose()  # the command is done with the database: close the pool's connections now


def _one_line(err: Any) -> str:
    """A domain error as one line: the message, then each field's reasons."""
    details = getattr(err, "details", None) or {}
    if isinstance(details, dict) and len(details) > 1:
        return "; ".join(f"{k}: {', '.join(map(str, v))}" if k else ", ".join(map(str, v))
                         for k, v in details.items())
    return str(err.message)


@user.command("list")
@click.option("--search", "query", default=None, help="part of a username, name or email")
@click.option("--inactive", is_flag=True, help="only disabled accounts")
def user_list(query: str | None, inactive: bool) -> None:
    """List the accounts: username, name, email, roles, admin, active."""
    from formwork.runtime import admin

    args = {"limit": "1000"}
    if query:
        args["q"] = query
    if inactive:
        args["active"] = "false"
    with _as_system() as (conn, _system):
        found = admin.list_users(conn, args)
    for u in found["users"]:
        flags = [f for f, on in (("admin", u.get("is_admin")), ("disabled", not u.get("active"))) if on]
        click.echo("\t".join([u["username"], u.get("name") or "", u.get("email") or "",
                              ",".join(u.get("roles") or []), " ".join(flags)]))
    click.echo(f"{found['total']} user(s)", err=True)


@user.command("create")
@click.argument("username")
@click.option("--name", default=None, help="display name (default: the username)")
@click.option("--email", default=None, help="e-mail address")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="the password (asked for when not given)")
@click.option("--admin", is_flag=True, help="an administrator: every right, in every app")
@click.option("--role", "roles", multiple=True, help="role key (repeatable)")
@click.option("--team", default=None, help="team key")
def user_create(username: str, name: str | None, email: str | None, password: str, admin: bool,
                roles: tuple[str, ...], team: str | None) -> None:
    """Create an account."""
    from formwork.runtime import admin as admin_service

    data: dict[str, Any] = {"username": username, "name": name or username, "password": password,
                            "roles": list(roles), "is_admin": admin}
    if email:
        data["email"] = email
    if team:
        data["team"] = team
    with _as_system() as (conn, system):
        admin_service.create_user(conn, system, data, None)
    click.echo(f"created user '{username}'")


@user.command("passwd")
@click.argument("username")
@click.option("--password", prompt="New password", hide_input=True, confirmation_prompt=True,
              help="the new password (asked for when not given)")
def user_passwd(username: str, password: str) -> None:
    """Set a user's password: lifts a lockout and ends the user's sessions and API tokens."""
    from formwork.runtime import admin

    with _as_system() as (conn, system):
        row = admin.find_user(conn, username)
        admin.reset_password(conn, system, row.id, {"password": password}, None)
    click.echo(f"password of '{username}' changed; their sessions and API tokens have ended")


@user.command("disable")
@click.argument("username")
def user_disable(username: str) -> None:
    """Disable an account: it can't log in, and its sessions and API tokens stop at once."""
    _set_active(username, False)


@user.command("enable")
@click.argument("username")
def user_enable(username: str) -> None:
    """Enable a disabled account again (it logs in with its password)."""
    _set_active(username, True)


def _set_active(username: str, active: bool) -> None:
    from formwork.runtime import admin

    with _as_system() as (conn, system):
        row = admin.find_user(conn, username)
        admin.update_user(conn, system, row.id, {"active": active}, None)
    click.echo(f"{'enabled' if active else 'disabled'} '{username}'")


if __name__ == "__main__":
    main()
