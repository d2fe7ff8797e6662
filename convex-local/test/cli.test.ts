/**
 * The command line's error reporting and the data directory lock, through the real CLI process:
 * every user error (busy port, bad flag value, damaged data file, rejected key, locked data
 * directory) is one `convex-local: ...` line naming what and where, never a stack trace, with
 * exit code 1 (runtime failure) or 2 (bad usage).
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { spawn } from "node:child_process";
import { createServer, type Server } from "node:net";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FIXTURE_FUNCTIONS, REPO_ROOT, startBackend, type RunningBackend } from "./support";

const BIN = join(REPO_ROOT, "convex-local", "bin", "convex-local.mjs");
const LOCK = "convex-local.lock";

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI to completion (it must exit on its own within 60 s). */
function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: REPO_ROOT,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, CONVEX_LOCAL_DEBUG: "", ...env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d.toString()));
    child.stderr.on("data", (d) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`convex-local ${args.join(" ")} did not exit within 60 s\n${stderr}`));
    }, 60_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      // let the pipes drain
      setImmediate(() => resolve({ code, stdout, stderr }));
    });
  });
}

/** Serve the fixture functions with `args` added (ports 0 unless given). */
function serve(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runCli(["--port", "0", "--functions", FIXTURE_FUNCTIONS, ...args], env);
}

/**
 * The run failed with `exitCode` and its stderr ends in one `convex-local:` error line matching
 * `pattern`, without a stack trace; earlier lines are the backend's own progress lines.
 */
function expectOneLineError(res: CliResult, exitCode: number, pattern: RegExp): void {
  const lines = res.stderr.split("\n").filter((l) => l !== "");
  expect(res.stderr, "no stack trace").not.toMatch(/^\s+at /m);
  expect(lines.length, res.stderr).toBeGreaterThan(0);
  for (const line of lines) expect(line, res.stderr).toMatch(/^convex-local: /);
  expect(lines[lines.length - 1]).toMatch(pattern);
  expect(res.code, res.stderr).toBe(exitCode);
}

/** Listen on a free port of 127.0.0.1 (closed by `closeAll`). */
const heldServers: Server[] = [];
function occupyPort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    heldServers.push(server);
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port));
  });
}

/** A port nobody listens on right now. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", () => ok()));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((ok) => server.close(() => ok()));
  return port;
}

/** Pid of a process that has exited. */
function deadPid(): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
    child.on("exit", () => resolve(child.pid!));
  });
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let tmp: string;
const backends: RunningBackend[] = [];

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), "convex-local-cli-"));
});

afterEach(async () => {
  await Promise.all(backends.splice(0).map((b) => b.stop()));
});

afterAll(async () => {
  await Promise.all(heldServers.map((s) => new Promise<void>((ok) => s.close(() => ok()))));
  rmSync(tmp, { recursive: true, force: true });
});

/** A fresh directory under the test's temporary directory. */
function freshDir(name: string): string {
  const dir = join(tmp, `${name}-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

describe("serve: listening", () => {
  test("a port in use is one line naming the port and --port, exit 1", async () => {
    const port = await occupyPort();
    const res = await runCli(["--port", String(port), "--functions", FIXTURE_FUNCTIONS]);
    expectOneLineError(res, 1, new RegExp(`^convex-local: port ${port} is already in use \\(another backend running\\?\\); choose another with --port$`));
  });

  test("a site port in use names --site-port", async () => {
    const port = await occupyPort();
    const res = await serve(["--site-port", String(port)]);
    expectOneLineError(res, 1, new RegExp(`^convex-local: port ${port} is already in use .*choose another with --site-port$`));
  });

  test("an address that is not this machine's is one line naming the host", async () => {
    const res = await serve(["--host", "192.0.2.1"]);
    expectOneLineError(res, 1, /^convex-local: cannot listen on 192\.0\.2\.1:0: address 192\.0\.2\.1 is not one of this machine's \(--host\)$/);
  });
});

describe("serve: bad flag values are usage errors (exit 2)", () => {
  const cases: [string, string[], RegExp][] = [
    ["port out of range", ["--port", "70000"], /--port must be an integer from 0 to 65535, got '70000'/],
    ["port not a number", ["--port", "abc"], /--port must be an integer from 0 to 65535, got 'abc'/],
    ["site port not a number", ["--site-port", "1.5"], /--site-port must be an integer from 0 to 65535, got '1\.5'/],
    ["zero function timeout", ["--function-timeout-ms", "0"], /--function-timeout-ms must be an integer from 1 to/],
    ["empty admin key", ["--admin-key", ""], /--admin-key must not be empty/],
    ["admin key with a space", ["--admin-key", "convex-local|a b"], /--admin-key must not contain spaces/],
    ["empty host", ["--host", ""], /--host must not be empty/],
    ["unknown flag", ["--prot", "3210"], /Unknown option '--prot'.*\(see convex-local --help\)$/],
    ["missing functions directory", ["--functions", "/nonexistent/convex"], /--functions \/nonexistent\/convex does not exist \(use --functions DIR\)$/],
    ["--auth-issuer alone", ["--auth-issuer", "https://issuer.example"], /--auth-issuer and --auth-jwks go together/],
  ];
  test.each(cases)("%s", async (_name, args, pattern) => {
    expectOneLineError(await serve(args), 2, pattern);
  });

  test("a missing JWKS file is one line naming it", async () => {
    const file = join(tmp, "no-such-jwks.json");
    const res = await serve(["--auth-issuer", "https://issuer.example", "--auth-jwks", file]);
    expectOneLineError(res, 1, new RegExp(`cannot read JWKS file ${file}: no such file or directory`));
  });
});

describe("serve: unusable or damaged data directory (one line naming the file, exit 1)", () => {
  test("--data-dir is a file", async () => {
    const file = join(freshDir("file"), "plain-file");
    writeFileSync(file, "x");
    expectOneLineError(await serve(["--data-dir", file]), 1, new RegExp(`^convex-local: cannot create data directory ${file}: it already exists and is not a directory`));
  });

  test("snapshot that is not JSON", async () => {
    const dir = freshDir("snap");
    writeFileSync(join(dir, "snapshot.json"), '{"version":1,');
    const res = await serve(["--data-dir", dir]);
    expectOneLineError(res, 1, new RegExp(`^convex-local: corrupt snapshot ${join(dir, "snapshot.json")}: .*; move the data directory's files away`));
    expect(existsSync(join(dir, LOCK)), "lock released after the failure").toBe(false);
  });

  test("snapshot of the wrong shape", async () => {
    const dir = freshDir("shape");
    writeFileSync(join(dir, "snapshot.json"), '{"version":1,"lastTs":"1","nextDocId":1,"lastCreationTime":0,"documents":{}}');
    expectOneLineError(await serve(["--data-dir", dir]), 1, new RegExp(`corrupt snapshot ${join(dir, "snapshot.json")}: 'documents' is not an array`));
  });

  test("snapshot path that is a directory", async () => {
    const dir = freshDir("eisdir");
    mkdirSync(join(dir, "snapshot.json"));
    expectOneLineError(await serve(["--data-dir", dir]), 1, new RegExp(`cannot read ${join(dir, "snapshot.json")}: it is a directory \\(EISDIR\\)`));
  });

  test("a damaged log record before the last line names the file and line", async () => {
    const dir = freshDir("log");
    const good = JSON.stringify({ ts: "5", nextDocId: 10000, lastCreationTime: 0, writes: [] });
    writeFileSync(join(dir, "log.jsonl"), `${good}\nnot json\n${good}\n`);
    expectOneLineError(await serve(["--data-dir", dir]), 1, new RegExp(`corrupt record at ${join(dir, "log.jsonl")}:2: `));
  });

  test("a log record of the wrong shape names the file and line", async () => {
    const dir = freshDir("logshape");
    writeFileSync(join(dir, "log.jsonl"), `${JSON.stringify({ ts: 5, writes: [] })}\n`);
    expectOneLineError(await serve(["--data-dir", dir]), 1, new RegExp(`corrupt record at ${join(dir, "log.jsonl")}:1: 'ts' is not a timestamp string`));
  });

  test("a stored document the runtime cannot restore names the data directory", async () => {
    const dir = freshDir("doc");
    const doc = { _id: "10000messages", _creationTime: 1, body: { $bad: 1 } };
    writeFileSync(join(dir, "snapshot.json"), JSON.stringify({ version: 1, lastTs: "5", nextDocId: 10001, lastCreationTime: 1, documents: [doc] }));
    expectOneLineError(await serve(["--data-dir", dir]), 1, new RegExp(`^convex-local: cannot restore the data stored in ${dir}: stored document 0 cannot be read: `));
  });

  test("a corrupt signing key names jwt-key.json", async () => {
    const dir = freshDir("key");
    writeFileSync(join(dir, "jwt-key.json"), "{not json");
    expectOneLineError(await serve(["--data-dir", dir]), 1, new RegExp(`^convex-local: corrupt signing key ${join(dir, "jwt-key.json")}: .*delete it`));
  });
});

describe("serve: functions that fail to load", () => {
  test("no _generated directory says how to create it", async () => {
    const dir = freshDir("nogen");
    writeFileSync(join(dir, "a.ts"), "export const x = 1;\n");
    expectOneLineError(await serve(["--functions", dir]), 1, new RegExp(`^convex-local: no _generated/ directory in ${dir}; create it with`));
  });

  test("a schema that throws is one line with the error and its place", async () => {
    // inside the repository, so that the fixture's imports resolve as they do for the fixture
    const dir = mkdtempSync(join(REPO_ROOT, "convex-local", "test", ".tmp-functions-"));
    try {
      cpSync(FIXTURE_FUNCTIONS, dir, { recursive: true });
      const schema = readFileSync(join(dir, "schema.ts"), "utf8");
      writeFileSync(join(dir, "schema.ts"), `throw new Error("schema exploded");\n${schema}`);
      const res = await runCli(["--port", "0", "--functions", dir]);
      expectOneLineError(res, 1, new RegExp(`^convex-local: failed to load functions from ${dir}: Error: schema exploded \\(at ${dir}/schema\\.ts:1:\\d+\\)$`));
      const debug = await runCli(["--port", "0", "--functions", dir], { CONVEX_LOCAL_DEBUG: "1" });
      expect(debug.code).toBe(1);
      expect(debug.stderr, "CONVEX_LOCAL_DEBUG=1 adds the stack").toMatch(/^\s+at .*schema\.ts:1/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("token", () => {
  let backend: RunningBackend;
  beforeAll(async () => {
    backend = await startBackend();
  });
  afterAll(async () => {
    await backend?.stop();
  });

  test("a wrong admin key is one line, exit 2", async () => {
    const res = await runCli(["token", "--subject", "alice", "--url", backend.url, "--admin-key", "convex-local|wrong"]);
    expectOneLineError(res, 2, new RegExp(`^convex-local: token: ${backend.url} rejected the admin key given with --admin-key`));
  });

  test("the right admin key prints a token", async () => {
    const res = await runCli(["token", "--subject", "alice", "--url", backend.url, "--admin-key", backend.adminKey]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout.trim()).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
  });

  test("a URL with /api names the answer and the base URL to give", async () => {
    const res = await runCli(["token", "--subject", "alice", "--url", `${backend.url}/api`, "--admin-key", backend.adminKey]);
    expectOneLineError(res, 1, /answered HTTP 404 .*instead of a token; is it a convex-local backend \(its base URL, without \/api\)\?$/);
  });

  test("an unreachable backend is one line, exit 1", async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const res = await runCli(["token", "--subject", "alice", "--url", url, "--admin-key", "k"]);
    expectOneLineError(res, 1, new RegExp(`^convex-local: token: cannot reach a backend at ${url} \\(ECONNREFUSED\\); is it running\\?$`));
  });

  const usage: [string, string[], RegExp][] = [
    ["URL without a scheme", ["--url", "127.0.0.1:3210", "--admin-key", "k"], /--url 127\.0\.0\.1:3210 is not a URL/],
    ["URL of another scheme", ["--url", "ftp://127.0.0.1:3210", "--admin-key", "k"], /is not an http\(s\) URL/],
    ["--url without --admin-key", ["--url", "http://127.0.0.1:3210"], /--url needs --admin-key/],
    ["admin key with a newline", ["--url", "http://127.0.0.1:3210", "--admin-key", "a\nb"], /--admin-key must not contain/],
    ["zero ttl", ["--url", "http://127.0.0.1:3210", "--admin-key", "k", "--ttl-seconds", "0"], /--ttl-seconds must be an integer from 1 to/],
    ["missing data dir", ["--data-dir", "/nonexistent/data"], /--data-dir \/nonexistent\/data does not exist/],
    ["neither --url nor --data-dir", [], /give --url URL --admin-key KEY, or --data-dir DIR/],
  ];
  test.each(usage)("%s is a usage error", async (_name, args, pattern) => {
    expectOneLineError(await runCli(["token", "--subject", "alice", ...args]), 2, pattern);
  });

  test("a corrupt signing key in --data-dir is one line naming it", async () => {
    const dir = freshDir("tokenkey");
    writeFileSync(join(dir, "jwt-key.json"), JSON.stringify({ kty: "RSA", n: "x" }));
    const res = await runCli(["token", "--subject", "alice", "--data-dir", dir]);
    expectOneLineError(res, 1, new RegExp(`^convex-local: corrupt signing key ${join(dir, "jwt-key.json")}: not an RSA private key`));
  });
});

describe("codegen", () => {
  test("a missing functions directory is one line, exit 2", async () => {
    const res = await runCli(["codegen", "--functions", "/nonexistent/convex"]);
    expectOneLineError(res, 2, /^convex-local: codegen: functions directory not found: \/nonexistent\/convex \(use --functions DIR\)$/);
  });
});

describe("data directory lock", () => {
  function lockPid(dir: string): number {
    return (JSON.parse(readFileSync(join(dir, LOCK), "utf8")) as { pid: number }).pid;
  }

  test("a second backend on the same data directory is refused, naming the directory and the holder's pid", async () => {
    const dir = freshDir("locked");
    const first = await startBackend(["--data-dir", dir]);
    backends.push(first);
    expect(lockPid(dir)).toBe(first.pid);
    const res = await serve(["--data-dir", dir]);
    expectOneLineError(
      res,
      1,
      new RegExp(`^convex-local: data directory ${dir} is in use by another convex-local \\(pid ${first.pid}\\); stop it or choose another --data-dir`),
    );
    expect(lockPid(dir), "the refused backend leaves the lock alone").toBe(first.pid);
    // the holder still serves
    expect((await fetch(`${first.url}/version`)).status).toBe(200);
  });

  test.each(["SIGTERM", "SIGINT"] as const)("%s removes the lock, and the directory can be used again", async (signal) => {
    const dir = freshDir(`release-${signal}`);
    const first = await startBackend(["--data-dir", dir]);
    backends.push(first); // stopped after the test even when an assertion fails first
    expect(existsSync(join(dir, LOCK))).toBe(true);
    expect(await first.stop(signal)).toBe(0);
    expect(existsSync(join(dir, LOCK)), "lock file removed on clean shutdown").toBe(false);
    const second = await startBackend(["--data-dir", dir]);
    backends.push(second);
    expect(lockPid(dir)).toBe(second.pid);
  });

  test("a stale lock of a process that has ended is taken over", async () => {
    const dir = freshDir("stale");
    const pid = await deadPid();
    writeFileSync(join(dir, LOCK), `${JSON.stringify({ pid, procStart: null })}\n`);
    const backend = await startBackend(["--data-dir", dir]);
    backends.push(backend);
    expect(lockPid(dir)).toBe(backend.pid);
  });

  test("a lock left by a killed backend is taken over", async () => {
    const dir = freshDir("killed");
    const first = await startBackend(["--data-dir", dir]);
    backends.push(first);
    await first.stop("SIGKILL");
    expect(lockPid(dir)).toBe(first.pid);
    const second = await startBackend(["--data-dir", dir]);
    backends.push(second);
    await waitFor(() => lockPid(dir) === second.pid, "the new backend's lock");
  });
});
