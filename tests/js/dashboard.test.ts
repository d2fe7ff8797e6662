/**
 * The React app's path, end to end: the `convex` npm `ConvexClient` (what `ConvexReactClient`
 * wraps) uploads a batch as a signed-in user and subscribes to `dashboard:getDashboard`; the
 * Python worker (`python -m worker run`, its own process) consumes the change log; the
 * subscription delivers the fresh dashboard without polling.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import WebSocket from "ws";
import { ConvexClient } from "convex/browser";
import { anyApi } from "convex/server";
import { REPO_ROOT, startBackend, type RunningBackend } from "../../convex-local/test/support";

const api = anyApi;
const PYTHON = join(REPO_ROOT, ".venv", "bin", "python");
let backend: RunningBackend;
let worker: ChildProcess | undefined;
let workerLog = "";
let client: ConvexClient;

beforeAll(async () => {
  // The later --functions wins: run the project's own functions, not the backend's fixtures.
  backend = await startBackend(["--functions", join(REPO_ROOT, "convex")]);
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} missing: run scripts/install.sh first`);
  worker = spawn(PYTHON, ["-m", "worker", "run"], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      CONVEX_URL: backend.url,
      CONVEX_ADMIN_KEY: backend.adminKey,
      WORKER_LOG_FORMAT: "json",
      WORKER_HEARTBEAT_FILE: "",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  worker.stdout!.on("data", (d) => (workerLog += d.toString()));
  worker.stderr!.on("data", (d) => (workerLog += d.toString()));
  client = new ConvexClient(backend.url, {
    webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
    skipConvexDeploymentUrlCheck: true,
  });
});

/** SIGTERM the worker and wait for it to exit (SIGKILL after 10 s), before the backend goes away. */
async function stopWorker(): Promise<void> {
  const proc = worker;
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    proc.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    proc.kill("SIGTERM");
  });
}

afterAll(async () => {
  await client?.close();
  await stopWorker();
  await backend?.stop();
});

type Dashboard = {
  filterKey: string;
  aggregations: { type: string; data: Record<string, unknown> }[];
  freshness: { stale: boolean; watermark: number | null; lastSeq: number };
} | null;

test("an upload from the JS client reaches a subscribed dashboard through the worker", async () => {
  const token = await backend.mintToken("react-user");
  client.setAuth(async () => token);
  const now = Date.now();
  const events = Array.from({ length: 30 }, (_, i) => ({
    watchedAtMs: now - (i + 1) * 3_600_000,
    kind: "watch",
    product: "youtube",
    videoId: `react${String(i).padStart(6, "0")}`,
    title: `Chess opening explained part ${i}`,
    channelId: i % 2 ? "UCreactreactreactreact01" : "UCreactreactreactreact02",
    channelName: i % 2 ? "Board Talk" : "Endgame Lab",
    source: "api",
  }));

  const fresh = new Promise<Dashboard>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no fresh dashboard within 60 s\nworker:\n${workerLog}`)), 60_000);
    const unsubscribe = client.onUpdate(api.dashboard.getDashboard, {}, (value: Dashboard) => {
      if (value && value.aggregations.length > 0 && !value.freshness.stale) {
        clearTimeout(timer);
        unsubscribe();
        resolve(value);
      }
    });
  });
  const result = (await client.mutation(api.watchEvents.importBatch, { events })) as { inserted: number; seq: number };
  expect(result.inserted).toBe(30);

  const dashboard = (await fresh)!;
  expect(dashboard.filterKey).toBe("All|all||");
  expect(dashboard.freshness.watermark).toBe(result.seq);
  const kpi = dashboard.aggregations.find((a) => a.type === "kpi")!.data;
  expect(kpi.views).toBe(30);
  expect(kpi.uniqueChannels).toBe(2);
  const top = dashboard.aggregations.find((a) => a.type === "top_channels")!.data as {
    channels: { channelName: string; views: number }[];
  };
  expect(top.channels.map((c) => [c.channelName, c.views])).toEqual([
    ["Board Talk", 15],
    ["Endgame Lab", 15],
  ]);
}, 90_000);
