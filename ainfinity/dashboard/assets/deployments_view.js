// The deployments list: pages from GET /deployments (newest first) with status, replicas,
// endpoint and cost so far; refreshed every few seconds while the page is shown.

import { api, modelLink } from "./api.js";
import { el, formatTime } from "./format.js";

const PAGE = 50;
const REFRESH_MS = 5000;

function formatUsd(value) {
  return value === null || value === undefined ? "—" : `$${value.toFixed(2)}`;
}

export class DeploymentsView {
  constructor() {
    this.body = document.getElementById("deployments-body");
    this.empty = document.getElementById("deployments-empty");
    this.more = document.getElementById("deployments-more");
    this.error = document.getElementById("deployments-error");
    this.cursor = null;
    this.timer = null;
    this.more.addEventListener("click", () => this.load(this.cursor));
  }

  start() {
    this.load(null);
    this.timer = setInterval(() => this.load(null), REFRESH_MS);
  }

  close() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async load(after) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (after) query.set("after", after);
    try {
      const page = await api("/deployments?" + query);
      if (!after) this.body.replaceChildren();
      for (const deployment of page.data) this.body.append(this.row(deployment));
      this.cursor = page.next_cursor;
      this.more.hidden = !page.has_more;
      this.error.hidden = true;
    } catch (error) {
      this.error.textContent = `Could not load deployments: ${error.message}`;
      this.error.hidden = false;
    }
    this.empty.hidden = this.body.children.length > 0;
  }

  row(deployment) {
    const row = el("tr", { "data-deployment": deployment.name });
    const status = el("td", { class: "status" });
    status.append(el("span", { class: "badge", "data-status": deployment.status }, deployment.status));
    if (deployment.failure_reason) status.title = deployment.failure_reason;
    const model = el("td", { class: "model" });
    model.append(el("a", { href: modelLink(deployment.model) }, deployment.model));
    if (deployment.updating_to) model.append(` → ${deployment.updating_to}`);
    const live = deployment.replicas.filter((replica) => !replica.ended_at);
    const ready = live.filter((replica) => replica.status === "READY").length;
    row.append(
      el("td", { class: "name" }, deployment.name),
      status,
      model,
      el("td", { class: "executor" }, deployment.executor),
      el("td", { class: "replicas num" }, `${ready}/${live.length}`),
      el("td", { class: "endpoint" }, deployment.endpoint || "—"),
      el("td", { class: "cost-hour num" }, formatUsd(deployment.cost_per_hour)),
      el("td", { class: "cost num" }, formatUsd(deployment.cost_to_date)),
      el("td", { class: "created" }, formatTime(deployment.created_at)),
    );
    return row;
  }
}
