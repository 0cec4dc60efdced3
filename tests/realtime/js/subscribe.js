// Runs flask_tidings/static/realtime.js in Node (tests/realtime/js/reconnect.js's stand-in
// browser) through one (re)connect and prints, as JSON, every message the client sent and
// which retries it scheduled.
"use strict";
const { browser, welcome } = require("./reconnect.js");

function answer(ws, message) {
  ws.onmessage({ data: JSON.stringify(message) });
}

const { timers, sockets } = browser(JSON.stringify({ "user:1": 5 }));
const ws = sockets[0];
welcome(ws, ["user:1", "broadcast", "role:user"]);
const first = ws.sent[0];
const ref = first.ref;
if (process.argv[2] === "old-server") {
  // A server from before the several-streams form refuses it as a whole.
  const message = '"stream" must be a stream name.';
  answer(ws, { type: "error", code: "bad_message", ref, message });
  process.stdout.write(JSON.stringify({ sent: ws.sent }));
  process.exit(0);
}
answer(ws, { type: "subscribed", stream: "user:1", head: 7, after: 5, ref });
answer(ws, { type: "subscribed", stream: "broadcast", head: 2, after: 2, ref });
// The server could not read one stream just then: only that one is tried again.
answer(ws, { type: "error", code: "unavailable", stream: "role:user", ref, message: "later" });
const retries = timers.filter((t) => t.delay !== 25 * 2500);
retries.forEach((t) => t.fn());
process.stdout.write(JSON.stringify({ sent: ws.sent, retries: retries.length }));
