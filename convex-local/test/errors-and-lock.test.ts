/**
 * In-process checks of the error report (`describeFatal`, listen errors) and of the data
 * directory lock (`DataDirLock`), for the cases a CLI run cannot produce on demand (EACCES when
 * the tests run as root, an unexpected internal error, a lock taken over by two at once).
 */
import { afterAll, describe, expect, test } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeFatal, UsageError, UserError } from "../src/errors.ts";
import { DataDirLock, holderAlive, LOCK_FILE_NAME, parseLock, processStart } from "../src/lock.ts";
import { listenErrorMessage } from "../src/server.ts";
import { locationIn } from "../src/engine.ts";

const tmp = mkdtempSync(join(tmpdir(), "convex-local-lock-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
function freshDir(): string {
  return join(tmp, `d${n++}`);
}

function sysError(code: string): Error {
  return Object.assign(new Error(`listen ${code}: something 127.0.0.1:80`), { code, syscall: "listen" });
}

describe("describeFatal", () => {
  test("a user error is its message on one line, with its exit code", () => {
    expect(describeFatal(new UserError("port 3210 is already in use"), false)).toEqual({
      text: "convex-local: port 3210 is already in use\n",
      exitCode: 1,
    });
    expect(describeFatal(new UsageError("--port must be an integer"), false).exitCode).toBe(2);
  });

  test("an unexpected error is one line with a hint, and its stack with CONVEX_LOCAL_DEBUG", () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'x')\nmore detail");
    const plain = describeFatal(bug, false);
    expect(plain.exitCode).toBe(1);
    expect(plain.text).toBe(
      "convex-local: internal error: TypeError: Cannot read properties of undefined (reading 'x') (set CONVEX_LOCAL_DEBUG=1 for the stack trace)\n",
    );
    const debug = describeFatal(bug, true);
    expect(debug.exitCode).toBe(1);
    expect(debug.text).toMatch(/^convex-local: internal error: TypeError: Cannot read/);
    expect(debug.text).toMatch(/^\s+at /m);
  });

  test("argument parser errors are usage errors", () => {
    const e = Object.assign(new TypeError("Unknown option '--prot'"), { code: "ERR_PARSE_ARGS_UNKNOWN_OPTION" });
    expect(describeFatal(e, false)).toEqual({ text: "convex-local: Unknown option '--prot' (see convex-local --help)\n", exitCode: 2 });
  });

  test("a user error's detail is shown only when debugging", () => {
    const e = new UserError("failed to load functions from /f: Error: x", 1, "Error: x\n    at /f/schema.ts:1:7");
    expect(describeFatal(e, false).text).toBe("convex-local: failed to load functions from /f: Error: x\n");
    expect(describeFatal(e, true).text).toContain("at /f/schema.ts:1:7");
  });
});

describe("listenErrorMessage", () => {
  test("EADDRINUSE names the port and the flag", () => {
    expect(listenErrorMessage(sysError("EADDRINUSE"), "127.0.0.1", 3210, "--port")).toBe(
      "port 3210 is already in use (another backend running?); choose another with --port",
    );
    expect(listenErrorMessage(sysError("EADDRINUSE"), "127.0.0.1", 3211, "--site-port")).toMatch(/port 3211 .*--site-port$/);
  });

  test("EACCES is one line about privileges", () => {
    expect(listenErrorMessage(sysError("EACCES"), "127.0.0.1", 80, "--port")).toBe(
      "not allowed to listen on 127.0.0.1:80 (ports below 1024 need privileges); choose another with --port",
    );
  });

  test("other codes are named", () => {
    expect(listenErrorMessage(sysError("EINVAL"), "127.0.0.1", 5, "--port")).toBe("cannot listen on 127.0.0.1:5: EINVAL");
  });
});

describe("locationIn", () => {
  test("finds the first place inside the functions directory", () => {
    const stack = "Error: x\n    at foo (node:internal/x:1:2)\n    at <anonymous> (file:///app/convex/schema.ts:4:9)\n    at /app/convex/other.ts:1:1";
    expect(locationIn(stack, "/app/convex")).toBe("/app/convex/schema.ts:4:9");
    expect(locationIn(stack, "/elsewhere")).toBeNull();
  });
});

describe("DataDirLock", () => {
  test("creates the directory and a lock file holding the pid; release removes it", () => {
    const dir = freshDir();
    const lock = DataDirLock.acquire(dir);
    const path = join(dir, LOCK_FILE_NAME);
    expect(lock.path).toBe(path);
    expect(lock.tookOver).toBeNull();
    const info = parseLock(readFileSync(path, "utf8"));
    expect(info?.pid).toBe(process.pid);
    expect(info?.procStart).toBe(processStart(process.pid));
    lock.release();
    expect(existsSync(path)).toBe(false);
    lock.release(); // idempotent
  });

  test("the same directory twice in one process is refused", () => {
    const dir = freshDir();
    const lock = DataDirLock.acquire(dir);
    try {
      expect(() => DataDirLock.acquire(dir)).toThrow(/is already in use by this process/);
    } finally {
      lock.release();
    }
    DataDirLock.acquire(dir).release();
  });

  test("a live holder in another process is refused with the directory and its pid", () => {
    const dir = freshDir();
    const lock = DataDirLock.acquire(dir);
    const contents = readFileSync(lock.path, "utf8");
    // The holder is this (running) process as another process would see it.
    lock.release();
    writeFileSync(join(dir, LOCK_FILE_NAME), contents);
    const script = `
      const { DataDirLock } = await import(${JSON.stringify(new URL("../src/lock.ts", import.meta.url).pathname)});
      try { DataDirLock.acquire(${JSON.stringify(dir)}); console.log("acquired"); }
      catch (e) { console.log(e.constructor.name + ": " + e.message); }`;
    const out = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8" });
    expect(out.stdout.trim()).toBe(
      `UserError: data directory ${dir} is in use by another convex-local (pid ${process.pid}); ` +
        `stop it or choose another --data-dir (lock file ${join(dir, LOCK_FILE_NAME)})`,
    );
    expect(readFileSync(join(dir, LOCK_FILE_NAME), "utf8"), "the holder's lock is left alone").toBe(contents);
  });

  test("a lock whose pid now belongs to another process (different start) is stale", () => {
    const alive = { pid: process.pid, procStart: processStart(process.pid) };
    expect(holderAlive(alive)).toBe(true);
    if (alive.procStart !== null) expect(holderAlive({ ...alive, procStart: "another-boot:1" })).toBe(false);
    expect(holderAlive({ pid: 2 ** 22 + 12345, procStart: null })).toBe(false);
  });

  test("a stale lock is taken over and reported with the old pid", () => {
    const dir = freshDir();
    DataDirLock.acquire(dir).release();
    const gone = spawnSync(process.execPath, ["-e", "console.log(process.pid)"], { encoding: "utf8" });
    const deadPid = Number(gone.stdout.trim());
    writeFileSync(join(dir, LOCK_FILE_NAME), JSON.stringify({ pid: deadPid, procStart: null }));
    const lock = DataDirLock.acquire(dir);
    expect(lock.tookOver).toEqual({ pid: deadPid });
    expect(parseLock(readFileSync(lock.path, "utf8"))?.pid).toBe(process.pid);
    lock.release();
  });

  test("an old unreadable lock file is replaced; a fresh one is waited for", () => {
    const dir = freshDir();
    DataDirLock.acquire(dir).release();
    const path = join(dir, LOCK_FILE_NAME);
    writeFileSync(path, "");
    const old = new Date(Date.now() - 60_000);
    utimesSync(path, old, old);
    const lock = DataDirLock.acquire(dir);
    expect(lock.tookOver).toEqual({ pid: null });
    lock.release();
    // a file being written right now (empty, fresh) is not taken over at once: after about 2 s
    writeFileSync(path, "");
    const t0 = Date.now();
    const later = DataDirLock.acquire(dir);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);
    later.release();
  });

  test("a lock file that is not ours is not removed on release", () => {
    const dir = freshDir();
    const lock = DataDirLock.acquire(dir);
    writeFileSync(lock.path, JSON.stringify({ pid: 1, procStart: null }));
    lock.release();
    expect(existsSync(lock.path)).toBe(true);
  });

  test("an unusable directory is a user error naming it", () => {
    const file = join(tmp, "a-file");
    writeFileSync(file, "x");
    expect(() => DataDirLock.acquire(file)).toThrow(new UserError(`cannot create data directory ${file}: it already exists and is not a directory (EEXIST)`));
  });
});
