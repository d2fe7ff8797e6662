/**
 * The Convex WebSocket sync protocol, one `SyncSession` per socket (see the wire spec §3).
 *
 * Versions: each socket has (querySet, identity, ts); every Transition goes from the previous
 * Transition's end version to the new one. After a commit, only queries that read a table it wrote
 * are re-evaluated (`QueryEvaluator`) and only changed results are sent; a Transition always follows
 * a Mutation/Action response.
 */
import type { WebSocket } from "ws";
import type { Caller, RunResult } from "./protocol.ts";
import { encodeTs, decodeTs } from "./values.ts";
import { AuthFailure, identityFromActingAs, type Authenticator } from "./auth.ts";
import type { Engine } from "./engine.ts";
import { checkArgs } from "./args.ts";

/** Idle time after which a `{"type":"Ping"}` text message is sent, ms. */
const PING_MESSAGE_IDLE_MS = 15_000;
/** Interval of WebSocket ping frames, ms. */
const PING_FRAME_INTERVAL_MS = 5_000;
/** Mutations remembered for de-duplication by (sessionId, requestId). */
const DEDUP_CAPACITY = 10_000;
/** Maximum queued mutations / in-flight actions per socket. */
const MAX_QUEUED = 1000;

class ProtocolError extends Error {}

interface Query {
  udfPath: string;
  argsJson: string;
  lastFingerprint: string | null;
}

type Modification = Record<string, unknown>;

interface StoredMutationResponse {
  result: RunResult;
}

/** Cached evaluations kept at most (least recently used ones are dropped first). */
const EVALUATION_CACHE_CAPACITY = 10_000;
/** Commits remembered while evaluations are in flight, to check them against their read sets. */
const COMMIT_LOG_CAPACITY = 10_000;

/** One evaluation of (function, args, identity) and the timestamps its result is valid at. */
interface Evaluation {
  key: string;
  /** Timestamp it was requested at; the result is valid from here on (it may be newer). */
  ts: bigint;
  promise: Promise<RunResult>;
  settled: boolean;
  /** Tables the result depends on; null while in flight or when unknown. */
  reads: ReadonlySet<string> | null;
  /** Valid through the latest commit (no commit since it ran wrote a table it read). */
  live: boolean;
  /** Last timestamp the result is known valid at, when not `live`. */
  validThrough: bigint;
}

/**
 * Query evaluations shared by all sockets: identical (function, args, identity) subscriptions
 * are evaluated once, and a result is reused at later timestamps for as long as no commit writes a
 * table it read (table-level read sets; Convex tracks index ranges, so this may re-run a query
 * Convex would not, never the reverse). A result whose read set is not known yet (in flight) or
 * not known at all is valid only up to the snapshot it ran at; a request for a later timestamp
 * waits for an in-flight evaluation and reuses it only if it turns out to be still valid.
 * `onCommit` must see every commit, before the sessions re-evaluate for it.
 */
export class QueryEvaluator {
  private cache = new Map<string, Evaluation>();
  /** Live evaluations by table read. */
  private byTable = new Map<string, Set<Evaluation>>();
  /** Commits after `logFloor`, kept while evaluations are in flight. */
  private commitLog: { ts: bigint; tables: ReadonlySet<string> }[] = [];
  private logFloor: bigint;
  private inflight = 0;
  private lastTs: bigint;
  /** Evaluations actually executed (for diagnostics, tests and benchmarks). */
  evaluations = 0;

  constructor(private readonly engine: Pick<Engine, "run" | "lastTs">) {
    this.lastTs = engine.lastTs;
    this.logFloor = this.lastTs;
  }

  /** Record a commit at `ts` that wrote `tables`: results that read one of them become stale. */
  onCommit(ts: bigint, tables: ReadonlySet<string>): void {
    const previous = this.lastTs;
    if (ts > this.lastTs) this.lastTs = ts;
    if (this.inflight > 0) {
      this.commitLog.push({ ts, tables });
      if (this.commitLog.length > COMMIT_LOG_CAPACITY) this.logFloor = this.commitLog.shift()!.ts;
    } else {
      this.commitLog.length = 0;
      this.logFloor = this.lastTs;
    }
    for (const table of tables) {
      const set = this.byTable.get(table);
      if (!set) continue;
      for (const e of [...set]) {
        this.unregister(e);
        e.live = false;
        e.validThrough = previous;
        if (this.cache.get(e.key) === e) this.cache.delete(e.key);
      }
    }
  }

  /** Evaluate `udfPath(args)` as `caller` at `ts`, reusing a result still valid at `ts`. */
  evaluate(udfPath: string, argsJson: string, caller: Caller, ts: bigint): Promise<RunResult> {
    const key = `${udfPath}\u0000${argsJson}\u0000${caller.admin ? "A" : ""}${caller.user ? JSON.stringify(caller.user) : ""}`;
    const hit = this.cache.get(key);
    if (hit && this.validAt(hit, ts)) {
      this.cache.delete(key); // most recently used last
      this.cache.set(key, hit);
      return hit.promise;
    }
    if (hit) {
      this.unregister(hit);
      hit.live = false;
    }
    const e: Evaluation = { key, ts, promise: null as never, settled: false, reads: null, live: false, validThrough: ts };
    this.inflight += 1;
    const run = (): Promise<RunResult> => {
      this.evaluations += 1;
      return this.engine.run("query", udfPath, argsJson, caller).then((r) => {
        this.settle(e, r);
        return r;
      });
    };
    if (hit && !hit.settled && hit.ts < ts) {
      // Wait for the evaluation in flight: it may have run after the commits since its request.
      const previous = hit;
      e.promise = previous.promise.then((r) => {
        if (!this.validAt(previous, ts)) return run();
        this.adopt(e, previous);
        return r;
      });
    } else {
      e.promise = run();
    }
    this.cache.set(key, e);
    if (this.cache.size > EVALUATION_CACHE_CAPACITY) this.evict();
    return e.promise;
  }

  private validAt(e: Evaluation, ts: bigint): boolean {
    return ts >= e.ts && ts <= (e.live ? this.lastTs : e.validThrough);
  }

  /** A result arrived: find the timestamps it is valid at from its read set and the commits since. */
  private settle(e: Evaluation, r: RunResult): void {
    this.inflight -= 1;
    e.settled = true;
    const snapshot = r.snapshotTs !== undefined ? BigInt(r.snapshotTs) : e.ts;
    const base = snapshot > e.ts ? snapshot : e.ts;
    e.validThrough = base;
    if (r.reads === undefined || base < this.logFloor) return;
    const reads = new Set(r.reads);
    e.reads = reads;
    for (const c of this.commitLog) {
      if (c.ts <= base) continue;
      for (const t of c.tables) if (reads.has(t)) return;
      e.validThrough = c.ts;
    }
    e.live = true;
    if (this.cache.get(e.key) === e) this.register(e);
  }

  /** `e` waited for `previous`, which is still valid at `e.ts`: take over its validity. */
  private adopt(e: Evaluation, previous: Evaluation): void {
    this.inflight -= 1;
    e.settled = true;
    e.reads = previous.reads;
    e.live = previous.live;
    e.validThrough = previous.validThrough;
    if (e.live && this.cache.get(e.key) === e) this.register(e);
  }

  private register(e: Evaluation): void {
    for (const t of e.reads!) {
      let set = this.byTable.get(t);
      if (!set) this.byTable.set(t, (set = new Set()));
      set.add(e);
    }
  }

  private unregister(e: Evaluation): void {
    if (!e.live || !e.reads) return;
    for (const t of e.reads) {
      const set = this.byTable.get(t);
      if (!set) continue;
      set.delete(e);
      if (set.size === 0) this.byTable.delete(t);
    }
  }

  /** Drop the least recently used settled evaluations (in-flight ones finish first). */
  private evict(): void {
    for (const [key, e] of this.cache) {
      if (this.cache.size <= EVALUATION_CACHE_CAPACITY * 0.9) break;
      if (!e.settled) continue;
      this.unregister(e);
      e.live = false;
      this.cache.delete(key);
    }
  }
}

/** Shared state of all sessions. */
export interface SyncContext {
  engine: Engine;
  auth: Authenticator;
  evaluator: QueryEvaluator;
  dedup: Map<string, StoredMutationResponse>;
  log: (line: string) => void;
  onClose?: (session: SyncSession) => void;
}

function stripRequestId(msg: string): string {
  return msg.replace(/^\[Request ID: [0-9a-f]+\] /, "");
}

function fingerprint(r: RunResult): string {
  return r.ok ? `v${r.valueJson}` : `e${stripRequestId(r.errorMessage)}\u0000${r.errorDataJson ?? ""}`;
}

function isU32(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

/** One WebSocket client. */
export class SyncSession {
  private sessionId: string | null = null;
  private version = { querySet: 0, identity: 0, ts: 0n };
  private receivedQuerySetVersion = 0;
  private acceptedIdentityVersion = 0;
  private caller: Caller = { admin: false, user: null };
  private queries = new Map<number, Query>();
  private pendingMods: { newVersion: number; mods: Modification[] }[] = [];
  private inbox: Promise<void> = Promise.resolve();
  private mutationChain: Promise<void> = Promise.resolve();
  private queuedMutations = 0;
  private inflightActions = 0;
  private updateScheduled = false;
  private forceTransition = false;
  private updating = false;
  private closed = false;
  private lastSentAt = Date.now();
  private pingTimer: NodeJS.Timeout;
  private expiryTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly ws: WebSocket,
    private readonly ctx: SyncContext,
  ) {
    ws.on("message", (data, isBinary) => {
      if (isBinary) {
        this.fatal("Binary WebSocket messages are not supported");
        return;
      }
      const text = data.toString();
      this.inbox = this.inbox.then(() => this.handle(text)).catch((e) => this.onError(e));
    });
    ws.on("close", () => this.dispose());
    ws.on("error", () => this.dispose());
    this.pingTimer = setInterval(() => {
      if (this.closed) return;
      try {
        ws.ping();
      } catch {
        /* socket closing */
      }
      if (Date.now() - this.lastSentAt >= PING_MESSAGE_IDLE_MS) this.send({ type: "Ping" });
    }, PING_FRAME_INTERVAL_MS);
  }

  /** Called after every commit, from any source. */
  onCommit(): void {
    if (this.queries.size > 0) this.scheduleUpdate(false);
  }

  private dispose(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pingTimer);
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.ctx.onClose?.(this);
  }

  private send(msg: Record<string, unknown>): void {
    if (this.closed) return;
    this.lastSentAt = Date.now();
    this.ws.send(JSON.stringify(msg));
  }

  private onError(e: unknown): void {
    if (e instanceof ProtocolError) this.fatal(e.message);
    else {
      this.ctx.log(`convex-local: sync session error: ${(e as Error)?.stack ?? e}`);
      if (!this.closed) this.ws.close(1011, "InternalServerError");
      this.dispose();
    }
  }

  private fatal(message: string): void {
    if (this.closed) return;
    this.send({ type: "FatalError", error: message });
    this.ws.close(1000, "FatalError");
    this.dispose();
  }

  private async handle(text: string): Promise<void> {
    if (this.closed) return;
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      throw new ProtocolError(`Invalid message: not JSON (${(e as Error).message})`);
    }
    if (!msg || typeof msg !== "object" || Array.isArray(msg)) throw new ProtocolError("Invalid message: not an object");
    if (this.sessionId === null && msg.type !== "Connect") {
      throw new ProtocolError(`Invalid message: expected Connect first, got ${JSON.stringify(msg.type)}`);
    }
    switch (msg.type) {
      case "Connect":
        return this.onConnect(msg);
      case "ModifyQuerySet":
        return this.onModifyQuerySet(msg);
      case "Mutation":
        return this.onMutation(msg);
      case "Action":
        return this.onAction(msg);
      case "Authenticate":
        return this.onAuthenticate(msg);
      case "Event":
        return;
      default:
        throw new ProtocolError(`Invalid message: unknown type ${JSON.stringify(msg.type)}`);
    }
  }

  private onConnect(msg: Record<string, unknown>): void {
    if (this.sessionId !== null) throw new ProtocolError("Invalid message: duplicate Connect");
    if (typeof msg.sessionId !== "string" || !msg.sessionId) throw new ProtocolError("Connect: sessionId must be a string");
    this.sessionId = msg.sessionId;
    if (msg.maxObservedTimestamp !== undefined && msg.maxObservedTimestamp !== null) {
      try {
        const observed = decodeTs(msg.maxObservedTimestamp, "maxObservedTimestamp");
        if (observed > this.ctx.engine.lastTs) {
          this.ctx.log(`convex-local: client ${this.sessionId} observed a timestamp ahead of the backend (${observed})`);
        }
      } catch (e) {
        throw new ProtocolError(`Connect: ${(e as Error).message}`);
      }
    }
  }

  private onModifyQuerySet(msg: Record<string, unknown>): void {
    const { baseVersion, newVersion, modifications } = msg;
    if (!isU32(baseVersion) || !isU32(newVersion)) throw new ProtocolError("ModifyQuerySet: baseVersion/newVersion must be integers");
    if (baseVersion !== this.receivedQuerySetVersion) {
      throw new ProtocolError(
        `ModifyQuerySet: baseVersion ${baseVersion} does not match the current query set version ${this.receivedQuerySetVersion}`,
      );
    }
    if (newVersion <= baseVersion) throw new ProtocolError("ModifyQuerySet: newVersion must be greater than baseVersion");
    if (!Array.isArray(modifications)) throw new ProtocolError("ModifyQuerySet: modifications must be an array");
    for (const m of modifications as Modification[]) {
      if (!m || typeof m !== "object") throw new ProtocolError("ModifyQuerySet: each modification must be an object");
      if (!isU32(m.queryId)) throw new ProtocolError("ModifyQuerySet: queryId must be an integer");
      if (m.type === "Add") {
        if (typeof m.udfPath !== "string") throw new ProtocolError("ModifyQuerySet Add: udfPath must be a string");
        if (!Array.isArray(m.args) || m.args.length !== 1) throw new ProtocolError("ModifyQuerySet Add: args must be a one-element array");
        if (m.componentPath && !this.caller.admin) throw new ProtocolError("ModifyQuerySet Add: componentPath requires admin auth");
      } else if (m.type !== "Remove") {
        throw new ProtocolError(`ModifyQuerySet: unknown modification type ${JSON.stringify(m.type)}`);
      }
    }
    this.receivedQuerySetVersion = newVersion;
    this.pendingMods.push({ newVersion, mods: modifications as Modification[] });
    this.scheduleUpdate(false);
  }

  private async onAuthenticate(msg: Record<string, unknown>): Promise<void> {
    const { baseVersion, tokenType } = msg;
    if (!isU32(baseVersion)) throw new ProtocolError("Authenticate: baseVersion must be an integer");
    if (baseVersion !== this.acceptedIdentityVersion) {
      throw new ProtocolError(
        `Authenticate: baseVersion ${baseVersion} does not match the current identity version ${this.acceptedIdentityVersion}`,
      );
    }
    let caller: Caller;
    let expiresAtMs: number | null = null;
    try {
      if (tokenType === "Admin") {
        if (typeof msg.value !== "string" || !this.ctx.auth.isAdminKey(msg.value)) {
          throw new AuthFailure("BadAdminKey", "The provided admin key was invalid for this instance");
        }
        const acting = msg.actingAs ?? msg.impersonating;
        caller = { admin: true, user: acting ? identityFromActingAs(acting) : null };
      } else if (tokenType === "User") {
        if (typeof msg.value !== "string") throw new AuthFailure("InvalidAuthHeader", "User token must be a string");
        const v = await this.ctx.auth.verify(msg.value);
        caller = { admin: false, user: v.identity };
        expiresAtMs = v.expiresAtMs;
      } else if (tokenType === "None") {
        caller = { admin: false, user: null };
      } else {
        throw new ProtocolError(`Authenticate: unknown tokenType ${JSON.stringify(tokenType)}`);
      }
    } catch (e) {
      if (e instanceof AuthFailure) {
        this.authError(e.message, true);
        return;
      }
      throw e;
    }
    this.caller = caller;
    this.acceptedIdentityVersion = baseVersion + 1;
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    if (expiresAtMs !== null) {
      const delay = Math.max(0, expiresAtMs - Date.now());
      if (delay < 2 ** 31 - 1) {
        this.expiryTimer = setTimeout(() => this.authError("Token expired", false), delay);
      }
    }
    this.scheduleUpdate(true);
  }

  private authError(error: string, attempted: boolean): void {
    if (this.closed) return;
    this.send({ type: "AuthError", error, baseVersion: this.acceptedIdentityVersion, authUpdateAttempted: attempted });
    this.ws.close(1000, "AuthError");
    this.dispose();
  }

  private checkRequest(msg: Record<string, unknown>, kind: string): { requestId: number; udfPath: string; argsJson: string | null; argsError: string | null } {
    if (!isU32(msg.requestId)) throw new ProtocolError(`${kind}: requestId must be an integer`);
    if (typeof msg.udfPath !== "string") throw new ProtocolError(`${kind}: udfPath must be a string`);
    if (!Array.isArray(msg.args) || msg.args.length !== 1) throw new ProtocolError(`${kind}: args must be a one-element array`);
    if (msg.componentPath && !this.caller.admin) throw new ProtocolError(`${kind}: componentPath requires admin auth`);
    const checked = checkArgs(msg.args[0], msg.udfPath);
    return { requestId: msg.requestId, udfPath: msg.udfPath, ...checked };
  }

  private onMutation(msg: Record<string, unknown>): void {
    const { requestId, udfPath, argsJson, argsError } = this.checkRequest(msg, "Mutation");
    if (this.queuedMutations >= MAX_QUEUED) throw new ProtocolError(`Too many queued mutations (maximum ${MAX_QUEUED})`);
    const caller = this.caller;
    const dedupKey = `${this.sessionId}\u0000${requestId}`;
    this.queuedMutations += 1;
    this.mutationChain = this.mutationChain.then(async () => {
      try {
        let stored = this.ctx.dedup.get(dedupKey);
        if (!stored) {
          const result: RunResult =
            argsError !== null
              ? { ok: false, errorMessage: argsError, logLines: [] }
              : await this.ctx.engine.run("mutation", udfPath, argsJson!, caller);
          stored = { result };
          if (result.ok) {
            this.ctx.dedup.set(dedupKey, stored);
            if (this.ctx.dedup.size > DEDUP_CAPACITY) {
              const first = this.ctx.dedup.keys().next().value;
              if (first !== undefined) this.ctx.dedup.delete(first);
            }
          }
        }
        const r = stored.result;
        if (r.ok) {
          const ts = r.ts !== null ? BigInt(r.ts) : this.ctx.engine.lastTs;
          this.send({ type: "MutationResponse", requestId, success: true, result: JSON.parse(r.valueJson), ts: encodeTs(ts), logLines: r.logLines });
        } else {
          const m: Record<string, unknown> = { type: "MutationResponse", requestId, success: false, result: r.errorMessage, ts: null, logLines: r.logLines };
          if (r.errorDataJson !== undefined) m.errorData = JSON.parse(r.errorDataJson);
          this.send(m);
        }
        this.scheduleUpdate(true);
      } finally {
        this.queuedMutations -= 1;
      }
    }).catch((e) => this.onError(e));
  }

  private onAction(msg: Record<string, unknown>): void {
    const { requestId, udfPath, argsJson, argsError } = this.checkRequest(msg, "Action");
    if (this.inflightActions >= MAX_QUEUED) throw new ProtocolError(`Too many in-flight actions (maximum ${MAX_QUEUED})`);
    this.inflightActions += 1;
    const run: Promise<RunResult> =
      argsError !== null
        ? Promise.resolve({ ok: false, errorMessage: argsError, logLines: [] })
        : this.ctx.engine.run("action", udfPath, argsJson!, this.caller);
    run
      .then((r) => {
        if (r.ok) {
          this.send({ type: "ActionResponse", requestId, success: true, result: JSON.parse(r.valueJson), logLines: r.logLines });
        } else {
          const m: Record<string, unknown> = { type: "ActionResponse", requestId, success: false, result: r.errorMessage, logLines: r.logLines };
          if (r.errorDataJson !== undefined) m.errorData = JSON.parse(r.errorDataJson);
          this.send(m);
        }
        this.scheduleUpdate(true);
      })
      .catch((e) => this.onError(e))
      .finally(() => {
        this.inflightActions -= 1;
      });
  }

  private scheduleUpdate(force: boolean): void {
    if (this.closed) return;
    this.updateScheduled = true;
    if (force) this.forceTransition = true;
    if (!this.updating) void this.runUpdates();
  }

  private async runUpdates(): Promise<void> {
    this.updating = true;
    try {
      while (this.updateScheduled && !this.closed) {
        this.updateScheduled = false;
        const force = this.forceTransition;
        this.forceTransition = false;
        await this.update(force);
      }
    } catch (e) {
      this.onError(e);
    } finally {
      this.updating = false;
    }
  }

  private async update(force: boolean): Promise<void> {
    const modifications: Record<string, unknown>[] = [];
    const fresh = new Set<number>();
    let querySet = this.version.querySet;
    for (const { newVersion, mods } of this.pendingMods.splice(0)) {
      for (const m of mods) {
        const queryId = m.queryId as number;
        if (m.type === "Add") {
          const checked = checkArgs((m.args as unknown[])[0], m.udfPath as string);
          this.queries.set(queryId, {
            udfPath: m.udfPath as string,
            argsJson: checked.argsJson ?? `!${checked.argsError}`,
            lastFingerprint: null,
          });
          fresh.add(queryId);
        } else {
          if (this.queries.delete(queryId)) {
            fresh.delete(queryId);
          }
          modifications.push({ type: "QueryRemoved", queryId });
        }
      }
      querySet = newVersion;
    }
    // Drop a QueryRemoved for a query that was re-added in the same batch.
    const removedThenAdded = new Set([...fresh]);
    const mods = modifications.filter((m) => !(m.type === "QueryRemoved" && removedThenAdded.has(m.queryId as number)));
    const identity = this.acceptedIdentityVersion;
    const caller = this.caller;
    let ts = this.ctx.engine.lastTs;
    if (ts < this.version.ts) ts = this.version.ts;
    const rerunAll = ts !== this.version.ts || identity !== this.version.identity;
    const toRun = [...this.queries.entries()].filter(([id]) => rerunAll || fresh.has(id));
    const results = await Promise.all(
      toRun.map(([, q]) =>
        q.argsJson.startsWith("!")
          ? Promise.resolve<RunResult>({ ok: false, errorMessage: q.argsJson.slice(1), logLines: [] })
          : this.ctx.evaluator.evaluate(q.udfPath, q.argsJson, caller, ts),
      ),
    );
    if (this.closed) return;
    toRun.forEach(([queryId, q], i) => {
      if (this.queries.get(queryId) !== q) return; // removed meanwhile
      const r = results[i];
      const fp = fingerprint(r);
      if (fp === q.lastFingerprint) return;
      q.lastFingerprint = fp;
      if (r.ok) {
        mods.push({ type: "QueryUpdated", queryId, value: JSON.parse(r.valueJson), logLines: r.logLines, journal: null });
      } else {
        const m: Record<string, unknown> = { type: "QueryFailed", queryId, errorMessage: r.errorMessage, logLines: r.logLines, journal: null };
        if (r.errorDataJson !== undefined) m.errorData = JSON.parse(r.errorDataJson);
        mods.push(m);
      }
    });
    const changedVersion = querySet !== this.version.querySet || identity !== this.version.identity;
    if (mods.length === 0 && !changedVersion && !force) return;
    const start = this.version;
    const end = { querySet, identity, ts };
    this.version = end;
    this.send({
      type: "Transition",
      startVersion: { querySet: start.querySet, identity: start.identity, ts: encodeTs(start.ts) },
      endVersion: { querySet: end.querySet, identity: end.identity, ts: encodeTs(end.ts) },
      modifications: mods,
      clientClockSkew: null,
    });
  }
}
