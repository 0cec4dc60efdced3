"""Password hashing on threads of low CPU priority, so a sign-up never stands in front of a page.

scrypt costs about 100 ms of CPU per hash, on purpose. Five sign-ups from one address (the
hourly allowance) were enough to move another user's page p99 from 25 ms to 123-245 ms
(``python -m bench.attacks --only register``; the worker itself at 15% CPU): each hash is a 100
ms slice of the core the pages need. hashlib's scrypt releases the GIL, so the hash can run on a
thread the kernel schedules behind interactive work. At nice 10 (weight 110 against a normal
thread's 1,024 in Linux's scheduler) the same five sign-ups still moved the victim's page p99
1.6-2.5x (13 -> 21-35 ms over five runs, 2.0x or more in four); at nice 19 (weight 15) 1.6-1.7x
(19-24 ms, four runs). On an idle core the hash runs at full speed; on a core saturated by
normal work it gets about 1.5%, so a login waits longer there (seconds, not ms) but is never
starved, and pages, which are the many, go first. The hash itself is unchanged: same algorithm,
same parameters, no cheaper for an attacker. The risk taken, not measured here: the hashing
thread holds the GIL for the few microseconds of Python around each hash, and if other processes
keep every core busy while it holds it, the worker waits for the low-priority thread to be
scheduled again.

Assumption (Linux): threads are kernel tasks with a nice value of their own, set with
``setpriority(PRIO_PROCESS, <native thread id>)``. Elsewhere, or where it is refused, the
hashing threads keep the normal priority and everything else works the same.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from werkzeug.security import check_password_hash, generate_password_hash

#: Nice value of the hashing threads (0 normal, 19 lowest).
NICE = 19
#: Hashes computed at once per process; more wait for a turn (each is ~100 ms of one core).
THREADS = 2

_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: normal priority


def _executor() -> ThreadPoolExecutor:
    """This process's hashing threads (a forked worker makes its own: threads do not fork)."""
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(
                THREADS, thread_name_prefix="password-hash", initializer=_lower_priority))
        return _pool[1]


def hash_password(password: str) -> str:
    """werkzeug's default hash (scrypt) of ``password``, computed at low priority."""
    return _executor().submit(generate_password_hash, password).result()


def check_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``, computed at low priority."""
    return _executor().submit(check_password_hash, password_hash, password).result()
