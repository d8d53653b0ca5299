// The live stream (/api/stream): one WebSocket shared by every page,
// reconnected with backoff; pages subscribe to stats and alert messages.
import { token } from "./api";

export interface QueueStatus {
  queue: string;
  packets: number;
  bytes: number;
  worker_drops: number;
  kernel_drops: number;
  batches: number;
}
export interface InterfaceStatus {
  name: string;
  mode: string;
  packets: number;
  bytes: number;
  worker_drops: number;
  kernel_drops: number;
  queues: QueueStatus[];
}
export interface Sample {
  ts: number;
  rates: { pps: number; bps: number; drops_per_s: number };
  engine: { source: string; packets: number; bytes: number; drops: number; interfaces: InterfaceStatus[] };
  host: {
    cpu_per_core: number[];
    memory_total: number;
    memory_used: number;
    process_rss: number;
    data_dir_bytes: number;
    disk_free: number;
    disk_total: number;
  };
}
export type Alert = Record<string, unknown> & {
  id: string;
  rule: string;
  severity: string;
  category: string;
  verdict: string;
  explanation: string;
  timestamp: string;
  event: string;
};

type Handler = { stats?: (s: Sample) => void; alert?: (a: Alert) => void; state?: (up: boolean) => void };

const handlers = new Set<Handler>();
let ws: WebSocket | null = null;
let backoff = 500;
let up = false;
let wanted = false;
let timer: number | undefined;

function setUp(v: boolean) {
  up = v;
  handlers.forEach((h) => h.state?.(v));
}

function connect() {
  const t = token();
  if (!wanted || !t) return;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${proto}://${location.host}/api/stream?access_token=${encodeURIComponent(t)}`);
  ws.onopen = () => {
    backoff = 500;
    setUp(true);
  };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data as string) as { type: string; data: unknown };
    if (m.type === "stats") handlers.forEach((h) => h.stats?.(m.data as Sample));
    else if (m.type === "alert") handlers.forEach((h) => h.alert?.(m.data as Alert));
    else if (m.type === "hello") {
      const d = m.data as { latest: Sample | null };
      if (d.latest) handlers.forEach((h) => h.stats?.(d.latest!));
    }
  };
  ws.onclose = () => {
    ws = null;
    setUp(false);
    if (wanted) {
      timer = window.setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10_000);
    }
  };
}

export function start(): void {
  if (wanted) return;
  wanted = true;
  connect();
}

export function stop(): void {
  wanted = false;
  clearTimeout(timer);
  ws?.close();
}

export function subscribe(h: Handler): () => void {
  handlers.add(h);
  h.state?.(up);
  return () => handlers.delete(h);
}

export function isUp(): boolean {
  return up;
}
