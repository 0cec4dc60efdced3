"""Unbound extension objects, bound to an application in ``register_extensions``.

Keeping them here (rather than in ``app/__init__.py``) lets models, blueprints and CLI commands
import them without importing the factory, which avoids circular imports.
"""

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase

from app.realtime import Realtime


class Base(DeclarativeBase):
    """Declarative base so models use SQLAlchemy 2 typed ``Mapped`` columns."""


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
#: The realtime layer: sockets at /ws, notify/broadcast/publish from anywhere.
realtime = Realtime()
