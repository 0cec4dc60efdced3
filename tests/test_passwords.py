"""Sign-ups and logins hash passwords (scrypt, ~100 ms of CPU each) behind everyone's pages."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from app import passwords
from app.models import User


def test_a_password_set_is_checked_by_the_same_account_and_nobody_else():
    user = User(username="dora", role="user")
    user.set_password("correct horse battery")
    assert user.password_hash.startswith("scrypt:")  # the full-strength default, unchanged
    assert user.check_password("correct horse battery")
    assert not user.check_password("correct horse battery ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_hashing_runs_on_threads_the_kernel_schedules_behind_page_requests(monkeypatch):
    seen: list[tuple[int, int]] = []
    real = passwords.generate_password_hash

    def spy(password: str) -> str:
        seen.append((threading.get_native_id(),
                     os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return real(password)

    monkeypatch.setattr(passwords, "generate_password_hash", spy)
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    User(username="erin", role="user").set_password("a long enough password")
    [(thread, nice)] = seen
    assert thread != threading.get_native_id(), "hashed on the request's own thread"
    assert nice >= max(ours, passwords.NICE)
    # The request's thread keeps its priority.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ours
