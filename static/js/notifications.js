/*
 * Tidings notifications and announcements in the page: the bell's count and dropdown, the inbox
 * list, toasts, and announcement banners, all kept live over the realtime socket.
 *
 * - Counts come from the server (every event carries the user's unread count at that moment,
 *   and events of one stream arrive in order), so a replay after a reconnect never double-counts;
 *   notification ids keep the same item from being listed, toasted or announced twice.
 * - Read state follows the user: a "notification.read" event (from any tab, the inbox, opening
 *   the target, reading the chat room) updates the bell, lists and counts of every tab.
 * - One calm surface per announcement: its banner. At most data-cap banners show, the rest wait
 *   behind "+N more"; long text is clamped with a "more" toggle. Edits, ends and retractions
 *   by an admin reach the banner live.
 * - Screen readers hear new notifications once, politely (#notification-announcer); the list a
 *   page loads with is never read out.
 * - User text is only ever set with textContent.
 * - Settings come from data-* attributes on #bell-root (CSP: no inline scripts).
 */
(function () {
  "use strict";

  var root = document.getElementById("bell-root");
  if (!root) return;

  var BELL_SIZE = 5;
  var LEVELS = ["info", "warning", "critical"];
  var csrf = root.dataset.csrf || "";
  var toastKinds = (root.dataset.toastKinds || "").split(/\s+/).filter(Boolean);
  var bell = document.getElementById("bell");
  var menu = document.getElementById("bell-menu");
  var countEl = root.querySelector(".bell-count");
  var announcer = document.getElementById("notification-announcer");
  var seen = {};          // notification id -> true (already listed, toasted or announced)
  var gone = {};          // announcement id -> true (dismissed, ended or retracted here)

  function each(selector, fn, scope) {
    Array.prototype.forEach.call((scope || document).querySelectorAll(selector), fn);
  }

  each("[data-notification-id]", function (el) { seen[el.dataset.notificationId] = true; });

  function urlFor(template, id) {
    return template.replace("/0/", "/" + encodeURIComponent(id) + "/");
  }

  function post(url, keepalive) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      keepalive: !!keepalive,
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

  /* Polite, once: cleared first so the same words twice in a row are still read. */
  function announce(text) {
    if (!announcer) return;
    announcer.textContent = "";
    setTimeout(function () { announcer.textContent = text; }, 50);
  }

  // ---------------------------------------------------------------- the count

  function setUnread(n) {
    if (typeof n !== "number" || n < 0) return;
    if (countEl) {
      countEl.dataset.count = String(n);
      countEl.textContent = n > 99 ? "99+" : String(n);
      countEl.hidden = n === 0;
    }
    each(".js-unread-count", function (el) { el.textContent = String(n); });
    if (bell) bell.setAttribute("aria-label", n ? "Notifications, " + n + " unread" : "Notifications");
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
    if (!list || list.querySelector('[data-notification-id="' + Number(n.id) + '"]')) return;
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
    var inbox = document.getElementById("inbox-list");
    each(selector, function (li) {
      li.classList.remove("notif--unread");
      var form = li.querySelector(".js-mark-read");
      if (form) form.remove();
      if (inbox && inbox.dataset.filter === "unread" && inbox.contains(li)) li.remove();
    });
  }

  // ---------------------------------------------------------------- toasts

  var toasts = document.getElementById("toasts");

  function toast(title, body, link) {
    if (!toasts) return;
    var box = document.createElement("div");
    box.className = "toast";
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
    if (!n.read) announce("New notification: " + (n.title || ""));
    if (toastKinds.indexOf(n.kind) >= 0) toast(n.title, n.body, n.link);
  }

  function onRead(message) {
    var data = message.data || {};
    setUnread(data.unread);
    markItemsRead(data.all ? null : (Array.isArray(data.ids) ? data.ids : []));
  }

  // ---------------------------------------------------------------- announcements

  var banners = document.getElementById("announcement-banners");
  var shown = banners && banners.querySelector(".announcements__shown");
  var more = banners && banners.querySelector(".announcements__more");
  var rest = banners && banners.querySelector(".announcements__rest");
  var cap = banners ? Number(banners.dataset.cap) || 2 : 2;

  function levelOf(value) { return LEVELS.indexOf(value) >= 0 ? value : "info"; }

  function expired(expiresAt) {
    return expiresAt && new Date(expiresAt).getTime() <= Date.now();
  }

  function findBanner(id) {
    return banners && banners.querySelector('.announcement[data-announcement-id="' + Number(id) + '"]');
  }

  /* Critical first, then newest; the first `cap` visible, the rest behind "+N more". */
  function layout() {
    if (!banners || !shown || !rest) return;
    var all = Array.prototype.slice.call(banners.querySelectorAll(".announcement[data-announcement-id]"));
    all.sort(function (a, b) {
      var ca = a.dataset.level === "critical" ? 0 : 1, cb = b.dataset.level === "critical" ? 0 : 1;
      return ca - cb || Number(b.dataset.announcementId) - Number(a.dataset.announcementId);
    });
    all.forEach(function (el, i) { (i < cap ? shown : rest).appendChild(el); });
    var extra = Math.max(0, all.length - cap);
    if (more) {
      more.hidden = extra === 0;
      if (!extra) more.open = false;
      var count = more.querySelector(".js-more-count");
      if (count) count.textContent = String(extra);
    }
    banners.classList.toggle("announcements--empty", all.length === 0);
    all.forEach(clamp);
  }

  /* Long text: three lines and a "more" toggle. Measured only when rendered (not in a closed
     "+N more"), again when that opens or the width changes. A banner the reader opened stays
     open when it is measured again: it is measured clamped, then given back its state. */
  function clamp(el) {
    if (el.dataset.clampChecked || !el.offsetParent) return;
    var text = el.querySelector(".announcement__text");
    if (!text) return;
    var open = el.classList.contains("announcement--expanded");
    el.classList.remove("announcement--expanded");
    el.classList.add("announcement--clamp");
    el.dataset.clampChecked = "1";
    if (text.scrollHeight <= text.clientHeight + 1) {
      el.classList.remove("announcement--clamp");
      return;
    }
    var toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "announcement__toggle";
    function show(isOpen) {
      el.classList.toggle("announcement--expanded", isOpen);
      toggle.textContent = isOpen ? "less" : "more";
      toggle.setAttribute("aria-expanded", String(isOpen));
    }
    show(open);
    toggle.addEventListener("click", function () {
      show(!el.classList.contains("announcement--expanded"));
    });
    el.querySelector(".announcement__main").appendChild(toggle);
  }

  /* Forget the measurement (new text, or a new width). `keepOpen` keeps what the reader chose. */
  function resetClamp(el, keepOpen) {
    delete el.dataset.clampChecked;
    el.classList.remove("announcement--clamp");
    if (!keepOpen) el.classList.remove("announcement--expanded");
    var toggle = el.querySelector(".announcement__toggle");
    if (toggle) toggle.remove();
  }

  function scheduleExpiry(el) {
    var at = el.dataset.expiresAt ? new Date(el.dataset.expiresAt).getTime() : 0;
    var wait = at - Date.now();
    if (at && wait < 2147483647) {
      setTimeout(function () { removeBanner(el.dataset.announcementId, true); }, Math.max(0, wait));
    }
  }

  function fillText(box, a) {
    var text = box.querySelector(".announcement__text");
    text.replaceChildren();
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
  }

  function buildBanner(a) {
    var level = levelOf(a.level);
    var box = document.createElement("div");
    box.className = "announcement announcement--" + level + " announcement--new";
    box.setAttribute("role", level === "critical" ? "alert" : "status");
    box.dataset.announcementId = String(a.id);
    box.dataset.level = level;
    if (a.expires_at) box.dataset.expiresAt = a.expires_at;
    var main = document.createElement("div");
    main.className = "announcement__main";
    var text = document.createElement("div");
    text.className = "announcement__text";
    main.appendChild(text);
    box.appendChild(main);
    fillText(box, a);
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

  // The dashboard's "Earlier announcements": history, never the live banners.
  var card = document.getElementById("dashboard-announcements");

  function syncCardEmpty() {
    var empty = card && card.parentNode.querySelector(".announcements-empty");
    if (empty) empty.hidden = card.children.length > 0;
  }

  function addToHistory(id, a) {
    if (!card || !a || card.querySelector('[data-announcement-id="' + Number(id) + '"]')) return;
    var li = document.createElement("li");
    li.dataset.announcementId = String(id);
    var badge = document.createElement("span");
    var level = levelOf(a.level);
    badge.className = "level level--" + level;
    badge.textContent = level;
    li.appendChild(badge);
    li.appendChild(document.createTextNode(" "));
    var title = document.createElement("strong");
    title.textContent = a.title || "";
    li.appendChild(title);
    card.insertBefore(li, card.firstChild);
    while (card.children.length > BELL_SIZE) card.removeChild(card.lastChild);
    syncCardEmpty();
  }

  function removeFromHistory(id) {
    var li = card && card.querySelector('[data-announcement-id="' + Number(id) + '"]');
    if (li) { li.remove(); syncCardEmpty(); }
  }

  /* The banner goes; into the dashboard's history unless it was taken back. */
  function removeBanner(id, keepInHistory) {
    var el = findBanner(id);
    if (!el) return;
    if (keepInHistory) {
      var title = el.querySelector(".announcement__title");
      addToHistory(id, { level: el.dataset.level, title: title ? title.textContent : "" });
    }
    el.remove();
    layout();
  }

  function onAnnouncement(message, rt) {
    var a = message.data || {};
    if (a.id == null || !banners) return;
    // Acknowledge receipt: the admin's "reached live" figure counts these, once per user.
    rt.send("announcement.seen", { id: a.id }).catch(function () {});
    if (gone[a.id] || findBanner(a.id) || expired(a.expires_at)) return;
    var el = buildBanner(a);
    shown.insertBefore(el, shown.firstChild);
    layout();
    scheduleExpiry(el);
  }

  function onUpdated(message) {
    var a = message.data || {};
    var el = a.id != null && findBanner(a.id);
    if (!el) return;
    var level = levelOf(a.level);
    el.className = "announcement announcement--" + level;
    el.dataset.level = level;
    el.setAttribute("role", level === "critical" ? "alert" : "status");
    fillText(el, a);
    resetClamp(el);
    layout();
  }

  function onGone(message, keepInHistory) {
    var id = (message.data || {}).id;
    if (id == null) return;
    gone[id] = true;
    removeBanner(id, keepInHistory);
    if (!keepInHistory) removeFromHistory(id);
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

  // Following a notification's link to another site reads it (a page of ours is marked read
  // by the server as it opens). keepalive lets the request finish after the page has gone.
  document.addEventListener("click", function (e) {
    var link = e.target.closest && e.target.closest("a.notif__title");
    var item = link && link.closest(".notif--unread[data-notification-id]");
    if (!item || link.getAttribute("href").charAt(0) === "/") return;
    post(urlFor(root.dataset.readUrl, item.dataset.notificationId), true).catch(function () {});
  });

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
      if (id) {
        gone[id] = true;
        removeBanner(id, true);
      }
      post(form.action).catch(function () { form.submit(); });
    }
  });

  if (banners) {
    each(".announcement[data-expires-at]", scheduleExpiry, banners);
    if (more) more.addEventListener("toggle", layout);
    // Only a new width re-measures: a phone's address bar showing or hiding on scroll changes
    // the height alone, and must not fold a banner the reader just opened.
    var resizing = null, measuredWidth = window.innerWidth;
    window.addEventListener("resize", function () {
      clearTimeout(resizing);
      resizing = setTimeout(function () {
        if (window.innerWidth === measuredWidth) return;
        measuredWidth = window.innerWidth;
        each(".announcement[data-announcement-id]", function (el) { resetClamp(el, true); }, banners);
        layout();
      }, 200);
    });
    layout();
  }

  window.withRealtime(function (rt) {
    rt.on("notification", onNotification);
    rt.on("notification.read", onRead);
    rt.on("announcement", function (m) { onAnnouncement(m, rt); });
    rt.on("announcement.updated", onUpdated);
    rt.on("announcement.ended", function (m) { onGone(m, true); });
    rt.on("announcement.retracted", function (m) { onGone(m, false); });
    rt.on("announcement.dismissed", function (m) { onGone(m, true); });
  });
})();
