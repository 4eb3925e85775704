// What the dashboard's scripts share: element lookup and creation (values always as text,
// never as markup), the JSON API call, number formatting.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ''));
  return node;
}

export async function api(path, init) {
  const response = await fetch(path, { cache: 'no-store', ...init });
  let body;
  try {
    body = await response.json();
  } catch {
    body = { error: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) throw Object.assign(new Error(body.error ?? `${response.status} ${response.statusText}`), { status: response.status });
  return body;
}

export const number = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en'));

/** Fills the table's body with a row per item (`columns` makes it), or one 'none' row. */
export function fillTable(id, rows, columns) {
  const body = $(id).tBodies[0];
  const head = $(id).tHead.rows[0].cells.length;
  body.replaceChildren(...(rows.length === 0 ? [el('tr', {}, el('td', { class: 'empty', colspan: String(head) }, 'none'))] : rows.map(columns)));
}

/** A bar `percent` wide, for the bar lists. */
export function fill(percent) {
  const bar = el('span', { class: 'fill' });
  bar.style.width = `${percent.toFixed(1)}%`;
  return bar;
}
