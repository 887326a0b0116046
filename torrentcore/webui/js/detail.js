// The detail panel of one torrent: facts, files (wanted and priority controls), trackers, peers, piece map
// and rate graph, in keyboard-operable tabs (WAI-ARIA tabs pattern).

import { byId, cell, fillRows, h, setText } from "./dom.js";
import {
  Priority, formatDate, formatPercent, formatRate, formatRatio, formatSize, formatState,
} from "./format.js";
import { countDone, decodePieces, drawPieceMap } from "./piecemap.js";
import { drawRateGraph } from "./rategraph.js";

/** torrent-get fields of the detail panel (asked for the shown torrent only). */
export const DETAIL_FIELDS = [
  "id", "name", "hashString", "status", "error", "errorString", "isFinished", "isStalled", "isPrivate",
  "downloadDir", "addedDate", "doneDate", "activityDate", "sizeWhenDone", "totalSize", "haveValid",
  "downloadedEver", "uploadedEver", "uploadRatio", "percentDone", "metadataPercentComplete", "recheckProgress",
  "comment", "creator", "pieceCount", "pieceSize", "pieces", "files", "fileStats", "wanted", "priorities",
  "trackers", "trackerStats", "peers",
];

const PRIORITY_CHOICES = [
  [Priority.HIGH, "High"], [Priority.NORMAL, "Normal"], [Priority.LOW, "Low"],
];
const PRIORITY_ARG = { [Priority.HIGH]: "priority-high", [Priority.NORMAL]: "priority-normal", [Priority.LOW]: "priority-low" };

/** A file's path without the torrent's own folder name (shown in the heading already). */
function shortName(path, torrentName) {
  const prefix = `${torrentName}/`;
  return torrentName && path.startsWith(prefix) ? path.slice(prefix.length) : path;
}

function relativeTime(unixSeconds) {
  if (!unixSeconds || unixSeconds <= 0) return "–";
  const delta = Math.round(unixSeconds - Date.now() / 1000);
  if (Math.abs(delta) < 5) return "now";
  const abs = Math.abs(delta);
  const text = abs < 120 ? `${abs} s` : abs < 7200 ? `${Math.round(abs / 60)} min` : `${Math.round(abs / 3600)} h`;
  return delta > 0 ? `in ${text}` : `${text} ago`;
}

export class DetailView {
  /**
   * @param {{rpc: import("./rpc.js").RpcClient, history: import("./rategraph.js").RateHistory,
   *          notify: (message: string, isError?: boolean) => void, refresh: () => Promise<void>,
   *          onClose: () => void}} deps
   */
  constructor(deps) {
    this.deps = deps;
    this.section = byId("detail");
    this.heading = byId("detail-heading");
    this.id = null;
    this.torrent = null;
    this.fileSignature = "";
    this.fileRows = [];
    /** Controls a user is changing: not overwritten by polls until the change has been sent. */
    this.pending = 0;
    this.tabs = [...this.section.querySelectorAll('[role="tab"]')];
    for (const tab of this.tabs) {
      tab.addEventListener("click", () => this.selectTab(tab));
      tab.addEventListener("keydown", (event) => this.tabKey(event, tab));
    }
    byId("close-detail").addEventListener("click", () => this.close());
    byId("files-all").addEventListener("click", () => this.setAllWanted(true));
    byId("files-none").addEventListener("click", () => this.setAllWanted(false));
    window.addEventListener("resize", () => this.drawVisible());
  }

  /** Show the panel for torrent `id` (its data arrives with the next update()). */
  open(id, name) {
    const changed = this.id !== id;
    this.id = id;
    this.section.hidden = false;
    if (changed) {
      this.torrent = null;
      this.fileSignature = "";
      byId("file-rows").replaceChildren();
      byId("tracker-rows").replaceChildren();
      byId("peer-rows").replaceChildren();
      byId("detail-facts").replaceChildren();
      setText(this.heading, name || "Details");
    }
    this.heading.focus();
  }

  close() {
    const hadFocus = this.section.contains(document.activeElement);
    this.id = null;
    this.torrent = null;
    this.section.hidden = true;
    this.deps.onClose();
    if (hadFocus) byId("list-heading").focus(); // keyboard users are not left on a hidden element
  }

  /** The torrent disappeared (removed): close quietly. */
  gone() {
    if (this.id !== null) this.close();
  }

  // -- tabs ------------------------------------------------------------------------------------------
  selectTab(tab, focus = false) {
    for (const t of this.tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      byId(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    this.drawVisible();
  }

  tabKey(event, tab) {
    const i = this.tabs.indexOf(tab);
    const n = this.tabs.length;
    const target = { ArrowRight: (i + 1) % n, ArrowLeft: (i - 1 + n) % n, Home: 0, End: n - 1 }[event.key];
    if (target === undefined) return;
    event.preventDefault();
    this.selectTab(this.tabs[target], true);
  }

  visiblePanel() {
    const tab = this.tabs.find((t) => t.getAttribute("aria-selected") === "true");
    return tab ? tab.getAttribute("aria-controls") : "";
  }

  // -- updates ---------------------------------------------------------------------------------------
  /** Fill the panel from one torrent-get answer for the shown torrent (DETAIL_FIELDS). */
  update(t) {
    if (!t || t.id !== this.id) return;
    this.torrent = t;
    setText(this.heading, t.name || t.hashString);
    this.updateFacts(t);
    if (this.pending === 0) this.updateFiles(t);
    this.updateTrackers(t);
    this.updatePeers(t);
    this.drawVisible();
  }

  /** Redraw what is only drawn while visible (canvas and SVG need their laid-out width). */
  drawVisible() {
    if (this.id === null || this.section.hidden) return;
    const panel = this.visiblePanel();
    if (panel === "panel-pieces" && this.torrent) this.drawPieces(this.torrent);
    if (panel === "panel-speed") this.drawSpeed();
  }

  updateFacts(t) {
    const have = Number.isFinite(t.haveValid)
      ? `${formatSize(t.haveValid)} verified, ${formatPercent(t.percentDone)} of the ${formatSize(t.sizeWhenDone)} wanted`
      : "–";
    const pieces = t.pieceCount ? `${t.pieceCount} × ${formatSize(t.pieceSize)}` : "–";
    const facts = [
      ["State", formatState(t)], ["Have", have],
      ["Downloaded", formatSize(t.downloadedEver)], ["Uploaded", formatSize(t.uploadedEver)],
      ["Ratio", formatRatio(t.uploadRatio)], ["Pieces", pieces],
      ["Location", t.downloadDir || "–"], ["Info-hash", t.hashString || "–"],
      ["Added", formatDate(t.addedDate)], ["Completed", formatDate(t.doneDate)],
      ["Last activity", formatDate(t.activityDate)], ["Private", t.isPrivate ? "yes" : "no"],
    ];
    if (t.comment) facts.push(["Comment", t.comment]);
    if (t.error && t.errorString) facts.push(["Error", t.errorString]);
    const dl = byId("detail-facts");
    const nodes = facts.flatMap(([k, v]) => [h("dt", { textContent: k }), h("dd", { textContent: String(v) })]);
    dl.replaceChildren(...nodes);
  }

  // -- files -----------------------------------------------------------------------------------------
  fileState(t, i) {
    const stats = (t.fileStats || [])[i] || {};
    const wantedList = t.wanted || [];
    const wanted = i < wantedList.length ? Boolean(wantedList[i]) : stats.wanted === undefined ? true : Boolean(stats.wanted);
    const prioList = t.priorities || [];
    const priority = i < prioList.length ? prioList[i] : stats.priority || Priority.NORMAL;
    const f = (t.files || [])[i] || {};
    const done = Number.isFinite(stats.bytesCompleted) ? stats.bytesCompleted : f.bytesCompleted || 0;
    return { wanted, priority, done, length: f.length || 0, name: f.name || `file ${i + 1}` };
  }

  updateFiles(t) {
    const files = t.files || [];
    const signature = `${t.id}:${files.map((f) => f.name).join("\n")}`;
    const tbody = byId("file-rows");
    if (signature !== this.fileSignature) {
      this.fileSignature = signature;
      this.fileRows = files.map((_, i) => this.createFileRow(t, i));
      tbody.replaceChildren(...this.fileRows.map((r) => r.tr));
    }
    files.forEach((_, i) => this.fillFileRow(this.fileRows[i], this.fileState(t, i)));
  }

  createFileRow(t, i) {
    const state = this.fileState(t, i);
    const label = shortName(state.name, t.name);
    const check = h("input", { type: "checkbox", attrs: { "aria-label": `Download ${label}` } });
    check.addEventListener("change", () => this.setWanted([i], check.checked));
    const select = h("select", { attrs: { "aria-label": `Priority of ${label}` } },
      ...PRIORITY_CHOICES.map(([value, text]) => h("option", { value: String(value), textContent: text })));
    select.addEventListener("change", () => this.setPriority([i], Number(select.value)));
    const bar = h("progress", { max: 1, value: 0, attrs: { "aria-label": `Progress of ${label}` } });
    const pct = h("span", { className: "pct" });
    const tr = h("tr", { dataset: { index: String(i) } },
      h("td", { className: "col-select" }, check),
      cell(label, "name"),
      cell(formatSize(state.length), "num"),
      h("td", {}, h("div", { className: "progress" }, bar, pct)),
      h("td", {}, select));
    return { tr, check, select, bar, pct };
  }

  fillFileRow(row, state) {
    row.check.checked = state.wanted;
    row.select.value = String(state.priority);
    row.select.disabled = !state.wanted;
    const fraction = state.length ? state.done / state.length : 1;
    row.bar.value = fraction;
    setText(row.pct, formatPercent(fraction));
    row.tr.classList.toggle("unwanted", !state.wanted);
  }

  /** torrent-set on the shown torrent; an empty index list would mean "all files" there, so never send one. */
  async setFiles(args, what) {
    const id = this.id;
    if (id === null) return;
    this.pending++;
    try {
      await this.deps.rpc.call("torrent-set", { ids: [id], ...args });
    } catch (err) {
      this.deps.notify(`Could not change ${what}: ${err.message}`, true);
    } finally {
      this.pending--;
    }
    await this.deps.refresh();
  }

  setWanted(indices, wanted) {
    if (!indices.length) return Promise.resolve();
    return this.setFiles({ [wanted ? "files-wanted" : "files-unwanted"]: indices }, "the file selection");
  }

  setPriority(indices, priority) {
    if (!indices.length || !(priority in PRIORITY_ARG)) return Promise.resolve();
    return this.setFiles({ [PRIORITY_ARG[priority]]: indices }, "the file priority");
  }

  setAllWanted(wanted) {
    const count = this.torrent && this.torrent.files ? this.torrent.files.length : 0;
    return this.setWanted([...Array(count).keys()], wanted);
  }

  // -- trackers and peers ----------------------------------------------------------------------------
  updateTrackers(t) {
    const stats = t.trackerStats && t.trackerStats.length ? t.trackerStats : t.trackers || [];
    byId("no-trackers").hidden = stats.length > 0;
    fillRows(byId("tracker-rows"), stats, (s) => {
      let last = "–";
      if (s.hasAnnounced) {
        const when = s.lastAnnounceTime > 0 ? `, ${relativeTime(s.lastAnnounceTime)}` : "";
        last = s.lastAnnounceSucceeded
          ? `${s.lastAnnounceResult || "Success"}: ${s.lastAnnouncePeerCount ?? 0} peers${when}`
          : `${s.lastAnnounceResult || "Failed"}${when}`;
      }
      const count = (n) => (Number.isFinite(n) && n >= 0 ? String(n) : "–");
      return h("tr", {},
        cell(Number.isFinite(s.tier) ? s.tier + 1 : "–", "num"), cell(s.announce || "", "url"), cell(last),
        cell(count(s.seederCount), "num"), cell(count(s.leecherCount), "num"), cell(relativeTime(s.nextAnnounceTime)));
    });
  }

  updatePeers(t) {
    const peers = t.peers || [];
    byId("no-peers").hidden = peers.length > 0;
    fillRows(byId("peer-rows"), peers, (p) => {
      const host = String(p.address || "").includes(":") ? `[${p.address}]` : p.address;
      const flags = [];
      if (p.isIncoming) flags.push("incoming");
      if (p.isEncrypted) flags.push("encrypted");
      if (p.isUTP) flags.push("uTP");
      if (p.isDownloadingFrom) flags.push("sending to us");
      if (p.isUploadingTo) flags.push("receiving from us");
      const flagCell = cell(flags.join(", ") || "–");
      if (p.flagStr) flagCell.title = `Transmission flags: ${p.flagStr}`;
      return h("tr", {},
        cell(`${host}:${p.port}`), cell(p.clientName || "–"), cell(formatPercent(p.progress), "num"),
        cell(formatRate(p.rateToClient), "num"), cell(formatRate(p.rateToPeer), "num"), flagCell);
    });
  }

  // -- pieces and speed ------------------------------------------------------------------------------
  drawPieces(t) {
    const canvas = byId("piece-map");
    const count = t.pieceCount || 0;
    const flags = decodePieces(t.pieces, count);
    const done = countDone(flags);
    const summary = count
      ? `${done} of ${count} pieces verified (${formatPercent(done / count)}), ${formatSize(t.pieceSize)} each.`
      : "The piece map appears once the torrent's metadata is known.";
    setText(byId("pieces-summary"), summary);
    canvas.setAttribute("aria-label", `Piece map: ${summary}`);
    drawPieceMap(canvas, flags);
  }

  drawSpeed() {
    const summary = drawRateGraph(byId("rate-graph"), this.deps.history.of(this.id));
    setText(byId("speed-summary"), summary);
  }
}
