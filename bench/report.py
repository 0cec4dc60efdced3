"""Outputs: the stdout table, results/<stamp>.json, RESULTS.md and latest.png.

RESULTS.md is regenerated on every run; anything below the ``<!-- notes -->`` marker (hand-written
observations) is kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
MARKER = "<!-- notes -->"
#: python -m bench.multihost owns what lies between these; python -m bench keeps it.
MULTIHOST_START, MULTIHOST_END = "<!-- multihost -->", "<!-- /multihost -->"

COLUMNS = [
    ("server", "server", "{}"), ("scen", "scenario", "{}"), ("N", "n", "{}"), ("w", "workers", "{}"),
    ("p50 ms", "p50_ms", "{:.1f}"), ("p99 ms", "p99_ms", "{:.1f}"), ("max ms", "max_ms", "{:.0f}"),
    ("deliv/s", "deliveries_s", "{:,.0f}"), ("lost", "lost", "{}"), ("dup", "dup", "{}"),
    ("healthy reach", "healthy_reach_mean", "{:.1%}"), ("RSS MB", "rss_mb", "{:.0f}"),
    ("KB/conn", "kb_per_conn", "{:.0f}"), ("threads", "threads", "{}"),
    ("thr/sock", "threads_per_socket", "{:.2f}"), ("conn/s", "connect_per_s", "{:,.0f}"),
    ("CPU busy", "machine_busy", "{:.0%}"), ("server cores", "server_cores", "{:.2f}"),
    ("client cores", "client_cores", "{:.2f}"),
    ("srv µs/deliv", "server_us_per_delivery", "{:.1f}"),
    ("srv µs/conn", "connect_cpu_us", "{:,.0f}"),
]
#: Scenarios of the main delivery table, in this order (the others have tables of their own).
DELIVERY = ("A", "B", "B500", "C", "S")
#: Column order of the side-by-side tables.
KINDS = ("ref", "naive", "tidings")
NAMES = {"ref": "websockets ref", "naive": "naive flask-sock", "tidings": "Tidings"}


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def table(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(plain text, markdown) tables of the delivery scenarios."""
    body = [r for r in rows if r["scenario"] in DELIVERY]
    cells = [[_cell(r, key, fmt) for _, key, fmt in COLUMNS] for r in body]
    heads = [h for h, _, _ in COLUMNS]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(heads)]
    text = "  ".join(h.rjust(w) for h, w in zip(heads, widths)) + "\n"
    text += "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells)
    md = "| " + " | ".join(heads) + " |\n|" + "---|" * len(heads) + "\n"
    md += "\n".join("| " + " | ".join(line) + " |" for line in cells)
    return text, md


def page_table(rows: list[dict[str, Any]]) -> str:
    pages = [r for r in rows if r["scenario"] == "P"]
    if not pages:
        return "(not run)"
    md = "| server | open sockets | page p50 ms | page p99 ms | max ms | statuses |\n|---|---|---|---|---|---|\n"
    for r in pages:
        md += (f"| {r['server']} | {r.get('connected', r['n'])} | {_cell(r, 'page_p50_ms', '{:.1f}')} | "
               f"{_cell(r, 'page_p99_ms', '{:.1f}')} | {_cell(r, 'page_max_ms', '{:.0f}')} | "
               f"{r['page_statuses']} |\n")
    return md


def _find(rows: list[dict[str, Any]], kind: str, scenario: str, n: int | None = None,
          workers: int = 1) -> dict[str, Any] | None:
    for r in rows:
        if (r["server"] == kind and r["scenario"] == scenario and r["workers"] == workers
                and (n is None or r["n"] == n)):
            return r
    return None


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}×" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b \
        else "-"


def headline(rows: list[dict[str, Any]]) -> str:
    """The three servers side by side, with Tidings' ratio to the baseline and the reference."""
    sizes = sorted({r["n"] for r in rows if r["scenario"] == "A" and r["workers"] == 1})
    middle = 1000 if 1000 in sizes or not sizes else sizes[-1]
    lines: list[tuple[str, str, str, str, bool]] = []  # label, scenario, key, fmt, higher better

    for n in sizes:
        lines.append((f"connect + 3 subscribes per s, N={n:,}", "A", "connect_per_s",
                      "{:,.0f}", True))
        lines.append((f"server CPU per handshake (+3 subscribes), N={n:,} — µs", "A",
                      "connect_cpu_us", "{:,.0f}", False))
    for n in sizes:
        lines.append((f"A: 20 broadcasts/s, N={n:,} — p99 ms", "A", "p99_ms", "{:.1f}", False))
    lines += [
        (f"**B: back to back, one broadcast per POST ({_posters(rows)} posters), N={middle:,} — "
         "deliveries/s**", "B", "deliveries_s", "{:,.0f}", True),
        ("B — p50 ms", "B", "p50_ms", "{:.1f}", False),
        ("B — p99 ms", "B", "p99_ms", "{:.1f}", False),
        ("B — publishes/s (requests answered)", "B", "publish_per_s", "{:,.0f}", True),
        ("B — server CPU per delivery, µs (everything)", "B", "server_us_per_delivery", "{:.2f}",
         False),
        ("B500 (batched, synthetic: 500 broadcasts in ONE request) — deliveries/s", "B500",
         "deliveries_s", "{:,.0f}", True),
        ("S: 2% stalled readers — healthy reach", "S", "healthy_reach_mean", "{:.1%}", True),
        ("S — healthy p99 ms", "S", "p99_ms", "{:.1f}", False),
        ("PUB: server CPU per publish request, no sockets — µs", "PUB", "server_us_per_publish",
         "{:,.0f}", False),
        ("PUB — publishes/s (4 posters)", "PUB", "publish_per_s", "{:,.0f}", True),
        (f"KB per socket (N={middle:,})", "A", "kb_per_conn", "{:.0f}", False),
    ]
    md = ("| measure | " + " | ".join(NAMES[k] for k in KINDS)
          + " | Tidings ÷ naive | Tidings ÷ ref |\n|---|" + "---|" * (len(KINDS) + 2) + "\n")
    for label, scenario, key, fmt, _ in lines:
        n = None if scenario == "PUB" else middle
        if label.startswith(("connect", "server CPU per handshake", "A:")):
            n = int(label.split("N=")[1].split()[0].replace(",", "").rstrip(":"))
        found = {k: _find(rows, k, scenario, n) for k in KINDS}
        values = {k: (r or {}).get(key) for k, r in found.items()}
        if all(v is None for v in values.values()):
            continue
        cells = [_cell(found[k] or {}, key, fmt) for k in KINDS]
        md += (f"| {label} | " + " | ".join(cells)
               + f" | {_ratio(values['tidings'], values['naive'])}"
               f" | {_ratio(values['tidings'], values['ref'])} |\n")
    return md if md.count("\n") > 2 else "(no side-by-side scenario in this run)\n"


def _posters(rows: list[dict[str, Any]]) -> Any:
    return next((r.get("posters") for r in rows if r["scenario"] == "B"), "-")


def publish_table(rows: list[dict[str, Any]]) -> str:
    """Server CPU per publish (no sockets) and per delivery with one and two workers."""
    md = ""
    pubs = [r for r in rows if r["scenario"] == "PUB"]
    if pubs:
        md += ("| server | workers | publish requests | per s | server CPU µs per publish "
               "(HTTP + store + broker) | failures |\n|---|---|---|---|---|---|\n")
        for r in pubs:
            md += (f"| {r['server']} | {r['workers']} | {r['posted']} | "
                   f"{_cell(r, 'publish_per_s', '{:,.0f}')} | "
                   f"{_cell(r, 'server_us_per_publish', '{:,.0f}')} | {r['post_failures']} |\n")
    for r in pubs:
        if r.get("publish_steps"):
            md += (f"\nWhere {r['server']}'s {r['server_us_per_publish']:,.0f} µs per publish go "
                   "(worker CPU time per step, `BENCH_TIMERS=1`; inclusive: `Flask.wsgi_app` "
                   "contains the rest, what lies outside it is gunicorn's parsing, access log and "
                   "thread hand-off):\n\n| step | calls per publish | µs per publish |\n"
                   "|---|---|---|\n")
            md += "".join(f"| `{name}` | {calls:.1f} | {us:,.0f} |\n"
                          for name, calls, us in r["publish_steps"])
    per = [r for r in rows if r["server"] == "tidings" and r["scenario"] in ("A", "B", "B500")
           and r.get("server_us_per_delivery") is not None]
    if per:
        md += ("\n| Tidings | N | workers | deliveries | server CPU µs per delivery "
               "(everything) | vs 1 worker |\n|---|---|---|---|---|---|\n")
        for r in sorted(per, key=lambda r: (r["scenario"], r["n"], r["workers"])):
            one = (_find(rows, "tidings", r["scenario"], r["n"], 1) or {})
            md += (f"| {r['scenario']} | {r['n']:,} | {r['workers']} | {r['delivered']:,} | "
                   f"{r['server_us_per_delivery']:.2f} | "
                   f"{_ratio(r['server_us_per_delivery'], one.get('server_us_per_delivery'))} |\n")
    return md or "(not run)\n"


def storm_table(rows: list[dict[str, Any]]) -> str:
    storms = [r for r in rows if r["scenario"] == "R"]
    if not storms:
        return "(not run)\n"
    md = ("| sockets | workers | how | signal → new workers ready s | all resubscribed after ready s | "
          "p50 back s | resubscribed | handshakes | broadcasts published | lost | dup (before "
          "client dedupe) | pages p99 ms during storm | page statuses after ready |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for r in storms:
        md += (f"| {r['n']:,} | {r.get('workers', 1)} | {r.get('storm_mode', 'restart')} | "
               f"{_cell(r, 'storm_down_s', '{:.1f}')} | {_cell(r, 'storm_all_back_s', '{:.1f}')} | "
               f"{_cell(r, 'storm_back_p50_s', '{:.1f}')} | "
               f"{r['storm_resubscribed']:,}/{r['connected']:,} | {r['storm_handshakes']:,} | "
               f"{r['storm_published']} | {r['lost']} | {r['dup']} | "
               f"{_cell(r, 'page_p99_ms', '{:.0f}')} ({r['pages_during_storm']} pages) | "
               f"{r['page_statuses']} |\n")
    return md


def handshake_md(profile: dict[str, Any]) -> str:
    md = ""
    live = profile.get("handshake_live")
    if live and live.get("steps"):
        md += (f"Live (`python -m bench.handshake`): {live['sockets']:,} clients connected and "
               f"subscribed to 3 streams each ({live['connect_per_s']:,.0f}/s) to a worker that "
               "times each step in CPU time (`BENCH_TIMERS=1`, bench/server.py; inclusive: a "
               f"step contains the indented ones below it). Worker CPU per socket (/proc): "
               f"**{live['cpu_us_per_handshake']:,.0f} µs**, of which "
               f"{live['outside_us']:,.0f} µs outside the timed steps (gunicorn's accept, parse "
               "and access log, the reactor loop, thread hand-offs).\n\n"
               "| step | calls per socket | µs per socket | µs per call |\n|---|---|---|---|\n")
        for label, calls, per_socket, per_call in live["steps"]:
            name = label.lstrip()
            pad = "&nbsp;" * (len(label) - len(name))
            md += f"| {pad}{name} | {calls:.1f} | {per_socket:,.0f} | {per_call:,.0f} |\n"
    steps = profile.get("handshake_steps")
    if steps:
        md += ("\nEach step alone, in one process against a SQLite database like the server's "
               "(`python -m bench.handshake --no-live`; CPU µs, least of 7 repeats):\n\n"
               "| step | µs |\n|---|---|\n")
        md += "".join(f"| {label} | {us:,.1f} |\n" for label, us in steps)
    return md or "(not run)\n"


def connect_table(rows: list[dict[str, Any]]) -> str:
    sessions = [r for r in rows if r["scenario"] in ("A", "connect") and r["workers"] == 1]
    sizes = sorted({r["n"] for r in sessions})
    if not sizes:
        return "(not run)\n"
    md = ("| N | " + " | ".join(f"{NAMES[k]} /s | µs CPU" for k in KINDS)
          + " | Tidings ÷ naive |\n|---|" + "---|---|" * len(KINDS) + "---|\n")
    for n in sizes:
        found = {k: _find(rows, k, "A", n) or _find(rows, k, "connect", n) for k in KINDS}
        cells = [f"{_cell(found[k] or {}, 'connect_per_s', '{:,.0f}')} | "
                 f"{_cell(found[k] or {}, 'connect_cpu_us', '{:,.0f}')}" for k in KINDS]
        md += (f"| {n:,} | " + " | ".join(cells) + " | "
               + _ratio((found["tidings"] or {}).get("connect_per_s"),
                        (found["naive"] or {}).get("connect_per_s")) + " |\n")
    return md


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"ref": "tab:green", "naive": "tab:gray", "tidings": "tab:blue"}
    for kind, style in (("ref", "d-."), ("naive", "s--"), ("tidings", "o-")):
        points = sorted((r["n"], r["p99_ms"]) for r in rows
                        if r["server"] == kind and r["scenario"] == "A" and r["workers"] == 1
                        and r["p99_ms"] is not None)
        if points:
            left.plot(*zip(*points), style, color=colors[kind], label=f"{NAMES[kind]} (1 process)")
    points = sorted((r["n"], r["p99_ms"]) for r in rows if r["server"] == "tidings"
                    and r["scenario"] == "A" and r["workers"] == 2 and r["p99_ms"] is not None)
    if points:
        left.plot(*zip(*points), "^:", color="tab:purple", label="Tidings (2 workers + Redis)")
    left.set(xscale="log", yscale="log", xlabel="connected sockets N",
             ylabel="p99 latency, ms", title="Scenario A: broadcast at 20/s")
    left.grid(True, which="both", alpha=0.3)
    if left.get_legend_handles_labels()[0]:
        left.legend()
    short = {"ref": "ref", "naive": "naive", "tidings": "Tidings"}
    bars = [(f"{short[r['server']]}\n{r['scenario']}" + (" w2" if r["workers"] > 1 else ""),
             r["deliveries_s"] or 0, r["scenario"], r["server"])
            for kind in KINDS for r in rows if r["server"] == kind
            and r["scenario"] in ("B", "B500") and r["n"] == 1000]
    bars.sort(key=lambda b: (b[2] != "B", KINDS.index(b[3])))
    if bars:
        for x, (label, value, scenario, kind) in enumerate(bars):
            color = "tab:purple" if label.endswith("w2") else colors[kind]
            right.bar(x, value, color=color, hatch="//" if scenario == "B500" else None,
                      alpha=1.0 if scenario == "B" else 0.5)
            right.text(x, value, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
        right.set_xticks(range(len(bars)), [b[0] for b in bars])
    right.set(ylabel="deliveries/s", title="N=1,000: B one broadcast per POST (headline); "
              "B500 500 per request (synthetic)")
    right.title.set_fontsize(9)
    right.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(rows: list[dict[str, Any]], profile: dict[str, Any],
                  problems: dict[str, list[str]], machine: dict[str, Any], json_path: Path) -> None:
    text, md = table(rows)
    print("\n" + text + "\n")
    print(page_table(rows))
    print(headline(rows))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"machine": machine, "rows": rows, "profile": profile,
                                     "log_problems": problems}, indent=1, default=str))
    print(f"JSON: {json_path}")
    try:
        plot(rows, BENCH / "latest.png")
    except Exception as exc:  # a plotting problem must not lose the numbers
        print(f"plot failed: {exc!r}")

    results_md = BENCH / "RESULTS.md"
    notes = ""
    multihost = f"{MULTIHOST_START}\n(`python -m bench.multihost` not run yet)\n{MULTIHOST_END}"
    if results_md.exists():
        previous = results_md.read_text()
        if MARKER in previous:
            notes = previous.split(MARKER, 1)[1]
        if MULTIHOST_START in previous and MULTIHOST_END in previous:
            multihost = (MULTIHOST_START + previous.split(MULTIHOST_START, 1)[1]
                         .split(MULTIHOST_END, 1)[0] + MULTIHOST_END)
    hot = ""
    if profile.get("self"):
        hot += ("py-spy (`--gil --nonblocking`, 100 Hz: only the thread holding the GIL is "
                "sampled, so the shares are shares of the worker's one usable core), worker of "
                "Tidings N=1,000 during a second scenario-B run (one broadcast per POST) "
                f"({int(profile['total_samples'][0][1])} samples of non-idle threads).\n\n")
        hot += "| own time (self) | % | | on the stack (inclusive) | % |\n|---|---|---|---|---|\n"
        for (fa, pa), (fb, pb) in zip(profile["self"], profile["inclusive"]):
            hot += f"| `{fa}` | {pa:.1f} | | `{fb}` | {pb:.1f} |\n"
        if profile.get("threads"):
            hot += "\nBy thread: " + ", ".join(f"`{t}` {p:.0f}%" for t, p in profile["threads"][:6]) + "\n"
    else:
        hot = "(profile not taken in this run)\n"
    problem_md = ""
    for tag, lines in problems.items():
        problem_md += f"- **{tag}**: {len(lines)} line(s); first: `{lines[0][:200]}`\n"
    extra = []
    for r in rows:
        if r.get("server_realtime") or r.get("client_close_codes") or r.get("sockets_per_worker"):
            extra.append(f"- {r['server']} {r['scenario']} N={r['n']} w={r['workers']}: "
                         f"server={json.dumps(r.get('server_realtime', {}))} "
                         f"client close codes={r.get('client_close_codes')} "
                         f"sockets/worker={r.get('sockets_per_worker', '-')} "
                         f"healthy disconnected={r.get('healthy_disconnected')} "
                         f"connect failed={r.get('connect_failed')}")
    load = machine.get("load")
    load_text = f" Load average at the end: {', '.join(f'{x:.1f}' for x in load)}." if load else ""
    results_md.write_text(f"""# Realtime benchmark (issues 7 and 18) — latest results

Generated by `{machine['command']}` ({machine['mode']} mode) on {machine['stamp']}:
{machine['nproc']} CPUs, Python {machine['python']}, {machine['platform']}; run took {machine['seconds']} s.{load_text}
Code under test: git {machine.get('git', '?')}.
Raw data: `bench/results/{json_path.name}` (gitignored).

## Side by side: one event per request

Three servers in one run: the **websockets reference** (bench/ref_server.py: websockets on
uvloop, one process, no login, no durable log), the **naive flask-sock** loop
(bench/naive_app.py) and **Tidings** (the real site). Every client follows its user stream,
`broadcast` and its role stream, as the browser does. The headline is **B**: broadcasts back to
back, each its own HTTP request, as an admin form or a chat message publishes. **B500** (one
request publishing 500 broadcasts) is kept for comparison with earlier runs; no user publishes
that way.

{headline(rows)}
## Connect + subscribe

Sockets opened per second (handshake, then `subscribe` to 3 streams, until the 3rd `subscribed`;
2 client processes × 100 handshakes in flight), and the server's CPU time per socket over the
connect phase (/proc/<pid>/stat, all threads).

{connect_table(rows)}
## Delivery

{md}

Scenarios: **A** broadcast at 20/s for 5 s (100 broadcasts); **B** {_posters(rows)} concurrent
posters, each POSTing one broadcast per request, back to back (the headline); **B500** 500
broadcasts published by one request (synthetic); deliveries/s = delivered / (last delivery −
first publish ts); **C** 5,000 notifications, each to one random user; **S** as A with 2% of
clients stalled (stopped reading after subscribing; wedged first with 16 × 512 KB messages each)
— `healthy reach` is the mean share of healthy clients that got each broadcast; lost/dup count
healthy clients only; **w=2** two gunicorn workers + Redis.
Latency = client receive time − envelope `ts` (server publish time, same clock). RSS and threads are
summed over the workers; KB/conn and thr/sock are deltas over the idle server divided by N.
CPU (A, B, B500, S, from publishing the first event to the last delivery): `CPU busy` is the
share of the whole machine in use, `server cores` and `client cores` the cores' worth of CPU time
taken by the server's workers and by the load generator's processes (/proc/*/stat);
`srv µs/deliv` the server's CPU time divided by the deliveries (everything included: requests,
store, broker, fan-out); `srv µs/conn` the server's CPU per socket while the N clients connected.

## Publish path

{publish_table(rows)}
PUB: the server with no socket open, 4 posters POSTing one broadcast per request (Tidings: HTTP +
SQLite commit + broker announce; naive and ref: HTTP + JSON). Per delivery: the server's CPU over
the scenario divided by the deliveries; with 2 workers the Redis server's own CPU is not counted
(it is shared with the machine).

## Reconnect storm

{storm_table(rows)}
SIGTERM to the gunicorn master and its worker (which closes every socket with 1001), then the same
server started again on the same address and database. The clients behave as
flask_tidings/static/realtime.js: after a 1001 they come back at the moment its reason names
("restart; retry in 7.3s": the stopping worker spreads its clients over `sockets /
REALTIME_RESTART_RATE` seconds); a failed attempt asks `/ws/check` and backs off with full jitter
(0.5 s × 2^attempt, capped at 5 s after a restart, 20 s otherwise); each resubscribes with
`after` = the last id it saw. Broadcasts are published all along (10/s, `STORM_RATE`) from
outside the server (the orchestrator process, as a job queue or cron would), also while it is
down; `lost` counts every (client, broadcast) pair missing at the end. Pages: 4 threads
loading `/` as a logged-in user all through; the p99 is over the pages started between the new
workers being ready and the last client being back.

## Multi-host (three gunicorn masters behind nginx, shared PostgreSQL and Redis)

{multihost}

## Page loads while the sockets are open

{page_table(rows)}
## Where a handshake's time goes (Tidings)

{handshake_md(profile)}
## Where the time goes (B, Tidings)

{hot}
## Server-side counters and anomalies

{chr(10).join(extra) or '(none)'}

Gunicorn log lines that look like trouble:

{problem_md or '(none)'}

## Method

- Servers: real gunicorn (gthread). Tidings: `gunicorn -c gunicorn.conf.py bench.server:app`
  (bench/server.py = `create_app()` + a token-guarded `POST /bench/broadcast|notify` that calls
  `realtime.broadcast` / `realtime.notify` inside the worker), fresh migrated SQLite, dev mode,
  `REALTIME_MAX_SOCKETS=N+50`, gunicorn.conf.py's default 32 threads (sockets hold none), started via `bash -c "ulimit -n 65536; exec ..."`.
  Baseline: bench/naive_app.py (flask-sock, locked global list, `for ws in clients: ws.send()`;
  it answers `subscribe` but sends every broadcast to everyone),
  `gunicorn -k gthread --threads 2N+50 bench.naive_app:app`.
  Reference: `python -m bench.ref_server` (websockets 17 `serve` + `broadcast` on uvloop, rooms
  per stream, publish endpoint on a second port).
- Users: N rows bulk-inserted with one precomputed password hash; each socket carries its **own**
  user's session cookie, signed with the server's SECRET_KEY through
  `app.session_interface.get_signing_serializer(app)` with the keys Flask-Login writes at login
  (`_user_id`, `_fresh`, `_id` for this client's address and User-Agent) — the cookie a real login
  sets. The baseline and the reference have no login: `/ws?user=<id>`.
- Load: picows (C frame parser) on asyncio in 2 client processes; every socket sends `Origin` (and
  its cookie), waits for `welcome`, subscribes to `user:<id>`, `broadcast` and `role:user`, then
  keeps (receive time, frame bytes) per event; (stream, id), latency, loss and duplicates are
  decoded after the scenario, so the clients take as little CPU as possible from the server they
  share the cores with. Posters: http.client on keep-alive connections, one thread each.
- Resources: `/proc/<worker>/status` VmRSS and Threads before connecting and after.
{MARKER}{notes if notes else chr(10)}""")
    print(f"wrote {results_md} and {BENCH / 'latest.png'}")


def multihost_md(result: dict[str, Any]) -> str:
    lat, soak = result["latency"], result["soak"]
    fmt = lambda v, f="{:.1f}": "-" if v is None else f.format(v)  # noqa: E731
    same, cross = lat["same_host"], lat["cross_host"]
    ratio = _ratio(cross["p99_ms"], same["p99_ms"])
    return f"""Generated by `{result['command'].strip()}` on {result['stamp']} ({result['seconds']} s; load
average {', '.join(f'{x:.1f}' for x in result['load'])}): {result['connected']:,} sockets through
nginx over 3 hosts ({result['workers_per_host']} worker(s) each; sockets per host
{lat['sockets_per_host']}), broker **{result['broker']}**, the log in PostgreSQL; broadcasts
published on host 1 at {result['rate']:g}/s, one per request.

| | deliveries | p50 ms | p99 ms |
|---|---|---|---|
| same host (sockets on host 1) | {same['n']:,} | {fmt(same['p50_ms'])} | {fmt(same['p99_ms'])} |
| cross host (sockets on hosts 2, 3) | {cross['n']:,} | {fmt(cross['p50_ms'])} | {fmt(cross['p99_ms'])} |

Cross-host p99 ÷ same-host p99: **{ratio}**; latency phase lost {lat['lost']}, dup {lat['dup']}.

Soak: {soak['seconds']:g} s, {soak['published']:,} broadcasts; host 3 killed (SIGKILL, master and
workers) a third of the way in with {soak['killed_host_sockets']} sockets on it; they were all
subscribed again on the other hosts {fmt(soak['all_back_after_kill_s'])} s later (sockets per host
at the end {soak['sockets_per_host_after']}). **Lost {soak['lost']}**, duplicates before the
client's dedupe {soak['dup']}; latency over the soak p50 {fmt(soak['p50_ms'])} ms, p99
{fmt(soak['p99_ms'])} ms (includes the resumed backlog of the killed host's clients)."""


def write_multihost(result: dict[str, Any]) -> None:
    """Put ``python -m bench.multihost``'s result in its section of RESULTS.md."""
    results_md = BENCH / "RESULTS.md"
    text = results_md.read_text() if results_md.exists() else ""
    section = f"{MULTIHOST_START}\n{multihost_md(result)}\n{MULTIHOST_END}"
    if MULTIHOST_START in text and MULTIHOST_END in text:
        head, rest = text.split(MULTIHOST_START, 1)
        text = head + section + rest.split(MULTIHOST_END, 1)[1]
    else:
        text = text.replace(f"{MARKER}", f"## Multi-host\n\n{section}\n\n{MARKER}", 1) \
            if MARKER in text else text + f"\n## Multi-host\n\n{section}\n"
    results_md.write_text(text)
    print(multihost_md(result))
    print(f"wrote {results_md}")
