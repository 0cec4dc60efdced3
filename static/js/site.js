/*
 * Site-wide page helpers, no build step.
 *
 * Server-rendered times are UTC; show every <time datetime> in the reader's own time zone, the
 * same way times added live by the page scripts are shown.
 */
(function () {
  "use strict";

  function parse(value) {
    // A datetime without an offset comes from the server's UTC clock.
    var iso = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : value + "Z";
    var date = new Date(iso);
    return isNaN(date.getTime()) ? null : date;
  }

  function localize(root) {
    var nodes = (root || document).querySelectorAll("time[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      if (node.dataset.localized) continue;
      var date = parse(node.getAttribute("datetime"));
      if (!date) continue;
      node.dataset.localized = "1";
      node.title = date.toLocaleString();
      node.textContent = node.classList.contains("chat-msg__time")
        ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
        : date.toLocaleString([], { day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit" });
    }
  }

  window.localizeTimes = localize;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { localize(); });
  } else {
    localize();
  }
})();
