"""flask-tidings installs like any package: a wheel built from this repository, installed into a
fresh virtualenv, imports and serves without the site and without the repository on sys.path.

Slow by nature (a wheel build and an install, ~1 minute on a loaded machine); it needs the
package index that ``make venv`` uses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.live import ROOT

#: What the fresh venv runs, from an empty folder: the answers come back as one JSON line.
PROBE = textwrap.dedent(
    """
    import importlib.metadata, importlib.util, json, os, sys
    from flask import Flask
    import flask_tidings
    from flask_tidings import Realtime

    package = os.path.dirname(flask_tidings.__file__)
    answers = {
        "file": flask_tidings.__file__,
        "site_importable": importlib.util.find_spec("app") is not None,
        "tests_importable": importlib.util.find_spec("tests") is not None,
        "flask_login_installed": importlib.util.find_spec("flask_login") is not None,
        "client": os.path.isfile(os.path.join(package, "static", "realtime.js")),
        "protocol": open(os.path.join(package, "PROTOCOL.md")).read(),
        "requires": importlib.metadata.requires("flask-tidings"),
    }

    # No Flask-Login and no loader: a clear error at init_app, not a 500 at the first handshake.
    try:
        Realtime(Flask("no_login"))
    except RuntimeError as exc:
        answers["without_login"] = str(exc)

    # A site of its own login and no Flask-SQLAlchemy: a database URL is all it needs.
    app = Flask("adopter")
    app.config["REALTIME_DATABASE_URL"] = "sqlite:///" + os.path.abspath("events.db")
    realtime = Realtime(app, identity=lambda: None)
    with app.app_context():
        realtime.create_tables()
        answers["seq"] = realtime.notify(7, "notification", {"title": "hi"}).seq
    client = app.test_client()
    answers["script_status"] = client.get("/ws/static/realtime.js").status_code
    answers["check_status"] = client.get("/ws/check").status_code
    print(json.dumps(answers))
    """
)


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("install")
    # Build from a copy holding only what the distribution is made of: a build in the checkout
    # would leave build/ and egg-info behind, and the copy proves nothing else is needed.
    source = work / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copytree(ROOT / "flask_tidings", source / "flask_tidings",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # links followed
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(*pip, "wheel", "--no-deps", "-q", "-w", work / "dist", source, cwd=work)
    [wheel] = (work / "dist").glob("flask_tidings-*.whl")

    # The versions the site is tested with (extras dropped: pip refuses them in constraints).
    pins = [re.sub(r"\[.*?\]", "", line) for line in
            (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-"))]
    constraints = work / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")

    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    python = venv / "bin" / "python"
    run(*pip, "--python", python, "install", "-q", "-c", constraints, wheel, cwd=work)

    empty = work / "elsewhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    output = run(python, "-c", PROBE, cwd=empty, env=env)
    answers = json.loads(output.strip().splitlines()[-1])
    answers["venv"] = str(venv)
    return answers


def test_the_package_imports_from_the_fresh_venv_and_not_from_the_repository(installed):
    assert installed["file"].startswith(installed["venv"])
    assert not installed["site_importable"] and not installed["tests_importable"]


def test_the_browser_client_and_the_protocol_ship_inside_the_package(installed):
    assert installed["client"]
    assert installed["protocol"] == (ROOT / "docs" / "protocol.md").read_text()


def test_dependencies_are_declared_with_extras_for_redis_postgres_and_login(installed):
    requires = installed["requires"]
    assert any(r.startswith("wsproto") for r in requires)
    for extra, package in (("redis", "redis"), ("postgres", "psycopg"), ("login", "flask-login")):
        assert any(r.startswith(package) and f'extra == "{extra}"' in r for r in requires), requires
    assert not installed["flask_login_installed"], "Flask-Login is an extra, not a requirement"


def test_a_site_without_flask_login_or_sqlalchemy_publishes_and_serves_the_client(installed):
    assert "install flask-login, or" in installed["without_login"]
    assert installed["seq"] == 1
    assert installed["script_status"] == 200
    assert installed["check_status"] == 401
