// The torrent list: one table row per torrent, updated in place on every poll so focus, selection and
// the checkboxes a user is touching survive the refresh.

import { h, setText } from "./dom.js";
import {
  Status, formatEta, formatPercent, formatRate, formatRatio, formatSize, formatState,
} from "./format.js";

/** torrent-get fields the list needs (asked for every torrent on every poll). */
export const LIST_FIELDS = [
  "id", "name", "hashString", "status", "error", "errorString", "totalSize", "sizeWhenDone", "leftUntilDone",
  "percentDone", "metadataPercentComplete", "recheckProgress", "rateDownload", "rateUpload", "peersConnected",
  "peersSendingToUs", "peersGettingFromUs", "eta", "uploadRatio", "isFinished", "isStalled", "queuePosition",
];

export class TorrentList {
  /**
   * @param {HTMLTableSectionElement} tbody rows go here
   * @param {HTMLInputElement} selectAll the header's "select all" checkbox
   * @param {{onOpen: (id: number) => void, onSelection: (ids: number[]) => void}} callbacks
   */
  constructor(tbody, selectAll, callbacks) {
    this.tbody = tbody;
    this.selectAll = selectAll;
    this.callbacks = callbacks;
    /** @type {Map<number, {tr: HTMLTableRowElement, parts: object, torrent: object}>} */
    this.rows = new Map();
    this.selected = new Set();
    this.openId = null;
    selectAll.addEventListener("change", () => {
      this.selected = selectAll.checked ? new Set(this.rows.keys()) : new Set();
      for (const [id, row] of this.rows) row.parts.check.checked = this.selected.has(id);
      this.selectionChanged();
    });
  }

  /** Torrents currently listed, by id. */
  torrent(id) {
    const row = this.rows.get(id);
    return row ? row.torrent : undefined;
  }

  /** Ids of the selected torrents, in list order. */
  selectedIds() {
    return [...this.rows.keys()].filter((id) => this.selected.has(id));
  }

  /** Mark the torrent whose details are shown (or none). */
  setOpen(id) {
    this.openId = id;
    for (const [rid, row] of this.rows) row.tr.classList.toggle("open", rid === id);
  }

  /** Show exactly these torrents (one torrent-get answer), in id order. */
  update(torrents) {
    const sorted = [...torrents].sort((a, b) => a.id - b.id);
    const present = new Set(sorted.map((t) => t.id));
    for (const [id, row] of this.rows) {
      if (!present.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
        this.selected.delete(id);
      }
    }
    let previous = null;
    for (const t of sorted) {
      let row = this.rows.get(t.id);
      if (!row) {
        row = this.createRow(t);
        this.rows.set(t.id, row);
      }
      row.torrent = t;
      this.fillRow(row, t);
      const expected = previous ? previous.nextSibling : this.tbody.firstChild;
      if (expected !== row.tr) this.tbody.insertBefore(row.tr, expected);
      previous = row.tr;
    }
    this.selectionChanged();
  }

  createRow(t) {
    const check = h("input", { type: "checkbox" });
    check.addEventListener("change", () => {
      if (check.checked) this.selected.add(t.id);
      else this.selected.delete(t.id);
      this.selectionChanged();
    });
    const open = h("button", { type: "button", className: "open-detail" });
    open.addEventListener("click", () => this.callbacks.onOpen(t.id));
    const bar = h("progress", { max: 1, value: 0 });
    const pct = h("span", { className: "pct" });
    const parts = {
      check, open, bar, pct,
      size: h("td", { className: "num size" }),
      state: h("td", { className: "state" }),
      down: h("td", { className: "num down" }),
      up: h("td", { className: "num up" }),
      peers: h("td", { className: "num peers" }),
      eta: h("td", { className: "num eta" }),
      ratio: h("td", { className: "num ratio" }),
    };
    const tr = h(
      "tr",
      { dataset: { id: String(t.id), hash: t.hashString || "" } },
      h("td", { className: "col-select" }, check),
      h("td", { className: "name" }, open),
      parts.size,
      h("td", {}, h("div", { className: "progress" }, bar, pct)),
      parts.state, parts.down, parts.up, parts.peers, parts.eta, parts.ratio,
    );
    return { tr, parts, torrent: t };
  }

  fillRow(row, t) {
    const p = row.parts;
    const name = t.name || t.hashString || `Torrent ${t.id}`;
    setText(p.open, name);
    p.open.setAttribute("aria-label", `Details of ${name}`);
    p.check.setAttribute("aria-label", `Select ${name}`);
    p.check.checked = this.selected.has(t.id);
    row.tr.classList.toggle("selected", p.check.checked);
    row.tr.classList.toggle("open", t.id === this.openId);
    const size = t.sizeWhenDone || t.totalSize || 0;
    setText(p.size, size ? formatSize(size) : "–");
    p.size.title = t.totalSize && t.totalSize !== size ? `${formatSize(t.totalSize)} in all files` : "";
    const fraction = t.status === Status.CHECK && Number.isFinite(t.recheckProgress) ? t.recheckProgress : t.percentDone;
    p.bar.value = Number.isFinite(fraction) ? fraction : 0;
    p.bar.setAttribute("aria-label", `Progress of ${name}`);
    setText(p.pct, formatPercent(fraction));
    const state = formatState(t);
    setText(p.state, state);
    p.state.title = state; // long error messages are cut in the cell
    p.state.classList.toggle("error", Boolean(t.error));
    p.state.classList.toggle("seeding", t.status === Status.SEED);
    setText(p.down, formatRate(t.rateDownload));
    setText(p.up, formatRate(t.rateUpload));
    setText(p.peers, Number.isFinite(t.peersConnected) ? t.peersConnected : "–");
    p.peers.title = `${t.peersSendingToUs || 0} sending to us, ${t.peersGettingFromUs || 0} receiving from us`;
    setText(p.eta, t.leftUntilDone === 0 ? "–" : formatEta(t.eta));
    setText(p.ratio, formatRatio(t.uploadRatio));
  }

  selectionChanged() {
    for (const [id, row] of this.rows) row.tr.classList.toggle("selected", this.selected.has(id));
    const n = this.selected.size;
    this.selectAll.checked = n > 0 && n === this.rows.size;
    this.selectAll.indeterminate = n > 0 && n < this.rows.size;
    this.callbacks.onSelection(this.selectedIds());
  }
}
