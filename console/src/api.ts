// The API client: tokens, refresh on expiry, JSON errors as exceptions.

export type Role = "admin" | "analyst" | "viewer";

export interface User {
  name: string;
  role: Role;
  totp: boolean;
  [k: string]: unknown;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    public detail: string,
    public body: unknown = null,
  ) {
    super(detail || code);
  }
}

const KEY = "tapstream.session";

interface Session {
  access: string;
  refresh: string;
  user: User;
}

let session: Session | null = load();
// Requests of this session; aborted at log-out so nothing answers after it.
let inflight = new AbortController();
const listeners: (() => void)[] = [];

function load(): Session | null {
  try {
    const s = sessionStorage.getItem(KEY);
    return s ? (JSON.parse(s) as Session) : null;
  } catch {
    return null;
  }
}

function save(s: Session | null): void {
  session = s;
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
  listeners.forEach((f) => f());
}

export function onSessionChange(f: () => void): void {
  listeners.push(f);
}

export function user(): User | null {
  return session?.user ?? null;
}

export function token(): string | null {
  return session?.access ?? null;
}

const RANK: Record<Role, number> = { viewer: 0, analyst: 1, admin: 2 };

/** May the logged-in user act with this role's rights? */
export function can(role: Role): boolean {
  const u = user();
  return !!u && RANK[u.role] >= RANK[role];
}

async function errorOf(r: Response): Promise<ApiError> {
  let code = `http_${r.status}`;
  let detail = r.statusText;
  let body: unknown = null;
  try {
    body = await r.json();
    const b = body as { error?: string; detail?: string };
    code = b.error ?? code;
    detail = b.detail ?? detail;
  } catch {
    /* not JSON */
  }
  return new ApiError(r.status, code, detail, body);
}

export async function login(username: string, password: string, totp?: string): Promise<User> {
  const r = await fetch("/api/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(totp ? { username, password, totp } : { username, password }),
  });
  if (!r.ok) throw await errorOf(r);
  const b = await r.json();
  save({ access: b.access_token, refresh: b.refresh_token, user: b.user });
  return b.user;
}

export async function logout(): Promise<void> {
  const s = session;
  inflight.abort();
  inflight = new AbortController();
  save(null);
  if (!s) return;
  try {
    await fetch("/api/logout", { method: "POST", headers: { authorization: `Bearer ${s.access}` } });
  } catch {
    /* the session ends here either way */
  }
}

/** A request cut short by log-out (not an error to show). */
export function isAbort(e: unknown): boolean {
  return e instanceof DOMException && e.name === "AbortError";
}

let refreshing: Promise<boolean> | null = null;

async function refresh(): Promise<boolean> {
  if (!session) return false;
  refreshing ??= (async () => {
    const r = await fetch("/api/refresh", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: session!.refresh }),
    });
    if (!r.ok) {
      save(null);
      return false;
    }
    const b = await r.json();
    save({ access: b.access_token, refresh: b.refresh_token, user: b.user ?? session!.user });
    return true;
  })().finally(() => (refreshing = null));
  return refreshing;
}

/** A raw request with the token; one refresh and retry on 401. */
export async function raw(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, init: RequestInit = {}): Promise<Response> {
  const go = () =>
    fetch(path, {
      signal: inflight.signal,
      ...init,
      method,
      headers: {
        ...(body !== undefined && !(body instanceof Blob) ? { "content-type": "application/json" } : {}),
        ...(session ? { authorization: `Bearer ${session.access}` } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : body instanceof Blob ? body : JSON.stringify(body),
    });
  let r = await go();
  if (r.status === 401 && session && (await refresh())) r = await go();
  if (r.status === 401 && !path.startsWith("/api/login")) save(null);
  if (!r.ok) throw await errorOf(r);
  return r;
}

/** A JSON request; `init` adds fetch options (e.g. keepalive for a save
 * that must outlive the page). */
export async function call<T = unknown>(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<T> {
  const r = await raw(method, path, body, {}, init);
  if (r.status === 204) return null as T;
  const t = await r.text();
  return (t ? JSON.parse(t) : null) as T;
}

export const get = <T = unknown>(path: string) => call<T>("GET", path);
export const post = <T = unknown>(path: string, body?: unknown) => call<T>("POST", path, body ?? {});

/** Query string from an object, leaving out empty values. */
export function qs(o: Record<string, unknown>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(o)) if (v !== undefined && v !== null && v !== "") p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : "";
}

/** POST and save the answer as a file (exports, downloads). */
export async function download(method: string, path: string, body?: unknown): Promise<string> {
  const r = await raw(method, path, body);
  const cd = r.headers.get("content-disposition") ?? "";
  const name = /filename="?([^";]+)"?/.exec(cd)?.[1] ?? path.split("/").pop() ?? "download";
  const blob = await r.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return name;
}

export function setUser(u: User): void {
  if (session) save({ ...session, user: u });
}
