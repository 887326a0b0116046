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

/** Sort keys of the column headers: a value to compare per torrent. */
const SORT_KEYS = {
  name: (t) => (t.name || "").toLocaleLowerCase(),
  size: (t) => t.sizeWhenDone || 0,
  progress: (t) => t.percentDone || 0,
  state: (t) => t.status,
  down: (t) => t.rateDownload || 0,
  up: (t) => t.rateUpload || 0,
  peers: (t) => t.peersConnected || 0,
  eta: (t) => (t.eta >= 0 ? t.eta : Number.MAX_SAFE_INTEGER),
  ratio: (t) => t.uploadRatio,
  added: (t) => t.id,
};

/** The "Show" filter's choices: which torrents each keeps. */
const STATE_FILTERS = {
  all: () => true,
  downloading: (t) => t.status === Status.DOWNLOAD || t.status === Status.DOWNLOAD_WAIT,
  seeding: (t) => t.status === Status.SEED || t.status === Status.SEED_WAIT,
  stopped: (t) => t.status === Status.STOPPED,
  active: (t) => (t.rateDownload || 0) > 0 || (t.rateUpload || 0) > 0,
  error: (t) => Boolean(t.error),
};

export class TorrentList {
  /**
   * @param {HTMLTableSectionElement} tbody rows go here
   * @param {HTMLInputElement} selectAll the header's "select all" checkbox
   * @param {{onOpen: (id: number) => void, onSelection: (ids: number[]) => void,
   *          onShown: (shown: number, total: number) => void}} callbacks
   */
  constructor(tbody, selectAll, callbacks) {
    this.tbody = tbody;
    this.selectAll = selectAll;
    this.callbacks = callbacks;
    /** @type {Map<number, {tr: HTMLTableRowElement, parts: object, torrent: object}>} */
    this.rows = new Map();
    /** Ids of the rows shown (filter applied), in display order. */
    this.shown = [];
    this.selected = new Set();
    this.openId = null;
    this.filterText = "";
    this.filterState = "all";
    this.sortKey = "added";
    this.sortAscending = true;
    selectAll.addEventListener("change", () => {
      this.selected = selectAll.checked ? new Set(this.shown) : new Set();
      this.selectionChanged();
    });
    for (const button of tbody.closest("table").querySelectorAll("thead button[data-sort]")) {
      // The arrow is decoration: aria-sort on the header tells assistive technology.
      button.append(h("span", { className: "arrow", attrs: { "aria-hidden": "true" } }));
      button.addEventListener("click", () => this.sortBy(button.dataset.sort));
    }
  }

  /** Torrents currently listed, by id. */
  torrent(id) {
    const row = this.rows.get(id);
    return row ? row.torrent : undefined;
  }

  /** Ids of the selected torrents, in display order. */
  selectedIds() {
    return this.shown.filter((id) => this.selected.has(id));
  }

  /** Mark the torrent whose details are shown (or none). */
  setOpen(id) {
    this.openId = id;
    for (const [rid, row] of this.rows) row.tr.classList.toggle("open", rid === id);
  }

  /** Show only torrents whose name contains `text` (any case) and that pass the state filter `state`. */
  setFilter(text, state) {
    this.filterText = text.trim().toLocaleLowerCase();
    this.filterState = state in STATE_FILTERS ? state : "all";
    this.render();
  }

  /** Sort by a column (again on the same one: the other way round); headers get aria-sort. */
  sortBy(key) {
    if (!(key in SORT_KEYS)) return;
    this.sortAscending = key === this.sortKey ? !this.sortAscending : true;
    this.sortKey = key;
    for (const button of this.tbody.closest("table").querySelectorAll("thead button[data-sort]")) {
      const th = button.closest("th");
      const on = button.dataset.sort === key;
      if (on) th.setAttribute("aria-sort", this.sortAscending ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
      setText(button.querySelector(".arrow"), on ? (this.sortAscending ? "▲" : "▼") : "");
    }
    this.render();
  }

  /** Show exactly these torrents (one torrent-get answer). */
  update(torrents) {
    const present = new Set(torrents.map((t) => t.id));
    for (const [id, row] of this.rows) {
      if (!present.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
        this.selected.delete(id);
      }
    }
    for (const t of torrents) {
      let row = this.rows.get(t.id);
      if (!row) {
        row = this.createRow(t);
        this.rows.set(t.id, row);
      }
      row.torrent = t;
      this.fillRow(row, t);
    }
    this.render();
  }

  /** Attach the rows that pass the filter, in sort order (moving only rows that are out of place). */
  render() {
    const keep = STATE_FILTERS[this.filterState];
    const text = this.filterText;
    const key = SORT_KEYS[this.sortKey];
    const direction = this.sortAscending ? 1 : -1;
    const visible = [...this.rows.values()]
      .map((row) => row.torrent)
      .filter((t) => keep(t) && (!text || (t.name || "").toLocaleLowerCase().includes(text)))
      .sort((a, b) => {
        const x = key(a);
        const y = key(b);
        const order = typeof x === "string" ? x.localeCompare(y) : x - y;
        return direction * order || a.id - b.id;
      });
    this.shown = visible.map((t) => t.id);
    const shown = new Set(this.shown);
    for (const [id, row] of this.rows) {
      if (!shown.has(id)) {
        row.tr.remove();
        this.selected.delete(id); // never act on a torrent the user cannot see
      }
    }
    let previous = null;
    for (const id of this.shown) {
      const tr = this.rows.get(id).tr;
      const expected = previous ? previous.nextSibling : this.tbody.firstChild;
      if (expected !== tr) this.tbody.insertBefore(tr, expected);
      previous = tr;
    }
    this.callbacks.onShown(this.shown.length, this.rows.size);
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
    for (const [id, row] of this.rows) {
      const on = this.selected.has(id);
      row.parts.check.checked = on;
      row.tr.classList.toggle("selected", on);
    }
    const n = this.selectedIds().length;
    this.selectAll.checked = n > 0 && n === this.shown.length;
    this.selectAll.indeterminate = n > 0 && n < this.shown.length;
    this.callbacks.onSelection(this.selectedIds());
  }
}
