// Adding torrents: .torrent files (upload or drop, sent as base64 `metainfo`) and magnet links
// (`filename`), through torrent-add.

import { byId } from "./dom.js";

/** A .torrent larger than this is refused before upload (real ones are kilobytes to a few MiB). */
const MAX_TORRENT_BYTES = 16 * 1024 * 1024;

/** Read a File as base64 (no data: prefix). */
function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      resolve(url.slice(url.indexOf(",") + 1));
    };
    reader.onerror = () => reject(reader.error || new Error("cannot read the file"));
    reader.readAsDataURL(file);
  });
}

function looksLikeMagnet(text) {
  return /^magnet:\?/i.test(text.trim());
}

export class Adder {
  /**
   * @param {{rpc: import("./rpc.js").RpcClient, notify: (message: string, isError?: boolean) => void,
   *          refresh: () => Promise<void>}} deps
   */
  constructor(deps) {
    this.deps = deps;
    this.fileInput = byId("torrent-file");
    this.magnetInput = byId("magnet");
    this.dirInput = byId("download-dir");
    this.pausedInput = byId("add-paused");
    byId("add-file-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.addFiles([...this.fileInput.files], () => {
        this.fileInput.value = "";
      });
    });
    byId("add-magnet-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const link = this.magnetInput.value.trim();
      if (!looksLikeMagnet(link)) {
        this.deps.notify("A magnet link starts with magnet:?", true);
        this.magnetInput.focus();
        return;
      }
      this.addMagnets([link], () => {
        this.magnetInput.value = "";
      });
    });
    this.installDrop(byId("drop-overlay"));
  }

  /** The daemon's default download folder, shown as the placeholder of "Save to". */
  setDefaultDir(dir) {
    if (dir) this.dirInput.placeholder = dir;
  }

  /** Arguments every torrent-add gets from the form. */
  commonArgs() {
    const args = { paused: this.pausedInput.checked };
    const dir = this.dirInput.value.trim();
    if (dir) args["download-dir"] = dir;
    return args;
  }

  /** Send one torrent-add; report the outcome; return whether it was accepted. */
  async add(args, label) {
    try {
      const result = await this.deps.rpc.call("torrent-add", { ...this.commonArgs(), ...args });
      const added = result["torrent-added"];
      const duplicate = result["torrent-duplicate"];
      if (duplicate) this.deps.notify(`Already there: ${duplicate.name || label}`);
      else this.deps.notify(`Added ${(added && added.name) || label}`);
      return true;
    } catch (err) {
      this.deps.notify(`Could not add ${label}: ${err.message}`, true);
      return false;
    }
  }

  /** Add .torrent files; `onAllAdded` runs as soon as every one was accepted (before the list refresh). */
  async addFiles(files, onAllAdded = () => {}) {
    if (!files.length) {
      this.deps.notify("Choose a .torrent file first.", true);
      this.fileInput.focus();
      return;
    }
    let ok = true;
    for (const file of files) {
      if (file.size > MAX_TORRENT_BYTES) {
        this.deps.notify(`${file.name} is too large to be a .torrent file.`, true);
        ok = false;
        continue;
      }
      let metainfo;
      try {
        metainfo = await readBase64(file);
      } catch (err) {
        this.deps.notify(`Could not read ${file.name}: ${err.message}`, true);
        ok = false;
        continue;
      }
      ok = (await this.add({ metainfo }, file.name)) && ok;
    }
    if (ok) onAllAdded();
    await this.deps.refresh();
  }

  /** Add magnet links; `onAllAdded` runs as soon as every one was accepted (before the list refresh). */
  async addMagnets(links, onAllAdded = () => {}) {
    let ok = true;
    for (const link of links) ok = (await this.add({ filename: link }, "the magnet link")) && ok;
    if (ok) onAllAdded();
    await this.deps.refresh();
  }

  /** Dropping .torrent files (or a dragged magnet link) anywhere on the page adds them. */
  installDrop(overlay) {
    let depth = 0;
    const carriesSomething = (event) => {
      const types = event.dataTransfer ? [...event.dataTransfer.types] : [];
      return types.includes("Files") || types.includes("text/uri-list") || types.includes("text/plain");
    };
    document.addEventListener("dragenter", (event) => {
      if (!carriesSomething(event)) return;
      event.preventDefault();
      depth++;
      overlay.hidden = false;
    });
    document.addEventListener("dragover", (event) => {
      if (!carriesSomething(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    document.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) overlay.hidden = true;
    });
    document.addEventListener("drop", (event) => {
      event.preventDefault();
      depth = 0;
      overlay.hidden = true;
      const data = event.dataTransfer;
      if (!data) return;
      const files = [...data.files];
      if (files.length) {
        this.addFiles(files);
        return;
      }
      const text = data.getData("text/uri-list") || data.getData("text/plain") || "";
      const links = text.split(/\s+/).filter(looksLikeMagnet);
      if (links.length) this.addMagnets(links);
      else this.deps.notify("Drop .torrent files or a magnet link.", true);
    });
  }
}
