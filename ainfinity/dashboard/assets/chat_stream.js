// A streamed chat answer from POST /v1/chat/completions: `data: {chunk}` lines ending with
// `data: [DONE]`, read as they arrive. A failure after the answer began comes as a last
// `data: {"error": {...}}` line (the status was 200 already); a stream cut short without
// `[DONE]` is an error too, never a whole answer.

import { ApiError, OPENAI_BASE, UNAUTHORIZED_EVENT, authHeaders, errorOf } from "./api.js";
import { SseParser } from "./sse.js";

const DONE = "[DONE]";

/**
 * Ask `model` to answer `messages`; `onDelta(text)` gets each piece as it comes.
 * Resolves to `{finishReason}`; throws an `ApiError` for an error answer or an error chunk.
 */
export async function streamChat({ model, messages, options = {}, onDelta, signal }) {
  const response = await fetch(OPENAI_BASE + "/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...authHeaders() },
    body: JSON.stringify({ model, messages, ...options, stream: true }),
    cache: "no-store",
    signal,
  });
  if (!response.ok) {
    if (response.status === 401) window.dispatchEvent(new CustomEvent(UNAUTHORIZED_EVENT));
    throw await errorOf(response);
  }
  return readChatStream(response.body, onDelta);
}

/** Read a chat stream's body (a ReadableStream of bytes) to its end. */
export async function readChatStream(body, onDelta) {
  let done = false;
  let finishReason = null;
  let failure = null;
  const parser = new SseParser((message) => {
    if (done || failure) return;
    if (message.data === DONE) {
      done = true;
      return;
    }
    let chunk;
    try {
      chunk = JSON.parse(message.data);
    } catch {
      failure = new ApiError(200, "invalid_chunk", `Not a JSON chunk: ${message.data.slice(0, 200)}`);
      return;
    }
    if (chunk.error) {
      const { code, type, message: text } = chunk.error;
      failure = new ApiError(200, code || type || "stream_failed", text || "The answer failed.");
      return;
    }
    for (const choice of chunk.choices || []) {
      const text = choice.delta && choice.delta.content;
      if (text) onDelta(text);
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
  });
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done: ended } = await reader.read();
    if (ended) break;
    parser.push(value);
    if (failure) {
      await reader.cancel();
      break;
    }
  }
  if (failure) throw failure;
  if (!done) throw new ApiError(200, "incomplete_stream", "The answer stopped before the server finished it.");
  return { finishReason };
}
