"""Read what a browser would read from a rendered form."""

from __future__ import annotations

import re

_CSRF_INPUT = re.compile(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"|'
                         r'<input[^>]*value="([^"]+)"[^>]*name="csrf_token"')


def csrf_token_from(html: str) -> str:
    """Return the CSRF token of the first form on the page (fails loudly if there is none)."""
    match = _CSRF_INPUT.search(html)
    if not match:
        raise AssertionError("no csrf_token input on the page:\n" + html[:2000])
    return match.group(1) or match.group(2)


def hidden_value(html: str, name: str) -> str:
    """The value of the first hidden input called ``name`` (fails loudly if there is none)."""
    match = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*value="([^"]*)"|'
                      rf'<input[^>]*value="([^"]*)"[^>]*name="{re.escape(name)}"', html)
    if not match:
        raise AssertionError(f"no {name} input on the page:\n" + html[:2000])
    return match.group(1) if match.group(1) is not None else match.group(2)
