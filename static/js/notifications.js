/*
 * Tidings notifications and announcements in the page: the bell's count and dropdown, the inbox
 * list, toasts, and announcement banners, all kept live over the realtime socket.
 *
 * - Counts come from the server (every event carries the user's unread count at that moment,
 *   and events of one stream arrive in order), so a replay after a reconnect never double-counts;
 *   notification ids keep the same item from being listed or toasted twice.
 * - User text is only ever set with textContent.
 * - Settings come from data-* attributes on #bell-root (CSP: no inline scripts).
 */
(function () {
  "use strict";

  var root = document.getElementById("bell-root");
  if (!root) return;

  var BELL_SIZE = 5;
  var csrf = root.dataset.csrf || "";
  var toastKinds = (root.dataset.toastKinds || "").split(/\s+/).filter(Boolean);
  var bell = document.getElementById("bell");
  var menu = document.getElementById("bell-menu");
  var countEl = root.querySelector(".bell-count");
  var seen = {};          // notification id -> true (already listed or toasted)
  var shownBanners = {};  // announcement id -> true
  var dismissed = {};     // announcement id -> true

  Array.prototype.forEach.call(document.querySelectorAll("[data-notification-id]"), function (el) {
    seen[el.dataset.notificationId] = true;
  });
  Array.prototype.forEach.call(document.querySelectorAll("#announcement-banners [data-announcement-id]"), function (el) {
    shownBanners[el.dataset.announcementId] = true;
  });

  function urlFor(template, id) {
    return template.replace("/0/", "/" + encodeURIComponent(id) + "/");
  }

  function post(url) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, Accept: "application/json" },
    }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }

  function csrfInput() {
    // So the form still works as a plain POST if the background request fails.
    var input = document.createElement("input");
    input.type = "hidden";
    input.name = "csrf_token";
    input.value = csrf;
    return input;
  }

  // ---------------------------------------------------------------- the count

  function setUnread(n) {
    if (typeof n !== "number" || n < 0) return;
    if (countEl) {
      countEl.dataset.count = String(n);
      countEl.textContent = n > 99 ? "99+" : String(n);
      countEl.hidden = n === 0;
    }
    Array.prototype.forEach.call(document.querySelectorAll(".js-unread-count"), function (el) {
      el.textContent = String(n);
    });
    bell.setAttribute("aria-label", n ? "Notifications (" + n + " unread)" : "Notifications");
  }

  // ---------------------------------------------------------------- building items

  function safeLink(link) {
    if (typeof link !== "string") return null;
    if (/^\/(?!\/)/.test(link) && link.indexOf("\\") < 0) return link;
    if (/^https?:\/\//i.test(link)) return link;
    return null;
  }

  function buildItem(n) {
    var li = document.createElement("li");
    li.className = "notif" + (n.read ? "" : " notif--unread") + " notif--new";
    li.dataset.notificationId = String(n.id);
    li.dataset.kind = String(n.kind || "");
    var main = document.createElement("div");
    main.className = "notif__main";
    var link = safeLink(n.link);
    var title = document.createElement(link ? "a" : "span");
    title.className = "notif__title";
    title.textContent = n.title || "";
    if (link) {
      title.href = link;
      if (link.charAt(0) !== "/") title.rel = "noopener noreferrer";
    }
    main.appendChild(title);
    if (n.body) {
      var body = document.createElement("p");
      body.className = "notif__body";
      body.textContent = n.body;
      main.appendChild(body);
    }
    var time = document.createElement("time");
    time.className = "notif__time";
    var when = n.created_at ? new Date(n.created_at) : new Date();
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleString([], { day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit" });
    main.appendChild(time);
    li.appendChild(main);
    if (!n.read) {
      var form = document.createElement("form");
      form.className = "notif__read js-mark-read";
      form.method = "post";
      form.action = urlFor(root.dataset.readUrl, n.id);
      form.appendChild(csrfInput());
      var button = document.createElement("button");
      button.type = "submit";
      button.className = "link-button";
      button.textContent = "Mark read";
      form.appendChild(button);
      li.appendChild(form);
    }
    return li;
  }

  function prepend(list, n, limit) {
    if (!list || list.querySelector('[data-notification-id="' + n.id + '"]')) return;
    list.insertBefore(buildItem(n), list.firstChild);
    if (limit) {
      while (list.children.length > limit) list.removeChild(list.lastChild);
    }
    var empty = list.parentNode.querySelector(".notif-empty");
    if (empty) empty.hidden = true;
  }

  function markItemsRead(ids) {
    var selector = ids ? ids.map(function (id) { return '[data-notification-id="' + Number(id) + '"]'; }).join(",")
                       : "[data-notification-id]";
    if (!selector) return;
    Array.prototype.forEach.call(document.querySelectorAll(selector), function (li) {
      li.classList.remove("notif--unread");
      var form = li.querySelector(".js-mark-read");
      if (form) form.remove();
      var inbox = document.getElementById("inbox-list");
      if (inbox && inbox.dataset.filter === "unread" && inbox.contains(li)) li.remove();
    });
  }

  // ---------------------------------------------------------------- toasts

  var toasts = document.getElementById("toasts");

  function toast(title, body, link, level) {
    if (!toasts) return;
    var box = document.createElement("div");
    box.className = "toast" + (level ? " toast--" + level : "");
    box.setAttribute("role", "status");
    var href = safeLink(link);
    var head = document.createElement(href ? "a" : "strong");
    head.className = "toast__title";
    head.textContent = title || "";
    if (href) head.href = href;
    box.appendChild(head);
    if (body) {
      var p = document.createElement("p");
      p.className = "toast__body";
      p.textContent = body;
      box.appendChild(p);
    }
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast__close";
    close.setAttribute("aria-label", "Close");
    close.textContent = "×";
    close.addEventListener("click", function () { box.remove(); });
    box.appendChild(close);
    toasts.appendChild(box);
    while (toasts.children.length > 4) toasts.removeChild(toasts.firstChild);
    setTimeout(function () { box.remove(); }, 8000);
  }

  // ---------------------------------------------------------------- notifications, live

  function onNotification(message) {
    var n = message.data || {};
    if (n.id == null) return;
    setUnread(n.unread);
    if (seen[n.id]) return;
    seen[n.id] = true;
    prepend(document.getElementById("bell-list"), n, BELL_SIZE);
    prepend(document.getElementById("dashboard-notifications"), n, BELL_SIZE);
    var inbox = document.getElementById("inbox-list");
    if (inbox && inbox.dataset.live) prepend(inbox, n, 20);
    if (toastKinds.indexOf(n.kind) >= 0) toast(n.title, n.body, n.link);
  }

  function onRead(message) {
    var data = message.data || {};
    setUnread(data.unread);
    markItemsRead(data.all ? null : (Array.isArray(data.ids) ? data.ids : []));
  }

  // ---------------------------------------------------------------- announcements

  var banners = document.getElementById("announcement-banners");

  function expired(expiresAt) {
    return expiresAt && new Date(expiresAt).getTime() <= Date.now();
  }

  function removeBanner(id) {
    var el = banners && banners.querySelector('[data-announcement-id="' + Number(id) + '"]');
    if (el) el.remove();
  }

  function scheduleExpiry(el) {
    var at = el.dataset.expiresAt ? new Date(el.dataset.expiresAt).getTime() : 0;
    var wait = at - Date.now();
    if (at && wait < 2147483647) setTimeout(function () { el.remove(); }, Math.max(0, wait));
  }

  function buildBanner(a) {
    var level = ["info", "warning", "critical"].indexOf(a.level) >= 0 ? a.level : "info";
    var box = document.createElement("div");
    box.className = "announcement announcement--" + level + " announcement--new";
    box.setAttribute("role", level === "critical" ? "alert" : "status");
    box.dataset.announcementId = String(a.id);
    if (a.expires_at) box.dataset.expiresAt = a.expires_at;
    var text = document.createElement("div");
    text.className = "announcement__text";
    var title = document.createElement("strong");
    title.className = "announcement__title";
    title.textContent = a.title || "";
    text.appendChild(title);
    if (a.body) {
      text.appendChild(document.createTextNode(" "));
      var body = document.createElement("span");
      body.className = "announcement__body";
      body.textContent = a.body;
      text.appendChild(body);
    }
    box.appendChild(text);
    var form = document.createElement("form");
    form.className = "announcement__dismiss js-dismiss";
    form.method = "post";
    form.action = urlFor(root.dataset.dismissUrl, a.id);
    form.appendChild(csrfInput());
    var close = document.createElement("button");
    close.type = "submit";
    close.className = "announcement__close";
    close.setAttribute("aria-label", "Dismiss announcement");
    close.textContent = "×";
    form.appendChild(close);
    box.appendChild(form);
    return box;
  }

  // The dashboard's "Announcements" card: same rules as the banners (not dismissed, not expired).
  var card = document.getElementById("dashboard-announcements");

  function syncCardEmpty() {
    var empty = card && card.parentNode.querySelector(".announcements-empty");
    if (empty) empty.hidden = card.children.length > 0;
  }

  function addToCard(a) {
    if (!card || card.querySelector('[data-announcement-id="' + Number(a.id) + '"]')) return;
    var level = ["info", "warning", "critical"].indexOf(a.level) >= 0 ? a.level : "info";
    var li = document.createElement("li");
    li.dataset.announcementId = String(a.id);
    var badge = document.createElement("span");
    badge.className = "level level--" + level;
    badge.textContent = level;
    li.appendChild(badge);
    li.appendChild(document.createTextNode(" "));
    var title = document.createElement("strong");
    title.textContent = a.title || "";
    li.appendChild(title);
    if (a.body) li.appendChild(document.createTextNode(" — " + a.body));
    card.insertBefore(li, card.firstChild);
    syncCardEmpty();
  }

  function removeFromCard(id) {
    var li = card && card.querySelector('[data-announcement-id="' + Number(id) + '"]');
    if (li) { li.remove(); syncCardEmpty(); }
  }

  function onAnnouncement(message, rt) {
    var a = message.data || {};
    if (a.id == null || !banners) return;
    // Acknowledge receipt: the admin's "reached live" figure counts these, once per user.
    rt.send("announcement.seen", { id: a.id }).catch(function () {});
    if (!dismissed[a.id] && !expired(a.expires_at)) addToCard(a);
    if (shownBanners[a.id] || dismissed[a.id] || expired(a.expires_at)) return;
    shownBanners[a.id] = true;
    var el = buildBanner(a);
    banners.insertBefore(el, banners.firstChild);
    scheduleExpiry(el);
    if (toastKinds.indexOf("announcement") >= 0) toast(a.title, a.body, null, a.level);
  }

  function onDismissed(message) {
    var id = (message.data || {}).id;
    if (id == null) return;
    dismissed[id] = true;
    removeBanner(id);
    removeFromCard(id);
  }

  // ---------------------------------------------------------------- clicks and forms

  if (bell && menu) {
    bell.addEventListener("click", function (e) {
      e.preventDefault();
      menu.hidden = !menu.hidden;
      bell.setAttribute("aria-expanded", String(!menu.hidden));
    });
    document.addEventListener("click", function (e) {
      if (!menu.hidden && !root.contains(e.target)) {
        menu.hidden = true;
        bell.setAttribute("aria-expanded", "false");
      }
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && !menu.hidden) {
        menu.hidden = true;
        bell.setAttribute("aria-expanded", "false");
        bell.focus();
      }
    });
  }

  // Forms work without JS (they post and come back); with JS they post in the background and
  // the server's notification.read / announcement.dismissed events update every tab, this one too.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList) return;
    if (form.classList.contains("js-mark-read") || form.classList.contains("js-mark-all")) {
      e.preventDefault();
      post(form.action).then(function (data) {
        setUnread(data.unread);
        markItemsRead(data.all ? null : data.ids);
      }).catch(function () { form.submit(); });
    } else if (form.classList.contains("js-dismiss")) {
      e.preventDefault();
      var box = form.closest("[data-announcement-id]");
      var id = box && box.dataset.announcementId;
      if (box) box.remove();
      if (id) dismissed[id] = true;
      post(form.action).catch(function () { form.submit(); });
    }
  });

  if (banners) {
    Array.prototype.forEach.call(banners.querySelectorAll("[data-expires-at]"), scheduleExpiry);
  }

  window.withRealtime(function (rt) {
    rt.on("notification", onNotification);
    rt.on("notification.read", onRead);
    rt.on("announcement", function (m) { onAnnouncement(m, rt); });
    rt.on("announcement.dismissed", onDismissed);
  });
})();
