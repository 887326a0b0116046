// Small DOM helpers. Text always goes in through textContent: names from torrents are never parsed as HTML.

/**
 * Create an element.
 * @param {string} tag
 * @param {object} props properties (className, type, ...), `dataset`, `attrs` (attributes) and `on` (events)
 * @param {...(Node|string)} children
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "attrs") for (const [a, v] of Object.entries(value)) node.setAttribute(a, String(v));
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

/** Set a node's text only when it changed (keeps screen readers and selections calm). */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

/** Element by id; throws if the page lacks it (a programming error, not a runtime condition). */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`missing element #${id}`);
  return node;
}

/** A <td> with text, optionally numeric (right-aligned). */
export function cell(text, className = "") {
  return h("td", { className, textContent: String(text) });
}

/** Replace the rows of a <tbody> with new ones built by `row(item, index)`. */
export function fillRows(tbody, items, row) {
  tbody.replaceChildren(...items.map(row));
}
