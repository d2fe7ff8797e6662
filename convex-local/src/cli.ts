/**
 * Command line of the local backend.
 *
 *   convex-local [serve] --port 3210 [--admin-key KEY] [--site-port 3211] [--data-dir DIR]
 *                [--functions DIR] [--host 127.0.0.1] [--issuer convex-local]
 *                [--auth-issuer ISS --auth-jwks URL|FILE] [--function-timeout-ms 1000]
 *   convex-local token --subject ID [--url URL --admin-key KEY | --data-dir DIR] [--ttl-seconds N]
 *   convex-local codegen [--functions DIR]
 *
 * `serve` prints `convex-local ready url=<url> adminKey=<key> [siteUrl=<url>]` on stdout once it
 * accepts requests and stops cleanly on SIGTERM/SIGINT, unlocking its `--data-dir`.
 *
 * Errors are one line on stderr, `convex-local: <what went wrong, where>`. Exit codes: 0 ok,
 * 1 runtime failure (port in use, data directory locked by another backend, unreadable or damaged
 * data files, functions that fail to load, backend unreachable), 2 bad usage (unknown flag, bad
 * flag value, admin key rejected by the backend). An unexpected (internal) error also exits 1 with
 * one line; `CONVEX_LOCAL_DEBUG=1` prints stack traces instead.
 */
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { existsSync, statSync } from "node:fs";
import { DEFAULT_FUNCTION_TIMEOUT_MS, LocalBackend } from "./server.ts";
import { Authenticator, DEFAULT_ISSUER } from "./auth.ts";
import { generate } from "./codegen.ts";
import { debugEnabled, describeFatal, errorCode, EXIT_USAGE, UsageError, UserError } from "./errors.ts";

const USAGE =
  "usage: convex-local [serve] --port 3210 [--admin-key KEY] [--site-port 3211] [--data-dir DIR] [--functions DIR]\n" +
  "                    [--host 127.0.0.1] [--issuer ISS] [--auth-issuer ISS --auth-jwks URL|FILE] [--function-timeout-ms MS]\n" +
  "       convex-local token --subject ID (--url URL --admin-key KEY | --data-dir DIR) [--ttl-seconds N] [--issuer ISS]\n" +
  "       convex-local codegen [--functions DIR]\n" +
  "exit codes: 0 ok, 1 runtime failure, 2 bad usage; CONVEX_LOCAL_DEBUG=1 prints stack traces of internal errors\n";

/** Longest token lifetime `token --ttl-seconds` accepts: ten years. */
const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;
/** How long `token --url` waits for the backend. */
const TOKEN_REQUEST_TIMEOUT_MS = 30_000;

/**
 * An integer flag value in [min, max], or `dflt` when the flag is absent.
 * @throws UsageError naming the flag, the value and the range.
 */
function intOption(value: string | undefined, name: string, dflt: number, min: number, max: number): number;
function intOption(value: string | undefined, name: string, dflt: null, min: number, max: number): number | null;
function intOption(value: string | undefined, name: string, dflt: number | null, min: number, max: number): number | null {
  if (value === undefined) return dflt;
  const n = /^[0-9]+$/.test(value.trim()) ? Number(value.trim()) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got '${value}'`);
  }
  return n;
}

/** @throws UsageError when an admin key could not be sent in an Authorization header. */
function checkAdminKey(key: string | undefined): void {
  if (key === undefined) return;
  if (key === "") throw new UsageError("--admin-key must not be empty");
  // eslint-disable-next-line no-control-regex
  if (/[\s\x00-\x1f\x7f]/.test(key)) throw new UsageError("--admin-key must not contain spaces, tabs, newlines or other control characters");
}

/** A directory flag's value resolved; @throws UsageError when empty or not an existing directory (when `mustExist`). */
function dirOption(value: string, name: string, mustExist: boolean, hint = ""): string {
  if (value.trim() === "") throw new UsageError(`--${name} must not be empty`);
  const dir = resolve(value);
  if (!mustExist) return dir;
  const st = statSync(dir, { throwIfNoEntry: false });
  if (!st) throw new UsageError(`--${name} ${dir} does not exist${hint}`);
  if (!st.isDirectory()) throw new UsageError(`--${name} ${dir} is not a directory`);
  return dir;
}

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: "string" },
      host: { type: "string" },
      "site-port": { type: "string" },
      "admin-key": { type: "string" },
      "data-dir": { type: "string" },
      functions: { type: "string" },
      issuer: { type: "string" },
      "auth-issuer": { type: "string" },
      "auth-jwks": { type: "string" },
      "function-timeout-ms": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const functionsDir = dirOption(values.functions ?? "convex", "functions", true, " (use --functions DIR)");
  if (Boolean(values["auth-issuer"]) !== Boolean(values["auth-jwks"])) throw new UsageError("--auth-issuer and --auth-jwks go together");
  checkAdminKey(values["admin-key"]);
  if (values.host !== undefined && values.host.trim() === "") throw new UsageError("--host must not be empty");
  const dataDir = values["data-dir"] === undefined ? null : dirOption(values["data-dir"], "data-dir", false);
  if (values.issuer !== undefined && values.issuer === "") throw new UsageError("--issuer must not be empty");
  const backend = new LocalBackend({
    port: intOption(values.port, "port", 3210, 0, 65535),
    host: values.host,
    sitePort: intOption(values["site-port"], "site-port", null, 0, 65535),
    adminKey: values["admin-key"],
    dataDir,
    functionsDir,
    issuer: values.issuer,
    extraIssuer: values["auth-issuer"],
    extraJwks: values["auth-jwks"],
    functionTimeoutMs: intOption(values["function-timeout-ms"], "function-timeout-ms", DEFAULT_FUNCTION_TIMEOUT_MS, 1, 3_600_000),
  });

  // Signals: before the backend is ready, exit at once (the data directory is unlocked on exit;
  // nothing is written to it yet but the atomically replaced snapshot); afterwards stop cleanly.
  // A second signal while stopping exits without waiting.
  let ready = false;
  let stopping = false;
  const onSignal = (signal: string) => {
    if (!ready) {
      process.stderr.write(`convex-local: ${signal} received during start-up, exiting\n`);
      process.exit(0);
    }
    if (stopping) {
      process.stderr.write(`convex-local: ${signal} received again, exiting without waiting for the shutdown\n`);
      process.exit(1);
    }
    stopping = true;
    process.stderr.write(`convex-local: ${signal} received, stopping\n`);
    backend.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        const { text } = describeFatal(e, debugEnabled());
        process.stderr.write(text.replace(/^convex-local: /, "convex-local: error while stopping: "));
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));

  await backend.start();
  ready = true;
  process.stdout.write(`Convex local backend listening on ${backend.url}\n`);
  if (backend.siteUrl) process.stdout.write(`HTTP actions served on ${backend.siteUrl}\n`);
  process.stdout.write(`Admin key: ${backend.adminKey}\n`);
  process.stdout.write(
    `convex-local ready url=${backend.url} adminKey=${backend.adminKey}${backend.siteUrl ? ` siteUrl=${backend.siteUrl}` : ""}\n`,
  );
}

async function token(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      subject: { type: "string" },
      url: { type: "string" },
      "admin-key": { type: "string" },
      "data-dir": { type: "string" },
      issuer: { type: "string" },
      "ttl-seconds": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (!values.subject) throw new UsageError("token: --subject is required");
  const ttl = intOption(values["ttl-seconds"], "ttl-seconds", 24 * 3600, 1, MAX_TTL_SECONDS);
  if (values.url !== undefined) {
    if (!values["admin-key"]) throw new UsageError("token: --url needs --admin-key (the key the backend printed at start)");
    checkAdminKey(values["admin-key"]);
    process.stdout.write(`${await tokenFromBackend(values.url, values["admin-key"], values.subject, ttl)}\n`);
    return;
  }
  if (!values["data-dir"]) throw new UsageError("token: give --url URL --admin-key KEY, or --data-dir DIR of the backend");
  const dataDir = dirOption(values["data-dir"], "data-dir", true, "; start the backend with --data-dir first");
  const keyFile = resolve(dataDir, "jwt-key.json");
  if (!existsSync(keyFile)) throw new UsageError(`token: no signing key at ${keyFile}; start the backend with --data-dir first`);
  const auth = await Authenticator.create({
    adminKey: "unused",
    issuer: values.issuer ?? DEFAULT_ISSUER,
    dataDir,
  });
  process.stdout.write(`${await auth.mint(values.subject, ttl)}\n`);
}

/**
 * Ask a running backend (`POST /_local/token`, admin key) for a token.
 * @throws UsageError for a URL that is not http(s) or an admin key the backend rejects;
 *   UserError when the backend cannot be reached or does not answer as a convex-local backend.
 */
async function tokenFromBackend(url: string, adminKey: string, subject: string, ttl: number): Promise<string> {
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw new UsageError(`token: --url ${url} is not a URL; give the backend's base URL, e.g. http://127.0.0.1:3210`);
  }
  if (base.protocol !== "http:" && base.protocol !== "https:") {
    throw new UsageError(`token: --url ${url} is not an http(s) URL; give the backend's base URL, e.g. http://127.0.0.1:3210`);
  }
  const endpoint = `${url.replace(/\/+$/, "")}/_local/token`;
  let res: Response;
  try {
    res = await fetch(endpoint, {
      method: "POST",
      headers: { authorization: `Convex ${adminKey}`, "content-type": "application/json" },
      body: JSON.stringify({ subject, ttlSeconds: ttl }),
      signal: AbortSignal.timeout(TOKEN_REQUEST_TIMEOUT_MS),
    });
  } catch (e) {
    if ((e as Error)?.name === "TimeoutError") {
      throw new UserError(`token: no answer from ${url} within ${TOKEN_REQUEST_TIMEOUT_MS / 1000} s`);
    }
    const cause = (e as { cause?: unknown })?.cause;
    const reason = errorCode(cause) ?? (cause as Error | undefined)?.message ?? (e as Error)?.message ?? String(e);
    throw new UserError(`token: cannot reach a backend at ${url} (${reason}); is it running?`);
  }
  const text = await res.text().catch(() => "");
  let body: { token?: unknown; code?: unknown; message?: unknown } = {};
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    // not JSON: reported below
  }
  if (res.status === 401 && body.code === "BadAdminKey") {
    throw new UserError(`token: ${url} rejected the admin key given with --admin-key; use the key the backend printed at start`, EXIT_USAGE);
  }
  if (res.ok && typeof body.token === "string" && body.token) return body.token;
  const parts = [body.code, body.message].filter((v): v is string => typeof v === "string" && v !== "");
  const detail = parts.length ? ` (${parts.join(": ")})` : "";
  throw new UserError(
    `token: ${url} answered HTTP ${res.status}${detail} instead of a token; is it a convex-local backend (its base URL, without /api)?`,
  );
}

function codegen(argv: string[]): void {
  const { values } = parseArgs({
    args: argv,
    options: { functions: { type: "string" }, help: { type: "boolean", short: "h" } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const dir = resolve(values.functions ?? "convex");
  for (const p of generate(dir)) process.stdout.write(`wrote ${p}\n`);
}

/** Report an error that reached the top level and exit (the data directory's lock is released on exit). */
function fail(e: unknown): never {
  const { text, exitCode } = describeFatal(e, debugEnabled());
  process.stderr.write(text);
  process.exit(exitCode);
}

async function main(): Promise<void> {
  // Errors thrown later from event handlers (e.g. a log write on a full disk) end the process
  // with the same one-line report as errors at start-up.
  process.on("uncaughtException", fail);
  process.on("unhandledRejection", fail);
  const argv = process.argv.slice(2);
  const [first, ...rest] = argv;
  try {
    if (first === "token") await token(rest);
    else if (first === "codegen") codegen(rest);
    else if (first === "serve") await serve(rest);
    else if (first === "--help" || first === "-h" || first === "help") process.stdout.write(USAGE);
    else await serve(argv);
  } catch (e) {
    fail(e);
  }
}

await main();
