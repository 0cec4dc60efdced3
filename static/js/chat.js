/*
 * Tidings chat: the room view (full page and panel), the collapsible panel and the live room
 * lists with their unread badges.
 *
 * - Server-rendered history carries the room stream's head (data-room-head); following from it
 *   replays anything published after the render. Messages are keyed by message id, so a replay
 *   of one already shown (or the echo of our own send) never shows twice.
 * - Sending goes through an outbox: every message gets a client id, shows at once as
 *   "Sending…", and is sent (one at a time, in order) whenever the socket is live. A send cut
 *   off by a dropped connection stays queued and goes again with the same client id after the
 *   reconnect; the server answers a repeated client id with the first message, so nothing is
 *   ever stored twice. A refused one offers Retry and Edit. The outbox lives in sessionStorage
 *   and the draft in localStorage, so a reload loses neither.
 * - Layout is derived, not stored: day dividers, the "New messages" line, the start-of-room
 *   marker and grouping of consecutive messages are recomputed from the list after each change.
 * - New messages from others are read out through a polite live region; history (the first
 *   render, older pages) goes into the list silently.
 * - Maps, never plain objects, are keyed by anything that came over the wire. User text is
 *   always text: textContent, and links are <a> elements built only for http(s).
 */
(function () {
  "use strict";

  var MAX_BODY = 2000;              // characters (code points), as the server counts them
  var COUNTER_FROM = 1800;          // show the counter from here on
  var GROUP_MS = 5 * 60 * 1000;     // consecutive messages by one author within this are grouped
  var TYPING_SEND_EVERY = 2000;     // ms between our own typing signals
  var TYPING_SHOW_FOR = 4000;       // ms a typing line stays without a new signal
  var WAIT_BY_ITSELF = 15000;       // a send limit lifting within this is waited out, in order
  var PHONE = "(max-width: 600px)";
  var URL_PATTERN = /https?:\/\/[^\s<>"']+/gi;
  var MENTION_PATTERN = /(?<![\w@])@([A-Za-z0-9_.-]{1,64})/g;
  var COLLAPSED_KEY = "tidings.chat.collapsed";
  var ROOM_KEY = "tidings.chat.room";
  var OUTBOX_KEY = "tidings.chat.outbox.";
  var DRAFT_KEY = "tidings.chat.draft.";

  var body = document.body;
  var me = { id: parseInt(body.dataset.userId, 10), name: body.dataset.username || "" };

  /* ------------------------------------------------------------------ small helpers */

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function button(text, className, onClick) {
    var b = el("button", className || "chat-link-button", text);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  function store(area, key, value) {
    try {
      var s = window[area];
      if (value === undefined) return s.getItem(key);
      if (value === null) s.removeItem(key); else s.setItem(key, value);
    } catch (err) { /* private mode or full: no memory, no harm */ }
    return null;
  }

  function length(text) { return Array.from(text).length; }   // code points, like the server

  function formatNumber(n) { return n.toLocaleString(); }

  function newClientId() {
    var bytes = new Uint8Array(8);
    window.crypto.getRandomValues(bytes);
    return "c" + Date.now().toString(36) + Array.from(bytes, function (b) {
      return (b < 16 ? "0" : "") + b.toString(16);
    }).join("");
  }

  function post(url, csrf) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, Accept: "application/json" },
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) throw new Error((data.error && data.error.message) || "HTTP " + r.status);
        return data;
      });
    });
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  }

  /* Text with @mentions highlighted (ours stronger); returns whether it mentions us. */
  function appendMentions(target, text) {
    var last = 0, match, mine = false;
    MENTION_PATTERN.lastIndex = 0;
    while ((match = MENTION_PATTERN.exec(text)) !== null) {
      var name = match[1].replace(/[.-]+$/, "");
      if (!name) continue;
      target.appendChild(document.createTextNode(text.slice(last, match.index)));
      var span = el("span", "chat-mention", "@" + name);
      if (name === me.name) { span.classList.add("chat-mention--me"); mine = true; }
      target.appendChild(span);
      last = match.index + 1 + name.length;
      MENTION_PATTERN.lastIndex = last;
    }
    target.appendChild(document.createTextNode(text.slice(last)));
    return mine;
  }

  /* Fill `target` with `text`, turning http(s) URLs into safe links and marking mentions. */
  function renderBody(target, text) {
    target.textContent = "";
    var last = 0, match, mine = false;
    URL_PATTERN.lastIndex = 0;
    while ((match = URL_PATTERN.exec(text)) !== null) {
      var raw = match[0].replace(/[.,;:!?)\]}]+$/, "");
      var parsed = null;
      try { parsed = new URL(raw); } catch (err) { parsed = null; }
      if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) continue;
      mine = appendMentions(target, text.slice(last, match.index)) || mine;
      var a = el("a", "chat-link", raw);
      a.rel = "noopener noreferrer nofollow";
      a.target = "_blank";
      a.href = parsed.href;   // set only after the scheme was checked
      target.appendChild(a);
      last = match.index + raw.length;
      URL_PATTERN.lastIndex = last;
    }
    return appendMentions(target, text.slice(last)) || mine;
  }

  /* How long the server asked us to wait ("Try again in 3 seconds."); 2 s when it did not say. */
  function retryDelay(message) {
    var match = /in (\d+) (second|minute|hour)/.exec(message || "");
    if (!match) return 2000;
    var unit = match[2] === "second" ? 1000 : match[2] === "minute" ? 60000 : 3600000;
    return parseInt(match[1], 10) * unit;
  }

  function parseDate(iso) {
    var d = new Date(iso || "");
    return isNaN(d.getTime()) ? null : d;
  }

  function localTime(d) {
    return d ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
  }

  function dayKey(d) { return d.getFullYear() + "-" + d.getMonth() + "-" + d.getDate(); }

  function dayLabel(d) {
    var today = new Date();
    var yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (dayKey(d) === dayKey(today)) return "Today";
    if (dayKey(d) === dayKey(yesterday)) return "Yesterday";
    var options = { weekday: "long", month: "long", day: "numeric" };
    if (d.getFullYear() !== today.getFullYear()) options.year = "numeric";
    return d.toLocaleDateString([], options);
  }

  function offHandlers(rt, handlers) {
    // realtime.js has no "off": take our handlers out of its lists by identity.
    handlers.forEach(function (fn, type) {
      var list = rt.handlers[type] || [];
      var i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    });
  }

  function onHandlers(rt, handlers) {
    handlers.forEach(function (fn, type) { rt.on(type, fn); });
  }

  /* ------------------------------------------------------------------ one room */

  function ChatRoom(root, rt, options) {
    var self = this;
    this.root = root;
    this.rt = rt;
    this.roomId = parseInt(root.dataset.roomId, 10);
    this.stream = "room:" + this.roomId;
    this.title = root.dataset.roomTitle || "";
    this.kind = root.dataset.roomKind || "public";
    this.messagesUrl = root.dataset.messagesUrl;
    this.membersUrl = root.dataset.membersUrl;
    this.csrf = root.dataset.csrf || "";
    this.isAdmin = root.dataset.isAdmin === "true";
    this.hasMore = root.dataset.hasMore === "true";
    this.archived = root.dataset.archived === "true";
    var lastRead = parseInt(root.dataset.lastRead, 10);
    this.lastRead = isNaN(lastRead) ? null : lastRead;
    this.list = root.querySelector(".chat-messages");
    this.announcer = root.querySelector(".chat-announcer");
    this.typingEl = root.querySelector(".chat-typing");
    this.presenceEl = root.querySelector(".chat-presence");
    this.form = root.querySelector(".chat-form");
    this.input = this.form && this.form.querySelector("textarea");
    this.statusEl = root.querySelector(".chat-form__status");
    this.errorEl = root.querySelector(".chat-error");
    this.byId = new Map();          // message id -> <li>
    this.data = new Map();          // message id -> message as received
    this.outbox = [];               // {cid, body, state: queued|sending|failed, error, li}
    this.typers = new Map();        // user id -> {name, until}
    this.sending = null;
    this.lastTypingSent = 0;
    this.loading = false;
    this.active = true;
    this.online = rt.state === "live";
    this.readTimer = null;
    this.pendingAnnouncements = [];

    Array.prototype.forEach.call(this.list.querySelectorAll(".chat-msg[data-id]"), function (li) {
      var nameEl = li.querySelector(".chat-msg__name");
      var m = {
        id: parseInt(li.dataset.id, 10),
        room: self.roomId,
        user: { id: parseInt(li.dataset.userId, 10), name: nameEl ? nameEl.textContent : "" },
        body: li.classList.contains("is-deleted") ? "" : li.querySelector(".chat-msg__body").textContent,
        created_at: li.dataset.created,
        edited_at: li.dataset.edited || null,
        deleted: li.classList.contains("is-deleted"),
      };
      li.replaceWith(self.build(m));
    });
    (options.messages || []).forEach(function (m) { self.list.appendChild(self.build(m)); });
    this.firstUnreadId = this.findFirstUnread();
    this.restoreOutbox();
    this.relayout();
    this.scrollToStart();

    this.handlers = new Map([
      ["chat.message", function (m) { if (m.stream === self.stream) self.add(m.data, true); }],
      ["chat.edited", function (m) { if (m.stream === self.stream) self.applyEdit(m.data); }],
      ["chat.deleted", function (m) { if (m.stream === self.stream) self.applyDelete(m.data.message); }],
      ["chat.typing", function (m) { if (m.stream === self.stream) self.typing(m.data); }],
      ["chat.presence", function (m) { if (m.stream === self.stream) self.showPresence(m.data.online); }],
      ["chat.archived", function (m) { if (m.stream === self.stream) self.setArchived(m.data.archived); }],
      ["subscribed", function (m) { if (m.stream === self.stream) self.askPresence(); }],
      ["status", function (s) { self.setOnline(s.state); }],
    ]);
    onHandlers(rt, this.handlers);
    var head = root.dataset.roomHead;
    rt.follow(this.stream, head === undefined || head === "" ? null : parseInt(head, 10));
    if (rt.followed && rt.followed[this.stream]) this.askPresence();

    if (this.form) this.wireComposer();
    this.wireKeyboard();
    this.setOnline(rt.state);
    this.onVisible = function () { if (document.visibilityState === "visible") self.markRead(0); };
    document.addEventListener("visibilitychange", this.onVisible);
    this.list.addEventListener("scroll", function () {
      if (self.list.scrollTop < 40) self.loadOlder();
    });
  }

  ChatRoom.prototype.close = function () {
    this.active = false;
    clearTimeout(this.readTimer);
    document.removeEventListener("visibilitychange", this.onVisible);
    offHandlers(this.rt, this.handlers);
    this.rt.unfollow(this.stream);
  };

  ChatRoom.prototype.findFirstUnread = function () {
    if (this.lastRead == null) return null;
    var found = null, lastRead = this.lastRead;
    this.data.forEach(function (m) {
      if (found == null && m.id > lastRead && m.user.id !== me.id && !m.deleted) found = m.id;
    });
    return found;
  };

  /* ---------------------------------------------------------------- messages */

  ChatRoom.prototype.build = function (m) {
    var li = el("li", "chat-msg");
    var meta = el("span", "chat-msg__meta");
    meta.appendChild(el("strong", "chat-msg__name", m.user.name));
    meta.appendChild(document.createTextNode(" "));
    var created = parseDate(m.created_at);
    var time = el("time", "chat-msg__time", localTime(created));
    time.setAttribute("datetime", m.created_at || "");
    time.dataset.localized = "1";   // site.js leaves it alone
    if (created) time.title = created.toLocaleString();
    meta.appendChild(time);
    li.appendChild(meta);
    li.appendChild(el("p", "chat-msg__body"));
    if (m.id != null) this.fill(li, m);
    return li;
  };

  ChatRoom.prototype.fill = function (li, m) {
    li.dataset.id = String(m.id);
    li.dataset.userId = String(m.user.id);
    li.dataset.created = m.created_at || "";
    li.classList.remove("is-pending", "is-failed");
    this.data.set(m.id, m);
    this.byId.set(m.id, li);
    this.renderContent(li, m);
  };

  ChatRoom.prototype.renderContent = function (li, m) {
    var bodyEl = li.querySelector(".chat-msg__body");
    var old = li.querySelector(".chat-msg__edited");
    if (old) old.remove();
    old = li.querySelector(".chat-msg__actions");
    if (old) old.remove();
    li.classList.toggle("is-deleted", !!m.deleted);
    if (m.deleted) {
      bodyEl.className = "chat-msg__body chat-msg__body--deleted";
      bodyEl.textContent = "This message was deleted.";
      li.classList.remove("is-mention-me");
      return;
    }
    bodyEl.className = "chat-msg__body";
    li.classList.toggle("is-mention-me", renderBody(bodyEl, m.body) && m.user.id !== me.id);
    if (m.edited_at) {
      var mark = el("span", "chat-msg__edited", "(edited)");
      var when = parseDate(m.edited_at);
      if (when) mark.title = "Edited " + when.toLocaleString();
      bodyEl.after(mark);
    }
    this.addActions(li, m);
  };

  ChatRoom.prototype.addActions = function (li, m) {
    var mine = m.user.id === me.id;
    var canEdit = mine && !this.archived && !!this.form;
    var canDelete = (mine && !this.archived) || this.isAdmin;
    if (!canEdit && !canDelete) return;
    var self = this, actions = el("div", "chat-msg__actions");
    if (canEdit) actions.appendChild(button("Edit", null, function () { self.startEdit(m.id); }));
    if (canDelete) actions.appendChild(button("Delete", null, function () { self.confirmDelete(m.id); }));
    // Out of the Tab order until their message has focus (see wireKeyboard): fifty messages
    // must not put a hundred stops between the room list and the composer.
    Array.prototype.forEach.call(actions.children, function (b) { b.tabIndex = -1; });
    li.appendChild(actions);
  };

  /* Insert in message-id order; a message already shown (replay, echo) is ignored. */
  ChatRoom.prototype.add = function (m, live) {
    if (!m || m.id == null) return;
    var pending = m.client_id && m.user && m.user.id === me.id ? this.findOutbox(m.client_id) : null;
    if (pending) this.dropOutbox(pending);
    if (this.byId.has(m.id)) return;
    var li = this.build(m);
    var next = null, items = this.list.querySelectorAll(".chat-msg[data-id]");
    for (var i = items.length - 1; i >= 0; i--) {
      if (parseInt(items[i].dataset.id, 10) > m.id) next = items[i]; else break;
    }
    var atEnd = this.atEnd();
    if (next) this.list.insertBefore(li, next); else this.insertBeforeOutbox(li);
    this.relayout();
    if (live) {
      if (this.typers.delete(m.user.id)) this.renderTyping();
      if (m.user.id !== me.id && !pending) this.announce(m);
      if (atEnd || m.user.id === me.id) this.scrollToEnd();
      if (m.user.id !== me.id) this.markRead(m.id);   // posting moved our position already
    }
  };

  ChatRoom.prototype.insertBeforeOutbox = function (li) {
    var first = this.list.querySelector(".chat-msg.is-pending, .chat-msg.is-failed");
    this.list.insertBefore(li, first);
  };

  ChatRoom.prototype.applyEdit = function (m) {
    var li = this.byId.get(m.id);
    if (!li) return;
    this.data.set(m.id, m);
    var editing = li.querySelector(".chat-edit");
    if (editing) return;   // our own edit in progress wins; its reply brings the final text
    this.renderContent(li, m);
  };

  ChatRoom.prototype.applyDelete = function (messageId) {
    var li = this.byId.get(messageId);
    var m = this.data.get(messageId);
    if (!li || !m) return;
    m.deleted = true;
    m.body = "";
    var form = li.querySelector(".chat-edit");
    if (form) form.remove();
    li.querySelector(".chat-msg__body").hidden = false;
    this.renderContent(li, m);
    this.relayout();
  };

  /* Day dividers, the "New messages" line, the start marker, grouping: all derived. */
  ChatRoom.prototype.relayout = function () {
    var list = this.list, self = this;
    Array.prototype.forEach.call(list.querySelectorAll(".chat-divider, .chat-start, .chat-empty"),
      function (node) { node.remove(); });
    var items = list.querySelectorAll(".chat-msg[data-id]");
    var prev = null, prevDay = null, prevTime = null;
    Array.prototype.forEach.call(items, function (li) {
      var created = parseDate(li.dataset.created);
      var key = created ? dayKey(created) : prevDay;
      var broke = false;
      if (created && key !== prevDay) {
        list.insertBefore(el("li", "chat-divider chat-divider--day", dayLabel(created)), li);
        prevDay = key;
        broke = true;
      }
      if (self.firstUnreadId != null && parseInt(li.dataset.id, 10) === self.firstUnreadId) {
        list.insertBefore(el("li", "chat-divider chat-divider--new", "New messages"), li);
        broke = true;
      }
      var grouped = !broke && prev && prev.dataset.userId === li.dataset.userId &&
        !prev.classList.contains("is-deleted") && !li.classList.contains("is-deleted") &&
        created && prevTime && created - prevTime < GROUP_MS;
      li.classList.toggle("chat-msg--grouped", !!grouped);
      prev = li;
      prevTime = created;
    });
    if (!this.hasMore) {
      var start = el("li", "chat-start");
      start.appendChild(el("strong", null, this.kind === "dm"
        ? "This is the start of your conversation with " + this.title + "."
        : "This is the start of " + this.title + "."));
      list.insertBefore(start, list.firstChild);
    }
    if (!items.length && !this.outbox.length) {
      list.appendChild(el("li", "chat-empty", this.archived
        ? "Nobody wrote anything here."
        : "No messages yet. Say hello 👋"));
    }
  };

  /* New messages from others, read out politely; several at once become one summary. */
  ChatRoom.prototype.announce = function (m) {
    if (!this.announcer) return;
    var self = this;
    this.pendingAnnouncements.push(m);
    clearTimeout(this.announceTimer);
    this.announceTimer = setTimeout(function () {
      var batch = self.pendingAnnouncements.splice(0);
      var text;
      if (batch.length <= 2) {
        batch.forEach(function (one) { self.say(one.user.name + ": " + (one.body || "").slice(0, 300)); });
        return;
      }
      var names = Array.from(new Set(batch.map(function (one) { return one.user.name; })));
      text = batch.length + " new messages from " + names.slice(0, 3).join(", ") +
        (names.length > 3 ? " and others" : "");
      self.say(text);
    }, 250);
  };

  ChatRoom.prototype.say = function (text) {
    this.announcer.appendChild(el("p", null, text));
    while (this.announcer.childNodes.length > 5) this.announcer.removeChild(this.announcer.firstChild);
  };

  /* ---------------------------------------------------------------- the outbox */

  ChatRoom.prototype.findOutbox = function (cid) {
    for (var i = 0; i < this.outbox.length; i++) if (this.outbox[i].cid === cid) return this.outbox[i];
    return null;
  };

  ChatRoom.prototype.saveOutbox = function () {
    var items = this.outbox.map(function (item) {
      return { cid: item.cid, body: item.body, state: item.state === "failed" ? "failed" : "queued",
               error: item.error || "" };
    });
    store("sessionStorage", OUTBOX_KEY + this.roomId, items.length ? JSON.stringify(items) : null);
  };

  ChatRoom.prototype.restoreOutbox = function () {
    var saved = [];
    try { saved = JSON.parse(store("sessionStorage", OUTBOX_KEY + this.roomId) || "[]"); } catch (err) { saved = []; }
    var self = this;
    (Array.isArray(saved) ? saved : []).forEach(function (item) {
      if (!item || typeof item.cid !== "string" || typeof item.body !== "string") return;
      self.enqueue(item.body, item.cid, item.state === "failed" ? "failed" : "queued", item.error);
    });
  };

  ChatRoom.prototype.enqueue = function (text, cid, state, error) {
    var item = { cid: cid || newClientId(), body: text, state: state || "queued", error: error || "" };
    var li = this.build({ user: { id: me.id, name: me.name }, created_at: new Date().toISOString() });
    li.dataset.clientId = item.cid;
    renderBody(li.querySelector(".chat-msg__body"), text);
    li.appendChild(el("div", "chat-msg__status"));
    item.li = li;
    this.outbox.push(item);
    this.list.appendChild(li);
    this.showItem(item);
    return item;
  };

  ChatRoom.prototype.dropOutbox = function (item) {
    var i = this.outbox.indexOf(item);
    if (i >= 0) this.outbox.splice(i, 1);
    if (this.sending === item) this.sending = null;
    item.li.remove();
    this.saveOutbox();
  };

  ChatRoom.prototype.showItem = function (item) {
    var li = item.li, status = li.querySelector(".chat-msg__status"), self = this;
    li.classList.toggle("is-pending", item.state !== "failed");
    li.classList.toggle("is-failed", item.state === "failed");
    status.textContent = "";
    if (item.state === "waiting") {
      // A human burst over the limit: say why it waits; it goes out by itself, in order.
      status.appendChild(el("span", "chat-msg__problem", item.error + " It will go out by itself."));
      return;
    }
    if (item.state !== "failed") {
      status.appendChild(el("span", null, "Sending…"));
      return;
    }
    status.appendChild(el("span", "chat-msg__problem", "Not sent: " + (item.error || "something went wrong.")));
    status.appendChild(button("Retry", null, function () {
      item.state = "queued";
      item.error = "";
      item.waits = 0;
      self.pausedUntil = 0;
      self.showItem(item);
      self.saveOutbox();
      self.flush();
    }));
    status.appendChild(button("Edit", null, function () {
      self.dropOutbox(item);
      self.relayout();
      var current = self.input.value.trim();
      self.input.value = current ? item.body + "\n" + current : item.body;
      self.afterInput();
      self.input.focus();
    }));
  };

  ChatRoom.prototype.submit = function () {
    var text = this.input.value.trim();
    if (!text) return;
    var n = length(text);
    if (n > MAX_BODY) {
      // Never cut it short behind the writer's back: say so, and keep every character.
      this.showError("This message is " + formatNumber(n) + " characters; the limit is " +
        formatNumber(MAX_BODY) + ". Shorten it or send it in parts.");
      return;
    }
    this.showError("");
    this.enqueue(text);
    this.saveOutbox();
    this.input.value = "";
    this.afterInput();
    this.relayout();
    this.scrollToEnd();
    this.flush();
  };

  /* Send queued messages one at a time, in order, while the socket is live. */
  ChatRoom.prototype.flush = function () {
    if (this.sending || !this.online || !this.active) return;
    if (this.pausedUntil && Date.now() < this.pausedUntil) return;
    var item = null;
    for (var i = 0; i < this.outbox.length; i++) {
      var state = this.outbox[i].state;
      if (state === "queued" || state === "waiting") { item = this.outbox[i]; break; }
    }
    if (!item) return;
    var self = this;
    this.sending = item;
    item.state = "sending";
    this.rt.send("chat.send", { room: this.roomId, body: item.body, client_id: item.cid })
      .then(function (reply) {
        if (self.sending === item) self.sending = null;
        var m = reply.message;
        if (m && !m.client_id) m.client_id = item.cid;
        self.add(m, true);
        if (self.outbox.indexOf(item) >= 0) self.dropOutbox(item);
        self.flush();
      }, function (err) {
        if (self.sending === item) self.sending = null;
        if (self.outbox.indexOf(item) < 0) return;
        var code = err && err.code;
        if (code === "offline" || code === "disconnected") {
          // The reply was lost, not the message: it goes again, same client id, once we are back.
          item.state = "queued";
          self.showItem(item);
          return;
        }
        item.error = (err && err.message) || "the server refused it.";
        if (code === "rate_limited") {
          var delay = retryDelay(item.error);
          item.waits = (item.waits || 0) + 1;
          if (delay <= WAIT_BY_ITSELF && item.waits <= 5) {
            item.state = "waiting";
            self.showItem(item);
            self.pausedUntil = Date.now() + delay;
            setTimeout(function () { self.flush(); }, delay + 100);
            return;
          }
        }
        item.state = "failed";
        self.showItem(item);
        self.saveOutbox();
        self.flush();
      });
  };

  /* ---------------------------------------------------------------- the composer */

  ChatRoom.prototype.wireComposer = function () {
    var self = this, input = this.input;
    this.counter = el("span", "chat-counter");
    this.counter.hidden = true;
    this.counter.id = input.id ? input.id + "-count" : "";
    this.statusEl.before(this.counter);
    input.removeAttribute("maxlength");   // a browser cut-off would truncate pastes silently
    var draft = store("localStorage", DRAFT_KEY + this.roomId);
    if (draft && !input.value) input.value = draft;
    this.afterInput();
    this.suggest = new Suggestions(this);
    this.form.addEventListener("submit", function (e) { e.preventDefault(); self.submit(); });
    input.addEventListener("keydown", function (e) {
      if (self.suggest.handleKey(e)) return;
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); self.submit(); }
      else if (e.key === "ArrowUp" && !input.value) {
        var last = self.lastOwnMessage();
        if (last != null) { e.preventDefault(); self.startEdit(last); }
      }
    });
    input.addEventListener("input", function () {
      self.afterInput();
      self.signalTyping();
      self.suggest.update();
    });
  };

  ChatRoom.prototype.afterInput = function () {
    var n = length(this.input.value.trim());
    this.counter.hidden = n < COUNTER_FROM;
    this.counter.classList.toggle("is-over", n > MAX_BODY);
    this.counter.textContent = formatNumber(n) + " / " + formatNumber(MAX_BODY) +
      (n > MAX_BODY ? " — " + formatNumber(n - MAX_BODY) + " too many" : "");
    if (n <= MAX_BODY && this.errorEl && !this.errorEl.hidden && /characters/.test(this.errorEl.textContent)) {
      this.showError("");
    }
    // Saved at every change (a few bytes): a reload or a closed tab a moment later keeps it.
    store("localStorage", DRAFT_KEY + this.roomId, this.input.value ? this.input.value : null);
  };

  ChatRoom.prototype.lastOwnMessage = function () {
    var found = null;
    this.data.forEach(function (m) { if (m.user.id === me.id && !m.deleted) found = m.id; });
    return found;
  };

  /* Offline shows in the room: the composer says what will happen, presence turns unknown. */
  ChatRoom.prototype.setOnline = function (state) {
    var online = state === "live";
    this.online = online;
    if (online) this.wasLive = true;
    // Before the first connection the client reports "offline" for a moment: not news.
    var waiting = state === "reconnecting" ||
      (state === "offline" && (this.wasLive || navigator.onLine === false));
    if (this.statusEl) {
      this.statusEl.textContent = state === "signedout"
        ? "You are signed out: log in again to send messages."
        : waiting ? "Offline — messages you send now go out when the connection is back." : "";
      this.statusEl.classList.toggle("is-offline", waiting || state === "signedout");
    }
    if (this.presenceEl) {
      var unknown = !online && (waiting || state === "signedout");
      this.presenceEl.classList.toggle("is-unknown", unknown);
      this.presenceEl.setAttribute("aria-label", unknown ? "Online now (unknown while offline)" : "Online now");
      this.presenceEl.title = unknown ? "Unknown while we are offline" : "";
    }
    if (online) this.flush();
  };

  ChatRoom.prototype.signalTyping = function () {
    var now = Date.now();
    if (!this.online || now - this.lastTypingSent < TYPING_SEND_EVERY || !this.input.value) return;
    this.lastTypingSent = now;
    this.rt.send("chat.typing", { room: this.roomId }).catch(function () {});
  };

  ChatRoom.prototype.typing = function (data) {
    if (data.user === me.id) return;
    var ms = (data.expires_in ? data.expires_in * 1000 : TYPING_SHOW_FOR);
    this.typers.set(data.user, { name: data.name, until: Date.now() + ms });
    this.renderTyping();
    var self = this;
    setTimeout(function () { self.renderTyping(); }, ms + 50);
  };

  ChatRoom.prototype.renderTyping = function () {
    var now = Date.now(), names = [], typers = this.typers;
    typers.forEach(function (t, id) {
      if (t.until > now) names.push(t.name); else typers.delete(id);
    });
    if (!this.typingEl) return;
    this.typingEl.hidden = names.length === 0;
    this.typingEl.textContent = names.length === 0 ? "" :
      names.join(", ") + (names.length === 1 ? " is typing…" : " are typing…");
  };

  ChatRoom.prototype.askPresence = function () {
    var self = this;
    this.rt.send("chat.presence", { room: this.roomId })
      .then(function (reply) { self.showPresence(reply.online); })
      .catch(function () {});
  };

  ChatRoom.prototype.showPresence = function (online) {
    if (!this.presenceEl) return;
    this.presenceEl.textContent = "";
    var self = this;
    (online || []).forEach(function (user) {
      self.presenceEl.appendChild(el("li", "chat-presence__user", user.name));
    });
    if (this.online) this.setOnline("live");
  };

  ChatRoom.prototype.setArchived = function (archived) {
    this.archived = archived;
    var notice = this.root.querySelector("[data-archived-notice]");
    if (archived) {
      if (!notice) {
        notice = el("p", "chat-notice", "This room was archived: you can read its history, but nobody can post here.");
        notice.dataset.archivedNotice = "";
        this.list.before(notice);
      }
      Array.prototype.forEach.call(this.root.querySelectorAll(".chat-form, .chat-join"), function (f) { f.remove(); });
      this.form = null;
      var self = this;
      this.data.forEach(function (m, id) { self.renderContent(self.byId.get(id), m); });
    } else if (notice) {
      notice.textContent = "This room is open again: reload the page to post.";
    }
  };

  /* Reading happens when the page is seen: a hidden tab reports it once it is shown. */
  ChatRoom.prototype.markRead = function (messageId) {
    if (this.lastRead == null) return;   // not a member: nothing to keep a position for
    this.lastSeen = Math.max(this.lastSeen || 0, messageId || 0);
    if (document.visibilityState !== "visible" || !(this.lastSeen > (this.lastSent || 0))) return;
    var self = this;
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(function () {
      if (!self.active) return;
      var upTo = self.lastSeen;
      self.rt.send("chat.read", { room: self.roomId, message: upTo })
        .then(function () { self.lastSent = Math.max(self.lastSent || 0, upTo); })
        .catch(function () {});
    }, 1000);
  };

  /*
   * The message list is one Tab stop; inside it the arrow keys (and Home/End) move from message
   * to message, and the focused message's Edit and Delete join the Tab order.
   */
  ChatRoom.prototype.wireKeyboard = function () {
    var self = this, list = this.list;
    list.addEventListener("keydown", function (e) {
      var keys = ["ArrowUp", "ArrowDown", "Home", "End"];
      if (keys.indexOf(e.key) < 0 || e.target.closest("textarea, input, button")) return;
      var items = Array.prototype.slice.call(list.querySelectorAll(".chat-msg[data-id]"));
      if (!items.length) return;
      var i = items.indexOf(e.target.closest(".chat-msg[data-id]"));
      var next = e.key === "Home" ? items[0]
        : e.key === "End" || i < 0 ? items[items.length - 1]
        : items[Math.max(0, Math.min(items.length - 1, i + (e.key === "ArrowDown" ? 1 : -1)))];
      e.preventDefault();
      next.tabIndex = -1;
      next.focus();
      if (next === items[0]) self.loadOlder();
    });
    list.addEventListener("focusin", function (e) {
      var li = e.target.closest(".chat-msg[data-id]");
      Array.prototype.forEach.call(list.querySelectorAll(".chat-msg__actions button"), function (b) {
        b.tabIndex = li && li.contains(b) ? 0 : -1;
      });
    });
  };

  /* ---------------------------------------------------------------- edit and delete */

  ChatRoom.prototype.startEdit = function (messageId) {
    var li = this.byId.get(messageId), m = this.data.get(messageId);
    if (!li || !m || m.deleted || li.querySelector(".chat-edit")) return;
    var open = this.list.querySelector(".chat-edit");
    if (open) open.cancel();
    var self = this;
    var bodyEl = li.querySelector(".chat-msg__body");
    var form = el("form", "chat-edit");
    var id = "chat-edit-" + this.roomId + "-" + messageId;
    var label = el("label", "chat-sr-only", "Edit your message");
    label.htmlFor = id;
    var box = el("textarea");
    box.id = id;
    box.rows = 2;
    box.value = m.body;
    var error = el("p", "chat-error");
    error.setAttribute("role", "alert");
    error.hidden = true;
    var row = el("div", "chat-edit__buttons");
    row.appendChild(el("span", "chat-edit__hint", "Enter to save · Esc to cancel"));
    var save = el("button", "button button--small", "Save");
    save.type = "submit";
    row.appendChild(save);
    row.appendChild(button("Cancel", "button button--small button--secondary", function () { form.cancel(); }));
    form.append(label, box, row, error);
    bodyEl.hidden = true;
    bodyEl.after(form);
    form.cancel = function () {
      form.remove();
      bodyEl.hidden = false;
      if (self.input) self.input.focus();
    };
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var text = box.value.trim();
      if (!text) { self.confirmDelete(messageId); return; }
      if (length(text) > MAX_BODY) {
        error.textContent = "At most " + formatNumber(MAX_BODY) + " characters; this is " + formatNumber(length(text)) + ".";
        error.hidden = false;
        return;
      }
      if (text === m.body) { form.cancel(); return; }
      save.disabled = true;
      self.rt.send("chat.edit", { message: messageId, body: text }).then(function (reply) {
        form.remove();
        bodyEl.hidden = false;
        self.applyEdit(reply.message);
        if (self.input) self.input.focus();
      }, function (err) {
        save.disabled = false;
        error.textContent = (err && err.code === "offline") || (err && err.code === "disconnected")
          ? "Not saved: you are offline. Try again when the connection is back."
          : "Not saved: " + ((err && err.message) || "the server refused it.");
        error.hidden = false;
      });
    });
    box.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { e.preventDefault(); form.cancel(); }
      else if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
    });
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  };

  ChatRoom.prototype.confirmDelete = function (messageId) {
    var li = this.byId.get(messageId);
    if (!li || li.querySelector(".chat-confirm")) return;
    var self = this, actions = li.querySelector(".chat-msg__actions");
    var box = el("div", "chat-confirm");
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Delete this message?");
    box.appendChild(el("span", null, "Delete this message for everyone?"));
    var yes = button("Delete", "button button--small button--danger", function () {
      yes.disabled = true;
      self.rt.send("chat.delete", { message: messageId }).then(function () {
        self.applyDelete(messageId);
        if (self.input) self.input.focus();
      }, function (err) {
        yes.disabled = false;
        self.showError("Not deleted: " + ((err && err.message) || "try again."));
      });
    });
    var no = button("Cancel", "button button--small button--secondary", function () {
      box.remove();
      if (actions) actions.hidden = false;
    });
    box.append(yes, no);
    if (actions) actions.hidden = true;
    li.appendChild(box);
    no.focus();
  };

  /* ---------------------------------------------------------------- history and scrolling */

  ChatRoom.prototype.oldestId = function () {
    var first = this.list.querySelector(".chat-msg[data-id]");
    return first ? parseInt(first.dataset.id, 10) : null;
  };

  ChatRoom.prototype.loadOlder = function () {
    if (!this.hasMore || this.loading) return;
    var oldest = this.oldestId();
    if (!oldest) return;
    this.loading = true;
    var self = this;
    getJSON(this.messagesUrl + "?before=" + oldest + "&limit=50")
      .then(function (page) {
        var height = self.list.scrollHeight;
        var anchor = self.list.querySelector(".chat-msg[data-id]");
        page.messages.forEach(function (m) {
          if (self.byId.has(m.id)) return;
          self.list.insertBefore(self.build(m), anchor);
        });
        self.hasMore = page.has_more;
        self.relayout();
        self.list.scrollTop += self.list.scrollHeight - height;   // keep the reader's place
      })
      .catch(function () {})
      .then(function () { self.loading = false; });
  };

  ChatRoom.prototype.atEnd = function () {
    return this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 60;
  };

  ChatRoom.prototype.scrollToEnd = function () { this.list.scrollTop = this.list.scrollHeight; };

  /* Open at the "New messages" line when there is one, else at the end. */
  ChatRoom.prototype.scrollToStart = function () {
    var line = this.list.querySelector(".chat-divider--new");
    if (line) this.list.scrollTop = Math.max(0, line.offsetTop - 8);
    else this.scrollToEnd();
  };

  ChatRoom.prototype.showError = function (message) {
    if (!this.errorEl) return;
    this.errorEl.textContent = message || "";
    this.errorEl.hidden = !message;
  };

  /* ------------------------------------------------------------------ @-autocomplete */

  function Suggestions(room) {
    this.room = room;
    this.input = room.input;
    this.box = el("ul", "chat-suggest");
    this.box.id = (this.input.id || "chat-input-" + room.roomId) + "-suggest";
    this.box.setAttribute("role", "listbox");
    this.box.setAttribute("aria-label", "Members");
    this.box.hidden = true;
    this.input.setAttribute("aria-autocomplete", "list");
    this.input.setAttribute("aria-controls", this.box.id);
    this.input.after(this.box);
    this.items = [];
    this.active = -1;
    this.cache = new Map();
    this.seq = 0;
    var self = this;
    this.box.addEventListener("mousedown", function (e) { e.preventDefault(); });   // keep focus
    this.box.addEventListener("click", function (e) {
      var option = e.target.closest("[role=option]");
      if (option) self.pick(parseInt(option.dataset.index, 10));
    });
    this.input.addEventListener("blur", function () { setTimeout(function () { self.close(); }, 150); });
  }

  Suggestions.prototype.partial = function () {
    var caret = this.input.selectionStart;
    if (caret == null || caret !== this.input.selectionEnd) return null;
    var match = /(?:^|[^\w@])@([A-Za-z0-9_.-]{0,64})$/.exec(this.input.value.slice(0, caret));
    return match ? { prefix: match[1], start: caret - match[1].length - 1, end: caret } : null;
  };

  Suggestions.prototype.update = function () {
    var found = this.partial(), self = this;
    if (!found || !this.room.membersUrl) { this.close(); return; }
    var key = found.prefix.toLowerCase(), seq = ++this.seq;
    var show = function (members) { if (seq === self.seq) self.show(members, found); };
    if (this.cache.has(key)) { show(this.cache.get(key)); return; }
    clearTimeout(this.timer);
    this.timer = setTimeout(function () {
      getJSON(self.room.membersUrl + "?q=" + encodeURIComponent(found.prefix))
        .then(function (data) { self.cache.set(key, data.members || []); show(data.members || []); })
        .catch(function () { self.close(); });
    }, 120);
  };

  Suggestions.prototype.show = function (members, found) {
    this.found = found;
    this.items = members;
    this.box.textContent = "";
    if (!members.length) { this.close(); return; }
    var self = this;
    members.forEach(function (member, i) {
      var option = el("li", "chat-suggest__item", "@" + member.name);
      option.id = self.box.id + "-" + i;
      option.dataset.index = String(i);
      option.setAttribute("role", "option");
      option.setAttribute("aria-selected", "false");
      self.box.appendChild(option);
    });
    this.box.hidden = false;
    this.move(0);
  };

  Suggestions.prototype.move = function (index) {
    var options = this.box.querySelectorAll("[role=option]");
    if (!options.length) return;
    this.active = (index + options.length) % options.length;
    var self = this;
    Array.prototype.forEach.call(options, function (option, i) {
      option.setAttribute("aria-selected", i === self.active ? "true" : "false");
      option.classList.toggle("is-active", i === self.active);
    });
    this.input.setAttribute("aria-activedescendant", options[this.active].id);
  };

  Suggestions.prototype.close = function () {
    this.box.hidden = true;
    this.items = [];
    this.active = -1;
    this.input.removeAttribute("aria-activedescendant");
  };

  Suggestions.prototype.isOpen = function () { return !this.box.hidden && this.items.length > 0; };

  Suggestions.prototype.pick = function (index) {
    var member = this.items[index], found = this.partial() || this.found;
    if (!member || !found) { this.close(); return; }
    var value = this.input.value;
    var insert = "@" + member.name + " ";
    this.input.value = value.slice(0, found.start) + insert + value.slice(found.end);
    var caret = found.start + insert.length;
    this.input.setSelectionRange(caret, caret);
    this.close();
    this.room.afterInput();
    this.input.focus();
  };

  /* Returns true when the key was ours (the list is open). */
  Suggestions.prototype.handleKey = function (e) {
    if (!this.isOpen()) return false;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      this.move(this.active + (e.key === "ArrowDown" ? 1 : -1));
      return true;
    }
    if (e.key === "Enter" || e.key === "Tab") {
      e.preventDefault();
      this.pick(this.active);
      return true;
    }
    if (e.key === "Escape") { e.preventDefault(); this.close(); return true; }
    return false;
  };

  /* ------------------------------------------------------------------ room lists and badges */

  /*
   * Every listed room of the user's (at most 50 carry data-unread-head) is followed from its
   * head at render time, so only messages newer than the rendered counts raise a badge. A
   * badge counts message ids above `through` (what the server's count covered) once each; a
   * chat.read on the user's own stream (another tab read the room) resets it to the server's
   * count. The open room (page or panel) is skipped: it marks its messages read as they come.
   */
  function RoomList(root, rt, isOpen, onChange) {
    this.root = root;
    this.rt = rt;
    this.isOpen = isOpen;
    this.onChange = onChange || function () {};
    this.entries = new Map();   // room id -> {item, badge, stream, count, through, extra}
    this.ownStream = "user:" + me.id;
    var self = this;
    Array.prototype.forEach.call(root.querySelectorAll("[data-unread-head]"), function (item) {
      self.register(item, parseInt(item.dataset.unreadHead, 10), parseInt(item.dataset.unreadThrough, 10) || 0);
    });
    this.handlers = new Map([
      ["chat.message", function (m) { self.message(m); }],
      ["chat.read", function (m) { if (m.stream === self.ownStream) self.read(m.data || {}); }],
      ["chat.room", function (m) { if (m.stream === self.ownStream) self.addRoom(m.data || {}); }],
      ["chat.archived", function (m) { self.archived(m); }],
    ]);
    onHandlers(rt, this.handlers);
  }

  RoomList.prototype.register = function (item, head, through) {
    var badge = item.querySelector("[data-room-unread]");
    if (!badge || isNaN(head)) return;
    var roomId = parseInt(badge.dataset.roomUnread, 10);
    var entry = {
      item: item, badge: badge, stream: "room:" + roomId,
      count: parseInt(badge.textContent, 10) || 0, through: through, extra: new Set(),
    };
    this.entries.set(roomId, entry);
    // The page's own room already follows from its (earlier) history head: leave its cursor be.
    if (!this.isOpen(roomId)) this.rt.follow(entry.stream, head);
  };

  RoomList.prototype.show = function (entry) {
    entry.badge.textContent = String(entry.count);
    entry.badge.hidden = entry.count <= 0;
    this.onChange();
  };

  RoomList.prototype.message = function (m) {
    var match = /^room:(\d+)$/.exec(m.stream || "");
    var roomId = match && parseInt(match[1], 10);
    var entry = roomId && this.entries.get(roomId);
    var data = m.data || {};
    if (!entry || this.isOpen(roomId) || data.id == null) return;
    if (data.user && data.user.id === me.id) return;   // our own, from another tab
    if (data.id <= entry.through || entry.extra.has(data.id)) return;   // counted already
    entry.extra.add(data.id);
    entry.count += 1;
    this.show(entry);
  };

  RoomList.prototype.read = function (data) {
    var entry = this.entries.get(data.room);
    if (!entry) return;
    entry.through = Math.max(entry.through, data.through || 0);
    entry.extra.forEach(function (id) { if (id <= entry.through) entry.extra.delete(id); });
    entry.count = (data.unread || 0) + entry.extra.size;
    this.show(entry);
  };

  RoomList.prototype.clear = function (roomId) {
    var entry = this.entries.get(roomId);
    if (!entry) return;
    entry.count = 0;
    entry.extra.clear();
    this.show(entry);
  };

  /* A room we were just added to (a first DM, an invitation, a join in another tab). */
  RoomList.prototype.addRoom = function (data) {
    var room = data.room;
    if (!room || typeof room.id !== "number" || this.entries.has(room.id)) return;
    var list = this.root.querySelector("[data-chat-room-list]");
    if (!list) return;
    var stale = this.root.querySelector('.chat-rooms--recent [data-room-item="' + room.id + '"]');
    if (stale) stale.remove();
    var item = el("li", "chat-rooms__item");
    item.dataset.roomItem = String(room.id);
    var link = el("a", null, String(room.title || ""));
    link.href = "/chat/" + room.id;
    link.dataset.roomLink = String(room.id);
    link.dataset.messagesUrl = "/chat/" + room.id + "/messages";
    item.appendChild(link);
    if (room.kind === "private") item.appendChild(el("span", "chat-tag", "private"));
    var badge = el("span", "chat-unread", "0");
    badge.dataset.roomUnread = String(room.id);
    badge.hidden = true;
    item.appendChild(badge);
    // Keep the server's order: rooms by name, then DMs.
    var key = (room.kind === "dm" ? "1" : "0") + String(room.title || "").replace(/^[#@]/, "").toLowerCase();
    var before = null;
    Array.prototype.forEach.call(list.querySelectorAll("[data-room-item]"), function (other) {
      if (before) return;
      var a = other.querySelector("[data-room-link]");
      var otherKey = (a.textContent.charAt(0) === "@" ? "1" : "0") + a.textContent.replace(/^[#@]/, "").toLowerCase();
      if (otherKey > key) before = other;
    });
    list.insertBefore(item, before || list.querySelector(".chat-rooms__none"));
    var none = list.querySelector(".chat-rooms__none");
    if (none) none.hidden = true;
    this.register(item, data.head || 0, data.through || 0);
    var entry = this.entries.get(room.id);
    if (entry && data.unread) { entry.count = data.unread; this.show(entry); }
    this.onChange();
  };

  RoomList.prototype.archived = function (m) {
    var match = /^room:(\d+)$/.exec(m.stream || "");
    var roomId = match && parseInt(match[1], 10);
    var entry = roomId && this.entries.get(roomId);
    if (!entry || !(m.data && m.data.archived) || this.isOpen(roomId)) return;
    entry.item.remove();
    this.entries.delete(roomId);
    this.rt.unfollow(entry.stream);
    this.onChange();
  };

  RoomList.prototype.refollow = function (roomId) {
    var entry = this.entries.get(roomId);
    if (entry) this.rt.follow(entry.stream, null);
  };

  RoomList.prototype.total = function () {
    var total = 0;
    this.entries.forEach(function (entry) { total += entry.count > 0 ? entry.count : 0; });
    return total;
  };

  /* ------------------------------------------------------------------ the panel */

  /* The same room markup as templates/chat/room.html, built for the panel. */
  function roomSection(page, link, panel) {
    var roomId = page.room.id, title = page.room.title;
    var section = el("section", "chat-room chat-room--panel");
    section.setAttribute("aria-label", title);
    var data = section.dataset;
    data.roomId = String(roomId);
    data.roomKind = page.room.kind;
    data.roomTitle = title;
    data.roomHead = String(page.head);
    data.hasMore = page.has_more ? "true" : "false";
    data.lastRead = page.room.last_read == null ? "" : String(page.room.last_read);
    data.messagesUrl = link.dataset.messagesUrl;
    data.membersUrl = "/chat/" + roomId + "/members";
    data.isAdmin = panel.root.dataset.isAdmin;
    data.archived = page.room.archived ? "true" : "false";
    data.csrf = panel.csrf;
    var header = el("header", "chat-room__header");
    header.appendChild(button("← Rooms", "chat-link-button chat-room__back", function () { panel.back(); }));
    var heading = el("h2", "chat-room__heading");
    var titleLink = el("a", "chat-room__title", title);
    titleLink.href = link.getAttribute("href");
    heading.appendChild(titleLink);
    header.appendChild(heading);
    var presence = el("ul", "chat-presence");
    presence.setAttribute("aria-label", "Online now");
    header.appendChild(presence);
    section.appendChild(header);
    if (page.room.archived) {
      var notice = el("p", "chat-notice", "This room is archived: you can read its history, but nobody can post here.");
      notice.dataset.archivedNotice = "";
      section.appendChild(notice);
    }
    var list = el("ol", "chat-messages");
    list.setAttribute("aria-label", "Messages");
    list.tabIndex = 0;
    section.appendChild(list);
    var announcer = el("div", "chat-announcer chat-sr-only");
    announcer.setAttribute("aria-live", "polite");
    section.appendChild(announcer);
    var typing = el("p", "chat-typing");
    typing.hidden = true;
    section.appendChild(typing);
    if (page.room.archived) return section;
    if (!page.room.member) {
      var join = el("div", "chat-join");
      join.appendChild(el("p", "muted", "You are looking at " + title + ". Join to post here."));
      var joinButton = button("Join " + title, "button", function () {
        joinButton.disabled = true;
        post("/chat/" + roomId + "/join", panel.csrf)
          .then(function () { panel.open(link, true); })
          .catch(function (err) { joinButton.disabled = false; joinButton.textContent = err.message; });
      });
      join.appendChild(joinButton);
      section.appendChild(join);
      return section;
    }
    var form = el("form", "chat-form");
    var inputId = "chat-panel-input-" + roomId;
    var label = el("label", "chat-sr-only", "Message " + title);
    label.htmlFor = inputId;
    var input = el("textarea");
    input.id = inputId;
    input.name = "body";
    input.rows = 2;
    input.placeholder = "Message " + title;
    input.setAttribute("aria-describedby", "chat-panel-status-" + roomId);
    var send = el("button", "button", "Send");
    send.type = "submit";
    var status = el("p", "chat-form__status");
    status.id = "chat-panel-status-" + roomId;
    status.setAttribute("role", "status");
    var error = el("p", "chat-error");
    error.setAttribute("role", "alert");
    error.hidden = true;
    form.append(label, input, send, status, error);
    section.appendChild(form);
    return section;
  }

  function Panel(root, rt) {
    this.root = root;
    this.rt = rt;
    this.csrf = root.dataset.csrf || "";
    this.toggle = root.querySelector(".chat-panel__toggle");
    this.body = root.querySelector(".chat-panel__body");
    this.listBox = root.querySelector(".chat-panel__list");
    this.roomBox = root.querySelector(".chat-panel__room");
    this.room = null;
    this.phone = window.matchMedia(PHONE);
    var self = this;
    this.setCollapsed(store("localStorage", COLLAPSED_KEY) !== "false" || this.phone.matches);
    this.toggle.addEventListener("click", function () {
      self.setCollapsed(!self.collapsed);
    });
    root.addEventListener("click", function (e) {
      var link = e.target.closest("[data-room-link]");
      if (!link || !root.contains(link)) return;
      // A phone gets the chat page (conversation first); a new tab opens as usual.
      if (e.ctrlKey || e.metaKey || e.shiftKey || self.phone.matches) return;
      e.preventDefault();
      self.open(link, true);
    });
    root.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && !self.collapsed && !e.defaultPrevented) {
        self.setCollapsed(true);
        self.toggle.focus();
      }
    });
  }

  Panel.prototype.remembered = function () {
    var id = parseInt(store("localStorage", ROOM_KEY), 10);
    return isNaN(id) ? null : this.root.querySelector('[data-room-link="' + id + '"]');
  };

  Panel.prototype.setCollapsed = function (collapsed) {
    this.collapsed = collapsed;
    this.body.hidden = collapsed;
    this.root.classList.toggle("is-open", !collapsed);
    this.toggle.setAttribute("aria-expanded", collapsed ? "false" : "true");
    store("localStorage", COLLAPSED_KEY, collapsed ? "true" : "false");
    if (!collapsed && !this.room && !this.phone.matches) {
      var link = this.remembered();
      if (link) this.open(link, false);
    }
  };

  Panel.prototype.open = function (link, focus) {
    var self = this;
    var roomId = parseInt(link.dataset.roomLink, 10);
    getJSON(link.dataset.messagesUrl)
      .then(function (page) {
        store("localStorage", ROOM_KEY, String(roomId));
        self.closeRoom();
        var section = roomSection(page, link, self);
        self.roomBox.appendChild(section);
        self.roomBox.hidden = false;
        self.listBox.hidden = true;   // the room gets the whole panel: Send stays in view
        self.root.classList.add("has-room");
        self.room = new ChatRoom(section, self.rt, { messages: page.messages });
        if (self.list) self.list.clear(roomId);
        var last = page.messages.length ? page.messages[page.messages.length - 1].id : 0;
        if (last) self.room.markRead(last);
        if (focus) (section.querySelector("textarea") || section.querySelector(".chat-room__back")).focus();
      })
      .catch(function () { window.location.href = link.getAttribute("href"); });
  };

  Panel.prototype.closeRoom = function () {
    if (!this.room) return;
    var roomId = this.room.roomId;
    this.room.close();
    // close() unfollowed the room; keep following it for its badge (from our cursor).
    if (this.list) this.list.refollow(roomId);
    this.room = null;
    this.roomBox.textContent = "";
    this.roomBox.hidden = true;
    this.root.classList.remove("has-room");
  };

  Panel.prototype.back = function () {
    this.closeRoom();
    store("localStorage", ROOM_KEY, null);
    this.listBox.hidden = false;
    var first = this.listBox.querySelector("a");
    if (first) first.focus();
  };

  /* The toggle's badge sums the rooms' badges, so reading a room here clears its share. */
  Panel.prototype.showTotal = function () {
    var total = this.list ? this.list.total() : 0;
    var badge = this.root.querySelector(".chat-panel__total");
    if (badge) { badge.textContent = String(total); badge.hidden = total === 0; }
  };

  /* ------------------------------------------------------------------ start */

  /*
   * The chat page's room ends at the bottom of the window, wherever it starts (banners above
   * it, a phone's taller header), so the composer and Send are always in view without
   * scrolling the page. The stylesheet's calc() is the fallback.
   */
  function fitToWindow(root, room) {
    var fit = function () {
      var top = root.getBoundingClientRect().top + window.scrollY;
      var height = Math.max(320, window.innerHeight - top - 12);
      var wasAtEnd = room.atEnd();
      root.style.height = height + "px";
      if (wasAtEnd) room.scrollToEnd();
    };
    fit();
    window.addEventListener("resize", fit);
  }

  function start() {
    window.withRealtime(function (rt) {
      var pageRoom = document.querySelector("[data-chat-room]");
      var room = pageRoom ? new ChatRoom(pageRoom, rt, {}) : null;
      if (room) { window.TidingsChat = room; fitToWindow(pageRoom, room); }
      var sidebar = document.querySelector("[data-chat-sidebar]");
      if (sidebar && room && window.matchMedia(PHONE).matches) sidebar.open = false;
      var panelRoot = document.querySelector("[data-chat-panel]");
      var panel = panelRoot ? new Panel(panelRoot, rt) : null;
      if (panel) window.TidingsChatPanel = panel;
      var listRoot = sidebar || panelRoot;
      if (!listRoot) return;
      var isOpen = function (roomId) {
        var open = room || (panel && panel.room);
        return !!(open && open.active && open.roomId === roomId);
      };
      var list = new RoomList(listRoot, rt, isOpen, panel ? function () { panel.showTotal(); } : null);
      if (panel) { panel.list = list; panel.showTotal(); }
    });
  }

  window.TidingsChatRender = renderBody;
  if (!window.withRealtime) return;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
