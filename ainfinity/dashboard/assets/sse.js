// Server-sent events over fetch(): EventSource cannot send the X-API-Key header, so we
// read the stream ourselves and parse it as the HTML spec says, resuming with
// Last-Event-ID after a drop.

import { API_BASE, UNAUTHORIZED_EVENT, authHeaders } from "./api.js";

/** Incremental text/event-stream parser; `push` text chunks, get whole messages back. */
export class SseParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = "";
    this.reset();
    this.idBuffer = "";
    this.lastEventId = "";
    this.retry = null;
  }

  reset() {
    this.eventType = "";
    this.data = [];
  }

  push(chunk) {
    this.buffer += chunk;
    // A trailing CR may be the first half of CRLF: keep it until the next chunk decides.
    let end = this.buffer.length;
    if (this.buffer.endsWith("\r")) end -= 1;
    let start = 0;
    const pattern = /\r\n|\r|\n/g;
    pattern.lastIndex = 0;
    let match;
    while ((match = pattern.exec(this.buffer)) !== null && match.index < end) {
      this.line(this.buffer.slice(start, match.index));
      start = match.index + match[0].length;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(text) {
    if (text === "") {
      this.dispatch();
      return;
    }
    if (text.startsWith(":")) return; // a comment: keep-alive pings
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.eventType = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.idBuffer = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }

  dispatch() {
    // A message with an id but no data still moves the resume point (a server may
    // announce where a stream starts that way).
    this.lastEventId = this.idBuffer;
    if (this.data.length) {
      this.onMessage({
        id: this.lastEventId,
        event: this.eventType || "message",
        data: this.data.join("\n"),
      });
    }
    this.reset();
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Follow the stream at `path` (under /api/v1) until `close()`.
 * `onMessage({id, event, data})` gets each message with `data` parsed from JSON;
 * `onState(state, {resumed})` hears "connecting", "live", "reconnecting", "unavailable",
 * "ended". After the server ends a stream, it is resumed only while `resume()` says so.
 */
export function followStream(path, { onMessage, onState = () => {}, resume = () => true }) {
  const controller = new AbortController();
  const { signal } = controller;
  let lastEventId = "";
  let delay = 1000;

  async function readOnce(resumed) {
    const headers = { Accept: "text/event-stream", ...authHeaders() };
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    const response = await fetch(API_BASE + path, { headers, cache: "no-store", signal });
    if (response.status === 401) {
      window.dispatchEvent(new CustomEvent(UNAUTHORIZED_EVENT));
      return "stop";
    }
    if (!response.ok || !response.body) return response.status === 404 ? "missing" : "retry";
    onState("live", { resumed });
    delay = 1000;
    const parser = new SseParser((message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return; // not one of ours; the contract is JSON data
      }
      onMessage({ id: message.id, event: message.event, data });
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
      lastEventId = parser.lastEventId || lastEventId;
    }
    if (parser.retry !== null) delay = parser.retry;
    return resume() ? "retry" : "ended";
  }

  (async () => {
    let resumed = false;
    onState("connecting", { resumed });
    while (!signal.aborted) {
      let outcome;
      try {
        outcome = await readOnce(resumed);
      } catch {
        outcome = "retry"; // network drop or abort
      }
      if (signal.aborted || outcome === "stop") return;
      if (outcome === "ended") {
        onState("ended", { resumed });
        return;
      }
      onState(outcome === "missing" ? "unavailable" : "reconnecting", { resumed });
      // A server without the stream route is not coming back soon: back off further.
      await sleep(outcome === "missing" ? 30000 : delay, signal);
      delay = Math.min(delay * 2, 15000);
      resumed = true;
    }
  })();

  return { close: () => controller.abort() };
}
