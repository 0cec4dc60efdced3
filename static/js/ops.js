/*
 * The operations dashboard: follows the admin-only "ops:cluster" stream and redraws the plain-
 * language summary, the per-process table, the online list and a chart of messages delivered
 * per second with a time axis, from each "ops.stats" event. No libraries; every value goes in
 * with textContent (usernames and titles are user data).
 */
(function () {
  "use strict";

  var root = document.getElementById("ops");
  if (!root) return;

  var STREAM = root.dataset.stream;
  var EVENT = root.dataset.event;
  var SPAN_S = 180;       // seconds of history the chart shows
  var points = [];        // [epoch seconds, delivered per second]
  var lastAt = null;

  try {
    points = JSON.parse(root.dataset.chart || "[]") || [];
  } catch (err) {
    points = [];
  }

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text != null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function setText(selector, value) {
    var nodes = root.querySelectorAll(selector);
    for (var i = 0; i < nodes.length; i++) nodes[i].textContent = value == null ? "—" : String(value);
  }

  var integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  var oneDecimal = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });

  function format(name, value) {
    if (value == null) return "—";
    if (typeof value !== "number") return String(value);
    return /_per_s$/.test(name) ? oneDecimal.format(value) : integer.format(value);
  }

  function lookup(object, path) {
    return path.split(".").reduce(function (o, key) { return o == null ? o : o[key]; }, object);
  }

  function renderSummary(view) {
    var summary = view.summary || {};
    Array.prototype.forEach.call(root.querySelectorAll("[data-summary]"), function (node) {
      var name = node.dataset.summary;
      node.textContent = format(name, lookup(summary, name));
    });
    var relay = root.querySelector('[data-summary="relay"]');
    if (relay) relay.dataset.state = summary.relay || "unknown";
    var headline = document.getElementById("ops-headline");
    if (headline) headline.dataset.status = summary.status || "ok";
    var errors = root.querySelector("[data-errors]");
    if (errors) errors.dataset.errors = String(summary.errors_last_minute || 0);
    setText('[data-total="dropped"]', view.totals.dead_peers);
    setText('[data-total="opened"]', view.totals.opened);
  }

  function renderWorkers(rows) {
    var body = document.getElementById("ops-workers");
    if (!body) return;
    var fresh = document.createDocumentFragment();
    function cell(tr, label, value) {
      var td = el("td", value);
      td.dataset.label = label;
      tr.appendChild(td);
    }
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      var name = el("td");
      name.appendChild(el("code", row.worker));
      if (!row.accepting) name.appendChild(document.createTextNode(" (stopping)"));
      tr.appendChild(name);
      cell(tr, "Connections", row.sockets + " / " + row.capacity);
      cell(tr, "People", row.users_online);
      cell(tr, "Sent/s", row.published_per_s);
      cell(tr, "Delivered/s", row.delivered_per_s);
      cell(tr, "Could not connect", row.refused_capacity);
      cell(tr, "Cut off", row.cut_offs);
      cell(tr, "Relay", row.broker);
      cell(tr, "Last report", Number(row.age_s).toFixed(1) + " s ago");
      fresh.appendChild(tr);
    });
    body.replaceChildren(fresh);
  }

  function renderUsers(view) {
    var list = document.getElementById("ops-users");
    if (list) {
      list.replaceChildren.apply(list, view.users.map(function (name) { return el("li", name); }));
    }
    var more = document.getElementById("ops-users-more");
    if (more) more.hidden = !view.users_truncated;
  }

  function renderAnnouncements(items) {
    var list = document.getElementById("ops-announcements");
    if (!list) return;
    if (!items.length) {
      list.replaceChildren(el("li", "No announcements yet.", "muted"));
      return;
    }
    list.replaceChildren.apply(list, items.map(function (item) {
      var li = el("li");
      li.appendChild(el("span", item.title, "ops-announcements__title"));
      li.appendChild(document.createTextNode(" "));
      var reach = "reached " + (item.live_reached == null ? "—" : item.live_reached);
      if (item.recipients != null) reach += " of " + item.recipients;
      li.appendChild(el("span", reach + " live", "muted"));
      return li;
    }));
  }

  /* A round step for the y axis: 1, 2, 5 × 10^n. */
  function niceTop(value) {
    if (value <= 1) return 1;
    var power = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= value) return steps[i] * power;
    }
    return 10 * power;
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  /* Delivered per second against local clock time: gridlines every 30 s (labelled every 60 s
     on narrow screens), a labelled y axis, the line and the newest value. */
  function drawChart() {
    var canvas = document.getElementById("ops-chart");
    if (!canvas || !canvas.getContext) return;
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.clientWidth || canvas.width;
    var height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var styles = getComputedStyle(canvas);
    var gridColor = styles.getPropertyValue("--ops-grid").trim() || "#e3e6eb";
    var textColor = styles.getPropertyValue("--ops-muted").trim() || "#5c6370";
    var lineColor = styles.getPropertyValue("--ops-delivered").trim() || "#2b8a3e";
    var left = 44, right = 12, top = 12, bottom = 26;
    var now = lastAt || (points.length ? points[points.length - 1][0] : Date.now() / 1000);
    var start = now - SPAN_S;
    var highest = 0;
    points.forEach(function (p) { if (p[0] >= start) highest = Math.max(highest, p[1]); });
    var ceiling = niceTop(highest);
    var x = function (t) { return left + (width - left - right) * ((t - start) / SPAN_S); };
    var y = function (v) { return height - bottom - (height - top - bottom) * (v / ceiling); };

    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    // y axis: 0, half, top.
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    [0, ceiling / 2, ceiling].forEach(function (v) {
      ctx.strokeStyle = gridColor;
      ctx.beginPath();
      ctx.moveTo(left, y(v));
      ctx.lineTo(width - right, y(v));
      ctx.stroke();
      ctx.fillStyle = textColor;
      ctx.fillText(oneDecimal.format(v).replace(/\.0$/, ""), left - 6, y(v));
    });
    // x axis: clock times.
    var every = width < 480 ? 60 : 30;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (var t = Math.ceil(start / every) * every; t <= now; t += every) {
      ctx.strokeStyle = gridColor;
      ctx.beginPath();
      ctx.moveTo(x(t), top);
      ctx.lineTo(x(t), height - bottom);
      ctx.stroke();
      ctx.fillStyle = textColor;
      ctx.fillText(clock(t), Math.min(Math.max(x(t), left + 24), width - right - 24), height - bottom + 6);
    }
    // The line.
    ctx.strokeStyle = lineColor;
    ctx.lineWidth = 2;
    ctx.beginPath();
    var started = false;
    points.forEach(function (p) {
      if (p[0] < start) return;
      if (!started) { ctx.moveTo(x(p[0]), y(p[1])); started = true; } else { ctx.lineTo(x(p[0]), y(p[1])); }
    });
    ctx.stroke();
  }

  function render(view) {
    lastAt = view.at;
    renderSummary(view);
    renderWorkers(view.workers);
    renderUsers(view);
    renderAnnouncements(view.announcements || []);
    if (view.point && (!points.length || view.point[0] > points[points.length - 1][0])) {
      points.push(view.point);
    }
    while (points.length && points[0][0] < lastAt - SPAN_S - 5) points.shift();
    drawChart();
  }

  /* "3 s ago": a frozen dashboard must look frozen, not merely quiet. */
  setInterval(function () {
    if (lastAt == null) return;
    var age = Math.max(0, Date.now() / 1000 - lastAt);
    setText('[data-figure="freshness"]', age < 2 ? "live" : Math.round(age) + " s ago");
    root.classList.toggle("ops--stale", age > 5);
  }, 1000);

  window.addEventListener("resize", drawChart);

  withRealtime(function (rt) {
    rt.on(EVENT, function (message) {
      if (message.stream === STREAM && message.data) render(message.data);
    });
    rt.on("error", function (message) {
      if (message.code === "forbidden") setText('[data-figure="freshness"]', "not allowed to follow live figures");
    });
    rt.follow(STREAM, null);
  });

  drawChart();
})();
