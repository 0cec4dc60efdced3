"""A booted worker's objects are frozen out of the garbage collector's full walks, which had
stalled every thread of the worker for 60 ms at a time; garbage is still collected, before the
freeze and after it (flask_tidings.gunicorn.freeze_boot_heap)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.support.live import ROOT

#: A fresh process, as a gunicorn worker is: build the site, leave a garbage cycle behind, then
#: freeze; report what a full collection has left to walk and whether each cycle was freed.
PROGRAM = textwrap.dedent("""
    import gc, json, weakref
    from app import create_app
    from flask_tidings.gunicorn import freeze_boot_heap

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    app = create_app()
    gc.disable()  # nothing collects behind the test's back; freeze_boot_heap collects itself
    before_garbage = cycle()
    walked_before = len(gc.get_objects())
    frozen = freeze_boot_heap()
    walked_after = len(gc.get_objects())
    freed_at_freeze = before_garbage() is None
    after_garbage = cycle()
    gc.collect()
    print(json.dumps({"walked_before": walked_before, "walked_after": walked_after,
                      "frozen": frozen, "freed_at_freeze": freed_at_freeze,
                      "freed_later": after_garbage() is None,
                      "app_frozen": gc.is_tracked(app)
                                    and not any(o is app for o in gc.get_objects())}))
""")


def test_the_booted_site_is_frozen_and_garbage_is_still_collected(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'site.db'}",
             "SECRET_KEY": "test", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    # The site's objects (tens of thousands) are out of the walk; the app is one of them.
    assert report["frozen"] > 20_000
    assert report["app_frozen"]
    assert report["walked_after"] < report["walked_before"] / 10

    # The cycle left behind before the freeze was collected, not frozen for good; one made
    # after it is collected as usual.
    assert report["freed_at_freeze"]
    assert report["freed_later"]
