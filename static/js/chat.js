/*
 * Tidings chat: the room view (full page and panel), the collapsible panel, live messages,
 * pending sends, typing, presence, older history on scroll, admin deletes.
 *
 * - Server-rendered history carries the room stream's head (data-room-head); following from it
 *   replays anything published after the render. Messages are keyed by message id, so a replay
 *   of one already shown (or the echo of our own send) never shows twice.
 * - A sent message shows at once as pending (keyed by its client_id) and becomes the real one
 *   when the reply or the echo arrives, whichever is first.
 * - User text is always text: textContent, and links are <a> elements built only for http(s).
 */
(function () {
  "use strict";

  var TYPING_SEND_EVERY = 2000;   // ms between our own typing signals
  var TYPING_SHOW_FOR = 4000;     // ms a typing line stays without a new signal
  var URL_PATTERN = /https?:\/\/[^\s<>"']+/gi;
  var COLLAPSED_KEY = "tidings.chat.collapsed";
  var ROOM_KEY = "tidings.chat.room";

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  /* Fill `target` with `text`, turning http(s) URLs into safe links. */
  function renderBody(target, text) {
    target.textContent = "";
    var last = 0, match;
    URL_PATTERN.lastIndex = 0;
    while ((match = URL_PATTERN.exec(text)) !== null) {
      var raw = match[0].replace(/[.,;:!?)\]}]+$/, "");
      var parsed = null;
      try { parsed = new URL(raw); } catch (err) { parsed = null; }
      if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) continue;
      target.appendChild(document.createTextNode(text.slice(last, match.index)));
      var a = el("a", "chat-link", raw);
      a.rel = "noopener noreferrer nofollow";
      a.target = "_blank";
      a.href = parsed.href;   // set only after the scheme was checked
      target.appendChild(a);
      last = match.index + raw.length;
      URL_PATTERN.lastIndex = last;
    }
    target.appendChild(document.createTextNode(text.slice(last)));
  }

  function localTime(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function ChatRoom(root, rt, options) {
    this.root = root;
    this.rt = rt;
    this.roomId = parseInt(root.dataset.roomId, 10);
    this.stream = "room:" + this.roomId;
    this.messagesUrl = root.dataset.messagesUrl;
    this.isAdmin = root.dataset.isAdmin === "true";
    this.hasMore = root.dataset.hasMore === "true";
    this.myId = parseInt(document.body.dataset.userId, 10);
    this.list = root.querySelector(".chat-messages");
    this.typingEl = root.querySelector(".chat-typing");
    this.presenceEl = root.querySelector(".chat-presence");
    this.form = root.querySelector(".chat-form");
    this.input = this.form && this.form.querySelector("textarea");
    this.errorEl = root.querySelector(".chat-error");
    this.byId = {};
    this.pending = {};
    this.typers = {};
    this.lastTypingSent = 0;
    this.loading = false;
    this.active = true;
    this.readTimer = null;
    var self = this;

    Array.prototype.forEach.call(this.list.querySelectorAll(".chat-msg"), function (li) {
      self.byId[li.dataset.id] = li;
      self.decorate(li, li.querySelector(".chat-msg__body").textContent);
      var time = li.querySelector("time");
      if (time) time.textContent = localTime(time.getAttribute("datetime"));
    });
    (options.messages || []).forEach(function (m) { self.add(m); });
    this.scrollToEnd();

    this.handlers = {
      "chat.message": function (m) { if (m.stream === self.stream) self.add(m.data, true); },
      "chat.deleted": function (m) { if (m.stream === self.stream) self.remove(m.data.message); },
      "chat.typing": function (m) { if (m.stream === self.stream) self.typing(m.data); },
      "chat.presence": function (m) { if (m.stream === self.stream) self.showPresence(m.data.online); },
      "subscribed": function (m) { if (m.stream === self.stream) self.askPresence(); },
    };
    Object.keys(this.handlers).forEach(function (type) { rt.on(type, self.handlers[type]); });
    var head = root.dataset.roomHead;
    rt.follow(this.stream, head === undefined || head === "" ? null : parseInt(head, 10));
    if (rt.followed && rt.followed[this.stream]) this.askPresence();

    if (this.form) {
      this.form.addEventListener("submit", function (e) { e.preventDefault(); self.submit(); });
      this.input.addEventListener("keydown", function (e) {
        if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); self.submit(); }
      });
      this.input.addEventListener("input", function () { self.signalTyping(); });
    }
    this.list.addEventListener("scroll", function () {
      if (self.list.scrollTop < 40) self.loadOlder();
    });
  }

  ChatRoom.prototype.close = function () {
    // realtime.js has no "off": take our handlers out of its lists by identity.
    this.active = false;
    var rt = this.rt, handlers = this.handlers;
    Object.keys(handlers).forEach(function (type) {
      var list = rt.handlers[type] || [];
      var i = list.indexOf(handlers[type]);
      if (i >= 0) list.splice(i, 1);
    });
    rt.unfollow(this.stream);
  };

  ChatRoom.prototype.decorate = function (li, body) {
    renderBody(li.querySelector(".chat-msg__body"), body);
    if (this.isAdmin && li.dataset.id && !li.querySelector(".chat-msg__delete")) {
      var self = this, button = el("button", "chat-msg__delete", "Delete");
      button.type = "button";
      button.addEventListener("click", function () {
        self.rt.send("chat.delete", { message: parseInt(li.dataset.id, 10) })
          .catch(function (err) { self.showError(err.message || "Could not delete."); });
      });
      li.querySelector(".chat-msg__meta").appendChild(button);
    }
  };

  ChatRoom.prototype.build = function (m) {
    var li = el("li", "chat-msg");
    var meta = el("span", "chat-msg__meta");
    meta.appendChild(el("strong", "chat-msg__name", m.user.name));
    meta.appendChild(document.createTextNode(" "));
    var time = el("time", "chat-msg__time", localTime(m.created_at));
    time.setAttribute("datetime", m.created_at || "");
    meta.appendChild(time);
    li.appendChild(meta);
    li.appendChild(el("p", "chat-msg__body"));
    return li;
  };

  ChatRoom.prototype.fill = function (li, m) {
    li.dataset.id = String(m.id);
    li.dataset.userId = String(m.user.id);
    li.classList.remove("is-pending", "is-failed");
    this.decorate(li, m.body);
    this.byId[m.id] = li;
  };

  /* Insert in message-id order; a message already shown (replay, echo) is ignored. */
  ChatRoom.prototype.add = function (m, live) {
    if (this.byId[m.id]) { this.dropPending(m.client_id); return; }
    var li = m.client_id && this.pending[m.client_id];
    if (li) {
      delete this.pending[m.client_id];
      li.remove();
    } else {
      li = this.build(m);
    }
    this.fill(li, m);
    var next = null, items = this.list.querySelectorAll(".chat-msg[data-id]");
    for (var i = items.length - 1; i >= 0; i--) {
      if (parseInt(items[i].dataset.id, 10) > m.id) next = items[i]; else break;
    }
    var atEnd = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 60;
    if (next) this.list.insertBefore(li, next); else this.insertBeforePending(li);
    if (live) {
      if (atEnd || m.user.id === this.myId) this.scrollToEnd();
      this.markRead(m.id);
    }
  };

  ChatRoom.prototype.insertBeforePending = function (li) {
    var firstPending = this.list.querySelector(".chat-msg.is-pending, .chat-msg.is-failed");
    this.list.insertBefore(li, firstPending);
  };

  ChatRoom.prototype.dropPending = function (clientId) {
    if (clientId && this.pending[clientId]) {
      this.pending[clientId].remove();
      delete this.pending[clientId];
    }
  };

  ChatRoom.prototype.remove = function (messageId) {
    var li = this.byId[messageId];
    if (li) { li.remove(); delete this.byId[messageId]; }
  };

  ChatRoom.prototype.submit = function () {
    var body = this.input.value.trim();
    if (!body) return;
    if (body.length > 2000) { this.showError("A message has at most 2000 characters."); return; }
    var clientId = "c" + Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
    var li = this.build({ user: { name: document.body.dataset.username }, created_at: new Date().toISOString() });
    li.classList.add("is-pending");
    renderBody(li.querySelector(".chat-msg__body"), body);
    this.pending[clientId] = li;
    this.list.appendChild(li);
    this.scrollToEnd();
    this.input.value = "";
    this.showError("");
    var self = this;
    this.rt.send("chat.send", { room: this.roomId, body: body, client_id: clientId })
      .then(function (reply) { self.add(Object.assign({}, reply.message, { client_id: clientId }), true); })
      .catch(function (err) {
        li.classList.remove("is-pending");
        li.classList.add("is-failed");
        delete self.pending[clientId];
        self.showError((err && err.message) || "Not sent.");
      });
  };

  ChatRoom.prototype.signalTyping = function () {
    var now = Date.now();
    if (now - this.lastTypingSent < TYPING_SEND_EVERY) return;
    this.lastTypingSent = now;
    this.rt.send("chat.typing", { room: this.roomId }).catch(function () {});
  };

  ChatRoom.prototype.typing = function (data) {
    if (data.user === this.myId) return;
    var ms = (data.expires_in ? data.expires_in * 1000 : TYPING_SHOW_FOR);
    this.typers[data.user] = { name: data.name, until: Date.now() + ms };
    this.renderTyping();
    var self = this;
    setTimeout(function () { self.renderTyping(); }, ms + 50);
  };

  ChatRoom.prototype.renderTyping = function () {
    var now = Date.now(), names = [], typers = this.typers;
    Object.keys(typers).forEach(function (id) {
      if (typers[id].until > now) names.push(typers[id].name); else delete typers[id];
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
  };

  ChatRoom.prototype.markRead = function (messageId) {
    if (document.visibilityState !== "visible") return;
    var self = this;
    this.lastSeen = Math.max(this.lastSeen || 0, messageId);
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(function () {
      self.rt.send("chat.read", { room: self.roomId, message: self.lastSeen }).catch(function () {});
    }, 1000);
  };

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
    fetch(this.messagesUrl + "?before=" + oldest + "&limit=50", {
      credentials: "same-origin", headers: { Accept: "application/json" },
    })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (page) {
        var height = self.list.scrollHeight;
        var anchor = self.list.firstChild;
        page.messages.forEach(function (m) {
          if (self.byId[m.id]) return;
          var li = self.build(m);
          self.fill(li, m);
          self.list.insertBefore(li, anchor);
        });
        self.hasMore = page.has_more;
        self.list.scrollTop += self.list.scrollHeight - height;   // keep the reader's place
      })
      .catch(function () {})
      .then(function () { self.loading = false; });
  };

  ChatRoom.prototype.scrollToEnd = function () { this.list.scrollTop = this.list.scrollHeight; };

  ChatRoom.prototype.showError = function (message) {
    if (!this.errorEl) return;
    this.errorEl.textContent = message || "";
    this.errorEl.hidden = !message;
  };

  /* ------------------------------------------------------------------ the panel */

  function storage(key, value) {
    try {
      if (value === undefined) return window.localStorage.getItem(key);
      window.localStorage.setItem(key, value);
    } catch (err) { /* private mode: no memory, no harm */ }
    return null;
  }

  function Panel(root, rt) {
    this.root = root;
    this.rt = rt;
    this.toggle = root.querySelector(".chat-panel__toggle");
    this.body = root.querySelector(".chat-panel__body");
    this.roomBox = root.querySelector(".chat-panel__room");
    this.room = null;
    var self = this;
    this.setCollapsed(storage(COLLAPSED_KEY) !== "false");
    this.toggle.addEventListener("click", function () {
      self.setCollapsed(!self.collapsed);
    });
    Array.prototype.forEach.call(root.querySelectorAll("[data-room-link]"), function (link) {
      link.addEventListener("click", function (e) {
        if (e.ctrlKey || e.metaKey || e.shiftKey) return;   // open in a new tab as usual
        e.preventDefault();
        self.open(link);
      });
    });
    var remembered = storage(ROOM_KEY);
    var link = remembered && root.querySelector('[data-room-link="' + parseInt(remembered, 10) + '"]');
    if (link && !this.collapsed) this.open(link);
  }

  Panel.prototype.setCollapsed = function (collapsed) {
    this.collapsed = collapsed;
    this.body.hidden = collapsed;
    this.root.classList.toggle("is-open", !collapsed);
    this.toggle.setAttribute("aria-expanded", collapsed ? "false" : "true");
    storage(COLLAPSED_KEY, collapsed ? "true" : "false");
    if (!collapsed && !this.room) {
      var remembered = storage(ROOM_KEY);
      var link = remembered && this.root.querySelector('[data-room-link="' + parseInt(remembered, 10) + '"]');
      if (link) this.open(link);
    }
  };

  Panel.prototype.open = function (link) {
    var self = this;
    var roomId = link.dataset.roomLink;
    storage(ROOM_KEY, roomId);
    fetch(link.dataset.messagesUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (page) {
        if (self.room) {
          self.room.close();
          // close() unfollowed the room; keep following it for its badge (from our cursor).
          if (self.badges) self.badges.refollow(self.room.roomId);
        }
        var box = self.roomBox;
        box.textContent = "";
        var section = el("section", "chat-room chat-room--panel");
        section.dataset.roomId = roomId;
        section.dataset.roomHead = String(page.head);
        section.dataset.hasMore = page.has_more ? "true" : "false";
        section.dataset.messagesUrl = link.dataset.messagesUrl;
        section.dataset.isAdmin = self.root.dataset.isAdmin;
        var header = el("header", "chat-room__header");
        var title = el("a", "chat-room__title", page.room.title);
        title.href = link.getAttribute("href");
        header.appendChild(title);
        header.appendChild(el("ul", "chat-presence"));
        section.appendChild(header);
        section.appendChild(el("ol", "chat-messages"));
        var typing = el("p", "chat-typing");
        typing.hidden = true;
        section.appendChild(typing);
        var form = el("form", "chat-form");
        var input = el("textarea");
        input.rows = 2;
        input.maxLength = 2000;
        input.placeholder = "Message " + page.room.title;
        form.appendChild(input);
        var send = el("button", "button", "Send");
        send.type = "submit";
        form.appendChild(send);
        var error = el("p", "chat-error");
        error.hidden = true;
        form.appendChild(error);
        section.appendChild(form);
        box.appendChild(section);
        box.hidden = false;
        self.room = new ChatRoom(section, self.rt, { messages: page.messages });
        var badge = self.root.querySelector('[data-room-unread="' + roomId + '"]');
        if (badge) { badge.hidden = true; badge.textContent = "0"; }
        self.showTotal();
        var last = page.messages.length ? page.messages[page.messages.length - 1].id : 0;
        if (last) self.room.markRead(last);
      })
      .catch(function () { window.location.href = link.getAttribute("href"); });
  };

  /* The toggle's badge sums the rooms' badges, so reading a room here clears its share. */
  Panel.prototype.showTotal = function () {
    var total = 0;
    Array.prototype.forEach.call(this.root.querySelectorAll("[data-room-unread]"), function (badge) {
      if (!badge.hidden) total += parseInt(badge.textContent, 10) || 0;
    });
    var el = this.root.querySelector(".chat-panel__total");
    if (el) { el.textContent = String(total); el.hidden = total === 0; }
  };

  /* ------------------------------------------------------------------ live unread badges */

  /*
   * Follows every listed room of the user's (the server renders data-unread-head on those, at most
   * 50) from its head at render time, so only messages newer than the rendered counts raise a
   * badge. The open room (page or panel) is skipped: it marks its messages read as they arrive.
   */
  function Badges(root, rt, isOpen, onChange) {
    this.rt = rt;
    this.streams = {};      // room id -> stream, for the rooms we keep a badge for
    this.badges = {};       // room id -> badge element
    this.myId = parseInt(document.body.dataset.userId, 10);
    var self = this;
    Array.prototype.forEach.call(root.querySelectorAll("[data-unread-head]"), function (item) {
      var badge = item.querySelector("[data-room-unread]");
      var head = parseInt(item.dataset.unreadHead, 10);
      if (!badge || isNaN(head)) return;
      var roomId = parseInt(badge.dataset.roomUnread, 10);
      self.badges[roomId] = badge;
      self.streams[roomId] = "room:" + roomId;
      // The page's own room already follows from its (earlier) history head: leave its cursor be.
      if (!isOpen(roomId)) rt.follow(self.streams[roomId], head);
    });
    rt.on("chat.message", function (m) {
      var match = /^room:(\d+)$/.exec(m.stream || "");
      var roomId = match && parseInt(match[1], 10);
      var badge = roomId && self.badges[roomId];
      var data = m.data || {};
      if (!badge || isOpen(roomId)) return;
      if (data.user && data.user.id === self.myId) return;   // our own, from another tab
      badge.textContent = String((parseInt(badge.textContent, 10) || 0) + 1);
      badge.hidden = false;
      if (onChange) onChange();
    });
  }

  Badges.prototype.refollow = function (roomId) {
    if (this.streams[roomId]) this.rt.follow(this.streams[roomId], null);
  };

  function start() {
    window.withRealtime(function (rt) {
      var page = document.querySelector("[data-chat-room]");
      if (page) window.TidingsChat = new ChatRoom(page, rt, {});
      var panel = document.querySelector("[data-chat-panel]");
      if (panel) window.TidingsChatPanel = new Panel(panel, rt);
      var list = document.querySelector(".chat-sidebar") || panel;
      if (!list) return;
      var panelObj = panel ? window.TidingsChatPanel : null;
      var open = function (roomId) {
        var room = page ? window.TidingsChat : (panelObj && panelObj.room);
        return !!(room && room.active && room.roomId === roomId);
      };
      var badges = new Badges(list, rt, open, panelObj ? function () { panelObj.showTotal(); } : null);
      if (panelObj) panelObj.badges = badges;
    });
  }

  window.TidingsChatRender = renderBody;
  if (!window.withRealtime) return;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
