"""The example site's fixtures: Chromium (shared with tests/browser) and the site under gunicorn."""

from __future__ import annotations

import pytest

from tests.adopter.serve import start_site
from tests.browser.conftest import browser, page_errors, playwright_driver  # noqa: F401


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as its README runs it: gunicorn with its gunicorn.conf.py (two gthread workers
    and the one-line hook), on SQLite, no Redis."""
    server = start_site("gunicorn", tmp_path_factory.mktemp("adopter"), workers=2)
    yield server
    server.stop()
