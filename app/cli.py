"""Command-line tools: ``flask create-user`` and ``flask seed-demo``."""

from __future__ import annotations

from dataclasses import dataclass

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import select

from app.auth.forms import password_problem
from app.extensions import db
from app.models import User


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str
    role: str


#: Well-known accounts for trying the site locally; never created in production.
DEMO_ACCOUNTS = (
    DemoAccount("alice", "alice-demo-pass", "user"),
    DemoAccount("bob", "bob-demo-pass", "user"),
    DemoAccount("admin", "admin-demo-pass", "admin"),
)


def ensure_demo_accounts() -> list[DemoAccount]:
    """Create any missing demo account and return all of them.

    Existing accounts are left untouched (their password may have been changed on purpose).
    """
    existing = set(db.session.scalars(select(User.username).where(
        User.username.in_([account.username for account in DEMO_ACCOUNTS])
    )))
    for account in DEMO_ACCOUNTS:
        if account.username not in existing:
            user = User(username=account.username, role=account.role)
            user.set_password(account.password)
            db.session.add(user)
    db.session.commit()
    return list(DEMO_ACCOUNTS)


def format_demo_table(accounts: list[DemoAccount], url: str = "http://127.0.0.1:8000") -> str:
    lines = [f"Demo accounts — log in at {url}/auth/login", ""]
    lines.append(f"  {'username':<10} {'password':<18} role")
    for account in accounts:
        lines.append(f"  {account.username:<10} {account.password:<18} {account.role}")
    return "\n".join(lines)


@click.command("create-user")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Give the account the admin role.")
@click.option("--email", default=None, help="Address for password reset links.")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Password (prompted for, hidden, when omitted).",
)
@with_appcontext
def create_user_command(username: str, admin: bool, password: str, email: str | None) -> None:
    """Create an account."""
    if db.session.scalar(select(User.id).where(User.username == username)):
        raise click.ClickException(f"User {username!r} already exists.")
    problem = password_problem(password, username)
    if problem:
        raise click.ClickException(problem)
    user = User(username=username, role="admin" if admin else "user", email=email or None)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    click.echo(f"Created {user.role} {username!r}.")


def seed_demo_content() -> None:
    """Welcome notifications and a chat room with a few messages, so a new user sees the live
    features at work on first login. Each area's ``seed_demo`` does nothing the second time."""
    from app.chat.demo import seed_demo as seed_chat
    from app.notifications.demo import seed_demo as seed_notifications

    seed_notifications(account.username for account in DEMO_ACCOUNTS)
    seed_chat()


@click.command("seed-demo")
@with_appcontext
def seed_demo_command() -> None:
    """Create the demo accounts (alice, bob, admin) and demo content if they are missing."""
    accounts = ensure_demo_accounts()
    seed_demo_content()
    click.echo(format_demo_table(accounts))


def register_commands(app: Flask) -> None:
    app.cli.add_command(create_user_command)
    app.cli.add_command(seed_demo_command)
