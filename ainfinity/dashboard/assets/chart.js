// The loss chart: inline SVG drawn from the job's metrics, one line for training loss
// and one (with markers) for eval loss. `data-points` / `data-eval-points` on the
// container tell how many points each line has (tests and curious users read them).

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 280;
const MARGIN = { top: 12, right: 18, bottom: 34, left: 58 };

function svg(tag, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== null) element.textContent = text;
  return element;
}

/** About `count` round tick values covering [low, high]. */
function ticks(low, high, count) {
  if (high <= low) return [low];
  const raw = (high - low) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((s) => s >= raw);
  const values = [];
  for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) {
    values.push(Number(v.toPrecision(12)));
  }
  return values;
}

export class LossChart {
  constructor(container) {
    this.container = container;
    this.loss = new Map(); // step -> loss
    this.evalLoss = new Map(); // step -> eval_loss
    this.pending = false;
    // Drawn at the container's own width, so that text keeps its size at any width.
    this.width = 0;
    this.disposed = false;
    this.observer = new ResizeObserver(() => {
      if (container.clientWidth !== this.width) this.schedule();
    });
    this.observer.observe(container);
    this.render();
  }

  /** Stop drawing: the container goes to the next job's chart. */
  dispose() {
    this.disposed = true;
    this.observer.disconnect();
  }

  /** Take metric records (from GET /metrics or live `metric` events); repeats are merged. */
  add(...metrics) {
    for (const metric of metrics) {
      if (metric.loss !== null && metric.loss !== undefined) this.loss.set(metric.step, metric.loss);
      if (metric.eval_loss !== null && metric.eval_loss !== undefined) {
        this.evalLoss.set(metric.step, metric.eval_loss);
      }
    }
    this.schedule();
  }

  schedule() {
    // Bursts of events redraw once per frame; the attributes are updated at once.
    this.container.dataset.points = String(this.loss.size);
    this.container.dataset.evalPoints = String(this.evalLoss.size);
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (!this.disposed) this.render();
    });
  }

  render() {
    const WIDTH = Math.max(this.container.clientWidth, 320);
    this.width = this.container.clientWidth;
    const loss = [...this.loss].sort((a, b) => a[0] - b[0]);
    const evals = [...this.evalLoss].sort((a, b) => a[0] - b[0]);
    const root = svg("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      "aria-label": `Loss curve, ${loss.length} training and ${evals.length} eval points`,
    });
    const plotW = WIDTH - MARGIN.left - MARGIN.right;
    const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    const all = [...loss, ...evals];
    if (!all.length) {
      root.append(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "chart-empty" }, "No metrics yet"));
      this.container.replaceChildren(root);
      return;
    }
    const steps = all.map(([s]) => s);
    const values = all.map(([, v]) => v);
    // The steps run so far, not the total: the curve uses the whole width from the start.
    const xMax = Math.max(...steps, 1);
    let yLow = Math.min(...values);
    let yHigh = Math.max(...values);
    const pad = (yHigh - yLow) * 0.08 || Math.abs(yHigh) * 0.05 || 1;
    yLow -= pad;
    yHigh += pad;
    const x = (step) => MARGIN.left + (step / xMax) * plotW;
    const y = (value) => MARGIN.top + (1 - (value - yLow) / (yHigh - yLow)) * plotH;

    const grid = svg("g", { class: "grid" });
    for (const value of ticks(yLow, yHigh, 6)) {
      grid.append(svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value) }));
      grid.append(
        svg("text", { x: MARGIN.left - 8, y: y(value), class: "tick y" }, String(Number(value.toFixed(4)))),
      );
    }
    for (const step of ticks(0, xMax, Math.max(2, Math.round(WIDTH / 110)))) {
      grid.append(svg("text", { x: x(step), y: HEIGHT - MARGIN.bottom + 16, class: "tick x" }, String(step)));
    }
    grid.append(
      svg("line", {
        class: "axis",
        x1: MARGIN.left,
        x2: WIDTH - MARGIN.right,
        y1: HEIGHT - MARGIN.bottom,
        y2: HEIGHT - MARGIN.bottom,
      }),
    );
    grid.append(svg("text", { x: WIDTH - MARGIN.right, y: HEIGHT - 4, class: "axis-label" }, "step"));
    root.append(grid);

    const points = (series) => series.map(([s, v]) => `${x(s).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    if (loss.length) root.append(svg("polyline", { class: "line loss", points: points(loss) }));
    if (evals.length) {
      root.append(svg("polyline", { class: "line eval", points: points(evals) }));
      const marks = svg("g", { class: "marks eval" });
      for (const [s, v] of evals) marks.append(svg("circle", { cx: x(s), cy: y(v), r: 3.5 }));
      root.append(marks);
    }
    this.container.replaceChildren(root);
  }
}
