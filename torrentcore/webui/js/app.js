// The page: polls the daemon through the Transmission RPC and wires the list, the detail panel, adding,
// the actions and the speed limits together.

import { Adder } from "./adding.js";
import { DetailView, DETAIL_FIELDS } from "./detail.js";
import { byId, setText } from "./dom.js";
import { formatRate, setUnits } from "./format.js";
import { RateHistory } from "./rategraph.js";
import { RpcClient } from "./rpc.js";
import { SESSION_FIELDS, SpeedLimits } from "./speedlimits.js";
import { LIST_FIELDS, TorrentList } from "./torrentlist.js";

/** Time between two polls of the torrent list (each poll is one torrent-get, plus one for the detail). */
const POLL_MS = 1500;
/** session-get (limits, units) once every this many polls; at once after a change made here. */
const SESSION_EVERY = 5;
/** After a failed poll, wait this long before the next one (doubling up to POLL_MAX_MS). */
const POLL_MAX_MS = 15000;
/** How long a notice stays on screen. */
const NOTICE_MS = 5000;

const ACTION_NAMES = {
  "torrent-start": "Started", "torrent-stop": "Stopped", "torrent-verify": "Verifying",
  "torrent-reannounce": "Asked the trackers for peers:",
};

class App {
  constructor() {
    this.rpc = new RpcClient();
    this.history = new RateHistory();
    this.pollCount = 0;
    this.failures = 0;
    this.timer = null;
    this.inFlight = null;
    this.followUp = null;
    this.removing = [];
    this.noticeTimer = null;

    const notify = (message, isError) => this.notify(message, isError);
    const refresh = () => this.refresh();
    this.list = new TorrentList(byId("torrent-rows"), byId("select-all"), {
      onOpen: (id) => this.openDetail(id),
      onSelection: (ids) => this.selectionChanged(ids),
      onShown: (shown, total) => this.shownChanged(shown, total),
    });
    const filter = () => this.list.setFilter(byId("filter-text").value, byId("filter-state").value);
    byId("filter-text").addEventListener("input", filter);
    byId("filter-state").addEventListener("change", filter);
    this.detail = new DetailView({
      rpc: this.rpc, history: this.history, notify, refresh, onClose: () => this.list.setOpen(null),
    });
    this.adder = new Adder({ rpc: this.rpc, notify, refresh });
    this.limits = new SpeedLimits({ rpc: this.rpc, notify, refreshSession: () => this.refreshSession() });

    for (const button of byId("actions").querySelectorAll("button[data-action]")) {
      button.addEventListener("click", () => this.act(button.dataset.action));
    }
    byId("remove-form").addEventListener("submit", (event) => {
      if (event.submitter && event.submitter.value === "remove") {
        event.preventDefault();
        this.remove();
      }
    });
  }

  /** First the session (units, limits; it also gets the session id through the 409), then the list. */
  start() {
    this.refreshSession().finally(() => this.refresh());
  }

  // -- polling ---------------------------------------------------------------------------------------
  /** Poll now and schedule the next one. During a poll, one more follows it at once (its answer may
   * predate the change that asked for this refresh); callers then wait for that one. */
  refresh() {
    if (this.inFlight) {
      if (!this.followUp) {
        this.followUp = this.inFlight.then(() => {
          this.followUp = null;
          return this.refresh();
        });
      }
      return this.followUp;
    }
    clearTimeout(this.timer);
    this.inFlight = this.poll().finally(() => {
      this.inFlight = null;
      const delay = this.failures ? Math.min(POLL_MAX_MS, POLL_MS * 2 ** this.failures) : POLL_MS;
      this.timer = setTimeout(() => this.refresh(), delay);
    });
    return this.inFlight;
  }

  async poll() {
    try {
      const { torrents = [] } = await this.rpc.call("torrent-get", { fields: LIST_FIELDS });
      this.history.record(torrents);
      this.list.update(torrents);
      this.showTotals(torrents);
      if (this.detail.id !== null) {
        if (!torrents.some((t) => t.id === this.detail.id)) {
          this.detail.gone();
        } else {
          const answer = await this.rpc.call("torrent-get", { ids: [this.detail.id], fields: DETAIL_FIELDS });
          this.detail.update((answer.torrents || [])[0]);
        }
      }
      if (++this.pollCount % SESSION_EVERY === 0) await this.refreshSession();
      this.connected();
      document.body.dataset.polls = String(this.pollCount); // lets tests wait for a number of polls
    } catch (err) {
      this.disconnected(err);
    }
  }

  async refreshSession() {
    try {
      const session = await this.rpc.call("session-get", { fields: SESSION_FIELDS });
      setUnits(session.units);
      this.limits.update(session);
      this.adder.setDefaultDir(session["download-dir"]);
    } catch (err) {
      this.disconnected(err);
    }
  }

  connected() {
    this.failures = 0;
    byId("connection").hidden = true;
    document.body.dataset.connected = "true";
  }

  disconnected(err) {
    this.failures = Math.min(this.failures + 1, 8);
    const banner = byId("connection");
    setText(banner, `${err.message} Retrying…`);
    banner.hidden = false;
    document.body.dataset.connected = "false";
  }

  showTotals(torrents) {
    let down = 0;
    let up = 0;
    for (const t of torrents) {
      down += t.rateDownload || 0;
      up += t.rateUpload || 0;
    }
    setText(byId("session-down"), formatRate(down));
    setText(byId("session-up"), formatRate(up));
  }

  // -- selection and actions -------------------------------------------------------------------------
  selectionChanged(ids) {
    for (const button of byId("actions").querySelectorAll("button[data-action]")) button.disabled = ids.length === 0;
    setText(byId("selection-count"), ids.length ? `${ids.length} selected` : "");
  }

  shownChanged(shown, total) {
    setText(byId("torrent-count"), !total ? "" : shown === total ? `(${total})` : `(${shown} of ${total} shown)`);
    byId("empty-list").hidden = total > 0;
    byId("none-shown").hidden = total === 0 || shown > 0;
  }

  openDetail(id) {
    const t = this.list.torrent(id);
    this.list.setOpen(id);
    this.detail.open(id, t ? t.name : "");
    this.refresh();
  }

  async act(action) {
    const ids = this.list.selectedIds();
    if (!ids.length) return;
    if (action === "remove") {
      this.askRemove(ids);
      return;
    }
    try {
      await this.rpc.call(action, { ids });
      this.notify(`${ACTION_NAMES[action] || action} ${this.describe(ids)}`);
    } catch (err) {
      this.notify(`${action} failed: ${err.message}`, true);
    }
    await this.refresh();
  }

  /** "name" for one torrent, "N torrents" for more. */
  describe(ids) {
    if (ids.length === 1) {
      const t = this.list.torrent(ids[0]);
      return t ? t.name : "1 torrent";
    }
    return `${ids.length} torrents`;
  }

  askRemove(ids) {
    this.removing = ids;
    setText(byId("remove-what"), `Remove ${this.describe(ids)} from the list?`);
    byId("remove-data").checked = false;
    byId("remove-dialog").showModal();
  }

  async remove() {
    const ids = this.removing || [];
    const deleteData = byId("remove-data").checked;
    byId("remove-dialog").close("remove");
    if (!ids.length) return;
    const what = this.describe(ids);
    try {
      await this.rpc.call("torrent-remove", { ids, "delete-local-data": deleteData });
      this.notify(deleteData ? `Removed ${what} and deleted its data` : `Removed ${what}`);
    } catch (err) {
      this.notify(`Could not remove ${what}: ${err.message}`, true);
    }
    await this.refresh();
  }

  // -- notices ---------------------------------------------------------------------------------------
  notify(message, isError = false) {
    const box = byId("notice");
    box.textContent = message;
    box.classList.toggle("error", isError);
    box.classList.add("shown");
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => box.classList.remove("shown"), NOTICE_MS);
  }
}

const app = new App();
window.torrentcoreApp = app; // for debugging from the browser console
app.start();
