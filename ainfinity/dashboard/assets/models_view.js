// The model list: pages from GET /models (newest first, base models last).

import { api, jobLink, modelLink } from "./api.js";
import { el, formatBytes, formatLoss, formatTime } from "./format.js";

const PAGE = 50;

export class ModelsView {
  constructor() {
    this.body = document.getElementById("models-body");
    this.empty = document.getElementById("models-empty");
    this.more = document.getElementById("models-more");
    this.error = document.getElementById("models-error");
    this.cursor = null;
    this.more.addEventListener("click", () => this.load(this.cursor));
  }

  async load(after) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (after) query.set("after", after);
    try {
      const page = await api("/models?" + query);
      if (!after) this.body.replaceChildren();
      for (const model of page.data) this.body.append(this.row(model));
      this.cursor = page.next_cursor;
      this.more.hidden = !page.has_more;
      this.error.hidden = true;
    } catch (error) {
      this.error.textContent = `Could not load models: ${error.message}`;
      this.error.hidden = false;
    }
    this.empty.hidden = this.body.children.length > 0;
  }

  row(model) {
    const row = el("tr", { "data-model": model.id });
    const name = el("td", { class: "name" });
    name.append(el("a", { href: modelLink(model.id) }, model.id));
    const job = el("td", { class: "job" });
    if (model.job) job.append(el("a", { href: jobLink(model.job) }, model.job));
    else job.textContent = "—";
    const method = el("td", { class: "method" });
    method.append(el("span", { class: "badge", "data-method": model.method || "base" }, model.method || "base"));
    const metrics = model.metrics || {};
    row.append(
      name,
      method,
      el("td", { class: "base" }, model.base_model || "—"),
      job,
      el("td", { class: "train-loss num" }, formatLoss(metrics.train_loss)),
      el("td", { class: "eval-loss num" }, formatLoss(metrics.eval_loss)),
      el("td", { class: "size num" }, formatBytes(model.size_bytes)),
      el("td", { class: "created" }, formatTime(model.created_at)),
    );
    return row;
  }
}
