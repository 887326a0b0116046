// Formatting of sizes, rates, times and torrent states for display.

/** Torrent `status` numbers of rpc-spec.md section 3.3. */
export const Status = Object.freeze({
  STOPPED: 0, CHECK_WAIT: 1, CHECK: 2, DOWNLOAD_WAIT: 3, DOWNLOAD: 4, SEED_WAIT: 5, SEED: 6,
});

const STATUS_NAMES = ["Stopped", "Queued to verify", "Verifying", "Queued", "Downloading", "Queued to seed", "Seeding"];

/** File priorities (tr_priority_t). */
export const Priority = Object.freeze({ LOW: -1, NORMAL: 0, HIGH: 1 });

/** Units the daemon announces in session-get `units`; these defaults are Transmission's (SI kilo). */
const units = {
  speedBytes: 1000, speedUnits: ["kB/s", "MB/s", "GB/s", "TB/s"],
  sizeBytes: 1000, sizeUnits: ["kB", "MB", "GB", "TB"],
};

/** Adopt the daemon's `units` object (session-get), so limits and rates use its kilo. */
export function setUnits(u) {
  if (!u) return;
  if (u["speed-bytes"] > 0 && Array.isArray(u["speed-units"]) && u["speed-units"].length === 4) {
    units.speedBytes = u["speed-bytes"];
    units.speedUnits = u["speed-units"].map(String);
  }
  if (u["size-bytes"] > 0 && Array.isArray(u["size-units"]) && u["size-units"].length === 4) {
    units.sizeBytes = u["size-bytes"];
    units.sizeUnits = u["size-units"].map(String);
  }
}

/** Bytes per "K" of speed limits (session-set speed-limit-* are in these units). */
export function speedKilo() {
  return units.speedBytes;
}

/** Name of the speed-limit unit, e.g. "kB/s". */
export function speedLimitUnit() {
  return units.speedUnits[0];
}

function scaled(value, kilo, names, plain) {
  if (!Number.isFinite(value) || value < 0) return "–";
  if (value < kilo) return `${Math.round(value)} ${plain}`;
  let v = value / kilo;
  let i = 0;
  while (v >= kilo && i < names.length - 1) {
    v /= kilo;
    i++;
  }
  return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v)} ${names[i]}`;
}

/** A byte count, e.g. "3.15 MB". */
export function formatSize(bytes) {
  return scaled(bytes, units.sizeBytes, units.sizeUnits, "B");
}

/** A rate in bytes per second, e.g. "1.20 MB/s". */
export function formatRate(bytesPerSecond) {
  return scaled(bytesPerSecond, units.speedBytes, units.speedUnits, "B/s");
}

/** `eta` seconds of torrent-get: -1 not available, -2 unknown. */
export function formatEta(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.round(hours / 24)} days`;
}

/** `uploadRatio`: -1 not available, -2 infinite. */
export function formatRatio(ratio) {
  if (ratio === -2) return "∞";
  if (!Number.isFinite(ratio) || ratio < 0) return "–";
  return ratio.toFixed(2);
}

/** A fraction 0..1 as "42.0 %"; 100 % only when it is exactly 1. */
export function formatPercent(fraction) {
  if (!Number.isFinite(fraction)) return "–";
  const p = Math.max(0, Math.min(1, fraction)) * 100;
  if (p >= 100) return "100 %";
  return `${Math.min(p, 99.9).toFixed(1)} %`;
}

/** A unix time (seconds) as local date and time; 0 means never. */
export function formatDate(unixSeconds) {
  if (!unixSeconds || unixSeconds <= 0) return "–";
  return new Date(unixSeconds * 1000).toLocaleString();
}

/** State of a torrent for the list: status name, plus error, stalled or finished details. */
export function formatState(t) {
  if (t.error && t.errorString) return `Error: ${t.errorString}`;
  let name = STATUS_NAMES[t.status] || `Status ${t.status}`;
  if (t.status === Status.DOWNLOAD && t.metadataPercentComplete !== undefined && t.metadataPercentComplete < 1) {
    name = "Fetching metadata";
  } else if (t.status === Status.DOWNLOAD && t.isStalled) {
    name = "Stalled";
  } else if (t.status === Status.STOPPED && t.isFinished) {
    name = "Finished";
  } else if (t.status === Status.CHECK && Number.isFinite(t.recheckProgress)) {
    name = `Verifying ${formatPercent(t.recheckProgress)}`;
  }
  return name;
}

/** True when the torrent is running (or queued to run): "Stop" applies, "Start" does not. */
export function isActive(t) {
  return t.status !== Status.STOPPED;
}
