// The chat box of a model page: a conversation with the model (or one of its checkpoints),
// each answer streamed into the page as it is generated. The whole conversation goes with
// every request, so the model sees what was said before. In compare mode each prompt goes on
// its own to the base model and to the model, and both answers stream side by side.
// An answer's element carries `data-state` (streaming, done, stopped, error, unavailable) and
// `data-chunks` (pieces received so far).

import { baseModelId } from "./api.js";
import { streamChat } from "./chat_stream.js";
import { el } from "./format.js";

const $ = (id) => document.getElementById(id);
const CHECKPOINT = /:ckpt-(\d+)$/;

/** How a served id reads in the picker: the final model, or the step a checkpoint saved. */
export function checkpointLabel(id, finalId) {
  if (id === finalId) return "final";
  const match = id.match(CHECKPOINT);
  return match ? `step ${match[1]}` : id;
}

/** A turn of the conversation (`li`), or one side of a comparison (`div`). */
function turnElement(tag, role, who, model, text = "") {
  const item = el(tag, { class: `turn ${role}`, "data-role": role });
  if (model) item.dataset.model = model;
  item.append(el("div", { class: "who", title: model || "" }, who), el("div", { class: "bubble" }, text));
  return item;
}

/**
 * Stream `model`'s answer to `messages` into `turn` (whose state and chunk count follow it).
 * Resolves to the answer; a failure rejects with the error, its `partial` text attached.
 */
async function streamInto(turn, { model, messages, options, signal, onDelta }) {
  const bubble = turn.querySelector(".bubble");
  turn.dataset.state = "streaming";
  turn.dataset.chunks = "0";
  let answer = "";
  try {
    const { finishReason } = await streamChat({
      model,
      messages,
      options,
      signal,
      onDelta: (piece) => {
        answer += piece;
        turn.dataset.chunks = String(Number(turn.dataset.chunks) + 1);
        bubble.textContent = answer;
        onDelta();
      },
    });
    turn.dataset.state = "done";
    if (finishReason === "length") turn.append(el("p", { class: "note" }, "Stopped at the token limit."));
    // Nothing, or only spaces and newlines: say so rather than show an empty bubble.
    if (!answer.trim()) bubble.classList.add(answer ? "blank-answer" : "empty-answer");
    return answer;
  } catch (error) {
    error.partial = answer;
    throw error;
  }
}

export class ChatBox {
  constructor(model) {
    this.model = model;
    // The base model compare mode asks; none for a base model itself.
    this.baseId = model.job ? baseModelId(model.base_model) : null;
    this.comparing = false;
    this.messages = []; // sent with the next request: every turn and answer so far
    this.aborter = null; // the answer (or answers) being streamed, if any
    this.closed = false;
    // The page's elements outlive this view: its listeners go when it closes.
    this.listening = new AbortController();
    const picker = $("chat-model");
    picker.replaceChildren(
      ...[model.id, ...model.checkpoints].map((id) => el("option", { value: id }, checkpointLabel(id, model.id))),
    );
    $("chat-checkpoint-label").hidden = model.checkpoints.length === 0;
    $("chat-compare-label").hidden = !this.baseId;
    $("chat-compare").checked = false;
    $("compare-base").textContent = this.baseId || "—";
    $("chat-log").replaceChildren();
    this.showHint();
    $("chat-input").value = "";
    this.setBusy(false);
    const on = (id, type, handler) => $(id).addEventListener(type, handler, { signal: this.listening.signal });
    on("chat-form", "submit", (event) => {
      event.preventDefault();
      this.send();
    });
    on("chat-input", "keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("chat-form").requestSubmit();
      }
    });
    on("chat-stop", "click", () => this.aborter && this.aborter.abort());
    on("chat-clear", "click", () => this.clear());
    on("chat-compare", "change", () => {
      // A conversation and a comparison do not mix: either starts afresh.
      this.comparing = $("chat-compare").checked;
      this.clear();
    });
  }

  close() {
    this.closed = true;
    this.listening.abort();
    if (this.aborter) this.aborter.abort();
  }

  clear() {
    if (this.aborter) this.aborter.abort();
    this.messages = [];
    $("chat-log").replaceChildren();
    this.showHint();
    $("chat-input").focus();
  }

  showHint(shown = true) {
    $("chat-empty").hidden = !shown || this.comparing;
    $("compare-empty").hidden = !shown || !this.comparing;
  }

  /** Request fields from the form; an empty field leaves the server's default. */
  options() {
    const options = {};
    const maxTokens = $("chat-max-tokens").value.trim();
    const temperature = $("chat-temperature").value.trim();
    if (maxTokens) options.max_tokens = Number(maxTokens);
    if (temperature) options.temperature = Number(temperature);
    return options;
  }

  setBusy(busy) {
    $("chat-send").disabled = busy;
    $("chat-stop").hidden = !busy;
    $("chat-model").disabled = busy;
    $("chat-compare").disabled = busy;
  }

  /** Which of the model's ids answered, when there is a choice. */
  who(model) {
    return this.model.checkpoints.length ? checkpointLabel(model, this.model.id) : model;
  }

  append(item) {
    $("chat-log").append(item);
    this.showHint(false);
    return item;
  }

  scroll() {
    const log = $("chat-log");
    log.scrollTop = log.scrollHeight;
  }

  async send() {
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text || this.aborter) return;
    input.value = "";
    const aborter = new AbortController();
    this.aborter = aborter;
    this.setBusy(true);
    try {
      if (this.comparing) await this.compare(text, aborter.signal);
      else await this.chat(text, aborter.signal);
    } finally {
      if (this.aborter === aborter) {
        this.aborter = null;
        if (!this.closed) this.setBusy(false);
      }
    }
    this.scroll();
  }

  async chat(text, signal) {
    const model = $("chat-model").value;
    this.messages.push({ role: "user", content: text });
    this.append(turnElement("li", "user", "You", null, text));
    const turn = this.append(turnElement("li", "assistant", this.who(model), model));
    this.scroll();
    const options = { model, messages: [...this.messages], options: this.options(), signal };
    try {
      const answer = await streamInto(turn, { ...options, onDelta: () => this.scroll() });
      this.messages.push({ role: "assistant", content: answer });
    } catch (error) {
      // Closed, or cleared by "New chat": this turn belongs to no conversation any more.
      if (this.closed || !turn.isConnected) return;
      if (signal.aborted) {
        // Stopped by the user: what arrived is the answer the conversation goes on from.
        turn.dataset.state = "stopped";
        turn.append(el("p", { class: "note" }, "Stopped."));
        this.messages.push({ role: "assistant", content: error.partial });
      } else {
        // The turn failed: drop it from the conversation and give its text back to retry.
        turn.dataset.state = "error";
        turn.append(el("p", { class: "error" }, `${error.code || "error"}: ${error.message}`));
        this.messages.pop();
        if (!$("chat-input").value) $("chat-input").value = text;
      }
    }
  }

  /** One prompt, on its own, to the base model and to the picked model at once. */
  async compare(text, signal) {
    const model = $("chat-model").value;
    const messages = [{ role: "user", content: text }];
    this.append(turnElement("li", "user", "You", null, text));
    const row = el("li", { class: "compare", "data-role": "compare" });
    const base = turnElement("div", "assistant", `base · ${this.baseId}`, this.baseId);
    const label = `fine-tuned · ${checkpointLabel(model, this.model.id)}`;
    const tuned = turnElement("div", "assistant", label, model);
    base.dataset.side = "base";
    tuned.dataset.side = "tuned";
    row.append(base, tuned);
    this.append(row);
    this.scroll();
    const options = this.options();
    const outcomes = await Promise.allSettled(
      [base, tuned].map((turn) =>
        streamInto(turn, { model: turn.dataset.model, messages, options, signal, onDelta: () => this.scroll() }),
      ),
    );
    if (this.closed || !row.isConnected) return;
    outcomes.forEach((outcome, index) => {
      if (outcome.status === "rejected") this.failed([base, tuned][index], outcome.reason, signal);
    });
    // Neither answered: the prompt comes back to send again.
    if (!signal.aborted && outcomes.every((outcome) => outcome.status === "rejected")) {
      if (!$("chat-input").value) $("chat-input").value = text;
    }
  }

  failed(turn, error, signal) {
    if (signal.aborted) {
      turn.dataset.state = "stopped";
      turn.append(el("p", { class: "note" }, "Stopped."));
    } else if (turn.dataset.side === "base" && error.status === 404) {
      // A base model this server does not serve (a hub id, a directory since removed): the
      // comparison goes on with one side.
      turn.dataset.state = "unavailable";
      turn.append(
        el("p", { class: "error" }, `The base model ${this.baseId} is not served here: ${error.message}`),
      );
    } else {
      turn.dataset.state = "error";
      turn.append(el("p", { class: "error" }, `${error.code || "error"}: ${error.message}`));
    }
  }
}
