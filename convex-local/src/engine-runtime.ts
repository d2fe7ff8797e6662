/**
 * Function runtime, run inside a worker thread: loads the functions directory into `convex-test`,
 * executes queries/mutations/actions/HTTP actions on request, reports every committed transaction
 * (with its writes) and every transaction start/end to the main thread (persistence, reactivity,
 * execution-time watchdog).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { pathToFileURL } from "node:url";
import { join } from "node:path";
import { inspect } from "node:util";
import { parentPort } from "node:worker_threads";
import { convexTest } from "convex-test";
import { makeFunctionReference } from "convex/server";
import { convexToJson, jsonToConvex, type JSONValue, type Value } from "convex/values";
import { listModuleFiles, isReservedModule } from "./modules.ts";
import { captureInternals } from "./convex-test-internals.ts";
import { installIndexAccel } from "./index-accel.ts";
import { installFastValidate } from "./fast-validate.ts";
import type { Caller, DbState, FromWorker, RunResult, ToWorker, UdfType } from "./protocol.ts";
import {
  checkValueLimits,
  LimitError,
  MAX_DOCUMENT_NESTING,
  MAX_FUNCTION_VALUE_BYTES,
} from "./values.ts";

const port = parentPort;
if (!port) throw new Error("engine-runtime must run in a worker thread");
const post = (m: FromWorker): void => port.postMessage(m);

/** Maximum log lines kept per execution, and bytes per line. */
const MAX_LOG_LINES = 256;
const MAX_LOG_LINE_BYTES = 4096;

interface OpContext {
  opId: number;
  logs: string[];
  logOverflow: boolean;
  commitTs: bigint | null;
  done: boolean;
  /** Tables read, recorded for queries only (null: not recorded). */
  reads: Set<string> | null;
  /** Something was read that `reads` cannot name (a component's table). */
  readsUnknown: boolean;
  /** Last commit ts when the top-level transaction began (the snapshot it reads). */
  snapshotTs: bigint | null;
}
const opStore = new AsyncLocalStorage<OpContext>();

/** A fresh context for operation `opId`; `recordReads` for queries (their read set is reported). */
function newOpContext(opId: number, recordReads: boolean): OpContext {
  return {
    opId,
    logs: [],
    logOverflow: false,
    commitTs: null,
    done: false,
    reads: recordReads ? new Set() : null,
    readsUnknown: false,
    snapshotTs: null,
  };
}

// ---- console capture -------------------------------------------------------------------------
const LEVELS: Record<string, string> = { log: "LOG", info: "INFO", warn: "WARN", error: "ERROR", debug: "DEBUG" };
const originalConsole = { ...console };
for (const [method, level] of Object.entries(LEVELS)) {
  (console as unknown as Record<string, (...a: unknown[]) => void>)[method] = (...args: unknown[]) => {
    const ctx = opStore.getStore();
    if (!ctx || ctx.done) {
      originalConsole.error(`[${level}]`, ...args);
      return;
    }
    if (ctx.logs.length >= MAX_LOG_LINES) {
      ctx.logOverflow = true;
      return;
    }
    let line = `[${level}] ${args.map((a) => inspect(a, { depth: 4, breakLength: Infinity })).join(" ")}`;
    if (Buffer.byteLength(line) > MAX_LOG_LINE_BYTES) line = `${line.slice(0, MAX_LOG_LINE_BYTES - 20)} (truncated)`;
    ctx.logs.push(line);
  };
}

function finishLogs(ctx: OpContext): string[] {
  ctx.done = true;
  if (ctx.logOverflow) {
    ctx.logs[MAX_LOG_LINES - 1] = `[WARN] Log overflow (maximum ${MAX_LOG_LINES} lines per execution). Remaining log lines omitted.`;
  }
  return ctx.logs;
}

// ---- convex-test setup -----------------------------------------------------------------------
type AnyRecord = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type TestAccessor = ReturnType<typeof convexTest>;

let t: TestAccessor;
let db: AnyRecord;
let tm: AnyRecord;
let functionsDir = "";
const moduleLoaders = new Map<string, () => Promise<AnyRecord>>();
const accessorCache = new Map<string, TestAccessor>();

/** Why the runtime could not start; `cause` as in the `initError` message. */
class InitFailure extends Error {
  constructor(
    message: string,
    readonly area: "functions" | "data" | "setup",
  ) {
    super(message);
  }
}

async function init(dir: string, state: DbState): Promise<bigint> {
  functionsDir = dir;
  let files: string[];
  try {
    files = listModuleFiles(dir);
  } catch (e) {
    throw new InitFailure((e as Error).message, "setup");
  }
  if (!files.some((f) => f.startsWith("_generated/"))) {
    throw new InitFailure(
      `no _generated/ directory in ${dir}; create it with \`npx convex-local codegen --functions ${dir}\``,
      "setup",
    );
  }
  const modules: Record<string, () => Promise<AnyRecord>> = {};
  for (const f of files) {
    const loader = () => import(pathToFileURL(join(dir, f)).href) as Promise<AnyRecord>;
    modules[`./convex/${f}`] = loader;
    moduleLoaders.set(f.replace(/\.[^./]+$/, ""), loader);
  }
  let schema: AnyRecord | undefined;
  const schemaFile = files.find((f) => /^schema\.[a-z]+$/.test(f));
  if (schemaFile) {
    let mod: AnyRecord;
    try {
      mod = await import(pathToFileURL(join(dir, schemaFile)).href);
    } catch (e) {
      throw userCodeFailure(e);
    }
    schema = mod.default as AnyRecord | undefined;
  }
  t = convexTest({ schema: schema as never, modules: modules as never, transactionLimits: true });
  // convex-test's per-instance global state (databases + transaction manager).
  const captured = await captureInternals(t as never);
  db = captured.components[""].db;
  tm = captured.transactionManager;
  // Sorted index structures instead of convex-test's scan-and-sort index reads
  // (CONVEX_LOCAL_INDEX_ACCEL=0 keeps convex-test's own code, for comparison).
  if (process.env.CONVEX_LOCAL_INDEX_ACCEL !== "0") {
    for (const component of Object.values(captured.components)) installIndexAccel(component.db);
  }
  // Schema validation of written documents without convex-test's per-union-member exceptions
  // (convex-test still validates, with its own messages, whatever the fast check does not accept).
  for (const component of Object.values(captured.components)) installFastValidate(component.db);
  // Last, so that it sees every read, including the index structures' own.
  for (const [path, component] of Object.entries(captured.components)) installReadTracking(component.db, path === "");
  try {
    restore(state);
  } catch (e) {
    throw new InitFailure((e as Error).message, "data");
  }
  installHooks();
  return tm._lastCommitTs as bigint;
}

function tableOf(id: string): string {
  return id.replace(/^[0-9]+/, "");
}

/**
 * Record the tables a query reads into its OpContext. Every document read of convex-test's
 * DatabaseFake goes through `get` (db.get, system tables, and each document of a scan),
 * `_iterateDocs` (full scans, search, vector search) or `_resolveQuerySource` (every query and
 * page, instance-overridden by the index structures). Reads of a component's tables (not named
 * in the commit records) make the read set unknown.
 */
function installReadTracking(target: AnyRecord, root: boolean): void {
  const get = target.get as (tableName: string | undefined, id: string) => unknown;
  const iterateDocs = target._iterateDocs as (tableName: string, cb: (doc: unknown) => void) => void;
  const resolveQuerySource = target._resolveQuerySource as (query: AnyRecord) => AnyRecord;
  /** Inside `_iterateDocs`: its per-document `get` calls are already recorded. */
  let scanning = 0;
  const record = (table: unknown): void => {
    const ctx = opStore.getStore();
    if (!ctx || ctx.done || ctx.reads === null) return;
    if (!root || typeof table !== "string") ctx.readsUnknown = true;
    else ctx.reads.add(table);
  };
  target.get = function (this: AnyRecord, tableName: string | undefined, id: string): unknown {
    if (scanning === 0) record(tableName ?? (typeof id === "string" ? tableOf(id) : undefined));
    return get.call(this, tableName, id);
  };
  target._iterateDocs = function (this: AnyRecord, tableName: string, cb: (doc: unknown) => void): void {
    record(tableName);
    scanning++;
    try {
      iterateDocs.call(this, tableName, cb);
    } finally {
      scanning--;
    }
  };
  target._resolveQuerySource = function (this: AnyRecord, query: AnyRecord): AnyRecord {
    const source = query?.source as AnyRecord | undefined;
    record(typeof source?.tableName === "string" ? source.tableName : typeof source?.indexName === "string" ? source.indexName.split(".")[0] : undefined);
    return resolveQuerySource.call(this, query);
  };
}

/** The query's read set (see `ReadSet` in protocol.ts), added to its result. */
function withReadSet(result: RunResult, ctx: OpContext): RunResult {
  if (ctx.reads !== null && !ctx.readsUnknown) result.reads = [...ctx.reads];
  if (ctx.snapshotTs !== null) result.snapshotTs = ctx.snapshotTs.toString();
  return result;
}

function restore(state: DbState): void {
  const docs: AnyRecord = {};
  const tableIds = new Map<string, Set<string>>();
  for (let i = 0; i < state.documents.length; i++) {
    let doc: AnyRecord;
    try {
      doc = jsonToConvex(JSON.parse(state.documents[i])) as AnyRecord;
    } catch (e) {
      throw new Error(`stored document ${i} cannot be read: ${(e as Error).message}`);
    }
    const id = doc._id as string;
    docs[id] = doc;
    const table = tableOf(id);
    let set = tableIds.get(table);
    if (!set) tableIds.set(table, (set = new Set()));
    set.add(id);
  }
  db._documents = docs;
  db._tableIds = tableIds;
  db._nextDocId = Math.max(db._nextDocId as number, state.nextDocId);
  db._lastCreationTime = Math.max(db._lastCreationTime as number, state.lastCreationTime);
  const lastTs = BigInt(state.lastTs);
  if (lastTs > (tm._lastCommitTs as bigint)) tm._lastCommitTs = lastTs;
}

function installHooks(): void {
  const origCommit = tm.commit.bind(tm);
  tm.commit = (isNested: boolean) => {
    if (isNested) return origCommit(isNested);
    const pending: AnyRecord = db._writes[db._writes.length - 1] ?? {};
    // Each written document is encoded once: the encoding is checked against the limits and,
    // when the committed document is the pending one (no commit-timestamp placeholder was
    // substituted), reused for the commit record.
    const encoded = new Map<string, { doc: unknown; json: JSONValue }>();
    for (const [id, doc] of Object.entries(pending)) {
      if (doc === null) continue;
      const json = convexToJson(doc as Value);
      checkValueLimits(json, `document ${id} in table '${tableOf(id)}'`, {
        maxNesting: MAX_DOCUMENT_NESTING,
        document: !tableOf(id).startsWith("_"),
      });
      encoded.set(id, { doc, json });
    }
    const ts: bigint = origCommit(false);
    const writes: [string, string | null][] = Object.keys(pending).map((id) => {
      const doc = db._documents[id];
      if (!doc) return [id, null];
      const pre = encoded.get(id);
      return [id, JSON.stringify(pre !== undefined && pre.doc === doc ? pre.json : convexToJson(doc as Value))];
    });
    const ctx = opStore.getStore();
    if (ctx && !ctx.done) ctx.commitTs = ts;
    post({
      kind: "commit",
      opId: ctx && !ctx.done ? ctx.opId : null,
      ts: ts.toString(),
      writes,
      tables: [...new Set(writes.map(([id]) => tableOf(id)))],
      nextDocId: db._nextDocId as number,
      lastCreationTime: db._lastCreationTime as number,
    });
    return ts;
  };
  const origBegin = tm.begin.bind(tm);
  tm.begin = async (isNested: boolean, limits: unknown) => {
    await origBegin(isNested, limits);
    if (!isNested) {
      const ctx = opStore.getStore();
      if (ctx && !ctx.done && ctx.snapshotTs === null) ctx.snapshotTs = tm._lastCommitTs as bigint;
      post({ kind: "txBegin", opId: ctx && !ctx.done ? ctx.opId : null });
    }
  };
  const origEnd = tm._endTransaction.bind(tm);
  tm._endTransaction = (isNested: boolean) => {
    origEnd(isNested);
    if (!isNested) post({ kind: "txEnd" });
  };
}

function accessorFor(caller: Caller): TestAccessor {
  if (!caller.user) return t;
  const key = JSON.stringify(caller.user);
  let acc = accessorCache.get(key);
  if (!acc) {
    acc = t.withIdentity(caller.user as never) as TestAccessor;
    if (accessorCache.size > 1000) accessorCache.clear();
    accessorCache.set(key, acc);
  }
  return acc;
}

// ---- function resolution ---------------------------------------------------------------------
class UserFacingError extends Error {}

const TYPE_NAMES = { query: "Query", mutation: "Mutation", action: "Action" } as const;

/** Canonical "module:export" from a client path ("mod", "mod:fn", "dir/mod.js:fn"). */
export function canonicalPath(path: string): { modulePath: string; exportName: string; canonical: string } {
  const idx = path.lastIndexOf(":");
  let modulePath = idx === -1 ? path : path.slice(0, idx);
  const exportName = idx === -1 ? "default" : path.slice(idx + 1);
  modulePath = modulePath.replace(/\.(js|ts|mjs|jsx|tsx)$/, "").replace(/^\/+/, "");
  return { modulePath, exportName, canonical: `${modulePath}:${exportName}` };
}

async function resolveFunction(
  path: string,
  requested: UdfType,
  caller: Caller,
): Promise<{ canonical: string; type: "query" | "mutation" | "action" }> {
  const { modulePath, exportName, canonical } = canonicalPath(path);
  const notFound = new UserFacingError(`Could not find public function for '${canonical}'.`);
  if (!modulePath || !exportName || isReservedModule(modulePath)) throw notFound;
  const loader = moduleLoaders.get(modulePath);
  if (!loader) throw notFound;
  let mod: AnyRecord;
  try {
    mod = await loader();
  } catch (e) {
    throw new UserFacingError(`Failed to load module '${modulePath}': ${(e as Error).message}`);
  }
  const fn = mod[exportName];
  if (!fn || (typeof fn !== "function" && typeof fn !== "object")) throw notFound;
  const type = fn.isQuery ? "query" : fn.isMutation ? "mutation" : fn.isAction ? "action" : null;
  if (!type) throw notFound;
  if (fn.isInternal === true && !caller.admin) throw notFound;
  if (requested !== "any" && requested !== type) {
    throw new UserFacingError(
      `Trying to execute ${canonical} as ${TYPE_NAMES[requested]}, but it is defined as ${TYPE_NAMES[type]}.`,
    );
  }
  return { canonical, type };
}

function requestId(): string {
  return Array.from({ length: 16 }, () => Math.floor(Math.random() * 16).toString(16)).join("");
}

function errorResult(e: unknown, logs: string[]): RunResult {
  const err = e as AnyRecord;
  if (e instanceof UserFacingError) return { ok: false, errorMessage: err.message, logLines: logs };
  const prefix = `[Request ID: ${requestId()}] Server Error`;
  const isConvexError = err && (err.name === "ConvexError" || ("data" in err && err.data !== undefined));
  if (isConvexError) {
    let errorDataJson: string;
    try {
      errorDataJson = JSON.stringify(convexToJson(err.data as Value));
    } catch {
      errorDataJson = JSON.stringify(String(err.data));
    }
    return { ok: false, errorMessage: `${prefix}\nUncaught ConvexError: ${err.message}`, errorDataJson, logLines: logs };
  }
  const name = err?.name ?? "Error";
  const message = err?.message ?? String(e);
  const stack = typeof err?.stack === "string"
    ? err.stack.split("\n")
        .filter((l: string) => l.trim().startsWith("at ") && !l.includes("node_modules") && !l.includes("node:"))
        .slice(0, 5)
        .join("\n")
    : "";
  return {
    ok: false,
    errorMessage: `${prefix}\nUncaught ${name}: ${message}${stack ? `\n${stack}` : ""}`,
    logLines: logs,
  };
}

async function runFunction(msg: Extract<ToWorker, { kind: "run" }>): Promise<RunResult> {
  const ctx = newOpContext(msg.opId, msg.udfType === "query");
  return opStore.run(ctx, async () => {
    try {
      const { canonical, type } = await resolveFunction(msg.path, msg.udfType, msg.caller);
      const args = jsonToConvex(JSON.parse(msg.argsJson));
      const acc = accessorFor(msg.caller) as unknown as Record<UdfType, (ref: unknown, args: unknown) => Promise<unknown>>;
      const ref = makeFunctionReference(canonical);
      const value = await acc[type](ref, args);
      const encoded = convexToJson((value === undefined ? null : value) as Value);
      const valueJson = JSON.stringify(encoded);
      if (valueJson.length > MAX_FUNCTION_VALUE_BYTES) {
        throw new LimitError(
          `Function ${canonical} return value is too large (${valueJson.length} bytes > maximum ${MAX_FUNCTION_VALUE_BYTES} bytes)`,
        );
      }
      checkValueLimits(encoded, `return value of ${canonical}`);
      const ts = ctx.commitTs;
      return withReadSet({ ok: true, valueJson, logLines: finishLogs(ctx), ts: ts === null ? null : ts.toString(), udfType: type }, ctx);
    } catch (e) {
      return withReadSet(errorResult(e, finishLogs(ctx)), ctx);
    }
  });
}

async function runHttp(msg: Extract<ToWorker, { kind: "http" }>): Promise<void> {
  const ctx = newOpContext(msg.opId, false);
  await opStore.run(ctx, async () => {
    try {
      const acc = accessorFor(msg.caller);
      const init: RequestInit = { method: msg.method, headers: msg.headers };
      if (msg.body && msg.method !== "GET" && msg.method !== "HEAD") init.body = msg.body as unknown as BodyInit;
      const res = await acc.fetch(msg.url, init);
      const body = new Uint8Array(await res.arrayBuffer());
      const headers: [string, string][] = [];
      res.headers.forEach((v, k) => headers.push([k, v]));
      for (const line of finishLogs(ctx)) originalConsole.error(line);
      post({ kind: "httpResult", opId: msg.opId, result: { status: res.status, headers, body } });
    } catch (e) {
      const r = errorResult(e, finishLogs(ctx));
      const text = r.ok ? "" : r.errorMessage;
      post({
        kind: "httpResult",
        opId: msg.opId,
        result: { status: 500, headers: [["content-type", "text/plain"]], body: new TextEncoder().encode(text) },
      });
    }
  });
}

/**
 * An error thrown while a user module was imported: keeps its stack (the user's code is in it)
 * and marks it as the functions' failure.
 */
function userCodeFailure(e: unknown): Error {
  const failure = new InitFailure(errorLine(e), "functions");
  failure.stack = (e as Error)?.stack ?? String(e);
  return failure;
}

/** One line describing `e`; a first line ending in ":" (e.g. a compiler's summary) is joined to the next. */
function errorLine(e: unknown): string {
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  if (lines.length === 0) return text;
  return lines[0].endsWith(":") && lines.length > 1 ? `${lines[0]} ${lines[1]}` : lines[0];
}

function initError(e: unknown): FromWorker {
  if (e instanceof InitFailure) return { kind: "initError", message: e.message, stack: e.stack ?? e.message, cause: e.area };
  return { kind: "initError", message: errorLine(e), stack: (e as Error)?.stack ?? String(e), cause: "internal" };
}

const UNAVAILABLE = "Function runtime unavailable: it failed to start";

// The engine posts "init" first, then runs as they come, also while init is still loading the
// functions (a run arriving during a restart after a timeout): each run waits for init, in order of
// arrival, and gets an error result if init failed. Queries and mutations are serialized by
// convex-test; actions run concurrently.
let initialized: Promise<void> = Promise.reject(new Error("no init message received"));
initialized.catch(() => undefined);
port.on("message", (msg: ToWorker) => {
  if (msg.kind === "init") {
    const started = init(msg.functionsDir, msg.state);
    initialized = started.then(() => undefined);
    initialized.catch(() => undefined); // reported once, by the initError below
    started.then(
      (ts) => post({ kind: "ready", lastTs: ts.toString() }),
      (e: unknown) => post(initError(e)),
    );
  } else if (msg.kind === "run") {
    initialized
      .then(
        () => runFunction(msg),
        (): RunResult => ({ ok: false, errorMessage: UNAVAILABLE, logLines: [] }),
      )
      .then((result) => post({ kind: "result", opId: msg.opId, result }));
  } else if (msg.kind === "http") {
    initialized.then(
      () => runHttp(msg),
      () =>
        post({
          kind: "httpResult",
          opId: msg.opId,
          result: { status: 500, headers: [["content-type", "text/plain"]], body: new TextEncoder().encode(UNAVAILABLE) },
        }),
    );
  }
});

process.on("unhandledRejection", (e) => {
  originalConsole.error("convex-local runtime: unhandled rejection:", e);
});

export { functionsDir };
