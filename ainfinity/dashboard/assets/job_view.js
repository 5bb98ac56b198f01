// One job: header and progress, the validation loss before and after training, the loss
// chart, the events timeline and the log tail, kept current by the job's event stream; the log
// tail follows the run's output (its readable lines: /logs leaves the protocol lines out).

import { api, jobPath, modelLink, request } from "./api.js";
import { LossChart } from "./chart.js";
import { showEvalGain } from "./eval_gain.js";
import {
  TERMINAL,
  el,
  etaOf,
  formatClock,
  formatDuration,
  formatLoss,
  formatNumber,
  formatTime,
  setBadge,
} from "./format.js";

const LOG_TAIL = 200;
// Backoff between follow connections that end early (a restart, a proxy timeout).
const LOG_RETRY_MS = 1000;
const LOG_RETRY_MAX_MS = 15000;

const $ = (id) => document.getElementById(id);

export class JobView {
  constructor(name) {
    this.name = name;
    this.job = null;
    this.events = new Map(); // a key per event, so a replayed event is shown once
    this.chart = new LossChart($("loss-chart"));
    this.logLines = [];
    this.logPartial = "";
    this.following = false;
    this.aborter = new AbortController();
    this.closed = false;
    $("job-name").textContent = name;
    $("job-message").hidden = true;
    $("job-failure").hidden = true;
    $("job-gain").hidden = true;
    $("job-lora").hidden = true;
    $("events").replaceChildren();
    $("log").textContent = "";
    $("job-model-link").hidden = true;
    const cancel = $("cancel-button");
    cancel.hidden = true;
    cancel.disabled = false;
    this.onCancel = () => this.cancel();
    cancel.addEventListener("click", this.onCancel);
  }

  streamPath() {
    return jobPath(this.name) + "/events/stream";
  }

  finished() {
    return this.job !== null && TERMINAL.has(this.job.status);
  }

  close() {
    this.closed = true;
    this.aborter.abort();
    this.chart.dispose();
    $("cancel-button").removeEventListener("click", this.onCancel);
  }

  /** Everything the page shows, read afresh (at open, and after the stream resumes). */
  async load() {
    try {
      const [job, metrics, events] = await Promise.all([
        api(jobPath(this.name)),
        api(jobPath(this.name) + "/metrics"),
        api(jobPath(this.name) + "/events"),
      ]);
      if (this.closed) return;
      this.setJob(job);
      this.addMetrics(metrics.data);
      for (const event of events.data) this.addEvent(event);
    } catch (error) {
      this.say(error.status === 404 ? `No job named ${this.name}.` : error.message, true);
      return;
    }
    this.startLog();
  }

  onMessage({ event, data }) {
    if (data.job !== this.name || this.closed) return;
    if (event === "metric") {
      this.addMetrics([data.metric]);
    } else if (event === "progress" && this.job) {
      this.setJob({ ...this.job, status: data.status, progress: data.progress });
    } else if (event === "status") {
      this.addEvent(data.event);
      if (this.job) this.setJob({ ...this.job, status: data.event.status });
      // The record has more to say at the end (finish time, failure reason).
      if (TERMINAL.has(data.event.status)) this.refreshJob();
    }
  }

  addMetrics(metrics) {
    this.chart.add(...metrics);
    // The starting model's evaluation (step 0) is the "before", long before the job ends: the
    // record says the same once the server has read it.
    const start = metrics.find((metric) => metric.step === 0 && typeof metric.eval_loss === "number");
    if (start && this.job && (this.job.eval_loss_before ?? null) === null) {
      this.setJob({ ...this.job, eval_loss_before: start.eval_loss });
    }
  }

  async refreshJob() {
    try {
      this.setJob(await api(jobPath(this.name)));
    } catch {
      // The next event or reload will tell.
    }
  }

  setJob(job) {
    this.job = job;
    const progress = job.progress || {};
    setBadge($("job-status"), job.status);
    const percent = progress.percent ?? null;
    $("job-progress").value = percent ?? 0;
    $("job-progress").dataset.status = job.status;
    $("job-percent").textContent = percent === null ? "—" : `${percent.toFixed(1)}%`;
    $("stat-step").textContent =
      progress.step === undefined ? "—" : `${progress.step} / ${progress.total_steps ?? "?"}`;
    $("stat-eta").textContent = formatDuration(etaOf(job));
    $("stat-loss").textContent = formatLoss(progress.loss);
    $("stat-eval-loss").textContent = formatLoss(progress.eval_loss);
    $("stat-tps").textContent = formatNumber(progress.tokens_per_second);
    $("stat-model").textContent = job.spec ? job.spec.model : "—";
    $("stat-created").textContent = formatTime(job.created_at);
    $("stat-finished").textContent = formatTime(job.finished_at);
    $("legend-loss").textContent = formatLoss(progress.loss);
    $("legend-eval").textContent = formatLoss(progress.eval_loss);
    this.showGain(job);
    const lora = $("job-lora");
    lora.hidden = !job.spec || job.spec.method !== "lora";
    $("job-lora-targets").textContent = job.lora_target_modules
      ? job.lora_target_modules.join(", ")
      : "the layers chosen when the run loads its model";
    const failure = $("job-failure");
    failure.hidden = !job.failure_reason;
    failure.textContent = job.failure_reason ? `Failed: ${job.failure_reason}` : "";
    // A SUCCEEDED job became a model: its page has the lineage and a chat box.
    const model = $("job-model-link");
    model.hidden = !job.fine_tuned_model;
    if (job.fine_tuned_model) {
      model.href = modelLink(job.fine_tuned_model);
      model.textContent = `Model ${job.fine_tuned_model} →`;
    }
    const terminal = TERMINAL.has(job.status);
    const cancel = $("cancel-button");
    cancel.hidden = terminal;
    cancel.disabled = job.status === "CANCELLING";
  }

  /** With a validation set: the starting model's eval loss, then the trained one's, and the change. */
  showGain(job) {
    if (!job.spec || !job.spec.validation_dataset) return;
    showEvalGain($("job-gain"), {
      before: job.eval_loss_before,
      after: job.eval_loss_after,
      gain: job.eval_gain,
      pending: TERMINAL.has(job.status) ? "" : "… when it succeeds",
    });
  }

  addEvent(event) {
    const key = `${event.time}|${event.type}|${event.status}`;
    if (this.events.has(key)) return;
    const item = el("li", { "data-status": event.status, "data-type": event.type });
    const badge = el("span");
    setBadge(badge, event.status);
    item.append(
      el("time", { datetime: event.time, title: formatTime(event.time) }, formatClock(event.time)),
      badge,
      el("span", { class: "what" }, event.message),
      el("span", { class: "actor" }, event.actor),
    );
    this.events.set(key, { time: event.time, item });
    // Oldest first; live events normally arrive in order, replays may not.
    const later = [...this.events.values()].find((other) => other.time > event.time);
    $("events").insertBefore(item, later ? later.item : null);
  }

  startLog() {
    // load() runs again after the event stream resumes: one follower is enough.
    if (this.following) return;
    this.following = true;
    this.followLog().finally(() => {
      this.following = false;
    });
  }

  /** The last LOG_TAIL lines, then new output as the run writes it, until it ends. */
  async followLog() {
    const path = `${jobPath(this.name)}/logs?tail=${LOG_TAIL}&follow=true`;
    const { signal } = this.aborter;
    let delay = LOG_RETRY_MS;
    for (;;) {
      const started = Date.now();
      let complete = false;
      try {
        const response = await request(path, { accept: "text/plain", signal });
        this.logLines = [];
        this.logPartial = "";
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          this.appendLog(value);
        }
        complete = true;
      } catch {
        // Dropped, or gone: read again below.
      }
      // The server ends a follow when the job ends: only a whole one has the last lines.
      if (this.closed || (complete && this.finished())) return;
      if (Date.now() - started > 10000) delay = LOG_RETRY_MS; // it had been working
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, LOG_RETRY_MAX_MS);
    }
  }

  appendLog(text) {
    const lines = (this.logPartial + text).split("\n");
    this.logPartial = lines.pop();
    this.logLines.push(...lines);
    if (this.logLines.length > LOG_TAIL) this.logLines.splice(0, this.logLines.length - LOG_TAIL);
    if (this.logPending) return;
    this.logPending = true;
    requestAnimationFrame(() => {
      this.logPending = false;
      if (this.closed) return;
      const log = $("log");
      const shown = this.logLines.join("\n") + (this.logPartial ? "\n" + this.logPartial : "");
      log.textContent = shown;
      if ($("follow-log").checked) log.scrollTop = log.scrollHeight;
    });
  }

  async cancel() {
    if (!window.confirm(`Cancel job ${this.name}?`)) return;
    $("cancel-button").disabled = true;
    try {
      const job = await api(jobPath(this.name) + "/cancel", { method: "POST" });
      this.setJob(job);
      this.say(`Cancel requested: the job is ${job.status}.`);
    } catch (error) {
      this.say(error.message, true);
      $("cancel-button").disabled = false;
    }
  }

  say(text, isError = false) {
    const message = $("job-message");
    message.textContent = text;
    message.classList.toggle("error", isError);
    message.hidden = false;
  }
}
