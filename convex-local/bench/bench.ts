/**
 * Benchmark of the local backend over loopback. Prints figures; asserts nothing.
 *
 *  - small mutation round trip (HTTP API and WebSocket ConvexClient), p50/p99 ms
 *  - subscription update latency (writer's mutation → subscriber's new value), p50/p99 ms
 *  - write throughput of large `v.any()` documents (storeAggregations-sized: 252 results of
 *    1-20 KB, 40 per mutation, upserted by index, two live subscriptions), MB/s of argument JSON
 *  - bulk insert rate and indexed range read rate over N small documents (default 100k)
 *  - persistence: restart time (load snapshot+log and compact) for N documents
 *  - the project's `watchEvents:importBatch` (convex/): a 500-event batch into a table already
 *    holding N events of the same user, appended after the stored ones and spread across them
 *
 * Index range reads use convex-local's sorted index structures; run with
 * CONVEX_LOCAL_INDEX_ACCEL=0 in the environment for convex-test's scan-and-sort figures.
 *
 * Usage: node convex-local/bench/run.mjs [--docs 100000] [--iterations 300] [--skip-import] [--write-only]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import WebSocket from "ws";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { REPO_ROOT, startBackend, type RunningBackend } from "../test/support.ts";

const { values } = parseArgs({
  options: {
    docs: { type: "string" },
    iterations: { type: "string" },
    "skip-import": { type: "boolean" },
    "write-only": { type: "boolean" },
  },
});
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
  await writeBench(null);
  await writeBench(join(dataDir, "writes"));
  if (values["write-only"]) {
    rmSync(dataDir, { recursive: true, force: true });
    return;
  }
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

/** Deterministic aggregate-like payload of about `bytes` bytes of JSON (nested rows of numbers/strings). */
function payload(seed: number, bytes: number): unknown {
  const rows: unknown[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const row = { label: `channel-${seed}-${i}`, count: (seed * 31 + i * 7) % 997, hours: ((seed + i) % 113) / 7, share: i / 1000, buckets: [i % 24, (i * 3) % 7, seed % 12] };
    rows.push(row);
    size += JSON.stringify(row).length + 1;
  }
  return { rows, total: rows.length, meta: { seed, version: 3 } };
}

/** storeAggregations-sized writes: 252 large `v.any()` documents, 40 per mutation, two subscribers. */
async function writeBench(dataDir: string | null): Promise<void> {
  const backend = await startBackend(dataDir ? ["--data-dir", dataDir] : []);
  const ws = { webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket, skipConvexDeploymentUrlCheck: true };
  const subscribers = [new ConvexClient(backend.url, ws), new ConvexClient(backend.url, ws)];
  try {
    const http = new ConvexHttpClient(backend.url, { skipConvexDeploymentUrlCheck: true });
    (http as unknown as { setAdminAuth(k: string): void }).setAdminAuth(backend.adminKey);
    const kinds = ["kpi", "trend", "top", "heatmap", "topics"] as const;
    const results = Array.from({ length: 252 }, (_, i) => ({
      kind: kinds[i % kinds.length],
      key: `filters-${Math.floor(i / kinds.length)}`,
      data: payload(i, 1000 + ((i * 7919) % 19_000)),
    }));
    const bytes = JSON.stringify(results).length;
    let seen = 0;
    for (const s of subscribers) s.onUpdate(api.aggregates.latest, { owner: "bench" }, (v: number) => (seen = Math.max(seen, v)));
    const rounds: number[] = [];
    for (let round = 1; round <= 6; round++) {
      const t0 = performance.now();
      for (let i = 0; i < results.length; i += 40) {
        await http.mutation(api.aggregates.store, { owner: "bench", computedAtMs: round, results: results.slice(i, i + 40) });
      }
      rounds.push(performance.now() - t0);
      while (seen < round) await new Promise((r) => setTimeout(r, 1));
    }
    const best = Math.min(...rounds.slice(1));
    const median = pct(rounds.slice(1), 50);
    console.log(
      `${`large-document writes (${dataDir ? "persisted" : "in memory"})`.padEnd(44)} ${results.length} docs, ${(bytes / 1e6).toFixed(2)} MB, 40/mutation: ` +
        `median ${median.toFixed(0)} ms = ${(bytes / 1e6 / (median / 1000)).toFixed(1)} MB/s (best ${best.toFixed(0)} ms; first, inserts: ${rounds[0].toFixed(0)} ms)`,
    );
  } finally {
    for (const s of subscribers) await s.close();
    await backend.stop();
  }
}

/** The project's import mutation against a table already holding DOCS events of one user. */
async function importBench(): Promise<void> {
  const backend = await startBackend(["--functions", join(REPO_ROOT, "convex")]);
  try {
    const http = new ConvexHttpClient(backend.url, { skipConvexDeploymentUrlCheck: true });
    http.setAuth(await backend.mintToken("bench-user"));
    const base = Date.UTC(2020, 0, 1);
    const minute = 60_000;
    const event = (ms: number, i: number) => ({
      watchedAtMs: ms,
      kind: "watch" as const,
      product: "youtube" as const,
      videoId: `v${i}`,
      title: `Video ${i}`,
      source: "synthetic" as const,
    });
    let t0 = performance.now();
    for (let start = 0; start < DOCS; start += 1000) {
      const events = [];
      for (let i = start; i < Math.min(DOCS, start + 1000); i++) events.push(event(base + i * minute, i));
      await http.mutation(api.watchEvents.importBatch, { events });
    }
    let secs = (performance.now() - t0) / 1000;
    console.log(`${"importBatch seed (1000/call, in memory)".padEnd(44)} ${DOCS} events in ${secs.toFixed(2)} s`);

    const times: number[] = [];
    let next = DOCS;
    for (let b = 0; b < 5; b++) {
      const events = [];
      for (let i = 0; i < 500; i++, next++) events.push(event(base + next * minute, next));
      t0 = performance.now();
      const res = (await http.mutation(api.watchEvents.importBatch, { events })) as { inserted: number };
      times.push(performance.now() - t0);
      if (res.inserted !== 500) throw new Error(`expected 500 inserted, got ${res.inserted}`);
    }
    report(`importBatch 500 new events (after ${DOCS})`, times);

    if (process.env.CONVEX_LOCAL_INDEX_ACCEL === "0") {
      console.log(`${"importBatch 500 spread events".padEnd(44)} skipped (500 scan-and-sort reads)`);
      return;
    }
    // Spread over the whole stored range: more than the dedupe range read allows, so every event
    // is checked with its own index lookup.
    const spread: number[] = [];
    for (let b = 0; b < 3; b++) {
      const events = [];
      for (let i = 0; i < 500; i++) {
        const k = Math.floor(((i + 0.5) / 500) * DOCS);
        events.push(event(base + k * minute + 1000 * (b + 1), DOCS * 10 + b * 1000 + i));
      }
      t0 = performance.now();
      await http.mutation(api.watchEvents.importBatch, { events });
      spread.push(performance.now() - t0);
    }
    report("importBatch 500 events spread over stored", spread);
  } finally {
    await backend.stop();
  }
}

await main();
if (!values["skip-import"] && !values["write-only"]) await importBench();
