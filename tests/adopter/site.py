"""A typical existing Flask site, written before it had any live updates.

It keeps its own login in the session (``session["user_id"]``, no Flask-Login) and talks to SQLite
through ``sqlite3`` (no SQLAlchemy), the way Flask's tutorial does. Members send each other short
messages, and a cron job (``flask --app tests.adopter.site remind``) sends reminders.

Adopting flask_tidings took only the lines marked ``+ tidings`` here, in the templates and in
gunicorn.conf.py: a new message now appears on the recipient's open pages at once, whichever
process sent it. ``tests/adopter/test_adopter.py`` counts those lines.
"""

from __future__ import annotations

import functools
import os
import sqlite3

import click
from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from flask_tidings import Realtime  # + tidings

app = Flask(__name__)
app.config.from_mapping(SECRET_KEY="dev", DATABASE=os.path.join(app.instance_path, "site.sqlite"))
app.config.from_prefixed_env()  # FLASK_SECRET_KEY, FLASK_DATABASE ...
app.config["REALTIME_DATABASE_URL"] = "sqlite:///" + app.config["DATABASE"]  # + tidings
realtime = Realtime(app, identity=lambda: g.user)  # + tidings


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(app.config["DATABASE"], timeout=10)
        g.db.row_factory = sqlite3.Row
    return g.db


@app.teardown_appcontext
def close_db(_exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def send_message(sender: str, recipient_id: int, body: str) -> None:
    """Store a message for a member; the page, the API and the cron job all send through here."""
    db = get_db()
    db.execute(
        "INSERT INTO message (sender, recipient_id, body) VALUES (?, ?, ?)",
        (sender, recipient_id, body),
    )
    db.commit()
    realtime.notify(recipient_id, "message", {"sender": sender, "body": body})  # + tidings


# ---------------------------------------------------------------------------- commands


@app.cli.command("init-db")
def init_db_command() -> None:
    """Clear the existing data and create new tables."""
    os.makedirs(os.path.dirname(os.path.abspath(app.config["DATABASE"])), exist_ok=True)
    with app.open_resource("schema.sql") as f:
        get_db().executescript(f.read().decode())
    realtime.create_tables()  # + tidings
    click.echo("Initialized the database.")


@app.cli.command("add-user")
@click.argument("username")
@click.argument("password")
def add_user_command(username: str, password: str) -> None:
    db = get_db()
    db.execute(
        "INSERT INTO user (username, password) VALUES (?, ?)",
        (username, generate_password_hash(password)),
    )
    db.commit()


@app.cli.command("remind")
@click.argument("username")
@click.argument("text")
def remind_command(username: str, text: str) -> None:
    """Send a member a reminder (run from cron)."""
    user = get_db().execute("SELECT id FROM user WHERE username = ?", (username,)).fetchone()
    if user is None:
        raise click.ClickException(f"There is no member called {username!r}.")
    send_message("reminders", user["id"], text)


# ---------------------------------------------------------------------------- login


@app.before_request
def load_logged_in_user() -> None:
    user_id = session.get("user_id")
    g.user = (
        None
        if user_id is None
        else get_db().execute("SELECT * FROM user WHERE id = ?", (user_id,)).fetchone()
    )


def login_required(view):
    @functools.wraps(view)
    def wrapped_view(**kwargs):
        if g.user is None:
            return redirect(url_for("login"))
        return view(**kwargs)

    return wrapped_view


@app.route("/login", methods=("GET", "POST"))
def login():
    if request.method == "POST":
        user = (
            get_db()
            .execute("SELECT * FROM user WHERE username = ?", (request.form.get("username"),))
            .fetchone()
        )
        if user is None or not check_password_hash(user["password"], request.form["password"]):
            flash("Incorrect username or password.")
        else:
            session.clear()
            session["user_id"] = user["id"]
            return redirect(url_for("index"))
    return render_template("login.html")


@app.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("login"))


# ---------------------------------------------------------------------------- pages


@app.route("/")
@login_required
def index():
    db = get_db()
    messages = db.execute(
        "SELECT sender, body FROM message WHERE recipient_id = ? ORDER BY id DESC LIMIT 50",
        (g.user["id"],),
    ).fetchall()
    members = db.execute(
        "SELECT username FROM user WHERE id != ? ORDER BY username", (g.user["id"],)
    ).fetchall()
    return render_template("index.html", messages=messages, members=members)


@app.post("/send")
@login_required
def send():
    recipient = (
        get_db()
        .execute("SELECT id FROM user WHERE username = ?", (request.form.get("to", ""),))
        .fetchone()
    )
    body = request.form.get("body", "").strip()
    if recipient is None or not body or len(body) > 500:
        abort(400)
    send_message(g.user["username"], recipient["id"], body)
    flash("Sent.")
    return redirect(url_for("index"))
