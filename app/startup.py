"""Start-up chores run once per server, not once per worker."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError


class DemoAccountsExposed(RuntimeError):
    """Demo accounts, whose passwords are in the README, on a site others can reach."""


def binds_to_loopback(url: str) -> bool:
    """True if the server's address (``http://127.0.0.1:8000``) is reachable from this host only.

    A Unix socket is not: it is what a proxy in front of the site connects to.
    """
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposed_demo_accounts() -> list[str]:
    """Demo accounts that exist, are active and still have their published password."""
    from app.cli import DEMO_ACCOUNTS
    from app.extensions import db
    from app.models import User

    names = {account.username: account.password for account in DEMO_ACCOUNTS}
    users = db.session.scalars(select(User).where(User.username.in_(names), User.active))
    return sorted(user.username for user in users if user.check_password(names[user.username]))


def refuse_exposed_demo_accounts(app, url: str) -> None:
    """Refuse to serve demo accounts anywhere but on loopback.

    Their passwords are published, so on a site others can reach (a public bind, or any bind
    behind a proxy: ``TRUSTED_PROXY_HOPS``) they are open doors, admin included.

    :raises DemoAccountsExposed: with what to do about it.
    """
    private = binds_to_loopback(url) and not int(app.config.get("TRUSTED_PROXY_HOPS") or 0)
    if private:
        return
    where = f"{url}" + (" behind a proxy" if app.config.get("TRUSTED_PROXY_HOPS") else "")
    if app.config.get("DEMO_ACCOUNTS"):
        raise DemoAccountsExposed(
            f"Demo accounts (alice, bob, admin; passwords in the README) are only for a site "
            f"bound to loopback, and this one serves {where}. Bind to 127.0.0.1, or turn them "
            f"off: TIDINGS_DEMO_ACCOUNTS=0 (production never creates them)."
        )
    from app.extensions import db

    with app.app_context():
        try:
            exposed = exposed_demo_accounts()
        except SQLAlchemyError:
            return  # no schema yet: there are no accounts either
        finally:
            db.session.remove()
    if exposed:
        raise DemoAccountsExposed(
            f"The demo accounts {', '.join(exposed)} still have their published passwords and "
            f"this site serves {where}. Change their passwords or deactivate them first "
            f"(/admin/users, or `flask create-user` for a real admin)."
        )


def seed_demo_accounts_if_enabled(
    log: Callable[[str], object] = print, url: str = "http://127.0.0.1:8000"
) -> None:
    """Create the demo accounts and print how to log in, when the config allows demo accounts.

    Called from gunicorn's ``when_ready`` hook in the arbiter. The app built here is thrown away
    and its connections closed, so forked workers do not inherit open database sockets.

    :raises DemoAccountsExposed: when demo accounts would be reachable from elsewhere; gunicorn
        then stops with the message instead of serving.
    """
    from app import create_app
    from app.cli import ensure_demo_accounts, format_demo_table, seed_demo_content
    from app.extensions import db

    # Publishing the demo content starts no realtime thread (flask_tidings starts serving only in
    # a worker), so nothing here has to survive a fork.
    app = create_app()
    try:
        refuse_exposed_demo_accounts(app, url)
    finally:
        with app.app_context():
            db.engine.dispose()
    if not app.config.get("DEMO_ACCOUNTS"):
        return
    with app.app_context():
        try:
            accounts = ensure_demo_accounts()
            seed_demo_content()
        except SQLAlchemyError as exc:
            log(f"Demo accounts not created ({type(exc).__name__}); run `flask db upgrade` first.")
            return
        finally:
            db.engine.dispose()
    log("\n" + format_demo_table(accounts, url))
