// One model: what it is and where it came from (its job, dataset and hyperparameters), the
// job's loss curve and how far training moved the validation loss, and a chat box to try it
// (alone, or side by side with its base model).

import { api, baseModelId, jobLink, jobPath, modelLink, modelPath } from "./api.js";
import { ChatBox } from "./chat_box.js";
import { LossChart } from "./chart.js";
import { showEvalGain } from "./eval_gain.js";
import { el, formatBytes, formatLoss, formatNumber, formatTime } from "./format.js";

const $ = (id) => document.getElementById(id);
const DASH = "—";

function text(id, value) {
  $(id).textContent = value === null || value === undefined || value === "" ? DASH : String(value);
}

function fillParams(list, values) {
  list.replaceChildren();
  for (const [name, value] of Object.entries(values || {})) {
    const shown = typeof value === "string" ? value : JSON.stringify(value);
    const pair = el("div");
    pair.append(el("dt", {}, name), el("dd", {}, shown));
    list.append(pair);
  }
}

export class ModelView {
  constructor(id) {
    this.id = id;
    this.closed = false;
    this.chart = null;
    this.chat = null;
    $("model-id").textContent = id;
    $("model-method").hidden = true;
    $("model-message").hidden = true;
    $("model-gain").hidden = true;
    // Shown once the model is read: nothing half-filled from the last one.
    for (const part of ["model-training", "model-chat"]) $(part).hidden = true;
  }

  close() {
    this.closed = true;
    if (this.chart) this.chart.dispose();
    if (this.chat) this.chat.close();
  }

  async load() {
    let model;
    try {
      model = await api(modelPath(this.id));
    } catch (error) {
      if (!this.closed) this.say(error.status === 404 ? `No model named ${this.id}.` : error.message);
      return;
    }
    if (this.closed) return;
    this.show(model);
    this.chat = new ChatBox(model);
    $("model-chat").hidden = false;
    if (!model.job) return;
    $("model-training").hidden = false;
    this.chart = new LossChart($("model-loss-chart"));
    try {
      const metrics = await api(jobPath(model.job) + "/metrics");
      if (!this.closed) this.chart.add(...metrics.data);
    } catch (error) {
      if (!this.closed) this.say(`Could not read the job's metrics: ${error.message}`);
    }
  }

  show(model) {
    const method = $("model-method");
    method.textContent = model.method || "base";
    method.dataset.method = model.method || "base";
    method.hidden = false;
    // The base by the id it is served under (a model directory by its name), linked to its page.
    const base = $("model-base");
    const baseId = baseModelId(model.base_model);
    base.replaceChildren(baseId ? el("a", { href: modelLink(baseId), title: model.base_model }, baseId) : DASH);
    text("lineage-base", model.base_model);
    const job = $("model-job");
    job.replaceChildren(model.job ? el("a", { href: jobLink(model.job) }, model.job) : DASH);
    text("model-owner", model.owner);
    text("model-created", formatTime(model.created_at));
    const metrics = model.metrics || {};
    text("model-train-loss", formatLoss(metrics.train_loss));
    text("model-eval-loss", formatLoss(metrics.eval_loss));
    // Trained with a validation set: how the loss moved from the starting model to this one.
    if (model.lineage && model.lineage.validation_dataset) {
      showEvalGain($("model-gain"), {
        before: metrics.eval_loss_before,
        after: metrics.eval_loss,
        gain: metrics.eval_gain,
      });
    }
    text("model-size", formatBytes(model.size_bytes));
    text("model-checkpoint-count", formatNumber(model.checkpoints.length));
    text("model-path", model.path);
    const jobLinkElement = $("model-job-link");
    jobLinkElement.hidden = !model.job;
    if (model.job) {
      jobLinkElement.href = jobLink(model.job);
      jobLinkElement.textContent = `job ${model.job} →`;
    }
    const lineage = model.lineage || {};
    text("lineage-dataset", lineage.dataset);
    text("lineage-dataset-sha", lineage.dataset_sha256);
    text("lineage-validation", lineage.validation_dataset);
    text("lineage-validation-sha", lineage.validation_dataset_sha256);
    $("lineage-validation-sha").parentElement.hidden = !lineage.validation_dataset;
    text("lineage-method", model.method);
    fillParams($("lineage-hyperparameters"), lineage.hyperparameters);
    fillParams($("lineage-lora"), lineage.lora);
    $("lineage-lora-block").hidden = !lineage.lora;
  }

  say(message) {
    const element = $("model-message");
    element.textContent = message;
    element.hidden = false;
  }
}
