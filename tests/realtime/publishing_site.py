"""The site plus one test-only route that publishes the way a feature should: the feature's row
and its event in one transaction (``session=db.session``), with a deliberately small pool.

Served by gunicorn in tests/realtime/test_transactional.py: ``app=tests.realtime.publishing_site:app``.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from app import create_app
from app.config import Config
from app.extensions import csrf, db, realtime
from app.notifications.models import Notification
from app.notifications.service import unread_count


class SmallPool(Config):
    """Two pooled connections for four threads: a request that needed two would deadlock."""

    SQLALCHEMY_ENGINE_OPTIONS = {
        "pool_pre_ping": True, "pool_size": 2, "max_overflow": 0, "pool_timeout": 30,
    }


bp = Blueprint("publishing_test", __name__)


@bp.post("/_test/notify/<int:user_id>")
def notify(user_id: int):
    note = Notification(user_id=user_id, kind="system", title="Build finished")
    db.session.add(note)
    db.session.flush()
    realtime.notify(user_id, "notification",
                    {**note.to_json(), "unread": unread_count(user_id)}, session=db.session)
    db.session.commit()
    return jsonify(id=note.id)


app = create_app(SmallPool)
csrf.exempt(bp)
app.register_blueprint(bp)
