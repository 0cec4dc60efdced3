"""Start-up chores run once per server, not once per worker."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError


def seed_demo_accounts_if_enabled(
    log: Callable[[str], object] = print, url: str = "http://127.0.0.1:8000"
) -> None:
    """Create the demo accounts and print how to log in, when the config allows demo accounts.

    Called from gunicorn's ``when_ready`` hook in the arbiter. The app built here is thrown away
    and its connections closed, so forked workers do not inherit open database sockets.
    """
    from app import create_app
    from app.cli import ensure_demo_accounts, format_demo_table, seed_demo_content
    from app.extensions import db

    app = create_app()
    if not app.config.get("DEMO_ACCOUNTS"):
        return
    # No realtime threads in the arbiter: they would not survive the fork into workers.
    app.extensions["realtime"].deliver_live = False
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
