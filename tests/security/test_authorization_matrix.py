"""Who may do what: every route and every socket action, for every kind of visitor, in one table.

The tables below are the site's access rules written down as data. Each row is one request (or
one socket frame) and what each actor must get back:

* ``anon``  — not logged in;
* ``alice`` — a user who owns the resources under test (her private room, her DM with carol,
  her notification, her chat message);
* ``bob``   — another user, trying alice's resources;
* ``admin`` — an administrator (not a member of alice's private room or DM).

Everything runs against one real gunicorn (the socket half needs it anyway), with the data made
through the site's own forms. A new route or socket command that is not in a table fails
``test_every_route_is_in_the_table`` / ``test_every_socket_command_is_in_the_table``: decide who
may use it, then add the row.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
import websocket

from app import create_app
from app.config import TestConfig as ConfigForTests  # a Test* name would be collected
from tests.support.forms import csrf_token_from
from tests.support.live import LiveServer, live_login, start_live_server
from tests.support.sockets import Client, cookie_header, ws_url

ACTORS = ("anon", "alice", "bob", "admin")
PASSWORDS = {"alice": "alice-demo-pass", "bob": "bob-demo-pass", "admin": "admin-demo-pass"}
CAROL = ("carol", "carol-matrix-pass-1")

# Outcomes of an HTTP request: "ok" (2xx), "login" (302 to the login page), "redirect" (any
# other 3xx: a form did its work), "101" (socket upgraded), or the exact error status.
OK, LOGIN, REDIRECT = "ok", "login", "redirect"


def row(method: str, rule: str, url: str, expect: tuple[str, str, str, str], *,
        data: dict | None = None, headers: dict | None = None, fresh: bool = False,
        name: str | None = None) -> dict[str, Any]:
    """One HTTP row; ``expect`` is (anon, alice, bob, admin). ``fresh`` runs it on a session of
    its own (logging out ends every session of the account; the shared one is renewed)."""
    return {"name": name or f"{method} {url}", "method": method, "rule": rule, "url": url,
            "data": data, "headers": headers or {}, "fresh": fresh,
            "expect": dict(zip(ACTORS, expect, strict=True))}


#: Every page and API route. ``{private}`` is alice's private room, ``{dm}`` her DM with carol,
#: ``{public}`` a public room, ``{message}`` a message of hers in her private room,
#: ``{notification}`` one of her notifications, ``{ann_all}``/``{ann_admins}`` announcements to
#: everyone / to admins only, ``{carol}`` carol's user id.
HTTP_TABLE = [
    # ---- main
    # Visitors get the landing page, users their dashboard.
    row("GET", "/", "/", (OK, OK, OK, OK)),
    row("GET", "/favicon.ico", "/favicon.ico", (OK, OK, OK, OK)),
    row("GET", "/healthz", "/healthz", (OK, OK, OK, OK)),
    row("GET", "/static/<path:filename>", "/static/css/site.css", (OK, OK, OK, OK)),
    row("GET", "/ws/static/<path:filename>", "/ws/static/realtime.js", (OK, OK, OK, OK)),
    # ---- auth: logged-in visitors are sent on from the login and register pages
    row("GET", "/auth/login", "/auth/login", (OK, REDIRECT, REDIRECT, REDIRECT)),
    row("POST", "/auth/login", "/auth/login", (OK, REDIRECT, REDIRECT, REDIRECT),
        data={"username": "nobody", "password": "wrong-password"}),
    row("POST", "/auth/logout", "/auth/logout", (LOGIN, REDIRECT, REDIRECT, REDIRECT),
        fresh=True),
    row("GET", "/auth/register", "/auth/register", (OK, REDIRECT, REDIRECT, REDIRECT)),
    row("POST", "/auth/register", "/auth/register", (OK, REDIRECT, REDIRECT, REDIRECT),
        data={"username": "", "password": "", "confirm": ""}),
    # Password reset: anyone may ask (the answer is the same whoever is named); a link that is
    # not valid sends everyone back to the request form.
    row("GET", "/auth/reset", "/auth/reset", (OK, OK, OK, OK)),
    row("POST", "/auth/reset", "/auth/reset", (REDIRECT, REDIRECT, REDIRECT, REDIRECT),
        data={"login": "nobody"}),
    row("GET", "/auth/reset/<token>", "/auth/reset/not-a-token",
        (REDIRECT, REDIRECT, REDIRECT, REDIRECT)),
    row("POST", "/auth/reset/<token>", "/auth/reset/not-a-token",
        (REDIRECT, REDIRECT, REDIRECT, REDIRECT), data={"password": "x", "confirm": "x"}),
    # ---- admin area: admins only; users get 403, visitors the login page
    row("GET", "/admin/", "/admin/", (LOGIN, "403", "403", OK)),
    row("GET", "/admin/users", "/admin/users", (LOGIN, "403", "403", OK)),
    row("POST", "/admin/users/<int:user_id>/active", "/admin/users/{carol}/active",
        (LOGIN, "403", "403", REDIRECT), data={"active": "1"}),
    row("GET", "/admin/announcements", "/admin/announcements", (LOGIN, "403", "403", OK)),
    # An empty title: the admin gets the form back, nothing is published.
    row("POST", "/admin/announcements", "/admin/announcements", (LOGIN, "403", "403", OK),
        data={"title": "", "audience": "all"}),
    row("GET", "/admin/announcements/figures", "/admin/announcements/figures",
        (LOGIN, "403", "403", OK)),
    row("GET", "/admin/announcements/<int:announcement_id>/edit",
        "/admin/announcements/{ann_all}/edit", (LOGIN, "403", "403", OK)),
    # An empty title: the admin gets the form back, nothing changes.
    row("POST", "/admin/announcements/<int:announcement_id>/edit",
        "/admin/announcements/{ann_all}/edit", (LOGIN, "403", "403", OK),
        data={"title": "", "level": "info"}),
    # Unknown ids, so the shared announcements stay live for the other rows.
    row("POST", "/admin/announcements/<int:announcement_id>/end",
        "/admin/announcements/999999/end", (LOGIN, "403", "403", "404")),
    row("POST", "/admin/announcements/<int:announcement_id>/retract",
        "/admin/announcements/999999/retract", (LOGIN, "403", "403", "404")),
    row("GET", "/admin/ops", "/admin/ops", (LOGIN, "403", "403", OK)),
    row("GET", "/admin/ops/stats", "/admin/ops/stats", (LOGIN, "403", "403", OK)),
    # ---- /metrics: open to loopback scrapers, closed to anything behind a proxy
    row("GET", "/metrics", "/metrics", (OK, OK, OK, OK), name="GET /metrics from loopback"),
    row("GET", "/metrics", "/metrics", ("403", "403", "403", "403"),
        headers={"X-Forwarded-For": "203.0.113.9"}, name="GET /metrics through a proxy"),
    # ---- notifications: each user reaches only their own
    row("GET", "/notifications", "/notifications", (LOGIN, OK, OK, OK)),
    row("POST", "/notifications/<int:notification_id>/read",
        "/notifications/{notification}/read", (LOGIN, REDIRECT, "404", "404")),
    row("POST", "/notifications/read-all", "/notifications/read-all",
        (LOGIN, REDIRECT, REDIRECT, REDIRECT)),
    row("GET", "/notifications/preferences", "/notifications/preferences", (LOGIN, OK, OK, OK)),
    row("POST", "/notifications/preferences", "/notifications/preferences",
        (LOGIN, REDIRECT, REDIRECT, REDIRECT),
        data={f"toast_{k}": "on" for k in ("welcome", "mention", "dm", "announcement", "system")}),
    row("POST", "/announcements/<int:announcement_id>/dismiss", "/announcements/{ann_all}/dismiss",
        (LOGIN, REDIRECT, REDIRECT, REDIRECT), name="dismiss an announcement to everyone"),
    row("POST", "/announcements/<int:announcement_id>/dismiss",
        "/announcements/{ann_admins}/dismiss", (LOGIN, "404", "404", REDIRECT),
        name="dismiss an announcement to admins"),
    # ---- chat: public rooms for everyone logged in; private rooms and DMs for members only
    # (an admin is not a member, and unknown and forbidden rooms both answer 404)
    row("GET", "/chat/", "/chat/", (LOGIN, OK, OK, OK)),
    row("GET", "/chat/browse", "/chat/browse", (LOGIN, OK, OK, OK)),
    row("GET", "/chat/<int:room_id>/members", "/chat/{private}/members", (LOGIN, OK, "404", "404")),
    row("POST", "/chat/<int:room_id>/join", "/chat/{public}/join",
        (LOGIN, REDIRECT, REDIRECT, REDIRECT)),
    row("POST", "/chat/<int:room_id>/archive", "/chat/{public}/archive",
        (LOGIN, "403", "403", REDIRECT), data={"archived": "0"}),
    row("POST", "/chat/messages/<int:message_id>/edit", "/chat/messages/{message}/edit",
        (LOGIN, REDIRECT, "403", "403"), data={"body": "for my eyes, edited"}),
    row("GET", "/chat/<int:room_id>", "/chat/{public}", (LOGIN, OK, OK, OK)),
    row("GET", "/chat/<int:room_id>", "/chat/{private}", (LOGIN, OK, "404", "404")),
    row("GET", "/chat/<int:room_id>", "/chat/{dm}", (LOGIN, OK, "404", "404")),
    row("GET", "/chat/<int:room_id>", "/chat/999999", (LOGIN, "404", "404", "404")),
    row("GET", "/chat/<int:room_id>/messages", "/chat/{public}/messages", (LOGIN, OK, OK, OK)),
    row("GET", "/chat/<int:room_id>/messages", "/chat/{private}/messages",
        (LOGIN, OK, "404", "404")),
    row("GET", "/chat/<int:room_id>/messages", "/chat/{dm}/messages", (LOGIN, OK, "404", "404")),
    row("POST", "/chat/<int:room_id>/messages", "/chat/{public}/messages",
        (LOGIN, REDIRECT, REDIRECT, REDIRECT), data={"body": "matrix: public"}),
    row("POST", "/chat/<int:room_id>/messages", "/chat/{private}/messages",
        (LOGIN, REDIRECT, "404", "404"), data={"body": "matrix: private"}),
    row("POST", "/chat/<int:room_id>/messages", "/chat/{dm}/messages",
        (LOGIN, REDIRECT, "404", "404"), data={"body": "matrix: dm"}),
    row("POST", "/chat/rooms", "/chat/rooms", (LOGIN, REDIRECT, REDIRECT, REDIRECT),
        data={"name": "matrix-room", "kind": "private", "invite": ""}),
    row("POST", "/chat/dm", "/chat/dm", (LOGIN, REDIRECT, REDIRECT, REDIRECT),
        data={"username": "carol"}),
    row("POST", "/chat/messages/<int:message_id>/delete", "/chat/messages/{message}/delete",
        (LOGIN, REDIRECT, "403", REDIRECT)),
    # ---- the socket endpoint: refused before the upgrade unless logged in
    row("GET", "/ws/check", "/ws/check", ("401", OK, OK, OK)),
    row("GET", "/ws", "/ws", ("401", "101", "101", "101"), name="WebSocket handshake"),
]


def sock(name: str, frame: dict, expect: tuple[str, str, str]) -> dict[str, Any]:
    """One socket row; ``expect`` is (alice, bob, admin). A visitor never gets this far: the
    handshake answers 401 (the ``anon`` column, checked for every row)."""
    return {"name": name, "frame": frame,
            "expect": {"anon": "401", **dict(zip(ACTORS[1:], expect, strict=True))}}


SUB, FORBIDDEN, REPLY = "subscribed", "error forbidden", "reply"
NOT_FOUND = "error not_found"

#: Every subscription kind and every registered command. ``{self}`` is the actor's own user id,
#: ``{other}`` someone else's (bob's for alice, alice's for the others).
SOCKET_TABLE = [
    sock("subscribe user:<self>", {"type": "subscribe", "stream": "user:{self}"}, (SUB, SUB, SUB)),
    sock("subscribe user:<other>", {"type": "subscribe", "stream": "user:{other}"},
         (FORBIDDEN, FORBIDDEN, FORBIDDEN)),
    sock("subscribe broadcast", {"type": "subscribe", "stream": "broadcast"}, (SUB, SUB, SUB)),
    sock("subscribe role:user", {"type": "subscribe", "stream": "role:user"},
         (SUB, SUB, FORBIDDEN)),
    sock("subscribe role:admin", {"type": "subscribe", "stream": "role:admin"},
         (FORBIDDEN, FORBIDDEN, SUB)),
    sock("subscribe room:<public>", {"type": "subscribe", "stream": "room:{public}"},
         (SUB, SUB, SUB)),
    sock("subscribe room:<alice's private room>", {"type": "subscribe", "stream": "room:{private}"},
         (SUB, FORBIDDEN, FORBIDDEN)),
    sock("subscribe room:<alice's DM with carol>", {"type": "subscribe", "stream": "room:{dm}"},
         (SUB, FORBIDDEN, FORBIDDEN)),
    sock("subscribe room:<no such room>", {"type": "subscribe", "stream": "room:999999"},
         (FORBIDDEN, FORBIDDEN, FORBIDDEN)),
    sock("subscribe ops:cluster", {"type": "subscribe", "stream": "ops:cluster"},
         (FORBIDDEN, FORBIDDEN, SUB)),
    sock("subscribe ops:<other name>", {"type": "subscribe", "stream": "ops:secrets"},
         (FORBIDDEN, FORBIDDEN, FORBIDDEN)),
    sock("subscribe <unknown prefix>", {"type": "subscribe", "stream": "admin:1"},
         (FORBIDDEN, FORBIDDEN, FORBIDDEN)),
    sock("notifications.mark_read alice's id",
         {"type": "notifications.mark_read", "data": {"ids": ["{notification}"]}},
         (REPLY, NOT_FOUND, NOT_FOUND)),
    sock("notifications.mark_read all (own only)",
         {"type": "notifications.mark_read", "data": {"all": True}}, (REPLY, REPLY, REPLY)),
    sock("announcement.dismiss to everyone",
         {"type": "announcement.dismiss", "data": {"id": "{ann_all}"}}, (REPLY, REPLY, REPLY)),
    sock("announcement.dismiss to admins",
         {"type": "announcement.dismiss", "data": {"id": "{ann_admins}"}},
         (NOT_FOUND, NOT_FOUND, REPLY)),
    sock("announcement.seen to everyone",
         {"type": "announcement.seen", "data": {"id": "{ann_all}"}}, (REPLY, REPLY, REPLY)),
    sock("announcement.seen to admins",
         {"type": "announcement.seen", "data": {"id": "{ann_admins}"}},
         (NOT_FOUND, NOT_FOUND, REPLY)),
    sock("chat.send public room", {"type": "chat.send", "data": {"room": "{public}", "body": "m"}},
         (REPLY, REPLY, REPLY)),
    sock("chat.send alice's private room",
         {"type": "chat.send", "data": {"room": "{private}", "body": "m"}},
         (REPLY, FORBIDDEN, FORBIDDEN)),
    sock("chat.send alice's DM", {"type": "chat.send", "data": {"room": "{dm}", "body": "m"}},
         (REPLY, FORBIDDEN, FORBIDDEN)),
    sock("chat.typing alice's private room", {"type": "chat.typing", "data": {"room": "{private}"}},
         (REPLY, FORBIDDEN, FORBIDDEN)),
    sock("chat.presence alice's private room",
         {"type": "chat.presence", "data": {"room": "{private}"}}, (REPLY, FORBIDDEN, FORBIDDEN)),
    sock("chat.presence alice's DM", {"type": "chat.presence", "data": {"room": "{dm}"}},
         (REPLY, FORBIDDEN, FORBIDDEN)),
    sock("chat.read alice's private room",
         {"type": "chat.read", "data": {"room": "{private}", "message": "{message}"}},
         (REPLY, FORBIDDEN, FORBIDDEN)),
    sock("chat.delete alice's message", {"type": "chat.delete", "data": {"message": "{message}"}},
         (REPLY, FORBIDDEN, REPLY)),
    sock("chat.edit alice's message",
         {"type": "chat.edit", "data": {"message": "{message2}", "body": "edited"}},
         (REPLY, FORBIDDEN, FORBIDDEN)),
]


# ------------------------------------------------------------------------------------ the world


def _token(http: requests.Session, base: str, page: str = "/") -> str:
    return csrf_token_from(http.get(base + page, timeout=10).text)


def _post(http: requests.Session, base: str, path: str, data: dict, **kw: Any) -> requests.Response:
    form = {"csrf_token": _token(http, base), **data}
    return http.post(base + path, data=form, timeout=10, allow_redirects=False, **kw)


def _room_id(response: requests.Response) -> int:
    assert response.status_code == 302, response.text[:500]
    return int(re.fullmatch(r"/chat/(\d+)", response.headers["Location"]).group(1))


def _banner_ids(http: requests.Session, base: str) -> set[int]:
    return {int(i) for i in re.findall(r"/announcements/(\d+)/dismiss", http.get(base + "/").text)}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    """A live server, a logged-in session per actor, and alice's resources made through the
    site's own forms. Chat's send rate is raised: the matrix posts more than a person would."""
    server = start_live_server(tmp_path_factory.mktemp("matrix"), workers=1,
                               env={"CHAT_RATE_COUNT": "1000"})
    try:
        base = server.url
        sessions = {name: live_login(server, name, pw) for name, pw in PASSWORDS.items()}
        anon = requests.Session()
        anon.get(base + "/auth/login", timeout=10)
        sessions["anon"] = anon
        alice, admin = sessions["alice"], sessions["admin"]

        # carol registers (she is alice's DM partner, and the admin toggles her account).
        carol_http = requests.Session()
        page = carol_http.get(base + "/auth/register", timeout=10).text
        response = carol_http.post(base + "/auth/register", timeout=10, allow_redirects=False,
                                   data={"csrf_token": csrf_token_from(page), "username": CAROL[0],
                                         "password": CAROL[1], "confirm": CAROL[1]})
        assert response.status_code == 302, response.text[:500]
        carol_http = live_login(server, *CAROL)
        users = admin.get(base + "/admin/users", timeout=10).text
        carol_row = users[users.index("<td>carol</td>"):]
        carol_id = int(re.search(r'action="/admin/users/(\d+)/active"', carol_row).group(1))

        ids: dict[str, Any] = {"carol": carol_id}
        ids["public"] = _room_id(_post(alice, base, "/chat/rooms",
                                       {"name": "matrix-lobby", "kind": "public"}))
        ids["private"] = _room_id(_post(alice, base, "/chat/rooms",
                                        {"name": "alice-secret", "kind": "private"}))
        ids["dm"] = _room_id(_post(alice, base, "/chat/dm", {"username": "carol"}))
        posted = _post(alice, base, f"/chat/{ids['private']}/messages", {"body": "for my eyes"},
                       headers={"Accept": "application/json"})
        ids["message"] = posted.json()["message"]["id"]
        ids["message2"] = _post(alice, base, f"/chat/{ids['private']}/messages", {"body": "2nd"},
                                headers={"Accept": "application/json"}).json()["message"]["id"]
        # carol writes to alice: alice gets a notification ("Message from carol").
        _post(carol_http, base, f"/chat/{ids['dm']}/messages", {"body": "hello alice"})
        inbox = alice.get(base + "/notifications", timeout=10).text
        ids["notification"] = max(
            int(i) for i in re.findall(r'data-notification-id="(\d+)"', inbox))

        before = _banner_ids(alice, base)
        form = {"title": "Matrix: everyone", "body": "", "level": "info", "audience": "all",
                "role": "user", "usernames": "", "expires_minutes": ""}
        assert _post(admin, base, "/admin/announcements", form).status_code == 302
        [ids["ann_all"]] = _banner_ids(alice, base) - before
        form.update(title="Matrix: admins", audience="role", role="admin")
        assert _post(admin, base, "/admin/announcements", form).status_code == 302
        [ids["ann_admins"]] = _banner_ids(admin, base) - _banner_ids(alice, base)

        user_ids = {}
        for name in PASSWORDS:
            client = Client(server, sessions[name])
            user_ids[name] = str(client.welcome["user"])
            client.close()
        yield {"server": server, "sessions": sessions, "ids": ids, "user_ids": user_ids}
    finally:
        server.stop()


# ------------------------------------------------------------------------------------ HTTP


def http_outcome(response: requests.Response) -> str:
    if 200 <= response.status_code < 300:
        return OK
    if 300 <= response.status_code < 400:
        location = response.headers.get("Location", "")
        return LOGIN if location.split("?")[0].endswith("/auth/login") and "next=" in location \
            else REDIRECT
    return str(response.status_code)


def handshake_outcome(server: LiveServer, http: requests.Session) -> str:
    try:
        websocket.create_connection(ws_url(server), cookie=cookie_header(http),
                                    origin=server.url, timeout=5).close()
    except websocket.WebSocketBadStatusException as exc:
        return str(exc.status_code)
    return "101"


def run_http(world: dict[str, Any], spec: dict[str, Any], actor: str) -> str:
    server: LiveServer = world["server"]
    base = server.url
    http = world["sessions"][actor]
    if spec["fresh"]:
        http = requests.Session() if actor == "anon" else live_login(server, actor,
                                                                        PASSWORDS[actor])
        http.get(base + "/auth/login", timeout=10)
    url = base + spec["url"].format(**world["ids"])
    if spec["rule"] == "/ws":
        return handshake_outcome(server, http)
    if spec["method"] == "GET":
        response = http.get(url, headers=spec["headers"], timeout=10, allow_redirects=False)
    else:
        # A real browser's form: the CSRF token of this session, from a page with a form.
        token = _token(http, base, "/auth/login" if actor == "anon" else "/")
        response = http.post(url, data={"csrf_token": token, **(spec["data"] or {})},
                             headers=spec["headers"], timeout=10, allow_redirects=False)
    if spec["fresh"] and actor != "anon":
        # Logout ends every session of the account (docs/security.md): log the shared one in
        # again for the rows that follow.
        world["sessions"][actor] = live_login(server, actor, PASSWORDS[actor])
    return http_outcome(response)


@pytest.mark.parametrize("spec", HTTP_TABLE, ids=[r["name"] for r in HTTP_TABLE])
def test_http_access(world, spec):
    got = {actor: run_http(world, spec, actor) for actor in ACTORS}
    wrong = [f"{spec['name']} as {actor}: expected {spec['expect'][actor]}, got {got[actor]}"
             for actor in ACTORS if got[actor] != spec["expect"][actor]]
    assert not wrong, "\n".join(wrong)


def test_every_route_is_in_the_table():
    app = create_app(ConfigForTests())
    routes = {(method, rule.rule) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    covered = {(r["method"], r["rule"]) for r in HTTP_TABLE}
    missing = sorted(routes - covered)
    assert not missing, f"routes with no row in HTTP_TABLE (decide who may use them): {missing}"
    stale = sorted(covered - routes)
    assert not stale, f"rows for routes that no longer exist: {stale}"


# ------------------------------------------------------------------------------------ socket


def _fill(value: Any, names: dict[str, Any]) -> Any:
    """Put ids into a frame template; a string that is exactly ``"{name}"`` becomes the int."""
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, str) and "{" in value:
        whole = re.fullmatch(r"\{(\w+)\}", value)
        if whole and isinstance(names[whole.group(1)], int):
            return names[whole.group(1)]
        return value.format(**names)
    return value


@pytest.fixture(scope="module")
def sockets(world):
    """One open socket per logged-in actor, and what an anonymous handshake gets."""
    clients = {actor: Client(world["server"], world["sessions"][actor]) for actor in ACTORS[1:]}
    anon = handshake_outcome(world["server"], world["sessions"]["anon"])
    yield {"anon": anon, **clients}
    for client in clients.values():
        client.close()


def socket_outcome(client: Client, frame: dict[str, Any], ref: str) -> str:
    client.send({**frame, "ref": ref})
    while True:
        message = client.recv(timeout=10)
        if message.get("ref") != ref:
            continue  # events and typing/presence pushes of the other rows
        kind = message["type"]
        if kind == "subscribed":
            client.send({"type": "unsubscribe", "stream": frame["stream"]})
        return f"error {message.get('code')}" if kind == "error" else kind


@pytest.mark.parametrize("spec", SOCKET_TABLE, ids=[r["name"] for r in SOCKET_TABLE])
def test_socket_access(world, sockets, spec):
    got = {"anon": sockets["anon"]}
    uids = world["user_ids"]
    for n, actor in enumerate(ACTORS[1:]):
        names = {**world["ids"], "self": uids[actor],
                 "other": uids["bob"] if actor == "alice" else uids["alice"]}
        got[actor] = socket_outcome(sockets[actor], _fill(spec["frame"], names),
                                    f"{SOCKET_TABLE.index(spec)}-{n}")
    wrong = [f"{spec['name']} as {actor}: expected {spec['expect'][actor]!r}, got {got[actor]!r}"
             for actor in ACTORS if got[actor] != spec["expect"][actor]]
    assert not wrong, "\n".join(wrong)


def test_every_socket_command_is_in_the_table():
    app = create_app(ConfigForTests())
    commands = set(app.extensions["realtime"].ext._handlers)
    covered = {r["frame"]["type"] for r in SOCKET_TABLE}
    missing = sorted(commands - covered)
    assert not missing, f"socket commands with no row in SOCKET_TABLE: {missing}"
