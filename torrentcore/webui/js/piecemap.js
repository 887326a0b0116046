// The piece map: torrent-get's `pieces` (a base64 bitfield, most significant bit first) drawn on a canvas.

/** At most this many cells are drawn; beyond it each cell stands for several pieces, shaded by how many
 * of them are done (a 100 000-piece torrent stays readable and cheap to draw). */
const MAX_CELLS = 4096;
/** Cell edge in CSS pixels, the largest that keeps the map within MAX_HEIGHT. */
const MIN_CELL = 3;
const MAX_CELL = 14;
const MAX_HEIGHT = 220;
/** Gap between cells when they are big enough to show one. */
const GAP = 1;

/**
 * Decode the `pieces` field into a Uint8Array of 0/1 flags, one per piece.
 * @param {string} base64 the bitfield
 * @param {number} pieceCount number of pieces (spare bits of the last byte are ignored)
 */
export function decodePieces(base64, pieceCount) {
  const flags = new Uint8Array(Math.max(0, pieceCount));
  let bytes;
  try {
    bytes = atob(base64 || "");
  } catch {
    return flags; // not base64: show nothing as done rather than fail
  }
  const n = Math.min(pieceCount, bytes.length * 8);
  for (let i = 0; i < n; i++) {
    flags[i] = (bytes.charCodeAt(i >> 3) >> (7 - (i & 7))) & 1;
  }
  return flags;
}

/** Count of set flags. */
export function countDone(flags) {
  let done = 0;
  for (let i = 0; i < flags.length; i++) done += flags[i];
  return done;
}

/**
 * Draw the map of `flags` on `canvas`, sized to its CSS width.
 * @param {HTMLCanvasElement} canvas
 * @param {Uint8Array} flags one 0/1 flag per piece
 */
export function drawPieceMap(canvas, flags) {
  const width = Math.max(100, Math.floor(canvas.parentElement ? canvas.parentElement.clientWidth : 600));
  const cells = Math.min(flags.length, MAX_CELLS);
  const style = getComputedStyle(canvas);
  const doneColor = style.getPropertyValue("--piece-done").trim() || "#2f6fd1";
  const missingColor = style.getPropertyValue("--piece-missing").trim() || "#dde3ea";
  if (cells === 0) {
    canvas.width = canvas.height = 0;
    return;
  }
  let cell = Math.floor(Math.sqrt((width * MAX_HEIGHT) / cells));
  cell = Math.max(MIN_CELL, Math.min(MAX_CELL, cell));
  const cols = Math.max(1, Math.floor(width / cell));
  const rows = Math.ceil(cells / cols);
  const ratio = window.devicePixelRatio || 1;
  canvas.style.width = `${cols * cell}px`;
  canvas.style.height = `${rows * cell}px`;
  canvas.width = Math.round(cols * cell * ratio);
  canvas.height = Math.round(rows * cell * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  const gap = cell >= 6 ? GAP : 0;
  const perCell = flags.length / cells;
  for (let c = 0; c < cells; c++) {
    const first = Math.floor(c * perCell);
    const last = Math.max(first + 1, Math.floor((c + 1) * perCell));
    let done = 0;
    for (let i = first; i < last; i++) done += flags[i];
    const fraction = done / (last - first);
    const x = (c % cols) * cell;
    const y = Math.floor(c / cols) * cell;
    ctx.globalAlpha = 1;
    ctx.fillStyle = missingColor;
    ctx.fillRect(x, y, cell - gap, cell - gap);
    if (fraction > 0) {
      ctx.globalAlpha = fraction === 1 ? 1 : 0.25 + 0.75 * fraction;
      ctx.fillStyle = doneColor;
      ctx.fillRect(x, y, cell - gap, cell - gap);
    }
  }
  ctx.globalAlpha = 1;
}
