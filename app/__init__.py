"""Tidings: the application factory."""

from __future__ import annotations

from flask import Flask

from app.cli import register_commands
from app.config import BASE_DIR, INSTANCE_DIR, Config, config_from_env
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

    configure_logging(app)
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    register_security_headers(app)
    return app


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
