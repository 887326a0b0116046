// Global speed limits: the header's summary and alternative-speed switch, and the limits dialog
// (session-get / session-set speed-limit-down/up, their *-enabled flags, alt-speed-down/up/enabled).

import { byId, setText } from "./dom.js";
import { speedLimitUnit } from "./format.js";

/** session-get fields this needs (with `units` and `download-dir` for the rest of the page). */
export const SESSION_FIELDS = [
  "speed-limit-down", "speed-limit-down-enabled", "speed-limit-up", "speed-limit-up-enabled",
  "alt-speed-down", "alt-speed-up", "alt-speed-enabled", "units", "download-dir", "version", "rpc-version",
];

/** Largest limit accepted by the form, in speed units (about 4 TB/s: far above any link). */
const MAX_LIMIT = 2 ** 32 - 1;

function limitText(enabled, value) {
  return enabled ? `${value} ${speedLimitUnit()}` : "unlimited";
}

export class SpeedLimits {
  /**
   * @param {{rpc: import("./rpc.js").RpcClient, notify: (message: string, isError?: boolean) => void,
   *          refreshSession: () => Promise<void>}} deps
   */
  constructor(deps) {
    this.deps = deps;
    this.session = null;
    this.dialog = byId("limits-dialog");
    this.form = byId("limits-form");
    this.altButton = byId("alt-speed");
    this.inputs = {
      downEnabled: byId("limit-down-enabled"), down: byId("limit-down"),
      upEnabled: byId("limit-up-enabled"), up: byId("limit-up"),
      altEnabled: byId("alt-enabled"), altDown: byId("alt-down"), altUp: byId("alt-up"),
    };
    for (const [flag, field] of [["downEnabled", "down"], ["upEnabled", "up"]]) {
      this.inputs[flag].addEventListener("change", () => {
        this.inputs[field].disabled = !this.inputs[flag].checked;
      });
    }
    byId("open-limits").addEventListener("click", () => this.open());
    this.altButton.addEventListener("click", () => this.toggleAlt());
    this.form.addEventListener("submit", (event) => {
      const button = event.submitter;
      if (button && button.value === "save") {
        event.preventDefault();
        this.save();
      }
    });
  }

  /** Adopt one session-get answer. */
  update(session) {
    this.session = session;
    const alt = Boolean(session["alt-speed-enabled"]);
    this.altButton.setAttribute("aria-pressed", String(alt));
    let summary;
    if (alt) {
      summary = `Alternative limits: ↓ ${session["alt-speed-down"]} ↑ ${session["alt-speed-up"]} ${speedLimitUnit()}`;
    } else {
      summary = `Limits: ↓ ${limitText(session["speed-limit-down-enabled"], session["speed-limit-down"])}, ` +
        `↑ ${limitText(session["speed-limit-up-enabled"], session["speed-limit-up"])}`;
    }
    setText(byId("limits-summary"), summary);
    for (const unit of document.querySelectorAll("[data-unit]")) setText(unit, speedLimitUnit());
  }

  open() {
    const s = this.session || {};
    const i = this.inputs;
    i.downEnabled.checked = Boolean(s["speed-limit-down-enabled"]);
    i.down.value = s["speed-limit-down"] ?? 100;
    i.down.disabled = !i.downEnabled.checked;
    i.upEnabled.checked = Boolean(s["speed-limit-up-enabled"]);
    i.up.value = s["speed-limit-up"] ?? 100;
    i.up.disabled = !i.upEnabled.checked;
    i.altEnabled.checked = Boolean(s["alt-speed-enabled"]);
    i.altDown.value = s["alt-speed-down"] ?? 50;
    i.altUp.value = s["alt-speed-up"] ?? 50;
    setText(byId("limits-error"), "");
    this.dialog.showModal();
    i.downEnabled.focus();
  }

  /** The form's value of a limit field, or null (after showing why) when it is not a whole number >= 0. */
  number(input, what) {
    const value = Number(input.value);
    if (input.value.trim() === "" || !Number.isInteger(value) || value < 0 || value > MAX_LIMIT) {
      setText(byId("limits-error"), `${what} must be a whole number of ${speedLimitUnit()} (0 or more).`);
      input.focus();
      return null;
    }
    return value;
  }

  async save() {
    const i = this.inputs;
    const args = {
      "speed-limit-down-enabled": i.downEnabled.checked,
      "speed-limit-up-enabled": i.upEnabled.checked,
      "alt-speed-enabled": i.altEnabled.checked,
    };
    const fields = [
      ["speed-limit-down", i.down, "The download limit", i.downEnabled.checked],
      ["speed-limit-up", i.up, "The upload limit", i.upEnabled.checked],
      ["alt-speed-down", i.altDown, "The alternative download limit", true],
      ["alt-speed-up", i.altUp, "The alternative upload limit", true],
    ];
    for (const [key, input, what, needed] of fields) {
      if (!needed && input.value.trim() === "") continue;
      const value = this.number(input, what);
      if (value === null) return;
      args[key] = value;
    }
    try {
      await this.deps.rpc.call("session-set", args);
    } catch (err) {
      setText(byId("limits-error"), `Could not save: ${err.message}`);
      return;
    }
    this.dialog.close("saved");
    this.deps.notify("Speed limits saved");
    await this.deps.refreshSession();
  }

  async toggleAlt() {
    const on = this.altButton.getAttribute("aria-pressed") !== "true";
    try {
      await this.deps.rpc.call("session-set", { "alt-speed-enabled": on });
      this.deps.notify(on ? "Alternative speed limits on" : "Alternative speed limits off");
    } catch (err) {
      this.deps.notify(`Could not switch the alternative limits: ${err.message}`, true);
    }
    await this.deps.refreshSession();
  }
}
