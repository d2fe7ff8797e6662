/**
 * The local Convex-compatible backend: HTTP function API (wire spec §4), WebSocket sync
 * (§3, see sync.ts), JWKS, dev-token minting, and HTTP actions on the site port.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { WebSocketServer } from "ws";
import { Engine } from "./engine.ts";
import { Authenticator, AuthFailure, DEFAULT_ISSUER, generateAdminKey, identityFromActingAs } from "./auth.ts";
import { QueryEvaluator, SyncSession, type SyncContext } from "./sync.ts";
import type { Caller, RunResult, UdfType } from "./protocol.ts";
import { checkArgs } from "./args.ts";
import { encodeTs, decodeTs, stringifyConvexJson, toCleanJson, MAX_FUNCTION_VALUE_BYTES } from "./values.ts";
import { errorCode, UserError } from "./errors.ts";
import { DataDirLock } from "./lock.ts";

/** Options of {@link LocalBackend}. Ports 0 pick free ports. */
export interface BackendOptions {
  port: number;
  host?: string;
  /** Port for HTTP actions (`<functions>/http.ts`); null disables the site server. */
  sitePort?: number | null;
  adminKey?: string;
  dataDir?: string | null;
  functionsDir: string;
  issuer?: string;
  extraIssuer?: string;
  extraJwks?: string;
  /** Query/mutation transaction time limit, ms (default {@link DEFAULT_FUNCTION_TIMEOUT_MS}). */
  functionTimeoutMs?: number;
  log?: (line: string) => void;
}

const MAX_BODY_BYTES = MAX_FUNCTION_VALUE_BYTES + 2000;

/**
 * Default wall-time limit of one query/mutation transaction, ms. Convex allows 1 s of user code
 * excluding database time; here the measured time includes convex-test's unindexed in-memory
 * database (an index range read over a 100k-document table takes ~0.5-0.9 s), so the default
 * leaves room for that. `--function-timeout-ms 1000` applies the nominal limit.
 */
export const DEFAULT_FUNCTION_TIMEOUT_MS = 4000;

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A running backend. */
export class LocalBackend {
  readonly adminKey: string;
  engine!: Engine;
  auth!: Authenticator;
  private server!: Server;
  private siteServer: Server | null = null;
  private wss!: WebSocketServer;
  private sessions = new Set<SyncSession>();
  private syncCtx!: SyncContext;
  private lock: DataDirLock | null = null;
  private readonly log: (line: string) => void;
  url = "";
  siteUrl: string | null = null;

  constructor(readonly opts: BackendOptions) {
    this.adminKey = opts.adminKey || generateAdminKey();
    this.log = opts.log ?? ((l) => process.stderr.write(`${l}\n`));
  }

  /**
   * Lock the data directory, load data and functions, then listen. On failure everything started
   * so far is stopped again (the data directory is unlocked).
   * @throws UserError when the data directory is locked by another backend or damaged, a port
   *   cannot be listened on, or the functions fail to load; Error for anything unexpected.
   */
  async start(): Promise<void> {
    try {
      await this.startUnsafe();
    } catch (e) {
      await this.stop().catch(() => undefined);
      throw e;
    }
  }

  private async startUnsafe(): Promise<void> {
    const functionsDir = resolve(this.opts.functionsDir);
    const dataDir = this.opts.dataDir ? resolve(this.opts.dataDir) : null;
    if (dataDir) {
      this.lock = DataDirLock.acquire(dataDir);
      const stale = this.lock.tookOver;
      if (stale) {
        this.log(
          stale.pid !== null
            ? `convex-local: took over the stale lock of ${dataDir}: its process (pid ${stale.pid}) has ended`
            : `convex-local: replaced the unreadable lock file ${this.lock.path}`,
        );
      }
    }
    this.auth = await Authenticator.create({
      adminKey: this.adminKey,
      issuer: this.opts.issuer ?? DEFAULT_ISSUER,
      dataDir,
      extraIssuer: this.opts.extraIssuer,
      extraJwks: this.opts.extraJwks,
    });
    this.engine = new Engine({
      functionsDir,
      dataDir,
      functionTimeoutMs: this.opts.functionTimeoutMs ?? DEFAULT_FUNCTION_TIMEOUT_MS,
      log: this.log,
    });
    await this.engine.start();
    this.syncCtx = {
      engine: this.engine,
      auth: this.auth,
      evaluator: new QueryEvaluator(this.engine),
      dedup: new Map(),
      log: this.log,
      onClose: (s) => this.sessions.delete(s),
    };
    this.engine.on("commit", (ts: bigint, tables: ReadonlySet<string>) => {
      this.syncCtx.evaluator.onCommit(ts, tables);
      for (const s of this.sessions) s.onCommit();
    });
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_BODY_BYTES + 1024 });
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((e) => {
        this.log(`convex-local: request error: ${(e as Error)?.stack ?? e}`);
        if (!res.headersSent) sendJson(res, 500, { code: "InternalServerError", message: "Internal server error" });
        else res.end();
      });
    });
    this.server.on("upgrade", (req, socket, head) => {
      const path = new URL(req.url ?? "/", "http://x").pathname;
      if (!/^\/api\/(?:[^/]+\/)?sync$/.test(path)) {
        socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        const session = new SyncSession(ws, this.syncCtx);
        this.sessions.add(session);
      });
    });
    const host = this.opts.host ?? "127.0.0.1";
    await listen(this.server, this.opts.port, host, "--port");
    this.url = `http://${host}:${(this.server.address() as { port: number }).port}`;
    const hasHttp = ["http.ts", "http.js"].some((f) => existsSync(join(functionsDir, f)));
    if (this.opts.sitePort !== null && this.opts.sitePort !== undefined && hasHttp) {
      this.siteServer = createServer((req, res) => {
        this.handleSite(req, res).catch((e) => {
          this.log(`convex-local: http action error: ${(e as Error)?.stack ?? e}`);
          if (!res.headersSent) {
            res.writeHead(500, { "content-type": "text/plain" });
          }
          res.end("Internal server error");
        });
      });
      await listen(this.siteServer, this.opts.sitePort, host, "--site-port");
      this.siteUrl = `http://${host}:${(this.siteServer.address() as { port: number }).port}`;
    }
  }

  /** Close sockets and servers, stop the runtime, unlock the data directory. */
  async stop(): Promise<void> {
    try {
      for (const c of this.wss?.clients ?? []) c.terminate();
      await Promise.all([closeServer(this.server), closeServer(this.siteServer)]);
      await this.engine?.stop();
    } finally {
      this.lock?.release();
      this.lock = null;
    }
  }

  // ---- auth ----------------------------------------------------------------------------------
  private async callerFromRequest(req: IncomingMessage, url: URL): Promise<Caller> {
    const header = req.headers.authorization;
    const qsKey = url.searchParams.get("adminKey");
    if (!header) {
      if (qsKey) {
        if (!this.auth.isAdminKey(qsKey)) throw new HttpError(401, "BadAdminKey", "The provided admin key was invalid for this instance");
        return { admin: true, user: null };
      }
      return { admin: false, user: null };
    }
    const m = /^(\S+)\s+(.+)$/.exec(header.trim());
    if (!m) throw new HttpError(401, "InvalidAuthHeader", "Authorization header must be 'Bearer <token>' or 'Convex <admin key>'");
    const scheme = m[1].toLowerCase();
    const value = m[2].trim();
    if (scheme === "bearer") {
      try {
        const v = await this.auth.verify(value);
        return { admin: false, user: v.identity };
      } catch (e) {
        if (e instanceof AuthFailure) throw new HttpError(401, e.code, e.message);
        throw e;
      }
    }
    if (scheme === "convex") {
      // "<key>" or "<key>:<base64 JSON identity>" (admin acting as a user)
      let key = value;
      let acting: unknown = null;
      const lastColon = value.lastIndexOf(":");
      if (!this.auth.isAdminKey(value) && lastColon > 0) {
        key = value.slice(0, lastColon);
        try {
          acting = JSON.parse(Buffer.from(value.slice(lastColon + 1), "base64").toString("utf8"));
        } catch {
          throw new HttpError(401, "InvalidAuthHeader", "Could not decode the acting-as identity in the Authorization header");
        }
      }
      if (!this.auth.isAdminKey(key)) throw new HttpError(401, "BadAdminKey", "The provided admin key was invalid for this instance");
      try {
        return { admin: true, user: acting ? identityFromActingAs(acting) : null };
      } catch (e) {
        if (e instanceof AuthFailure) throw new HttpError(401, e.code, e.message);
        throw e;
      }
    }
    throw new HttpError(401, "InvalidAuthHeader", `Unsupported Authorization scheme '${m[1]}'; use Bearer or Convex`);
  }

  // ---- routing -------------------------------------------------------------------------------
  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    setCors(res);
    if (req.method === "OPTIONS") {
      res.writeHead(204).end();
      return;
    }
    const url = new URL(req.url ?? "/", "http://localhost");
    const path = url.pathname;
    try {
      if (req.method === "GET" && (path === "/version" || path === "/instance_version")) {
        res.writeHead(200, { "content-type": "text/plain" }).end("convex-local");
        return;
      }
      if (req.method === "GET" && path === "/.well-known/jwks.json") {
        sendJson(res, 200, this.auth.jwks());
        return;
      }
      if (req.method === "GET" && path === "/.well-known/openid-configuration") {
        sendJson(res, 200, { issuer: this.auth.opts.issuer, jwks_uri: `${this.url}/.well-known/jwks.json`, id_token_signing_alg_values_supported: ["RS256"] });
        return;
      }
      if (req.method === "GET" && path === "/_local/stats") {
        const caller = await this.callerFromRequest(req, url);
        if (!caller.admin) throw new HttpError(401, "Unauthenticated", "/_local/stats requires the admin key");
        sendJson(res, 200, {
          documents: this.engine.documentCount,
          lastTs: this.engine.lastTs.toString(),
          sessions: this.sessions.size,
          queryEvaluations: this.syncCtx.evaluator.evaluations,
          runtimeRestarts: this.engine.restarts,
        });
        return;
      }
      if (req.method === "GET" && path === "/api/query") {
        const caller = await this.callerFromRequest(req, url);
        const fnPath = url.searchParams.get("path");
        if (!fnPath) throw new HttpError(400, "MissingIdentifier", "Query string needs 'path'");
        let args: unknown = {};
        const argsText = url.searchParams.get("args");
        if (argsText) {
          try {
            args = JSON.parse(argsText);
          } catch {
            throw new HttpError(400, "BadJsonBody", "'args' query parameter is not valid JSON");
          }
        }
        await this.runAndRespond(res, "query", fnPath, args, url.searchParams.get("format"), caller);
        return;
      }
      if (req.method !== "POST") throw new HttpError(404, "NotFound", `No route for ${req.method} ${path}`);
      const body = await readJsonBody(req);
      const caller = await this.callerFromRequest(req, url);
      const kindRoute = /^\/api\/(query|mutation|action)$/.exec(path);
      if (kindRoute) {
        const fnPath = body.path;
        if (typeof fnPath !== "string" || !fnPath) throw new HttpError(400, "MissingIdentifier", "Body needs 'path' (\"module:function\")");
        await this.runAndRespond(res, kindRoute[1] as UdfType, fnPath, legacyArgs(body.args), body.format, caller);
        return;
      }
      if (path === "/api/function") {
        if (typeof body.path !== "string" || !body.path) throw new HttpError(400, "MissingIdentifier", "Body needs 'path'");
        if (body.componentPath && !caller.admin) throw new HttpError(403, "Forbidden", "componentPath requires admin auth");
        await this.runAndRespond(res, "any", body.path, legacyArgs(body.args), body.format, caller);
        return;
      }
      if (path.startsWith("/api/run/")) {
        const parts = path.slice("/api/run/".length).split("/").map(decodeURIComponent).filter(Boolean);
        if (parts.length < 2) throw new HttpError(400, "MissingIdentifier", "URL must be /api/run/<module path>/<function>");
        const fnName = parts.pop()!;
        await this.runAndRespond(res, "any", `${parts.join("/")}:${fnName}`, legacyArgs(body.args), body.format ?? "json", caller);
        return;
      }
      if (path === "/api/query_ts") {
        sendJson(res, 200, { ts: encodeTs(this.engine.lastTs) });
        return;
      }
      if (path === "/api/query_at_ts") {
        // No history: runs at the latest timestamp (documented approximation).
        try {
          decodeTs(body.ts, "ts");
        } catch (e) {
          throw new HttpError(400, "BadTimestamp", (e as Error).message);
        }
        if (typeof body.path !== "string") throw new HttpError(400, "MissingIdentifier", "Body needs 'path'");
        await this.runAndRespond(res, "query", body.path, legacyArgs(body.args), body.format, caller);
        return;
      }
      if (path === "/api/query_batch") {
        if (!Array.isArray(body.queries)) throw new HttpError(400, "BadJsonBody", "Body needs 'queries' (array)");
        const results = [];
        for (const q of body.queries as Record<string, unknown>[]) {
          const format = checkFormat(q?.format);
          const r = typeof q?.path === "string"
            ? await this.execute("query", q.path, legacyArgs(q.args), caller)
            : ({ ok: false, errorMessage: "query needs 'path'", logLines: [] } as RunResult);
          results.push(JSON.parse(formatResult(r, format)));
        }
        sendJson(res, 200, { results });
        return;
      }
      if (path === "/_local/token") {
        if (!caller.admin) throw new HttpError(401, "Unauthenticated", "/_local/token requires the admin key");
        if (typeof body.subject !== "string" || !body.subject) throw new HttpError(400, "BadJsonBody", "Body needs 'subject' (non-empty string)");
        const ttl = body.ttlSeconds === undefined ? undefined : Number(body.ttlSeconds);
        if (ttl !== undefined && !(ttl > 0)) throw new HttpError(400, "BadJsonBody", "'ttlSeconds' must be a positive number");
        const claims = body.claims && typeof body.claims === "object" ? (body.claims as Record<string, unknown>) : {};
        sendJson(res, 200, { token: await this.auth.mint(body.subject, ttl, claims) });
        return;
      }
      throw new HttpError(404, "NotFound", `No route for ${req.method} ${path}`);
    } catch (e) {
      if (e instanceof HttpError) {
        sendJson(res, e.status, { code: e.code, message: e.message });
        return;
      }
      throw e;
    }
  }

  private async execute(udfType: UdfType, fnPath: string, args: unknown, caller: Caller): Promise<RunResult> {
    const checked = checkArgs(args, fnPath);
    if (checked.argsError !== null) return { ok: false, errorMessage: checked.argsError, logLines: [] };
    return await this.engine.run(udfType, fnPath, checked.argsJson!, caller);
  }

  private async runAndRespond(res: ServerResponse, udfType: UdfType, fnPath: string, args: unknown, formatRaw: unknown, caller: Caller): Promise<void> {
    const format = checkFormat(formatRaw);
    const r = await this.execute(udfType, fnPath, args, caller);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(formatResult(r, format));
  }

  private async handleSite(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    let caller: Caller;
    try {
      caller = await this.callerFromRequest(req, url);
    } catch (e) {
      if (e instanceof HttpError) {
        sendJson(res, e.status, { code: e.code, message: e.message });
        return;
      }
      throw e;
    }
    const body = await readBody(req);
    const headers: [string, string][] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
    const r = await this.engine.http(req.method ?? "GET", `${url.pathname}${url.search}`, headers, body.length ? body : null, caller);
    res.writeHead(r.status, Object.fromEntries(r.headers.filter(([k]) => k !== "content-length")));
    res.end(Buffer.from(r.body));
  }
}

function legacyArgs(args: unknown): unknown {
  if (Array.isArray(args) && args.length === 1) return args[0];
  return args ?? {};
}

type Format = "json" | "convex_encoded_json";

function checkFormat(raw: unknown): Format {
  if (raw === undefined || raw === null || raw === "json" || raw === "convex_clean_json") return "json";
  if (raw === "convex_encoded_json" || raw === "convex_json") return "convex_encoded_json";
  throw new HttpError(400, "BadFormat", `Unsupported format ${JSON.stringify(raw)}; use "json" or "convex_encoded_json"`);
}

function formatResult(r: RunResult, format: Format): string {
  const conv = (v: unknown) => (format === "json" ? toCleanJson(v) : v);
  if (r.ok) {
    return `{"status":"success","value":${stringifyConvexJson(conv(JSON.parse(r.valueJson)))},"logLines":${JSON.stringify(r.logLines)}}`;
  }
  const data = r.errorDataJson !== undefined ? `,"errorData":${stringifyConvexJson(conv(JSON.parse(r.errorDataJson)))}` : "";
  return `{"status":"error","errorMessage":${JSON.stringify(r.errorMessage)}${data},"logLines":${JSON.stringify(r.logLines)}}`;
}

function setCors(res: ServerResponse): void {
  res.setHeader("access-control-allow-origin", "*");
  res.setHeader("access-control-allow-headers", "*");
  res.setHeader("access-control-allow-methods", "GET, POST, OPTIONS");
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolveBody, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) tooLarge = true;
      else chunks.push(c);
    });
    req.on("end", () => {
      if (tooLarge) reject(new HttpError(413, "PayloadTooLarge", `Request body exceeds ${MAX_BODY_BYTES} bytes`));
      else resolveBody(Buffer.concat(chunks));
    });
    req.on("error", reject);
  });
}

async function readJsonBody(req: IncomingMessage): Promise<Record<string, any>> {
  const buf = await readBody(req);
  if (buf.length === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(buf.toString("utf8"));
  } catch (e) {
    throw new HttpError(400, "BadJsonBody", `Request body is not valid JSON: ${(e as Error).message}`);
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new HttpError(400, "BadJsonBody", "Request body must be a JSON object");
  return parsed as Record<string, any>;
}

/**
 * The one-line explanation of a failed `listen` on `host:port`, naming the command-line `flag`
 * that chooses the port.
 */
export function listenErrorMessage(e: unknown, host: string, port: number, flag: string): string {
  const where = `${host}:${port}`;
  switch (errorCode(e)) {
    case "EADDRINUSE":
      return `port ${port} is already in use (another backend running?); choose another with ${flag}`;
    case "EACCES":
    case "EPERM":
      return `not allowed to listen on ${where} (ports below 1024 need privileges); choose another with ${flag}`;
    case "EADDRNOTAVAIL":
      return `cannot listen on ${where}: address ${host} is not one of this machine's (--host)`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "EAI_NONAME":
      return `cannot listen on ${where}: host name ${host} cannot be resolved (--host)`;
    default: {
      const code = errorCode(e);
      return `cannot listen on ${where}: ${code ?? (e as Error)?.message ?? String(e)}`;
    }
  }
}

function listen(server: Server, port: number, host: string, flag: string): Promise<void> {
  return new Promise((ok, fail) => {
    const onError = (e: Error) => fail(new UserError(listenErrorMessage(e, host, port, flag)));
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      ok();
    });
  });
}

function closeServer(server: Server | null | undefined): Promise<void> {
  if (!server || !server.listening) return Promise.resolve();
  return new Promise((ok) => {
    server.close(() => ok());
    server.closeAllConnections?.();
  });
}
