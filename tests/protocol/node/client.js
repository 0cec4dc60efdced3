// An independent client for the protocol tests, built on Node's `ws` package (not our code).
//
//   node client.js URL ORIGIN COOKIE SCRIPT_JSON
//
// SCRIPT_JSON is a list of steps run in order once the socket opens:
//   {"send": {...}}                    send a JSON text message
//   {"expect": "type", "count": n}     wait for n messages of that type (heartbeats skipped)
//   {"ping": "payload"}                send a protocol ping frame and wait for its pong
//   {"binary": "text"}                 send a binary frame
//   {"close": code}                    send a close frame with that code
//   {"wait_close": true}               wait until the server closes
// Every received message, pong and close is printed as one JSON line; exit 0 when all steps ran.
"use strict";

const WebSocket = require("ws");

const [url, origin, cookie, scriptJson] = process.argv.slice(2);
const steps = JSON.parse(scriptJson);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const ws = new WebSocket(url, { origin, headers: { Cookie: cookie }, perMessageDeflate: false });
const inbox = [];
let waiter = null;
let closed = null;

function wake() {
  if (waiter) { const w = waiter; waiter = null; w(); }
}

ws.on("message", (data, isBinary) => {
  const message = isBinary ? { binary: data.toString("hex") } : JSON.parse(data.toString("utf8"));
  if (message.type === "hb") return;
  out({ event: "message", message });
  inbox.push(message);
  wake();
});
ws.on("pong", (data) => {
  const payload = data.toString("utf8");
  out({ event: "pong", payload });
  inbox.push({ pong: payload });
  wake();
});
ws.on("close", (code, reason) => {
  closed = { code, reason: reason.toString("utf8") };
  out({ event: "close", ...closed });
  wake();
});
ws.on("error", (err) => { out({ event: "error", message: String(err && err.message) }); });
ws.on("unexpected-response", (req, res) => {
  out({ event: "refused", status: res.statusCode });
  process.exit(3);
});

function until(predicate) {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (predicate()) return resolve();
      if (closed) return reject(new Error("closed while waiting: " + JSON.stringify(closed)));
      waiter = check;
    };
    check();
  });
}

function take(predicate) {
  const index = inbox.findIndex(predicate);
  return index >= 0 ? inbox.splice(index, 1)[0] : null;
}

async function run() {
  await new Promise((resolve, reject) => { ws.once("open", resolve); ws.once("error", reject); });
  for (const step of steps) {
    if (step.send) ws.send(JSON.stringify(step.send));
    else if (step.binary) ws.send(Buffer.from(step.binary), { binary: true });
    else if (step.ping !== undefined) {
      ws.ping(Buffer.from(step.ping));
      await until(() => inbox.some((m) => m.pong === step.ping));
      take((m) => m.pong === step.ping);
    } else if (step.expect) {
      for (let i = 0; i < (step.count || 1); i++) {
        await until(() => inbox.some((m) => m.type === step.expect));
        take((m) => m.type === step.expect);
      }
    } else if (step.close !== undefined) ws.close(step.close, "bye");
    else if (step.wait_close) await until(() => closed !== null);
  }
  if (!closed) ws.terminate();
}

setTimeout(() => { out({ event: "timeout" }); process.exit(2); }, 15000).unref();
run().then(
  () => process.exit(0),
  (err) => { out({ event: "failed", message: String(err.message) }); process.exit(1); },
);
