// "Did it get better?": the validation loss of the starting model, of the trained one, and the
// change, in one line (on the job page and on the model page).

import { formatLoss, formatLossChange } from "./format.js";

/**
 * Fill a `.gain` line: `before`, `after` and `gain` as the API gives them (null when not known
 * yet); `pending` says what stands for `after` while it is not measured.
 */
export function showEvalGain(container, { before, after, gain, pending = "" }) {
  const part = (name) => container.querySelector(`.${name}`);
  part("before").textContent = formatLoss(before);
  part("after").textContent = after === null || after === undefined ? pending || "—" : formatLoss(after);
  const change = part("change");
  change.hidden = gain === null || gain === undefined;
  change.textContent = formatLossChange(gain);
  change.dataset.direction = !gain ? "same" : gain > 0 ? "better" : "worse";
  container.hidden = false;
}
