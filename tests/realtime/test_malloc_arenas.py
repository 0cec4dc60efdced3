"""A worker's threads share at most two glibc malloc arenas, so its free memory cannot pile up
in one private heap per thread (the RSS growth a soak found; docs/reliability.md, "Soak")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from flask_tidings import gunicorn as hooks

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="malloc arenas are glibc's",
)

#: A fresh process (as gunicorn's arbiter is when it reads its config): optionally the cap, then
#: eight threads alive at once, each allocating through malloc, then glibc's own count of heaps.
PROGRAM = textwrap.dedent("""
    import ctypes, ctypes.util, os, sys, tempfile, threading
    from flask_tidings.gunicorn import limit_malloc_arenas
    print(limit_malloc_arenas() if sys.argv[1] == "cap" else "-")
    barrier = threading.Barrier(9)
    def work():
        blocks = [bytearray(2000) for _ in range(100)]  # past pymalloc: malloc's own
        barrier.wait()
        barrier.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    barrier.wait()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.fopen.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.fclose.argtypes = (ctypes.c_void_p,)
    path = tempfile.mktemp()
    out = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, out)
    libc.fclose(out)
    print(open(path).read().count("<heap nr="))
    os.unlink(path)
    barrier.wait()
""")


def arenas_used(cap: bool, env: dict[str, str] | None = None) -> tuple[str, int]:
    run_env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    run_env.update(env or {})
    done = subprocess.run([sys.executable, "-c", PROGRAM, "cap" if cap else "default"],
                          capture_output=True, text=True, env=run_env, timeout=60, check=True)
    said, heaps = done.stdout.split()
    return said, int(heaps)


def test_a_process_with_many_threads_shares_at_most_two_malloc_arenas():
    said, heaps = arenas_used(cap=True)
    assert said == "True"
    assert heaps <= hooks.MALLOC_ARENAS


def test_without_the_cap_each_thread_gets_a_heap_of_its_own():
    """The measurement above can tell: glibc's default gives these threads more arenas."""
    _, heaps = arenas_used(cap=False)
    assert heaps > hooks.MALLOC_ARENAS


def test_an_operators_malloc_arena_max_wins():
    said, heaps = arenas_used(cap=True, env={"MALLOC_ARENA_MAX": "3"})
    assert said == "False"
    assert heaps == 3


def test_the_gunicorn_config_caps_the_arenas_before_any_worker_starts(monkeypatch):
    """gunicorn.conf.py sets it at load, in the arbiter: the workers it forks inherit it."""
    calls = []
    monkeypatch.setattr(hooks, "limit_malloc_arenas", lambda *a: calls.append(a) or True)
    monkeypatch.delenv("TIDINGS_CONTROL_SOCKET", raising=False)
    import runpy

    from tests.support.live import ROOT

    runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert calls == [()]
