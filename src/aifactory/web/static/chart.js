// A small line chart in SVG, updated in place: `chart.set(series)` redraws the lines of the same <svg>.
// series: [{name, color, points: [[x, y], ...]}]; x is epoch seconds (time axis) or a step number.

const NS = "http://www.w3.org/2000/svg";
const W = 600, H = 160, PAD_L = 44, PAD_B = 18, PAD_T = 6, PAD_R = 6;

function svg(tag, attrs = {}) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function label(value) {
  const abs = Math.abs(value);
  if (abs >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (abs >= 1e3) return (value / 1e3).toFixed(1) + "k";
  return abs >= 10 ? value.toFixed(0) : value.toFixed(2);
}

export class LineChart {
  constructor({ time = true, testid = "" } = {}) {
    this.time = time;
    this.root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
    if (testid) this.root.dataset.testid = testid;
    this.legend = document.createElement("div");
    this.legend.className = "legend";
    this.series = [];
  }

  nodes() {
    return [this.root, this.legend];
  }

  set(series) {
    this.series = series;
    this.draw();
  }

  draw() {
    const all = this.series.flatMap((s) => s.points.filter((p) => p[1] !== null && Number.isFinite(p[1])));
    this.root.replaceChildren();
    this.root.dataset.points = String(all.length);
    this.root.append(svg("line", { class: "axis", x1: PAD_L, y1: H - PAD_B, x2: W - PAD_R, y2: H - PAD_B }));
    this.root.append(svg("line", { class: "axis", x1: PAD_L, y1: PAD_T, x2: PAD_L, y2: H - PAD_B }));
    this.legend.replaceChildren(...this.series.map((s) => {
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = s.color;
      item.append(swatch, document.createTextNode(s.name));
      return item;
    }));
    if (!all.length) return;
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const sx = (x) => PAD_L + ((x - x0) / (x1 - x0)) * (W - PAD_L - PAD_R);
    const sy = (y) => H - PAD_B - ((y - y0) / (y1 - y0)) * (H - PAD_B - PAD_T);
    for (const [value, y] of [[y1, PAD_T + 8], [y0, H - PAD_B - 2]]) {
      const text = svg("text", { x: 2, y });
      text.textContent = label(value);
      this.root.append(text);
    }
    const xs = this.time ? [new Date(x0 * 1000).toLocaleTimeString(), new Date(x1 * 1000).toLocaleTimeString()] : [label(x0), label(x1)];
    for (const [text, x, anchor] of [[xs[0], PAD_L, "start"], [xs[1], W - PAD_R, "end"]]) {
      const node = svg("text", { x, y: H - 4, "text-anchor": anchor });
      node.textContent = text;
      this.root.append(node);
    }
    for (const s of this.series) {
      const points = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
      if (!points.length) continue;
      const d = points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
      this.root.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.5, "vector-effect": "non-scaling-stroke" }));
      if (points.length === 1) this.root.append(svg("circle", { cx: sx(points[0][0]), cy: sy(points[0][1]), r: 2.5, fill: s.color }));
    }
  }
}
