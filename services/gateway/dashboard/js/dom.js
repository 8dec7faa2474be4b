// Small DOM helpers. Text is always set as text (never innerHTML): API values may hold anything.

import { ApiError } from "./api.js";

export const $ = (selector, root = document) => root.querySelector(selector);

/** Build an element: attributes (strings), then children (nodes or text). */
export function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  const list = Array.isArray(children) ? children : [children];
  for (const child of list) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function percent(value) {
  return typeof value === "number" ? `${(value * 100).toFixed(1)}%` : "—";
}

/** Show an error with its machine code (ApiError) in an element with role=alert. */
export function showError(node, exc) {
  node.textContent = exc instanceof ApiError ? exc.display() : `client.error: ${exc && exc.message ? exc.message : exc}`;
  if (exc instanceof ApiError) node.dataset.code = exc.code;
  else delete node.dataset.code;
  node.hidden = false;
}

export function hideError(node) {
  node.hidden = true;
  node.textContent = "";
  delete node.dataset.code;
}

/** Replace a node's children, skipping null/undefined (conditional parts). */
export function fill(node, ...children) {
  node.replaceChildren(...children.filter((child) => child !== null && child !== undefined && child !== false));
}
