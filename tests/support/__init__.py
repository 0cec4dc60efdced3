"""Helpers shared by the test suite: form scraping and the real-gunicorn live server."""
