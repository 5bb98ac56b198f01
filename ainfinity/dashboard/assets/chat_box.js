// The chat box of a model page: a conversation with the model (or one of its checkpoints),
// each answer streamed into the page as it is generated. The whole conversation goes with
// every request, so the model sees what was said before. An answer's element carries
// `data-state` (streaming, done, stopped, error) and `data-chunks` (pieces received so far).

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

export class ChatBox {
  constructor(model) {
    this.model = model;
    this.messages = []; // sent with the next request: every turn and answer so far
    this.aborter = null; // the answer being streamed, if any
    this.closed = false;
    // The page's elements outlive this view: its listeners go when it closes.
    this.listening = new AbortController();
    const picker = $("chat-model");
    picker.replaceChildren(
      ...[model.id, ...model.checkpoints].map((id) => el("option", { value: id }, checkpointLabel(id, model.id))),
    );
    $("chat-checkpoint-label").hidden = model.checkpoints.length === 0;
    $("chat-log").replaceChildren();
    $("chat-empty").hidden = false;
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
    $("chat-empty").hidden = false;
    $("chat-input").focus();
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
  }

  addTurn(role, text, model = null) {
    // Which of the model's ids answered, when there is a choice.
    let who = "You";
    if (role !== "user") who = this.model.checkpoints.length ? checkpointLabel(model, this.model.id) : model;
    const item = el("li", { class: `turn ${role}`, "data-role": role });
    if (model) item.dataset.model = model;
    item.append(el("div", { class: "who", title: model || "" }, who), el("div", { class: "bubble" }, text));
    $("chat-log").append(item);
    $("chat-empty").hidden = true;
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
    const model = $("chat-model").value;
    this.messages.push({ role: "user", content: text });
    this.addTurn("user", text);
    const turn = this.addTurn("assistant", "", model);
    const bubble = turn.querySelector(".bubble");
    turn.dataset.state = "streaming";
    turn.dataset.chunks = "0";
    this.scroll();
    const aborter = new AbortController();
    this.aborter = aborter;
    this.setBusy(true);
    let answer = "";
    try {
      const { finishReason } = await streamChat({
        model,
        messages: [...this.messages],
        options: this.options(),
        signal: aborter.signal,
        onDelta: (piece) => {
          answer += piece;
          turn.dataset.chunks = String(Number(turn.dataset.chunks) + 1);
          bubble.textContent = answer;
          this.scroll();
        },
      });
      turn.dataset.state = "done";
      if (finishReason === "length") turn.append(el("p", { class: "note" }, "Stopped at the token limit."));
      this.messages.push({ role: "assistant", content: answer });
    } catch (error) {
      // Closed, or cleared by "New chat": this turn belongs to no conversation any more.
      if (this.closed || !turn.isConnected) return;
      if (aborter.signal.aborted) {
        // Stopped by the user: what arrived is the answer the conversation goes on from.
        turn.dataset.state = "stopped";
        turn.append(el("p", { class: "note" }, "Stopped."));
        this.messages.push({ role: "assistant", content: answer });
      } else {
        // The turn failed: drop it from the conversation and give its text back to retry.
        turn.dataset.state = "error";
        turn.append(el("p", { class: "error" }, `${error.code || "error"}: ${error.message}`));
        this.messages.pop();
        if (!input.value) input.value = text;
      }
    } finally {
      if (this.aborter === aborter) {
        this.aborter = null;
        if (!this.closed) this.setBusy(false);
      }
    }
    if (!answer && turn.dataset.state === "done") bubble.classList.add("empty-answer");
    this.scroll();
  }
}
