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

COLUMNS = [
    ("server", "server", "{}"), ("scen", "scenario", "{}"), ("N", "n", "{}"), ("w", "workers", "{}"),
    ("p50 ms", "p50_ms", "{:.1f}"), ("p99 ms", "p99_ms", "{:.1f}"), ("max ms", "max_ms", "{:.0f}"),
    ("deliv/s", "deliveries_s", "{:,.0f}"), ("lost", "lost", "{}"), ("dup", "dup", "{}"),
    ("healthy reach", "healthy_reach_mean", "{:.1%}"), ("RSS MB", "rss_mb", "{:.0f}"),
    ("KB/conn", "kb_per_conn", "{:.0f}"), ("threads", "threads", "{}"),
    ("thr/sock", "threads_per_socket", "{:.2f}"), ("conn/s", "connect_per_s", "{:,.0f}"),
    ("CPU busy", "machine_busy", "{:.0%}"), ("server cores", "server_cores", "{:.2f}"),
    ("client cores", "client_cores", "{:.2f}"),
]


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
    body = [r for r in rows if r["scenario"] != "P"]
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


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind, style in (("tidings", "o-"), ("naive", "s--")):
        points = sorted((r["n"], r["p99_ms"]) for r in rows
                        if r["server"] == kind and r["scenario"] == "A" and r["workers"] == 1
                        and r["p99_ms"] is not None)
        if points:
            left.plot(*zip(*points), style, label=f"{kind} (1 worker)")
    points = sorted((r["n"], r["p99_ms"]) for r in rows if r["server"] == "tidings"
                    and r["scenario"] == "A" and r["workers"] == 2 and r["p99_ms"] is not None)
    if points:
        left.plot(*zip(*points), "^:", label="tidings (2 workers + Redis)")
    left.set(xscale="log", yscale="log", xlabel="connected sockets N",
             ylabel="p99 latency, ms", title="Scenario A: broadcast at 20/s")
    left.grid(True, which="both", alpha=0.3)
    if left.get_legend_handles_labels()[0]:
        left.legend()
    bars = [(f"{r['server']}\n{r['scenario']} w{r['workers']}", r["deliveries_s"] or 0)
            for r in rows if r["scenario"] in ("B", "C") and r["n"] == 1000]
    if bars:
        labels, values = zip(*bars)
        colors = ["tab:blue" if lab.startswith("tidings") else "tab:gray" for lab in labels]
        right.bar(labels, values, color=colors)
        for x, v in enumerate(values):
            right.text(x, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    right.set(ylabel="deliveries/s", title="Throughput at N=1,000 (B: 500 broadcasts, C: 5,000 notifications)")
    right.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(rows: list[dict[str, Any]], profile: dict[str, Any],
                  problems: dict[str, list[str]], machine: dict[str, Any], json_path: Path) -> None:
    text, md = table(rows)
    print("\n" + text + "\n")
    print(page_table(rows))
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
    if results_md.exists() and MARKER in results_md.read_text():
        notes = results_md.read_text().split(MARKER, 1)[1]
    hot = ""
    if profile.get("self"):
        hot += f"py-spy (`--gil --nonblocking`, 100 Hz: only the thread holding the GIL is sampled, so the shares are shares of the worker's one usable core), worker of tidings N=1,000 during a second scenario-B burst " \
               f"({int(profile['total_samples'][0][1])} samples of non-idle threads).\n\n"
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
    results_md.write_text(f"""# Realtime benchmark (issue 7) — latest results

Generated by `{machine['command']}` ({machine['mode']} mode) on {machine['stamp']}:
{machine['nproc']} CPUs, Python {machine['python']}, {machine['platform']}; run took {machine['seconds']} s.
Code under test: git {machine.get('git', '?')}.
Raw data: `bench/results/{json_path.name}` (gitignored).

## Delivery

{md}

Scenarios: **A** broadcast at 20/s for 5 s (100 broadcasts); **B** 500 broadcasts back to back
(deliveries/s = delivered / (last delivery − first publish ts)); **C** 5,000 notifications, each to one
random user; **S** as A with 2% of clients stalled (stopped reading after subscribing; wedged first with
16 × 512 KB messages each) — `healthy reach` is the mean share of healthy clients that got each
broadcast; lost/dup count healthy clients only; **w=2** two gunicorn workers + Redis.
Latency = client receive time − envelope `ts` (server publish time, same clock). RSS and threads are
summed over the workers; KB/conn and thr/sock are deltas over the idle server divided by N.
CPU (A, S and B only, from publishing the first event to the last delivery): `CPU busy` is the
share of the whole machine in use, `server cores` and `client cores` the cores' worth of CPU time
taken by the server's workers and by the load generator's processes (/proc/*/stat).

## Page loads while the sockets are open

{page_table(rows)}
## Where the time goes

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
  Baseline: bench/naive_app.py (flask-sock, locked global list, `for ws in clients: ws.send()`),
  `gunicorn -k gthread --threads 2N+50 bench.naive_app:app`.
- Users: N rows bulk-inserted with one precomputed password hash; each socket carries its **own**
  user's session cookie, signed with the server's SECRET_KEY through
  `app.session_interface.get_signing_serializer(app)` with the keys Flask-Login writes at login
  (`_user_id`, `_fresh`, `_id` for this client's address and User-Agent) — the cookie a real login sets.
- Load: picows (C frame parser) on asyncio in 2 client processes; every socket sends `Origin` and its
  cookie, subscribes to `broadcast` and `user:<id>` (Tidings), then keeps (receive time, frame
  bytes) per event; (stream, id), latency, loss and duplicates are decoded after the scenario, so
  the clients take as little CPU as possible from the server they share the cores with.
- Resources: `/proc/<worker>/status` VmRSS and Threads before connecting and after.
{MARKER}{notes if notes else chr(10)}""")
    print(f"wrote {results_md} and {BENCH / 'latest.png'}")
