// The job list: one page from GET /jobs, then kept current by the all-jobs event stream.

import { api, jobLink, jobPath } from "./api.js";
import { el, etaOf, formatDuration, formatLoss, formatTime, setBadge } from "./format.js";

const PAGE = 50;

export class JobsView {
  constructor() {
    this.body = document.getElementById("jobs-body");
    this.empty = document.getElementById("jobs-empty");
    this.more = document.getElementById("jobs-more");
    this.error = document.getElementById("list-error");
    this.filter = document.getElementById("status-filter");
    this.jobs = new Map(); // name -> job
    this.rows = new Map(); // name -> <tr>
    this.cursor = null;
    this.more.addEventListener("click", () => this.load(this.cursor));
    this.filter.addEventListener("change", () => this.load(null));
  }

  async load(after) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (after) query.set("after", after);
    if (this.filter.value) query.set("status", this.filter.value);
    try {
      const page = await api("/jobs?" + query);
      if (!after) {
        this.jobs.clear();
        this.rows.clear();
        this.body.replaceChildren();
      }
      for (const job of page.data) this.upsert(job);
      this.cursor = page.next_cursor;
      this.more.hidden = !page.has_more;
      this.error.hidden = true;
    } catch (error) {
      this.showError(error);
    }
    this.empty.hidden = this.jobs.size > 0;
  }

  finished() {
    return false;
  }

  showError(error) {
    this.error.textContent = `Could not load jobs: ${error.message}`;
    this.error.hidden = false;
  }

  /** A live message from /events/stream. */
  async onMessage({ event, data }) {
    const job = this.jobs.get(data.job);
    if (event === "progress" && job) {
      job.status = data.status;
      job.progress = data.progress;
      this.upsert(job);
    } else if (event === "status") {
      if (job) {
        job.status = data.event.status;
        this.upsert(job);
      } else if (data.event.type === "created") {
        await this.fetchNew(data.job);
      }
    }
  }

  async fetchNew(name) {
    try {
      const job = await api(jobPath(name));
      if (!this.filter.value || job.status === this.filter.value) this.upsert(job, true);
    } catch {
      // Deleted again already, or not ours to see: nothing to show.
    }
  }

  upsert(job, newest = false) {
    this.jobs.set(job.name, job);
    let row = this.rows.get(job.name);
    if (!row) {
      row = this.makeRow(job.name);
      this.rows.set(job.name, row);
      if (newest) this.body.prepend(row);
      else this.body.append(row);
    }
    this.fill(row, job);
    this.empty.hidden = true;
  }

  makeRow(name) {
    const row = el("tr", { "data-job": name });
    const link = el("a", { href: jobLink(name) }, name);
    const nameCell = el("td", { class: "name" });
    nameCell.append(link);
    const progressCell = el("td", { class: "progress-col" });
    progressCell.append(el("progress", { max: "100", value: "0" }), el("span", { class: "percent" }));
    row.append(
      nameCell,
      el("td", { class: "status" }, ""),
      progressCell,
      el("td", { class: "eta" }),
      el("td", { class: "loss num" }),
      el("td", { class: "created" }),
    );
    row.querySelector(".status").append(el("span"));
    return row;
  }

  fill(row, job) {
    row.dataset.status = job.status;
    setBadge(row.querySelector(".status span"), job.status);
    const percent = job.progress && job.progress.percent !== null ? job.progress.percent : null;
    const bar = row.querySelector("progress");
    bar.value = percent ?? 0;
    bar.dataset.status = job.status;
    row.querySelector(".percent").textContent = percent === null ? "—" : `${percent.toFixed(0)}%`;
    row.querySelector(".eta").textContent = formatDuration(etaOf(job));
    row.querySelector(".loss").textContent = formatLoss(job.progress && job.progress.loss);
    row.querySelector(".created").textContent = formatTime(job.created_at);
  }
}
