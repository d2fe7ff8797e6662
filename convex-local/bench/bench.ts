/**
 * Benchmark of the local backend over loopback. Prints figures; asserts nothing.
 *
 *  - small mutation round trip (HTTP API and WebSocket ConvexClient), p50/p99 ms
 *  - subscription update latency (writer's mutation → subscriber's new value), p50/p99 ms
 *  - bulk insert rate and indexed range read rate over N small documents (default 100k)
 *  - persistence: restart time (load snapshot+log and compact) for N documents
 *
 * Usage: node convex-local/bench/run.mjs [--docs 100000] [--iterations 300]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import WebSocket from "ws";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { startBackend, type RunningBackend } from "../test/support.ts";

const { values } = parseArgs({ options: { docs: { type: "string" }, iterations: { type: "string" } } });
const DOCS = Number(values.docs ?? 100_000);
const ITER = Number(values.iterations ?? 300);
const api = anyApi;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
function report(name: string, xs: number[]): void {
  console.log(`${name.padEnd(44)} n=${xs.length}  p50=${pct(xs, 50).toFixed(2)} ms  p99=${pct(xs, 99).toFixed(2)} ms`);
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "convex-local-bench-"));
  let backend: RunningBackend = await startBackend(["--data-dir", dataDir]);
  const ws = { webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket, skipConvexDeploymentUrlCheck: true };
  try {
    const http = new ConvexHttpClient(backend.url, { skipConvexDeploymentUrlCheck: true });
    (http as unknown as { setAdminAuth(k: string): void }).setAdminAuth(backend.adminKey);
    const writer = new ConvexClient(backend.url, ws);
    const subscriber = new ConvexClient(backend.url, ws);

    // warm-up
    for (let i = 0; i < 20; i++) await http.mutation(api.messages.send, { channel: "warm", author: "b", body: "x" });

    const httpRt: number[] = [];
    for (let i = 0; i < ITER; i++) {
      const t0 = performance.now();
      await http.mutation(api.messages.send, { channel: "bench-http", author: "b", body: `m${i}` });
      httpRt.push(performance.now() - t0);
    }
    report("mutation round trip, HTTP (persisted)", httpRt);

    const wsRt: number[] = [];
    for (let i = 0; i < ITER; i++) {
      const t0 = performance.now();
      await writer.mutation(api.messages.send, { channel: "bench-ws", author: "b", body: `m${i}` });
      wsRt.push(performance.now() - t0);
    }
    report("mutation round trip, WebSocket (persisted)", wsRt);

    const sub: number[] = [];
    let latest = -1;
    let waiter: ((v: number) => void) | null = null;
    subscriber.onUpdate(api.messages.count, { channel: "bench-sub" }, (v: number) => {
      latest = v;
      waiter?.(v);
    });
    while (latest < 0) await new Promise((r) => setTimeout(r, 10));
    for (let i = 0; i < Math.min(ITER, 200); i++) {
      const target = latest + 1;
      const seen = new Promise<void>((resolve) => {
        waiter = (v) => {
          if (v >= target) resolve();
        };
      });
      const t0 = performance.now();
      void writer.mutation(api.messages.send, { channel: "bench-sub", author: "b", body: `s${i}` });
      await seen;
      sub.push(performance.now() - t0);
    }
    report("subscription update after mutation", sub);

    // Bulk insert N small documents, 4000 per transaction.
    const batch = 4000;
    let t0 = performance.now();
    for (let start = 0; start < DOCS; start += batch) {
      await http.mutation(api.items.seed, { group: "g", start, count: Math.min(batch, DOCS - start) });
    }
    let secs = (performance.now() - t0) / 1000;
    console.log(`${"bulk insert (4000/transaction, persisted)".padEnd(44)} ${DOCS} docs in ${secs.toFixed(2)} s = ${(DOCS / secs).toFixed(0)} docs/s`);

    // Indexed range read of all N documents, 4000 per query.
    t0 = performance.now();
    let read = 0;
    let from = 0;
    for (;;) {
      const page = (await http.query(api.items.range, { group: "g", from, limit: batch })) as number[];
      read += page.length;
      if (page.length < batch) break;
      from = page[page.length - 1] + 1;
    }
    secs = (performance.now() - t0) / 1000;
    console.log(`${"indexed range read (4000/query)".padEnd(44)} ${read} docs in ${secs.toFixed(2)} s = ${(read / secs).toFixed(0)} docs/s`);

    await writer.close();
    await subscriber.close();
    await backend.stop();
    t0 = performance.now();
    backend = await startBackend(["--data-dir", dataDir]);
    console.log(`${"restart with data dir (load + compact + ready)".padEnd(44)} ${((performance.now() - t0) / 1000).toFixed(2)} s for ${DOCS + 2 * ITER + Math.min(ITER, 200) + 20} docs`);
  } finally {
    await backend.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
