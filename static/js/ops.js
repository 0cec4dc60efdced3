/*
 * The operations dashboard: follows the admin-only "ops:cluster" stream and redraws the figures,
 * the worker table, the online list and a small chart of messages per second from each
 * "ops.stats" event. No libraries; every value goes in with textContent (usernames and titles
 * are user data).
 */
(function () {
  "use strict";

  var root = document.getElementById("ops");
  if (!root) return;

  var STREAM = root.dataset.stream;
  var EVENT = root.dataset.event;
  var HISTORY = 120; // points kept for the chart (two minutes at one report a second)
  var history = [];
  var lastAt = null;

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

  function renderTotals(view) {
    Object.keys(view.totals).forEach(function (name) {
      setText('[data-total="' + name + '"]', view.totals[name]);
    });
    setText('[data-figure="served_by"]', view.served_by);
    setText('[data-figure="broker_kind"]', view.broker.kind);
    setText('[data-figure="broker_lag"]', view.broker.lag_ms);
    var state = root.querySelector('[data-figure="broker_state"]');
    if (state) {
      state.textContent = view.broker.state;
      state.dataset.state = view.broker.state;
    }
  }

  function renderWorkers(rows) {
    var body = document.getElementById("ops-workers");
    if (!body) return;
    var fresh = document.createDocumentFragment();
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      var name = el("td");
      name.appendChild(el("code", row.worker));
      if (!row.accepting) name.appendChild(document.createTextNode(" (stopping)"));
      tr.appendChild(name);
      tr.appendChild(el("td", row.sockets + " / " + row.capacity));
      tr.appendChild(el("td", row.users_online));
      tr.appendChild(el("td", row.published_per_s));
      tr.appendChild(el("td", row.delivered_per_s));
      tr.appendChild(el("td", row.refused_capacity));
      tr.appendChild(el("td", row.cut_offs));
      tr.appendChild(el("td", row.broker));
      tr.appendChild(el("td", Number(row.age_s).toFixed(1) + " s"));
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

  /* Two lines (published, delivered per second) on a canvas sized for the device's pixels. */
  function drawChart() {
    var canvas = document.getElementById("ops-chart");
    if (!canvas || !canvas.getContext) return;
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.clientWidth || canvas.width;
    var height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var styles = getComputedStyle(canvas);
    var top = 1;
    history.forEach(function (p) { top = Math.max(top, p.published, p.delivered); });
    var pad = 18;
    var x = function (i) { return pad + (width - 2 * pad) * (i / Math.max(1, HISTORY - 1)); };
    var y = function (v) { return height - pad - (height - 2 * pad) * (v / top); };

    ctx.strokeStyle = styles.getPropertyValue("--ops-grid").trim() || "#e3e6eb";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(pad, y(0)); ctx.lineTo(width - pad, y(0));
    ctx.moveTo(pad, y(top)); ctx.lineTo(width - pad, y(top));
    ctx.stroke();
    ctx.fillStyle = styles.getPropertyValue("--ops-muted").trim() || "#667085";
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(String(Math.round(top * 10) / 10), pad, y(top) - 4);

    var offset = HISTORY - history.length;
    [["published", "--ops-published", "#3b5bdb"], ["delivered", "--ops-delivered", "#2b8a3e"]]
      .forEach(function (line) {
        ctx.strokeStyle = styles.getPropertyValue(line[1]).trim() || line[2];
        ctx.lineWidth = 2;
        ctx.beginPath();
        history.forEach(function (p, i) {
          if (i === 0) ctx.moveTo(x(offset + i), y(p[line[0]]));
          else ctx.lineTo(x(offset + i), y(p[line[0]]));
        });
        ctx.stroke();
      });
  }

  function render(view) {
    lastAt = view.at;
    renderTotals(view);
    renderWorkers(view.workers);
    renderUsers(view);
    renderAnnouncements(view.announcements || []);
    history.push({ published: view.totals.published_per_s, delivered: view.totals.delivered_per_s });
    if (history.length > HISTORY) history.shift();
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
