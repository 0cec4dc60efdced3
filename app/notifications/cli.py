"""``flask notify`` and ``flask broadcast``: the same as the site does, from a shell or cron.

The rows are stored and the events logged from this process; running workers deliver them
through their broker (Redis) or, failing that, their sweep of the durable log.
"""

from __future__ import annotations

import click
from sqlalchemy import select

from app.extensions import db
from app.models import ROLES, User
from app.notifications import announcements, bp, service
from app.notifications.models import KINDS, LEVELS


@bp.cli.command("notify")
@click.argument("username")
@click.argument("title")
@click.option("--body", default=None, help="Longer text under the title.")
@click.option("--link", default=None, help="A path on this site (/...) or an http(s) URL.")
@click.option("--kind", type=click.Choice(KINDS), default="system", show_default=True)
def notify_command(username: str, title: str, body: str | None, link: str | None,
                   kind: str) -> None:
    """Send USERNAME a notification titled TITLE."""
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"No user {username!r}.")
    try:
        notification = service.create_notification(user, kind, title, body=body, link=link)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Notified {username} (notification {notification.id}).")


@bp.cli.command("broadcast")
@click.argument("title")
@click.option("--body", default="", help="The announcement's text.")
@click.option("--level", type=click.Choice(LEVELS), default="info", show_default=True)
@click.option("--role", type=click.Choice(ROLES), default=None, help="Only this role.")
@click.option("--users", default=None, help="Only these usernames, comma-separated.")
@click.option("--expires-minutes", type=click.IntRange(min=1), default=None,
              help="Hide the banner after this many minutes.")
@click.option("--author", default=None, help="Username to record as the author.")
@click.option("--key", default=None,
              help="Idempotency key: a job retried with the same key announces once.")
def broadcast_command(title: str, body: str, level: str, role: str | None, users: str | None,
                      expires_minutes: int | None, author: str | None,
                      key: str | None) -> None:
    """Announce TITLE to everyone, a role, or chosen users."""
    if role and users:
        raise click.UsageError("Use --role or --users, not both.")
    chosen: list[User] = []
    if users is not None:
        chosen, unknown = announcements.parse_usernames(users)
        if unknown:
            raise click.ClickException(f"Unknown users: {', '.join(unknown)}")
        if not chosen:
            raise click.ClickException("--users names nobody.")
    author_user = None
    if author:
        author_user = db.session.scalar(select(User).where(User.username == author))
        if author_user is None:
            raise click.ClickException(f"No user {author!r}.")
    audience = "role" if role else "users" if users is not None else "all"
    try:
        announcement = announcements.publish(
            author_user, title, body, level=level, audience=audience, role=role, users=chosen,
            expires_at=announcements.expires_in(expires_minutes), key=key,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    until = (f", until {announcement.expires_at:%Y-%m-%d %H:%M} UTC"
             if announcement.expires_at else "")
    click.echo(f"Announcement {announcement.id} sent to {announcement.recipients} "
               f"account(s){until}.")
