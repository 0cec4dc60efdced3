/*
 * Site-wide page helpers, no build step.
 *
 * - Server-rendered times are UTC; show every <time datetime> in the reader's own time zone, the
 *   same way times added live by the page scripts are shown.
 * - The live connection's state, beyond the header's pill: a calm notice under the header while
 *   it is down for more than a moment, and a polite announcement for screen readers when it goes
 *   and when it comes back.
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

  // ------------------------------------------------------------------ connection state

  //: A reconnect shorter than this (a worker restart) shows nothing: no flicker, no noise.
  var GRACE_MS = 2000;

  var NOTICES = {
    reconnecting: "Reconnecting… New messages will appear as soon as the connection is back.",
    offline: "You are offline. New messages will appear when you are back online.",
    signedout: "You are signed out in this tab. Log in again to get live updates.",
    refused: "Live updates are unavailable right now. The page still works; try reloading later.",
  };
  var SPOKEN = {
    reconnecting: "Connection lost. Reconnecting.",
    offline: "You are offline.",
    signedout: "Signed out. Live updates stopped.",
    refused: "Live updates unavailable.",
  };

  function watchConnection(rt) {
    var notice = document.getElementById("connection-notice");
    var text = notice && notice.querySelector(".connection-notice__text");
    var spoken = document.getElementById("connection-announcer");
    var timer = null;
    var down = false;      // the notice is up / the loss was announced

    function say(words) {
      if (!spoken) return;
      spoken.textContent = "";
      setTimeout(function () { spoken.textContent = words; }, 50);
    }

    function show(state) {
      down = true;
      if (notice && text) {
        notice.dataset.state = state;
        text.textContent = NOTICES[state];
        notice.hidden = false;
      }
      say(SPOKEN[state]);
    }

    rt.on("status", function (status) {
      var state = status.state;
      if (state === "live") {
        clearTimeout(timer);
        timer = null;
        if (down) {
          down = false;
          if (notice) notice.hidden = true;
          say("Connected again. Live updates resumed.");
        }
        return;
      }
      if (!NOTICES[state]) return;        // "connecting": the first connection of the page
      if (state === "reconnecting" && !down) {
        // Every retry says "reconnecting" again: the grace period runs from the first one.
        if (!timer) timer = setTimeout(function () { timer = null; show("reconnecting"); }, GRACE_MS);
        return;
      }
      clearTimeout(timer);
      timer = null;
      if (!down || notice.dataset.state !== state) show(state);
    });
  }

  function start() {
    localize();
    if (window.withRealtime && document.getElementById("connection-notice")) {
      window.withRealtime(watchConnection);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
