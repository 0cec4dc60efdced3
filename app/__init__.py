"""Tidings: the application factory."""

from __future__ import annotations

import builtins

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from app import idempotency
from app.cli import register_commands
from app.config import BASE_DIR, INSTANCE_DIR, Config, config_from_env, fit_engine_options
from app.errors import register_errorhandlers
from app.extensions import csrf, db, login_manager, migrate, realtime
from app.ops.logging import configure_logging
from app.security import register_security_headers


def create_app(config_class: type[Config] | Config | None = None) -> Flask:
    """Build the application.

    :param config_class: a config class (instantiated here) or a ready instance; defaults to the
        class named by ``TIDINGS_ENV``.
    """
    app = Flask(
        __name__,
        template_folder="../templates",
        static_folder="../static",
        instance_path=str(INSTANCE_DIR),
    )
    # SQLite creates the database file but not its folder.
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    config = config_class or config_from_env()
    app.config.from_object(config() if isinstance(config, type) else config)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = fit_engine_options(
        app.config["SQLALCHEMY_DATABASE_URI"], app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}))

    configure_logging(app)
    register_converters(app)
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    register_security_headers(app)
    register_proxy_fix(app)
    return app


#: The largest id any table uses (PostgreSQL ``integer``; SQLite allows more, never reached).
MAX_ID = 2**31 - 1


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` limited to what an id column can hold (PostgreSQL's 32-bit ``integer``).

    A larger number cannot name a row, and handing it to the database fails there (SQLite:
    OverflowError, PostgreSQL: out of range), so it is a 404 at routing, never a 500.
    """

    def __init__(self, map, fixed_digits=0, min=None, max=None, signed=False) -> None:
        max = MAX_ID if max is None else builtins.min(max, MAX_ID)
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)
        # Too many digits never match at all: a value rejected only after matching would let
        # werkzeug answer a POST with 405 ("GET allowed") for a URL whose GET is a 404.
        digits = len(str(MAX_ID))
        self.regex = rf"-?\d{{1,{digits}}}" if signed else rf"\d{{1,{digits}}}"


def register_converters(app: Flask) -> None:
    # Before any blueprint: rules pick their converter when they are added.
    app.url_map.converters["int"] = BoundedIntConverter


def register_proxy_fix(app: Flask) -> None:
    """Behind ``TRUSTED_PROXY_HOPS`` proxies, take the client's address, scheme and host from
    their X-Forwarded-* headers: throttling then sees real addresses, not the proxy's."""
    hops = int(app.config.get("TRUSTED_PROXY_HOPS") or 0)
    if hops > 0:
        # Outermost, so every layer below (the realtime handshake checks too) sees the client.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)


def register_extensions(app: Flask) -> None:
    db.init_app(app)
    # render_as_batch lets Alembic alter SQLite tables (it recreates them, as SQLite requires).
    migrate.init_app(app, db, directory=str(BASE_DIR / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to see that page."
    login_manager.login_message_category = "info"
    # Models register the user loader; importing them here makes sure that has happened.
    from app import models  # noqa: F401

    realtime.init_app(app)
    idempotency.init_app(app)


def register_blueprints(app: Flask) -> None:
    from app.admin import bp as admin_bp
    from app.auth import bp as auth_bp
    from app.chat import bp as chat_bp
    from app.main import bp as main_bp
    from app.notifications import bp as notifications_bp
    from app.ops import bp as ops_bp

    app.register_blueprint(main_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(notifications_bp)
    app.register_blueprint(chat_bp)
    app.register_blueprint(ops_bp)
