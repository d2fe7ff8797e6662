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
 * accepts requests and stops cleanly on SIGTERM/SIGINT. Exit codes: 0 ok, 1 runtime failure,
 * 2 bad usage.
 */
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { existsSync } from "node:fs";
import { DEFAULT_FUNCTION_TIMEOUT_MS, LocalBackend } from "./server.ts";
import { Authenticator, DEFAULT_ISSUER } from "./auth.ts";
import { generate } from "./codegen.ts";

class UsageError extends Error {}

function intOption(value: string | undefined, name: string, dflt: number | null): number | null {
  if (value === undefined) return dflt;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535 * 1000) throw new UsageError(`--${name} must be a non-negative integer, got '${value}'`);
  return n;
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
    },
    strict: true,
  });
  const functionsDir = resolve(values.functions ?? "convex");
  if (!existsSync(functionsDir)) throw new UsageError(`functions directory not found: ${functionsDir} (use --functions DIR)`);
  if (Boolean(values["auth-issuer"]) !== Boolean(values["auth-jwks"])) throw new UsageError("--auth-issuer and --auth-jwks go together");
  const backend = new LocalBackend({
    port: intOption(values.port, "port", 3210)!,
    host: values.host,
    sitePort: intOption(values["site-port"], "site-port", null),
    adminKey: values["admin-key"],
    dataDir: values["data-dir"] ?? null,
    functionsDir,
    issuer: values.issuer,
    extraIssuer: values["auth-issuer"],
    extraJwks: values["auth-jwks"],
    functionTimeoutMs: intOption(values["function-timeout-ms"], "function-timeout-ms", DEFAULT_FUNCTION_TIMEOUT_MS)!,
  });
  await backend.start();
  process.stdout.write(`Convex local backend listening on ${backend.url}\n`);
  if (backend.siteUrl) process.stdout.write(`HTTP actions served on ${backend.siteUrl}\n`);
  process.stdout.write(`Admin key: ${backend.adminKey}\n`);
  process.stdout.write(
    `convex-local ready url=${backend.url} adminKey=${backend.adminKey}${backend.siteUrl ? ` siteUrl=${backend.siteUrl}` : ""}\n`,
  );
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`convex-local: ${signal} received, stopping\n`);
    backend.stop().then(
      () => process.exit(0),
      (e) => {
        process.stderr.write(`convex-local: error while stopping: ${e}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
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
    },
    strict: true,
  });
  if (!values.subject) throw new UsageError("token: --subject is required");
  const ttl = intOption(values["ttl-seconds"], "ttl-seconds", 24 * 3600)!;
  if (values.url) {
    if (!values["admin-key"]) throw new UsageError("token: --url needs --admin-key");
    const res = await fetch(`${values.url.replace(/\/$/, "")}/_local/token`, {
      method: "POST",
      headers: { authorization: `Convex ${values["admin-key"]}`, "content-type": "application/json" },
      body: JSON.stringify({ subject: values.subject, ttlSeconds: ttl }),
    });
    const body = (await res.json()) as { token?: string; message?: string };
    if (!res.ok || !body.token) throw new Error(`backend refused to mint a token: ${res.status} ${body.message ?? ""}`);
    process.stdout.write(`${body.token}\n`);
    return;
  }
  if (!values["data-dir"]) throw new UsageError("token: give --url URL --admin-key KEY, or --data-dir DIR of the backend");
  const keyFile = resolve(values["data-dir"], "jwt-key.json");
  if (!existsSync(keyFile)) throw new UsageError(`token: no signing key at ${keyFile}; start the backend with --data-dir first`);
  const auth = await Authenticator.create({
    adminKey: "unused",
    issuer: values.issuer ?? DEFAULT_ISSUER,
    dataDir: resolve(values["data-dir"]),
  });
  process.stdout.write(`${await auth.mint(values.subject, ttl)}\n`);
}

function codegen(argv: string[]): void {
  const { values } = parseArgs({ args: argv, options: { functions: { type: "string" } }, strict: true });
  const dir = resolve(values.functions ?? "convex");
  for (const p of generate(dir)) process.stdout.write(`wrote ${p}\n`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const [first, ...rest] = argv;
  try {
    if (first === "token") await token(rest);
    else if (first === "codegen") codegen(rest);
    else if (first === "serve") await serve(rest);
    else if (first === "--help" || first === "-h") {
      process.stdout.write(
        "usage: convex-local [serve] --port 3210 [--admin-key KEY] [--site-port 3211] [--data-dir DIR] [--functions DIR]\n" +
          "       convex-local token --subject ID (--url URL --admin-key KEY | --data-dir DIR)\n" +
          "       convex-local codegen [--functions DIR]\n",
      );
    } else await serve(argv);
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`convex-local: ${(e as Error).message}\n`);
      process.exit(2);
    }
    process.stderr.write(`convex-local: ${(e as Error)?.stack ?? e}\n`);
    process.exit(1);
  }
}

await main();
