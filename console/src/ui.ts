// Shared UI pieces: panels, toasts, confirmation, error text, page context.
import { ApiError, can, type Role } from "./api";
import { h } from "./util";

export type Cleanup = () => void;

/** What a page gets: its root element and a way to register cleanups. */
export interface Page {
  root: HTMLElement;
  onLeave(f: Cleanup): void;
  /** setInterval that stops when the page is left. */
  every(ms: number, f: () => void): void;
}

export function panel(title: string, body: HTMLElement, ...tools: (Node | null)[]): HTMLElement {
  return h("section", { class: "panel" }, h("header", null, h("h3", null, title), h("div", { class: "tools" }, ...tools)), body);
}

export function message(e: unknown): string {
  if (e instanceof ApiError) return `${e.detail || e.code}${e.status ? ` (${e.status} ${e.code})` : ""}`;
  if (e instanceof Error) return e.message;
  return String(e);
}

let toasts: HTMLElement | null = null;

export function toast(text: string, kind: "ok" | "error" | "info" = "info"): void {
  toasts ??= document.body.appendChild(h("div", { class: "toasts", role: "status", "aria-live": "polite" }));
  const t = h("div", { class: `toast ${kind}` }, text);
  toasts.append(t);
  // A few at a time: the oldest make way.
  while (toasts.children.length > 4) toasts.firstElementChild!.remove();
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 3000);
}

/** Run an action, toast its outcome; returns whether it worked. */
export async function act(what: string, f: () => Promise<unknown>): Promise<boolean> {
  try {
    await f();
    toast(what, "ok");
    return true;
  } catch (e) {
    toast(`${what} failed: ${message(e)}`, "error");
    return false;
  }
}

/** An inline error box (cleared with an empty message). */
export function errorBox(): HTMLElement & { show(e: unknown): void; clear(): void } {
  const el = h("div", { class: "error", role: "alert", hidden: true }) as unknown as HTMLElement & { show(e: unknown): void; clear(): void };
  el.show = (e: unknown) => {
    el.textContent = message(e);
    el.hidden = false;
  };
  el.clear = () => {
    el.textContent = "";
    el.hidden = true;
  };
  return el;
}

/** A button that needs a role: disabled with an explanation otherwise. */
export function roleButton(role: Role, label: string, onclick: () => void, cls = "btn"): HTMLButtonElement {
  const ok = can(role);
  return h("button", { class: cls, type: "button", disabled: !ok, title: ok ? undefined : `needs the ${role} role`, onclick }, label);
}

/** A modal dialog; resolves with the form's values or null. */
export function dialog(title: string, body: HTMLElement, ok = "Save"): Promise<FormData | null> {
  return new Promise((resolve) => {
    const form = h("form", { method: "dialog", class: "dialog-form" }, h("h3", null, title), body, h("div", { class: "row end" }, h("button", { class: "btn", value: "cancel", type: "submit", formnovalidate: true }, "Cancel"), h("button", { class: "btn primary", value: "ok", type: "submit" }, ok)));
    const d = h("dialog", { class: "dialog" }, form);
    document.body.append(d);
    d.addEventListener("close", () => {
      const v = d.returnValue === "ok" ? new FormData(form) : null;
      d.remove();
      resolve(v);
    });
    d.showModal();
  });
}

export function field(label: string, input: HTMLElement): HTMLElement {
  return h("label", { class: "field block" }, h("span", null, label), input);
}

export function loading(el: HTMLElement, on: boolean): void {
  el.classList.toggle("loading", on);
}
