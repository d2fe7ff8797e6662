/** Test helper: run the local backend CLI as a child process on free ports. */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import WebSocket from "ws";
import { ConvexClient } from "convex/browser";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = join(here, "..", "..");
export const FIXTURE_FUNCTIONS = join(here, "fixture", "convex");
const BIN = join(REPO_ROOT, "convex-local", "bin", "convex-local.mjs");

export interface RunningBackend {
  url: string;
  adminKey: string;
  siteUrl: string | null;
  /** Process id of the backend. */
  pid: number;
  /** Mint a user token through the admin-only endpoint. */
  mintToken(subject: string, ttlSeconds?: number): Promise<string>;
  /** Send `signal` (SIGTERM by default) and resolve with the exit code once the process has exited. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Start the backend (port 0 → free port) and resolve once it prints its ready line.
 * @throws Error including stderr when it exits or is not ready within 60 s.
 */
export function startBackend(extraArgs: string[] = []): Promise<RunningBackend> {
  const child: ChildProcess = spawn(
    process.execPath,
    [BIN, "--port", "0", "--site-port", "0", "--functions", FIXTURE_FUNCTIONS, ...extraArgs],
    { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`backend not ready after 60 s\n${stderr}`));
    }, 60_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`backend exited with code ${code}\n${stderr}`));
    });
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d.toString();
      const m = /convex-local ready url=(\S+) adminKey=(\S+)(?: siteUrl=(\S+))?/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      const [, url, adminKey, siteUrl] = m;
      resolve({
        url,
        adminKey,
        siteUrl: siteUrl ?? null,
        async mintToken(subject, ttlSeconds = 3600) {
          const res = await fetch(`${url}/_local/token`, {
            method: "POST",
            headers: { authorization: `Convex ${adminKey}`, "content-type": "application/json" },
            body: JSON.stringify({ subject, ttlSeconds }),
          });
          return ((await res.json()) as { token: string }).token;
        },
        pid: child.pid!,
        stop: (signal: NodeJS.Signals = "SIGTERM") =>
          new Promise<number | null>((done) => {
            if (child.exitCode !== null || child.signalCode !== null) return done(child.exitCode);
            child.removeAllListeners("exit");
            child.on("exit", (code) => done(code));
            child.kill(signal);
          }),
      });
    });
  });
}

/** Open a `ConvexClient` (convex/browser over the `ws` WebSocket) on `url`, recorded in `clients` for closing. */
export function openClient(url: string, clients: ConvexClient[]): ConvexClient {
  const c = new ConvexClient(url, {
    webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
    skipConvexDeploymentUrlCheck: true,
  });
  clients.push(c);
  return c;
}

/** A random channel name starting with `prefix`: keeps the tests sharing one backend apart. */
export function randomChannel(prefix: string): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
}
