/**
 * Main-thread side of the function runtime: owns the worker thread that runs `convex-test`, the
 * in-memory mirror of committed data, persistence, and the execution-time watchdog.
 *
 * A query or mutation transaction (including those started by actions and the scheduler) that
 * stays open longer than `functionTimeoutMs` is stopped by terminating the worker; the
 * transaction never committed, so a new worker is started from the mirror and every other
 * pending query/mutation is re-submitted. In-flight actions fail (their effects may be partial).
 */
import { Worker } from "node:worker_threads";
import { EventEmitter } from "node:events";
import type { Caller, FromWorker, HttpResult, RunResult, ToWorker, UdfType } from "./protocol.ts";
import { DAMAGED_HINT, DiskStore, Mirror } from "./persistence.ts";
import { EXIT_FAILURE, UserError } from "./errors.ts";

export interface EngineOptions {
  /** Absolute path of the functions directory (contains schema.ts and _generated/). */
  functionsDir: string;
  /** Persistence directory, or null for in-memory only. */
  dataDir: string | null;
  /** Limit on one query/mutation transaction, in ms (Convex: 1000 ms of user code). */
  functionTimeoutMs: number;
  /** Diagnostic output (stderr). */
  log: (line: string) => void;
}

interface PendingOp {
  msg: Extract<ToWorker, { kind: "run" | "http" }>;
  resolve: (r: RunResult | HttpResult) => void;
  committed: boolean;
}

/**
 * Executes functions and reports commits. Emits `"commit"` (ts: bigint, tables: ReadonlySet<string>
 * = the tables it wrote, possibly none) after every committed transaction, whatever caused it.
 */
export class Engine extends EventEmitter {
  private worker: Worker | null = null;
  private mirror: Mirror = new Mirror();
  private store: DiskStore | null = null;
  private nextOpId = 1;
  private pending = new Map<number, PendingOp>();
  private activeTx: { opId: number | null; timer: NodeJS.Timeout } | null = null;
  private generation = 0;
  private stopped = false;
  /** Number of times the watchdog restarted the runtime. */
  restarts = 0;

  constructor(private readonly opts: EngineOptions) {
    super();
  }

  /** Latest committed timestamp (ns since epoch). */
  get lastTs(): bigint {
    return this.mirror.lastTs;
  }

  /** Number of stored documents (all tables). */
  get documentCount(): number {
    return this.mirror.documents.size;
  }

  /**
   * Load persisted data (if any) and start the runtime.
   * @throws UserError when the data cannot be read or the functions cannot be loaded (one line
   *   naming the file or directory); Error when the runtime fails for another reason.
   */
  async start(): Promise<void> {
    if (this.opts.dataDir) {
      this.store = new DiskStore(this.opts.dataDir);
      const t0 = Date.now();
      this.mirror = this.store.load();
      this.store.compact(this.mirror);
      this.opts.log(
        `convex-local: loaded ${this.mirror.documents.size} documents from ${this.opts.dataDir} in ${Date.now() - t0} ms`,
      );
    }
    await this.spawn();
  }

  private spawn(): Promise<void> {
    const gen = ++this.generation;
    const worker = new Worker(new URL("./engine-worker.mjs", import.meta.url), { stdout: false, stderr: false });
    this.worker = worker;
    return new Promise((resolve, reject) => {
      let ready = false;
      worker.on("message", (m: FromWorker) => {
        if (gen !== this.generation) return;
        if (m.kind === "ready") {
          ready = true;
          const ts = BigInt(m.lastTs);
          if (ts > this.mirror.lastTs) this.mirror.lastTs = ts;
          resolve();
        } else if (m.kind === "initError") {
          reject(initFailure(m, this.opts));
        } else {
          this.onMessage(m);
        }
      });
      worker.on("error", (e) => {
        if (gen !== this.generation) return;
        if (!ready) reject(e);
        else {
          this.opts.log(`convex-local: function runtime crashed: ${e?.stack ?? e}; restarting`);
          void this.recover(null, `function runtime crashed: ${e?.message ?? e}`);
        }
      });
      worker.on("exit", (code) => {
        if (gen !== this.generation || this.stopped) return;
        if (!ready) reject(new Error(`function runtime exited with code ${code} during startup`));
      });
      this.post({ kind: "init", functionsDir: this.opts.functionsDir, state: this.mirror.state() });
    });
  }

  private post(m: ToWorker): void {
    this.worker?.postMessage(m);
  }

  private onMessage(m: FromWorker): void {
    switch (m.kind) {
      case "commit": {
        const rec = { ts: m.ts, nextDocId: m.nextDocId, lastCreationTime: m.lastCreationTime, writes: m.writes };
        this.mirror.apply(rec);
        if (this.store && m.writes.length > 0) {
          this.store.append(rec);
          if (this.store.needsCompaction()) this.store.compact(this.mirror);
        }
        if (m.opId !== null) {
          const p = this.pending.get(m.opId);
          if (p) p.committed = true;
        }
        this.emit("commit", BigInt(m.ts), new Set(m.tables) as ReadonlySet<string>);
        break;
      }
      case "txBegin": {
        if (this.activeTx) clearTimeout(this.activeTx.timer);
        const gen = this.generation;
        const opId = m.opId;
        const timer = setTimeout(() => {
          if (gen === this.generation) void this.recover(opId, null);
        }, this.opts.functionTimeoutMs);
        this.activeTx = { opId, timer };
        break;
      }
      case "txEnd":
        if (this.activeTx) clearTimeout(this.activeTx.timer);
        this.activeTx = null;
        break;
      case "result":
      case "httpResult": {
        const p = this.pending.get(m.opId);
        if (p) {
          this.pending.delete(m.opId);
          p.resolve(m.result);
        }
        break;
      }
      default:
        break;
    }
  }

  /** Stop the runtime (timeout or crash) and restart it from the mirror. */
  private async recover(culpritOpId: number | null, crash: string | null): Promise<void> {
    if (this.activeTx) clearTimeout(this.activeTx.timer);
    this.activeTx = null;
    this.restarts += 1;
    const old = this.worker;
    this.generation += 1;
    this.worker = null;
    void old?.terminate();
    const limitMsg =
      crash ??
      `Function execution timed out: a query or mutation transaction ran longer than ${this.opts.functionTimeoutMs} ms ` +
        `(convex-local --function-timeout-ms; Convex allows 1 s of user code); its transaction was rolled back.`;
    this.opts.log(`convex-local: ${limitMsg} Restarting the function runtime.`);
    const resubmit: PendingOp[] = [];
    for (const [opId, p] of this.pending) {
      const isCulprit = opId === culpritOpId;
      const unsafe = p.msg.kind === "http" || (p.msg.kind === "run" && p.msg.udfType !== "query" && p.msg.udfType !== "mutation") || p.committed;
      if (isCulprit || unsafe) {
        const msg = isCulprit ? limitMsg : "Function runtime restarted while this function was running; its effects may be partial.";
        if (p.msg.kind === "http") {
          p.resolve({ status: 500, headers: [["content-type", "text/plain"]], body: new TextEncoder().encode(msg) });
        } else {
          p.resolve({ ok: false, errorMessage: msg, logLines: [] });
        }
      } else {
        resubmit.push(p);
      }
    }
    this.pending.clear();
    try {
      await this.spawn();
    } catch (e) {
      this.opts.log(`convex-local: could not restart the function runtime: ${(e as Error).message}`);
      for (const p of resubmit) p.resolve({ ok: false, errorMessage: "Function runtime unavailable", logLines: [] });
      return;
    }
    for (const p of resubmit) {
      this.pending.set(p.msg.opId, p);
      this.post(p.msg);
    }
  }

  /**
   * Run a function. `argsJson` is the convex_encoded_json argument object as a string.
   * Never rejects: failures (unknown function, validation, thrown errors) come back as
   * `{ok: false, errorMessage, errorDataJson?}`.
   */
  run(udfType: UdfType, path: string, argsJson: string, caller: Caller): Promise<RunResult> {
    if (this.stopped) return Promise.resolve({ ok: false, errorMessage: "Backend is shutting down", logLines: [] });
    const opId = this.nextOpId++;
    const msg: ToWorker = { kind: "run", opId, udfType, path, argsJson, caller };
    return new Promise((resolve) => {
      this.pending.set(opId, { msg, resolve: resolve as (r: RunResult | HttpResult) => void, committed: false });
      this.post(msg);
    });
  }

  /** Run an HTTP action from `<functions>/http.ts`. `url` is path + query string. */
  http(method: string, url: string, headers: [string, string][], body: Uint8Array | null, caller: Caller): Promise<HttpResult> {
    const opId = this.nextOpId++;
    const msg: ToWorker = { kind: "http", opId, method, url, headers, body, caller };
    return new Promise((resolve) => {
      this.pending.set(opId, { msg, resolve: resolve as (r: RunResult | HttpResult) => void, committed: false });
      this.post(msg);
    });
  }

  /** Stop the runtime and close the log. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.activeTx) clearTimeout(this.activeTx.timer);
    const w = this.worker;
    this.worker = null;
    this.generation += 1;
    await w?.terminate();
    this.store?.close();
  }
}

/** The error to report for a runtime that could not start. */
function initFailure(m: Extract<FromWorker, { kind: "initError" }>, opts: EngineOptions): Error {
  switch (m.cause) {
    case "setup":
      return new UserError(m.message, EXIT_FAILURE, m.stack);
    case "functions": {
      const found = locationIn(m.stack, opts.functionsDir);
      const where = found && !m.message.includes(found) ? found : null;
      return new UserError(
        `failed to load functions from ${opts.functionsDir}: ${m.message}${where ? ` (at ${where})` : ""}`,
        EXIT_FAILURE,
        m.stack,
      );
    }
    case "data":
      return new UserError(
        `cannot restore the data stored in ${opts.dataDir}: ${m.message}; ${DAMAGED_HINT}`,
        EXIT_FAILURE,
        m.stack,
      );
    default: {
      const e = new Error(`the function runtime failed to start: ${m.message}`);
      e.stack = `${e.message}\n${m.stack}`;
      return e;
    }
  }
}

/** The first `file:line[:column]` inside `dir` mentioned in a stack trace, or null. */
export function locationIn(stack: string, dir: string): string | null {
  const escaped = dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const m = new RegExp(`(?:file://)?(${escaped}/[^\\s():]+:\\d+(?::\\d+)?)`).exec(stack);
  return m ? m[1] : null;
}
