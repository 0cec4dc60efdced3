// Runs flask_tidings/static/realtime.js in Node with a stand-in browser (no server, no DOM) and
// prints, as JSON, the reconnect delays it chose in the scenario named on the command line.
"use strict";
const fs = require("fs");
const path = require("path");
const vm = require("vm");

const source = fs.readFileSync(
  path.join(__dirname, "..", "..", "..", "flask_tidings", "static", "realtime.js"), "utf8");

function browser(cursors = "{}") {
  const timers = [];
  const sockets = [];
  class FakeWebSocket {
    constructor(url) { this.url = url; this.readyState = 0; this.sent = []; sockets.push(this); }
    send(data) { this.sent.push(JSON.parse(data)); }
    close() { this.readyState = 3; }
  }
  const listeners = {};
  const context = {
    console,
    JSON,
    Math,
    Object,
    Promise,
    parseFloat,
    navigator: { onLine: true },
    location: { protocol: "http:", host: "tidings.test" },
    WebSocket: FakeWebSocket,
    setTimeout(fn, delay) { timers.push({ fn, delay }); return timers.length; },
    clearTimeout() {},
    // The server is down: the refusal check cannot reach it either.
    fetch() { return Promise.reject(new Error("connection refused")); },
    document: {
      readyState: "complete",
      visibilityState: "visible",
      body: { dataset: { realtimeUrl: "/ws", realtimeCheck: "/ws/check", realtimeCursors: cursors } },
      getElementById() { return null; },
      addEventListener(type, fn) { (listeners[type] = listeners[type] || []).push(fn); },
    },
  };
  context.window = context;
  context.addEventListener = context.document.addEventListener;
  vm.createContext(context);
  vm.runInContext(source, context);
  return { context, timers, sockets };
}

function welcome(ws, streams = []) {
  ws.readyState = 1;
  ws.onopen();
  ws.onmessage({ data: JSON.stringify({ type: "welcome", heartbeat: 25, streams }) });
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

async function main(scenario) {
  const { timers, sockets } = browser();
  const reconnectDelays = () => timers.filter((t) => t.delay !== 25 * 2500).map((t) => t.delay);
  welcome(sockets[0]);
  if (scenario === "told") {
    sockets[0].onclose({ code: 1001, reason: "restart; retry in 1.7s" });
  } else if (scenario === "untold") {
    sockets[0].onclose({ code: 1001, reason: "going away" });
  } else if (scenario === "server-still-down") {
    sockets[0].onclose({ code: 1001, reason: "restart; retry in 0.4s" });
    // Every later attempt fails to open: the new server is not up yet.
    for (let i = 0; i < 12; i++) {
      const pending = timers.filter((t) => t.delay !== 25 * 2500);
      pending[pending.length - 1].fn();
      const ws = sockets[sockets.length - 1];
      ws.onclose({ code: 1006, reason: "" });
      await flush();
    }
  }
  process.stdout.write(JSON.stringify({ delays: reconnectDelays() }));
}

module.exports = { browser, welcome };

if (require.main === module) main(process.argv[2]);
