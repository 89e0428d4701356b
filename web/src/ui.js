// Small DOM helpers shared by the page's modules.
//
// The page is built with createElement + textContent: session data never passes
// through innerHTML. Model output goes through the markdown renderer (markdown/), whose
// HTML is sanitised before it reaches the page.

// el("button", {class: "btn", title: "Copy", onclick: f}, [icon("copy"), "Copy"])
export function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of [].concat(children)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// 24x24 stroke icons (Feather-style paths), so the page needs no icon font or CDN.
const ICONS = {
  plus: ["M12 5v14", "M5 12h14"],
  trash: ["M3 6h18", "M8 6V4h8v2", "M19 6l-1 14H6L5 6"],
  copy: ["M9 9h11v11H9z", "M5 15H4V4h11v1"],
  check: ["M20 6L9 17l-5-5"],
  edit: ["M12 20h9", "M16.5 3.5a2.1 2.1 0 013 3L7 19l-4 1 1-4z"],
  refresh: ["M23 4v6h-6", "M20.5 15a9 9 0 11-2.1-9.4L23 10"],
  download: ["M21 15v4a2 2 0 01-2 2H5a2 2 0 01-2-2v-4", "M7 10l5 5 5-5", "M12 15V3"],
  sliders: ["M4 21v-7", "M4 10V3", "M12 21v-9", "M12 8V3", "M20 21v-5", "M20 12V3",
    "M1 14h6", "M9 8h6", "M17 16h6"],
  send: ["M22 2L11 13", "M22 2l-7 20-4-9-9-4z"],
  stop: ["M6 6h12v12H6z"],
  menu: ["M3 6h18", "M3 12h18", "M3 18h18"],
  x: ["M18 6L6 18", "M6 6l12 12"],
  chat: ["M21 15a2 2 0 01-2 2H7l-4 4V5a2 2 0 012-2h14a2 2 0 012 2z"],
  upload: ["M21 15v4a2 2 0 01-2 2H5a2 2 0 01-2-2v-4", "M17 8l-5-5-5 5", "M12 3v12"],
  search: ["M11 19a8 8 0 100-16 8 8 0 000 16z", "M21 21l-4.35-4.35"],
  sun: ["M12 17a5 5 0 100-10 5 5 0 000 10z", "M12 1v2", "M12 21v2", "M4.2 4.2l1.4 1.4",
    "M18.4 18.4l1.4 1.4", "M1 12h2", "M21 12h2", "M4.2 19.8l1.4-1.4", "M18.4 5.6l1.4-1.4"],
  moon: ["M21 12.8A9 9 0 1111.2 3a7 7 0 009.8 9.8z"],
  left: ["M15 18l-6-6 6-6"],
  right: ["M9 18l6-6-6-6"],
  branch: ["M6 3v12", "M18 9a3 3 0 100-6 3 3 0 000 6z", "M6 21a3 3 0 100-6 3 3 0 000 6z",
    "M18 9a9 9 0 01-9 9"],
  key: ["M21 2l-2 2", "M15.5 7.5l3 3L22 7l-3-3", "M11.4 12.6a5.5 5.5 0 11-7.8 7.8 5.5 5.5 0 017.8-7.8z",
    "M11.4 12.6L19 5"],
};

export function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  for (const d of ICONS[name]) {
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

// The async Clipboard API only exists in secure contexts; a server reached over plain
// http on a LAN address is not one, so fall back to the old selection trick there.
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // permission denied (e.g. unfocused headless page): try the fallback
    }
  }
  const area = el("textarea", { class: "offscreen", readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  return ok;
}

// A copy button that briefly confirms, used for code blocks and whole messages.
export function copyButton(getText, label = "Copy") {
  const text = el("span", { text: label });
  const button = el("button", { class: "mini", type: "button", title: "Copy to clipboard" },
    [icon("copy"), text]);
  button.addEventListener("click", async () => {
    const ok = await copyText(getText());
    text.textContent = ok ? "Copied" : "Copy failed";
    button.classList.toggle("done", ok);
    setTimeout(() => {
      text.textContent = label;
      button.classList.remove("done");
    }, 1500);
  });
  return button;
}

// Save text as a file: a temporary link to a Blob URL (no server round trip).
export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// "3 min ago", "yesterday", "12 Mar": how long ago an ISO time was, for the sidebar.
export function ago(iso, now = Date.now()) {
  const then = Date.parse(iso);
  const minutes = Math.round((now - then) / 60000);
  if (!(minutes >= 1)) return "just now";
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 24) return `${hours} h ago`;
  const days = Math.round(hours / 24);
  if (days === 1) return "yesterday";
  if (days < 7) return `${days} days ago`;
  return new Date(then).toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

// Read/write JSON in localStorage without letting a corrupt entry break the page.
export function loadJson(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

export function saveJson(key, value) {
  localStorage.setItem(key, JSON.stringify(value));
}
