// The live connection: socket, subscribe + resync on every (re)connect, connection indicator,
// broker banner. Pages call startLive({payload, onSnapshot, on: {event: handler}}).
import { io } from "../vendor/socket.io.esm.min.js";
import { fmtTime, show, url } from "./dom.js";

const RECOVERED_NOTICE_SECONDS = 60;

const conn = document.getElementById("conn-status");
const banner = document.getElementById("broker-banner");
let bannerTimer = null;
let socketState = "connecting";
let brokerDown = false; // the socket can be live while the dashboard cannot reach the broker

function setConnection(state) {
  socketState = state;
  paintConnection();
}

// The badge says what is wrong: the socket first (nothing arrives at all), then the broker (the socket
// is live but no event can arrive). <html data-broker="down"> lets a page's text say so too.
function paintConnection() {
  document.documentElement.dataset.broker = brokerDown ? "down" : "up";
  if (!conn) return;
  const state = socketState === "live" && brokerDown ? "broker-down" : socketState;
  conn.dataset.state = state;
  conn.textContent = { connecting: "connecting…", live: "live", offline: "reconnecting…", "broker-down": "broker unreachable" }[state];
  conn.title = {
    live: "Receiving live updates",
    "broker-down": "Connected to the dashboard, but the dashboard cannot reach the broker: no events arrive",
  }[state] || "Not connected to the dashboard server";
}

function setBanner(kind, message, detail) {
  if (!banner) return;
  if (!kind) {
    show(banner, false);
    delete banner.dataset.kind;
    return;
  }
  banner.dataset.kind = kind;
  banner.replaceChildren(document.createTextNode(message));
  if (detail) {
    const small = document.createElement("span");
    small.className = "banner-detail";
    small.textContent = detail;
    banner.append(" ", small);
  }
  show(banner, true);
}

/** Render STATUS ({broker, events}) into the broker banner. Exported for pages without a socket view. */
export function renderStatus(status) {
  const broker = status && status.broker;
  if (!broker) return;
  clearTimeout(bannerTimer);
  brokerDown = !broker.connected && broker.error !== "ingest disabled"; // as the banner below
  paintConnection();
  if (!broker.connected) {
    if (broker.error === "ingest disabled") {
      setBanner("disabled", "Event ingest is disabled: this dashboard is not listening to a broker.");
      return;
    }
    const since = typeof broker.since === "number" ? ` since ${fmtTime(broker.since)}` : "";
    const detail = [broker.url, broker.error].filter(Boolean).join(": ");
    setBanner("down", `Broker unreachable${since} — events are being missed; reconnecting…`, detail ? `(${detail})` : "");
    return;
  }
  const outage = Array.isArray(broker.last_outage) ? broker.last_outage : null;
  const [lost, back] = outage || [];
  const age = typeof back === "number" && back > 0 ? Date.now() / 1000 - back : Infinity;
  if (age < RECOVERED_NOTICE_SECONDS) {
    setBanner("recovered",
      `Reconnected at ${fmtTime(back)}; events between ${fmtTime(lost)} and ${fmtTime(back)} may have been missed.`);
    bannerTimer = setTimeout(() => setBanner(null), Math.max(0, RECOVERED_NOTICE_SECONDS - Math.max(0, age)) * 1000);
    return;
  }
  setBanner(null);
}

async function fetchStatus() {
  try {
    const response = await fetch(url("healthz"), { headers: { Accept: "application/json" } });
    const body = await response.json();
    renderStatus({ broker: body.broker, events: body.events });
  } catch {
    // the socket's own indicator already says we are offline
  }
}

/**
 * Connect and subscribe. On every connect (first and after a reconnect) the page gets a fresh
 * snapshot through onSnapshot and must re-render from it. Live events are only delivered once
 * the snapshot of the current connection has been applied (the snapshot supersedes earlier ones).
 * Without a payload (pages with no live data) only the indicator and the banner are live.
 */
export function startLive({ payload = null, onSnapshot = () => {}, on = {}, onError = null } = {}) {
  const socket = io({ path: url("socket.io"), reconnection: true, reconnectionDelay: 500, reconnectionDelayMax: 5000 });
  let ready = false;
  let snapTick = -1; // the last push tick the snapshot includes
  let early = []; // diffs that arrived between joining the room and the snapshot
  setConnection("connecting");

  // A diff carries its tick: one not newer than the snapshot is already in it (dropping it keeps an
  // older row from replacing a newer one); a newer one that beat the snapshot here is applied after it.
  const deliver = (handler, data) => {
    if (data && typeof data.tick === "number" && data.tick <= snapTick) return;
    handler(data);
  };

  function subscribe() {
    ready = false;
    early = [];
    socket.emit("subscribe", payload, (snapshot) => {
      if (!snapshot || snapshot.error) {
        console.error("subscribe failed:", snapshot && snapshot.error);
        if (onError) onError(snapshot && snapshot.error);
        return;
      }
      if (snapshot.status) renderStatus(snapshot.status);
      snapTick = typeof snapshot.tick === "number" ? snapshot.tick : -1;
      try {
        onSnapshot(snapshot);
      } finally {
        ready = true; // a page error in one snapshot must not silence every later update
        const pending = early;
        early = [];
        for (const [handler, data] of pending) deliver(handler, data);
      }
    });
  }

  socket.on("connect", () => {
    setConnection("live");
    ready = false;
    if (!payload) {
      fetchStatus();
      return;
    }
    subscribe();
  });
  // The server skipped updates while this tab could not keep up (a throttled or frozen tab): start over
  // from a fresh snapshot rather than apply diffs on top of a gap.
  socket.on("resync", () => {
    if (payload) subscribe();
  });
  socket.on("disconnect", (reason) => {
    ready = false;
    setConnection("offline");
    if (reason === "io server disconnect") socket.connect(); // the server hung up: not retried by itself
  });
  socket.on("connect_error", () => setConnection("offline"));
  socket.on("status", renderStatus);
  for (const [event, handler] of Object.entries(on)) {
    socket.on(event, (data) => {
      if (ready) deliver(handler, data);
      else if (early.length < 1000) early.push([handler, data]);
    });
  }
  return socket;
}

/** The <main id="page"> element and its data-* config. */
export const page = document.getElementById("page");
