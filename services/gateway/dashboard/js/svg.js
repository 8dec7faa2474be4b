// Inline SVG, drawn here (no chart library, nothing downloaded): small plots for the admin page
// and the body outline for a patient's lesions. Text goes in as text nodes, never markup.

const NS = "http://www.w3.org/2000/svg";

/** An SVG element with attributes and children (nodes or text). */
export function svgEl(tag, attrs = {}, children = []) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of Array.isArray(children) ? children : [children]) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const WIDTH = 480;
const HEIGHT = 220;
const MARGIN = { top: 12, right: 12, bottom: 44, left: 44 };
const PLOT_W = WIDTH - MARGIN.left - MARGIN.right;
const PLOT_H = HEIGHT - MARGIN.top - MARGIN.bottom;

function frame(label, testId) {
  return svgEl("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart",
    role: "img",
    "aria-label": label,
    "data-testid": testId,
  });
}

/** y for a rate in [0, 1]. */
function yOf(value) {
  return MARGIN.top + PLOT_H * (1 - Math.max(0, Math.min(1, value)));
}

/** The y axis 0-100% with grid lines. */
function rateAxis() {
  const group = svgEl("g", { class: "axis" });
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    const y = yOf(tick);
    group.append(
      svgEl("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y, y2: y, class: "grid" }),
      svgEl("text", { x: MARGIN.left - 6, y: y + 4, "text-anchor": "end" }, `${Math.round(tick * 100)}%`),
    );
  }
  return group;
}

function xLabel(x, text) {
  return svgEl("text", { x, y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle", class: "x-label" }, text);
}

function empty(svg, text) {
  svg.append(svgEl("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "empty" }, text));
  return svg;
}

/**
 * A rate over time: points [{label, value (0..1 or null), title}] joined by a line; periods
 * without data are gaps.
 */
export function lineChart(points, { label, testId }) {
  const svg = frame(label, testId);
  svg.append(rateAxis());
  if (!points.length) return empty(svg, "no data in this period");
  const step = points.length > 1 ? PLOT_W / (points.length - 1) : 0;
  const xOf = (i) => MARGIN.left + (points.length > 1 ? i * step : PLOT_W / 2);
  let path = "";
  let drawing = false;
  points.forEach((point, i) => {
    if (typeof point.value !== "number") {
      drawing = false;
      return;
    }
    path += `${drawing ? "L" : "M"}${xOf(i).toFixed(1)},${yOf(point.value).toFixed(1)}`;
    drawing = true;
  });
  if (path) svg.append(svgEl("path", { d: path, class: "series series-0" }));
  const labelEvery = Math.max(1, Math.ceil(points.length / 6));
  points.forEach((point, i) => {
    if (typeof point.value === "number") {
      svg.append(svgEl("circle", { cx: xOf(i), cy: yOf(point.value), r: 3.5, class: "point series-0", "data-testid": "plot-point" }, [
        svgEl("title", {}, point.title),
      ]));
    }
    if (i % labelEvery === 0) svg.append(xLabel(xOf(i), point.label));
  });
  return svg;
}

/** Bars of a rate per category: [{label, value (0..1 or null), title}]. */
export function barChart(bars, { label, testId }) {
  const svg = frame(label, testId);
  svg.append(rateAxis());
  if (!bars.length) return empty(svg, "no model versions in this period");
  const slot = PLOT_W / bars.length;
  const barWidth = Math.min(48, slot * 0.6);
  bars.forEach((bar, i) => {
    const cx = MARGIN.left + slot * (i + 0.5);
    if (typeof bar.value === "number") {
      const y = yOf(bar.value);
      svg.append(svgEl("rect", {
        x: cx - barWidth / 2, y, width: barWidth, height: MARGIN.top + PLOT_H - y, class: "bar series-0", "data-testid": "plot-bar",
      }, [svgEl("title", {}, bar.title)]));
    } else {
      svg.append(svgEl("text", { x: cx, y: yOf(0) - 6, "text-anchor": "middle", class: "empty" }, "n/a"));
    }
    svg.append(xLabel(cx, bar.label));
  });
  return svg;
}

/**
 * Estimates with 95% CI whiskers per category, one marker per series:
 * categories [{label, values: [{value, low, high, title} | null per series]}], series names.
 */
export function whiskerChart(categories, seriesNames, { label, testId }) {
  const svg = frame(label, testId);
  svg.append(rateAxis());
  if (!categories.length) return empty(svg, "no model versions in this period");
  const slot = PLOT_W / categories.length;
  const offset = Math.min(18, slot / (seriesNames.length + 1));
  categories.forEach((category, i) => {
    const center = MARGIN.left + slot * (i + 0.5);
    category.values.forEach((estimate, s) => {
      const x = center + (s - (seriesNames.length - 1) / 2) * offset;
      if (!estimate || typeof estimate.value !== "number") return;
      const group = svgEl("g", { class: `estimate series-${s}`, "data-testid": "plot-estimate" }, [svgEl("title", {}, estimate.title)]);
      if (typeof estimate.low === "number" && typeof estimate.high === "number") {
        const top = yOf(estimate.high);
        const bottom = yOf(estimate.low);
        group.append(
          svgEl("line", { x1: x, x2: x, y1: top, y2: bottom, class: "whisker", "data-testid": "plot-whisker" }),
          svgEl("line", { x1: x - 4, x2: x + 4, y1: top, y2: top, class: "whisker" }),
          svgEl("line", { x1: x - 4, x2: x + 4, y1: bottom, y2: bottom, class: "whisker" }),
        );
      }
      group.append(svgEl("circle", { cx: x, cy: yOf(estimate.value), r: 4, class: "point" }));
      svg.append(group);
    });
    svg.append(xLabel(center, category.label));
  });
  seriesNames.forEach((name, s) => {
    const x = MARGIN.left + s * 150;
    const y = HEIGHT - 8;
    svg.append(
      svgEl("circle", { cx: x + 5, cy: y - 4, r: 4, class: `point series-${s}` }),
      svgEl("text", { x: x + 14, y, class: "legend" }, name),
    );
  });
  return svg;
}

// A body outline in a 100 x 220 box (head at the top); the same shape for the front and the back.
const BODY_OUTLINE =
  "M50,6 C58,6 63,12 63,21 C63,30 58,36 54,38 L54,43 C62,45 72,47 76,52 C80,58 82,78 84,98 " +
  "C85,108 88,118 90,124 L85,126 C81,118 77,106 75,96 L72,74 C71,90 71,104 72,118 " +
  "C73,140 70,170 68,212 L57,212 C56,186 54,160 51,134 L49,134 C46,160 44,186 43,212 L32,212 " +
  "C30,170 27,140 28,118 C29,104 29,90 28,74 L25,96 C23,106 19,118 15,126 L10,124 " +
  "C12,118 15,108 16,98 C18,78 20,58 24,52 C28,47 38,45 46,43 L46,38 C42,36 37,30 37,21 C37,12 42,6 50,6 Z";
export const BODY_BOX = { width: 100, height: 220 };

/** One view of the body ("front" | "back") with dots: [{x, y (0..1), href, label, id}]. */
export function bodyView(view, dots) {
  const svg = svgEl("svg", {
    viewBox: `0 0 ${BODY_BOX.width} ${BODY_BOX.height + 14}`,
    class: "body-view",
    role: "group",
    "aria-label": `${view} view`,
    "data-testid": `body-map-${view}`,
    "data-view": view,
  });
  svg.append(
    svgEl("path", { d: BODY_OUTLINE, class: "outline" }),
    svgEl("text", { x: BODY_BOX.width / 2, y: BODY_BOX.height + 11, "text-anchor": "middle", class: "view-label" }, view),
  );
  for (const dot of dots) {
    svg.append(svgEl("a", { href: dot.href, "aria-label": dot.label, "data-testid": "body-map-dot", "data-lesion-id": dot.id }, [
      svgEl("circle", { cx: dot.x * BODY_BOX.width, cy: dot.y * BODY_BOX.height, r: 3.2, class: "lesion-dot" }, [
        svgEl("title", {}, dot.label),
      ]),
    ]));
  }
  return svg;
}

/** The marker of a position being chosen (x, y in 0..1 of the outline's box), not yet a lesion. */
export function positionMarker(x, y) {
  return svgEl("g", { class: "new-lesion-marker", "data-testid": "body-map-marker", "aria-hidden": "true" }, [
    svgEl("circle", { cx: x * BODY_BOX.width, cy: y * BODY_BOX.height, r: 4.5, class: "marker-ring" }),
    svgEl("circle", { cx: x * BODY_BOX.width, cy: y * BODY_BOX.height, r: 1.2, class: "marker-dot" }),
  ]);
}
