"""Validation of the ``next`` parameter, so login cannot be used as an open redirect."""

from __future__ import annotations

from urllib.parse import urlsplit


def is_safe_next(target: str | None) -> bool:
    """Accept only a relative path on this host, such as ``/dashboard?x=1``.

    Browsers treat ``//evil`` and ``/\\evil`` as other hosts, and strip tabs and newlines before
    parsing, so anything beyond a plain single-slash path is refused.
    """
    if not target or not target.startswith("/"):
        return False
    if target.startswith("//") or "\\" in target:
        return False
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc
