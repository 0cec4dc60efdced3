/*
 * Tidings realtime client: one socket per tab, every stream multiplexed on it.
 *
 * - Reconnects with capped exponential backoff and full jitter (0.5 s to 20 s); after a server
 *   restart, when the server says ("restart; retry in 1.7s"), then at most 5 s apart.
 * - Calls a connection stale after 2.5 heartbeats of silence and reopens it.
 * - Resumes every stream from the last event id it saw, so nothing is missed or shown twice;
 *   one subscribe message asks for all of them at (re)connect.
 * - Retries a subscribe the server could not serve just then ("unavailable", "server_error")
 *   with capped, jittered backoff, until the stream is live again.
 * - On {"type": "reset"} (the server no longer holds the events after our cursor) emits a
 *   "reset" event; with no handler registered for it, reloads the page, which renders the
 *   current state and fresh cursors.
 * - Reopens at once when the tab becomes visible or the network comes back.
 * - Keeps the header's #rt-status indicator honest.
 *
 * No build step: a classic script that sets window.TidingsRealtime. Settings come from
 * data-* attributes on <body> (data-realtime-url, data-realtime-cursors).
 */
(function () {
  "use strict";

  var MIN_DELAY = 500;
  var MAX_DELAY = 20000;
  // Subscribe errors worth another try: the server says it keeps trying too.
  var RETRYABLE = { unavailable: true, server_error: true };
  // Coming back from a restart, the new workers are up within seconds: do not back off further.
  var RESTART_MAX_DELAY = 5000;
  // The latest moment a stopping server may name (its REALTIME_RESTART_WINDOW, 30 s by default).
  var TOLD_MAX_DELAY = 30000;

  var LABELS = {
    connecting: "connecting…",
    live: "live",
    reconnecting: "reconnecting…",
    offline: "offline",
    signedout: "signed out",
    refused: "unavailable",
  };

  function Realtime(options) {
    this.url = options.url;
    this.checkUrl = options.checkUrl;
    this.cursors = Object.assign({}, options.cursors || {});
    this.extra = {};            // streams the page follows beyond the defaults
    this.handlers = {};         // event type -> [fn]
    this.pending = {};          // ref -> {resolve, reject}
    this.nextRef = 1;
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.staleTimer = null;
    this.heartbeat = 25;
    this.stopped = false;
    this.restarting = false;    // told to come back after a restart: backoff stays short
    this.state = "offline";
    this.statusEl = document.getElementById("rt-status");
    this.followed = {};         // streams the server confirmed on this socket
    this.subscribing = {};      // ref of a subscribe in flight -> [streams still unanswered]
    this.retries = {};          // stream -> failed subscribes in a row
    this.retryTimers = {};      // stream -> timer of the next subscribe
    this.welcomed = false;
    var self = this;
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") self.reconnectNow();
    });
    window.addEventListener("online", function () {
      // A short blip may leave the socket open: then it is live again, not "offline" forever.
      if (self.ws && self.ws.readyState === 1) {
        if (self.welcomed) self.setState("live");
      } else {
        self.reconnectNow();
      }
    });
    window.addEventListener("offline", function () { self.setState("offline"); });
  }

  Realtime.prototype.setState = function (state, detail) {
    this.state = state;
    if (this.statusEl) {
      this.statusEl.dataset.state = state;
      this.statusEl.textContent = LABELS[state] || state;
      this.statusEl.title = detail || "";
    }
    this.emit("status", { state: state, detail: detail || "" });
  };

  Realtime.prototype.on = function (type, fn) {
    (this.handlers[type] = this.handlers[type] || []).push(fn);
    return this;
  };

  Realtime.prototype.emit = function (type, message) {
    var list = this.handlers[type] || [];
    for (var i = 0; i < list.length; i++) {
      try { list[i](message); } catch (err) { console.error(err); }
    }
  };

  Realtime.prototype.connect = function () {
    if (this.stopped) return;
    if (this.ws && this.ws.readyState <= 1) return;
    clearTimeout(this.timer);
    this.setState(this.attempt ? "reconnecting" : "connecting");
    var ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.scheduleReconnect();
      return;
    }
    var self = this;
    var opened = false;
    this.ws = ws;
    this.welcomed = false;      // the welcome of *this* socket, not of an earlier one
    this.followed = {};
    this.clearRetries();
    ws.onopen = function () { opened = true; self.touch(); };
    ws.onmessage = function (e) {
      self.touch();
      var message;
      try { message = JSON.parse(e.data); } catch (err) { return; }
      self.receive(message);
    };
    ws.onclose = function (e) {
      if (self.ws !== ws) return;
      clearTimeout(self.staleTimer);
      self.ws = null;
      self.rejectPending("connection closed");
      if (!opened) { self.explainRefusal(); return; }
      if (e.code === 4001) { self.stopped = true; self.setState("signedout", e.reason); return; }
      var told = restartDelay(e);
      if (told != null) { self.scheduleReconnect(false, told); return; }
      // 1001 (restart), 4008 (we fell behind), 1006 (dropped): reconnect and resume.
      self.scheduleReconnect(e.code === 1001 || e.code === 4008);
    };
  };

  /* A stopping server spreads its clients' return: "restart; retry in 1.7s" -> 1700 (ms). */
  function restartDelay(e) {
    if (e.code !== 1001) return null;
    var match = /retry in ([0-9]+(?:\.[0-9]+)?)s/.exec(e.reason || "");
    return match ? Math.min(parseFloat(match[1]) * 1000, TOLD_MAX_DELAY) : null;
  }

  Realtime.prototype.explainRefusal = function () {
    // A browser never shows the handshake's HTTP status, so ask the server why it refused.
    var self = this;
    fetch(this.checkUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json().then(function (body) { return [r.status, body]; }); })
      .then(function (result) {
        var status = result[0], message = (result[1].error || {}).message || "";
        if (status === 401 || status === 403) {
          self.stopped = true;
          self.setState("signedout", message);
          self.emit("refused", { status: status, message: message });
        } else {
          self.scheduleReconnect();
        }
      })
      .catch(function () { self.scheduleReconnect(); });
  };

  Realtime.prototype.scheduleReconnect = function (soon, told) {
    if (this.stopped) return;
    var delay;
    if (told != null) {
      // The server chose this moment for us: take it, and start the backoff over from there.
      this.restarting = true;
      this.attempt = 0;
      delay = told;
    } else {
      this.attempt += 1;
      var cap = Math.min(MAX_DELAY, MIN_DELAY * Math.pow(2, this.attempt - 1));
      if (this.restarting) cap = Math.min(cap, RESTART_MAX_DELAY);
      // Full jitter: restarts do not bring every tab back in the same instant.
      delay = soon ? Math.random() * 1000 : Math.random() * cap;
    }
    this.setState(navigator.onLine === false ? "offline" : "reconnecting");
    var self = this;
    clearTimeout(this.timer);
    this.timer = setTimeout(function () { self.connect(); }, delay);
  };

  Realtime.prototype.reconnectNow = function () {
    if (this.stopped) return;
    if (this.ws && this.ws.readyState <= 1) return;
    clearTimeout(this.timer);
    this.connect();
  };

  Realtime.prototype.touch = function () {
    var self = this;
    clearTimeout(this.staleTimer);
    this.staleTimer = setTimeout(function () {
      // No heartbeat for 2.5 intervals: the connection is dead even if the browser thinks not.
      if (self.ws) { self.ws.close(); }
      self.ws = null;
      self.scheduleReconnect(true);
    }, this.heartbeat * 2500);
  };

  Realtime.prototype.receive = function (message) {
    var type = message.type;
    if (type === "welcome") {
      this.heartbeat = message.heartbeat || 25;
      this.touch();
      this.attempt = 0;
      this.restarting = false;
      this.welcome = message;
      this.welcomed = true;
      var streams = message.streams.concat(Object.keys(this.extra));
      this.subscribeAll(streams.filter(function (s, i) { return streams.indexOf(s) === i; }));
      this.setState("live");
      this.emit("welcome", message);
      return;
    }
    if (type === "hb" || type === "pong") return;
    if (type === "error" && this.subscribeFailed(message)) return;
    if (type === "reset") { this.reset(message); return; }
    if (type === "reply" || (type === "error" && message.ref != null && this.pending[message.ref])) {
      var waiter = this.pending[message.ref];
      if (waiter) {
        delete this.pending[message.ref];
        if (type === "reply") waiter.resolve(message.data); else waiter.reject(message);
      }
      return;
    }
    if (type === "subscribed") {
      this.answered(message.ref, message.stream);
      clearTimeout(this.retryTimers[message.stream]);
      delete this.retryTimers[message.stream];
      delete this.retries[message.stream];
      this.followed[message.stream] = true;
      if (this.cursors[message.stream] == null) this.cursors[message.stream] = message.after;
      this.emit("subscribed", message);
      return;
    }
    if (type === "error") { this.emit("error", message); return; }
    if (message.stream && message.id != null) {
      var last = this.cursors[message.stream];
      if (last != null && message.id <= last) return;   // seen already (resume overlap)
      this.cursors[message.stream] = message.id;
    }
    this.emit(type, message);
    this.emit("*", message);
  };

  Realtime.prototype.subscribe = function (stream) {
    this.subscribeAll([stream]);
  };

  /* One subscribe message for all of ``streams``, each from its cursor: the server answers
     each stream on its own (a "subscribed" or an error naming it), all with the same ref. */
  Realtime.prototype.subscribeAll = function (streams) {
    if (!streams.length) return;
    var ref = "s" + this.nextRef++;
    var cursors = this.cursors;
    var entries = streams.map(function (stream) {
      var entry = { stream: stream };
      if (cursors[stream] != null) entry.after = cursors[stream];
      return entry;
    });
    var message = { type: "subscribe", ref: ref };
    if (entries.length === 1) {
      message.stream = entries[0].stream;   // the one-stream form every server understands
      if (entries[0].after != null) message.after = entries[0].after;
    } else {
      message.streams = entries;
    }
    if (this.raw(message)) this.subscribing[ref] = streams.slice();
  };

  /* ``stream`` of the subscribe ``ref`` got its answer. */
  Realtime.prototype.answered = function (ref, stream) {
    var waiting = ref != null ? this.subscribing[ref] : null;
    if (!waiting) return;
    var at = waiting.indexOf(stream);
    if (at >= 0) waiting.splice(at, 1);
    if (!waiting.length) delete this.subscribing[ref];
  };

  /* A stream this page wants on the current socket (a default one, or one it follows). */
  Realtime.prototype.wants = function (stream) {
    if (this.extra[stream]) return true;
    return !!(this.welcome && this.welcome.streams.indexOf(stream) >= 0);
  };

  /* An error for one of our subscribes (by its ref; about one of its streams when it names
     one, else about all of them), or the server saying that a stream we follow is delayed:
     try those subscribes again later. True when the error was about that. */
  Realtime.prototype.subscribeFailed = function (message) {
    var streams = [];
    var waiting = message.ref != null ? this.subscribing[message.ref] : null;
    if (waiting && waiting.length > 1 && message.stream == null && message.code === "bad_message") {
      // A server from before the several-streams form (a host not yet upgraded): one at a time.
      delete this.subscribing[message.ref];
      waiting.filter(this.wants, this).forEach(this.subscribe, this);
      return true;
    }
    if (waiting && message.stream != null) {
      if (waiting.indexOf(message.stream) >= 0) streams = [message.stream];
      this.answered(message.ref, message.stream);
    } else if (waiting) {
      streams = waiting;
      delete this.subscribing[message.ref];
    } else if (message.ref == null && message.code === "unavailable" && message.stream) {
      streams = [message.stream];
    }
    streams = streams.filter(this.wants, this);
    if (!streams.length) return false;
    this.emit("error", message);
    if (!RETRYABLE[message.code]) return true;
    streams.forEach(this.retryLater, this);
    return true;
  };

  /* Subscribe ``stream`` again after a capped, jittered backoff. */
  Realtime.prototype.retryLater = function (stream) {
    var tries = (this.retries[stream] || 0) + 1;
    this.retries[stream] = tries;
    var cap = Math.min(MAX_DELAY, MIN_DELAY * Math.pow(2, tries - 1));
    var delay = cap / 2 + Math.random() * cap / 2;   // jitter, but never at once
    var self = this, ws = this.ws;
    clearTimeout(this.retryTimers[stream]);
    this.retryTimers[stream] = setTimeout(function () {
      delete self.retryTimers[stream];
      // A new socket subscribes everything anyway; an unfollowed stream stays unfollowed.
      if (self.ws === ws && self.wants(stream)) self.subscribe(stream);
    }, delay);
  };

  Realtime.prototype.clearRetries = function () {
    var timers = this.retryTimers;
    Object.keys(timers).forEach(function (stream) { clearTimeout(timers[stream]); });
    this.retryTimers = {};
    this.retries = {};
    this.subscribing = {};
  };

  /* The server no longer holds the events after our cursor for message.stream: what the page
     shows may be missing some. Pages that can refresh that part themselves handle "reset";
     otherwise the page is reloaded. Either way the stream goes on from message.head. */
  Realtime.prototype.reset = function (message) {
    if (message.stream) this.cursors[message.stream] = message.head;
    if ((this.handlers.reset || []).length) {
      this.emit("reset", message);
    } else {
      this.reload();
    }
  };

  Realtime.prototype.reload = function () {
    this.stopped = true;
    window.location.reload();
  };

  /* Follow another stream (a chat room); survives reconnects. */
  Realtime.prototype.follow = function (stream, after) {
    this.extra[stream] = true;
    if (after != null && this.cursors[stream] == null) this.cursors[stream] = after;
    if (this.ws && this.ws.readyState === 1 && this.welcome) this.subscribe(stream);
  };

  Realtime.prototype.unfollow = function (stream) {
    delete this.extra[stream];
    delete this.followed[stream];
    clearTimeout(this.retryTimers[stream]);
    delete this.retryTimers[stream];
    this.raw({ type: "unsubscribe", stream: stream });
  };

  Realtime.prototype.raw = function (message) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  };

  /* Send a command; resolves with the server's reply, rejects with its error frame. */
  Realtime.prototype.send = function (type, data) {
    var ref = String(this.nextRef++);
    var self = this;
    return new Promise(function (resolve, reject) {
      if (!self.raw({ type: type, data: data, ref: ref })) {
        reject({ code: "offline", message: "Not connected; try again in a moment." });
        return;
      }
      self.pending[ref] = { resolve: resolve, reject: reject };
    });
  };

  Realtime.prototype.rejectPending = function (why) {
    var pending = this.pending;
    this.pending = {};
    Object.keys(pending).forEach(function (ref) {
      pending[ref].reject({ code: "disconnected", message: why });
    });
  };

  var waiting = [];

  /* Run fn(rt) once the client exists: page scripts register their handlers this way. */
  window.withRealtime = function (fn) {
    if (window.TidingsRealtime) fn(window.TidingsRealtime); else waiting.push(fn);
  };

  function start() {
    var body = document.body;
    if (!body || !body.dataset.realtimeUrl) return null;
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var cursors = {};
    try { cursors = JSON.parse(body.dataset.realtimeCursors || "{}"); } catch (err) { cursors = {}; }
    var rt = new Realtime({
      url: scheme + "//" + location.host + body.dataset.realtimeUrl,
      checkUrl: body.dataset.realtimeCheck,
      cursors: cursors,
    });
    window.TidingsRealtime = rt;
    waiting.splice(0).forEach(function (fn) { fn(rt); });
    rt.connect();
    return rt;
  }

  window.TidingsRealtimeClass = Realtime;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
