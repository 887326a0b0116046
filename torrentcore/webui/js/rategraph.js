// Download and upload rates over the last minutes: samples kept per torrent from the list's polling,
// drawn as an SVG line graph.

import { formatRate } from "./format.js";

/** How far back the graph reaches. */
export const WINDOW_MS = 5 * 60 * 1000;
/** Samples older than the window are dropped; at most this many are kept per torrent (one per poll). */
const MAX_SAMPLES = 400;

const SVG_NS = "http://www.w3.org/2000/svg";
/** Drawing area in SVG units (the element scales to its box). */
const W = 600;
const H = 180;
const PAD_LEFT = 8;
const PAD_RIGHT = 8;
const PAD_TOP = 22;
const PAD_BOTTOM = 20;

/** Rate samples per torrent id: {t: ms, down: B/s, up: B/s}. */
export class RateHistory {
  constructor() {
    /** @type {Map<number, {t: number, down: number, up: number}[]>} */
    this.samples = new Map();
  }

  /** Record the rates of every torrent in one torrent-get answer; forget torrents no longer listed. */
  record(torrents, now = Date.now()) {
    const seen = new Set();
    for (const t of torrents) {
      seen.add(t.id);
      let list = this.samples.get(t.id);
      if (!list) this.samples.set(t.id, (list = []));
      list.push({ t: now, down: t.rateDownload || 0, up: t.rateUpload || 0 });
      while (list.length > MAX_SAMPLES || (list.length && list[0].t < now - WINDOW_MS)) list.shift();
    }
    for (const id of [...this.samples.keys()]) if (!seen.has(id)) this.samples.delete(id);
  }

  /** Samples of one torrent, oldest first. */
  of(id) {
    return this.samples.get(id) || [];
  }
}

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A round axis maximum at or above `peak` (1, 2 or 5 times a power of ten), never below 1 kB/s. */
function niceMax(peak) {
  const floor = 1000;
  const v = Math.max(peak, floor);
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** The time the graph spans: from its first sample, in whole minutes, between one minute and WINDOW_MS
 * (a page opened a moment ago gets a readable graph, not a spike squeezed against "now"). */
function spanOf(samples, now) {
  const age = samples.length ? now - samples[0].t : 0;
  return Math.min(WINDOW_MS, Math.max(60000, Math.ceil(age / 60000) * 60000));
}

function polyline(samples, key, now, span, max, cls) {
  const x = (t) => PAD_LEFT + ((t - (now - span)) / span) * (W - PAD_LEFT - PAD_RIGHT);
  const y = (v) => PAD_TOP + (1 - v / max) * (H - PAD_TOP - PAD_BOTTOM);
  const points = samples.map((s) => `${x(s.t).toFixed(1)},${y(s[key]).toFixed(1)}`).join(" ");
  return el("polyline", { points, class: cls, fill: "none" });
}

/**
 * Draw `samples` into the <svg> `svg` (replacing its content); returns a one-line text summary.
 * @param {SVGSVGElement} svg
 * @param {{t: number, down: number, up: number}[]} samples
 */
export function drawRateGraph(svg, samples, now = Date.now()) {
  const peak = samples.reduce((m, s) => Math.max(m, s.down, s.up), 0);
  const max = niceMax(peak);
  const span = spanOf(samples, now);
  const minutes = Math.round(span / 60000);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const last = samples[samples.length - 1] || { down: 0, up: 0 };
  const summary = samples.length
    ? `Download ${formatRate(last.down)}, upload ${formatRate(last.up)} now; peak ${formatRate(peak)} ` +
      `over the last ${minutes === 1 ? "minute" : `${minutes} minutes`} (${samples.length} samples).`
    : "No rate samples yet.";
  svg.append(el("title", {}, "Transfer rate over the last minutes"), el("desc", {}, summary));
  for (const f of [0, 0.5, 1]) {
    const y = PAD_TOP + (1 - f) * (H - PAD_TOP - PAD_BOTTOM);
    svg.append(el("line", { x1: PAD_LEFT, x2: W - PAD_RIGHT, y1: y, y2: y, class: "grid" }));
  }
  svg.append(
    el("text", { x: PAD_LEFT, y: PAD_TOP - 6, class: "axis" }, formatRate(max)),
    el("text", { x: PAD_LEFT, y: H - 4, class: "axis" }, `${minutes} min ago`),
    el("text", { x: W - PAD_RIGHT, y: H - 4, class: "axis", "text-anchor": "end" }, "now"),
  );
  if (samples.length) {
    svg.append(
      polyline(samples, "down", now, span, max, "rate-down"),
      polyline(samples, "up", now, span, max, "rate-up"),
    );
  }
  return summary;
}
