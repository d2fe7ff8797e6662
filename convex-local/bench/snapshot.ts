/**
 * Cost of a full JSON snapshot vs. one log append, for N small documents (default 100k).
 * Usage: node --import tsx convex-local/bench/snapshot.ts [N]   (prints figures only)
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DiskStore, Mirror } from "../src/persistence.ts";

const n = Number(process.argv[2] ?? 100_000);
const dir = mkdtempSync(join(tmpdir(), "convex-local-snap-"));
try {
  const store = new DiskStore(dir);
  const m = new Mirror();
  for (let i = 0; i < n; i++) {
    const id = `${String(10000 + i).padStart(26, "0")}items`;
    m.documents.set(id, JSON.stringify({ _id: id, _creationTime: 1.7e12 + i, group: "g", n: i }));
  }
  m.lastTs = 1n;
  let t0 = performance.now();
  store.compact(m);
  console.log(`full snapshot of ${n} docs: ${(performance.now() - t0).toFixed(0)} ms`);
  t0 = performance.now();
  const rounds = 1000;
  for (let i = 0; i < rounds; i++) {
    store.append({ ts: String(2 + i), nextDocId: 1, lastCreationTime: 0, writes: [[`x${i}`, '{"_id":"x","n":1}']] });
  }
  console.log(`log append of a one-document commit: ${(((performance.now() - t0) / rounds) * 1000).toFixed(1)} µs`);
  t0 = performance.now();
  const loaded = new DiskStore(dir).load();
  console.log(`load snapshot + log (${loaded.documents.size} docs): ${(performance.now() - t0).toFixed(0)} ms`);
  store.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
