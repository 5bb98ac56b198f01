// How numbers, times and statuses look on the page.

export const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const DASH = "—";

export function formatLoss(value) {
  return value === null || value === undefined ? DASH : Number(value).toFixed(4);
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return DASH;
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

export function formatTime(iso) {
  if (!iso) return DASH;
  return new Date(iso).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

export function formatClock(iso) {
  return new Date(iso).toLocaleTimeString(undefined, { hour12: false });
}

export function formatNumber(value, digits = 0) {
  if (value === null || value === undefined) return DASH;
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** The ETA worth showing: none once the job stopped moving. */
export function etaOf(job) {
  if (!job.progress || TERMINAL.has(job.status) || job.status === "CANCELLING") return null;
  return job.progress.eta_seconds;
}

/** A status badge; its colour comes from the stylesheet through `data-status`. */
export function setBadge(element, status) {
  element.textContent = status;
  element.dataset.status = status;
  element.classList.add("badge");
}

/** A DOM element with text and attributes, never parsed as HTML. */
export function el(tag, attributes = {}, text = null) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== null) element.textContent = text;
  return element;
}

export function formatBytes(value) {
  if (value === null || value === undefined) return DASH;
  if (value < 1000) return `${value} B`;
  let amount = value;
  for (const unit of ["KB", "MB", "GB"]) {
    amount /= 1000;
    if (Number(amount.toFixed(1)) < 1000 || unit === "GB") return `${amount.toFixed(1)} ${unit}`;
  }
  return DASH;
}

/**
 * How much the loss moved, from the API's gain ((before - after) / before): a gain of 0.94
 * reads "−94 %" (the loss fell by 94 %), a loss that rose reads "+12.5 %".
 */
export function formatLossChange(gain) {
  if (gain === null || gain === undefined) return DASH;
  const percent = Math.abs(gain * 100).toFixed(1).replace(/\.0$/, "");
  if (percent === "0") return "0 %";
  return `${gain > 0 ? "\u2212" : "+"}${percent} %`;
}
