/*
 * Admin pages, progressively enhanced (everything works without this script):
 * - the compose form shows the Role field only for "Everyone with a role" and Usernames only for
 *   "Chosen users";
 * - a live preview of the banner as the admin types (the server's Preview step also says how
 *   many accounts it will reach, and asks to confirm a critical one to everyone);
 * - the history's "Reached live" and "Dismissed" figures follow "announcement.figures" events.
 */
(function () {
  "use strict";

  var LEVELS = ["info", "warning", "critical"];
  var form = document.getElementById("compose");

  function audienceFields() {
    if (!form) return;
    var checked = form.querySelector('input[name="audience"]:checked');
    var audience = checked ? checked.value : "all";
    Array.prototype.forEach.call(form.querySelectorAll("[data-show-for]"), function (field) {
      field.hidden = field.dataset.showFor !== audience;
    });
  }

  function livePreview() {
    var section = document.getElementById("compose-preview");
    var slot = section && section.querySelector(".compose-preview__banner");
    if (!slot) return;
    var title = form.querySelector("#title").value.trim();
    var body = form.querySelector("#body").value.trim();
    var level = form.querySelector("#level").value;
    if (LEVELS.indexOf(level) < 0) level = "info";
    if (!title) {
      if (!section.dataset.fromServer) section.hidden = true;
      return;
    }
    var box = document.createElement("div");
    box.className = "announcement announcement--" + level;
    var main = document.createElement("div");
    main.className = "announcement__main";
    var text = document.createElement("div");
    text.className = "announcement__text";
    var strong = document.createElement("strong");
    strong.className = "announcement__title";
    strong.textContent = title;
    text.appendChild(strong);
    if (body) {
      text.appendChild(document.createTextNode(" "));
      var span = document.createElement("span");
      span.className = "announcement__body";
      span.textContent = body;
      text.appendChild(span);
    }
    main.appendChild(text);
    box.appendChild(main);
    slot.replaceChildren(box);
    section.hidden = false;
  }

  if (form) {
    var preview = document.getElementById("compose-preview");
    if (preview && !preview.hidden) preview.dataset.fromServer = "1";
    form.addEventListener("change", function (e) {
      if (e.target.name === "audience") audienceFields();
      livePreview();
    });
    form.addEventListener("input", livePreview);
    audienceFields();
  }

  // ---------------------------------------------------------------- live figures

  var history = document.getElementById("announcement-history");

  function showFigures(figures) {
    var row = figures.id != null &&
      history.querySelector('tr[data-announcement-id="' + Number(figures.id) + '"]');
    if (!row) return;
    [["live_reached", "liveReached"], ["dismissed", "dismissed"], ["recipients", "recipients"]]
      .forEach(function (pair) {
        var cell = row.querySelector("[data-" + pair[0].replace("_", "-") + "]");
        var value = figures[pair[0]];
        if (cell && typeof value === "number") {
          cell.dataset[pair[1]] = String(value);
          cell.textContent = String(value);
        }
      });
  }

  /* Pushes are ephemeral: whatever happened while the socket was away (a page load, a
     reconnect) is read once from the server when the admin stream is joined again. */
  function sync() {
    fetch(history.dataset.figuresUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { announcements: [] }; })
      .then(function (body) { (body.announcements || []).forEach(showFigures); })
      .catch(function () {});
  }

  if (history && window.withRealtime) {
    window.withRealtime(function (rt) {
      rt.on("announcement.figures", function (message) { showFigures(message.data || {}); });
      rt.on("subscribed", function (message) { if (message.stream === "role:admin") sync(); });
    });
  }
})();
