/**
 * Exclusive lock on a data directory, so that two backends never write the same snapshot and log.
 *
 * The lock is the file `<dataDir>/convex-local.lock`, created with O_EXCL (`wx`) and holding one
 * JSON line: `{"pid", "procStart", "host", "startedAt"}`. `procStart` identifies the process
 * beyond its pid where the system tells (Linux: boot id + start time from `/proc`), so a pid
 * reused by another process after a crash, a reboot or a container restart is not mistaken for
 * the holder. A lock whose holder is no longer running is stale and is taken over; the lock file
 * is removed on release (clean shutdown) and, as a last resort, when the process exits.
 */
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { errorCode, fsReason, UserError } from "./errors.ts";

/** Create the data directory (and its parents) if missing; a UserError naming it when that fails. */
export function ensureDataDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new UserError(`cannot create data directory ${dir}: ${fsReason(e)}`);
  }
}

/** Name of the lock file inside the data directory. */
export const LOCK_FILE_NAME = "convex-local.lock";

/** Contents of a lock file. */
export interface LockInfo {
  pid: number;
  /** Identity of the process beyond its pid, or null where the system does not tell. */
  procStart: string | null;
  host?: string;
  startedAt?: string;
}

/** Lock files held by this process (a second backend in one process must be refused too). */
const heldHere = new Set<string>();

/** A file without valid contents younger than this may be a lock being written right now. */
const FRESH_MS = 2000;
const MAX_ATTEMPTS = 60;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Boot id + start time (clock ticks since boot) of a process, on Linux; null elsewhere or when unreadable. */
export function processStart(pid: number): string | null {
  try {
    const bootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which is in parentheses and may contain spaces;
    // the start time is field 22 of the line, i.e. the 20th after the command name.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const start = fields[19];
    return bootId && start ? `${bootId}:${start}` : null;
  } catch {
    return null;
  }
}

/** Parse lock file contents; null when they are not a lock (torn, empty or foreign). */
export function parseLock(text: string): LockInfo | null {
  try {
    const o = JSON.parse(text) as Partial<LockInfo>;
    if (!o || typeof o !== "object" || !Number.isInteger(o.pid) || (o.pid as number) <= 0) return null;
    return { ...o, pid: o.pid as number, procStart: typeof o.procStart === "string" ? o.procStart : null };
  } catch {
    return null;
  }
}

/** True when the process that wrote `info` is still running. */
export function holderAlive(info: LockInfo): boolean {
  try {
    process.kill(info.pid, 0);
  } catch (e) {
    // EPERM: the process exists but belongs to someone else.
    if (errorCode(e) !== "EPERM") return false;
  }
  const now = processStart(info.pid);
  if (info.procStart !== null && now !== null) return now === info.procStart;
  // Without process identities, our own pid in the file is an earlier process (locks held by
  // this process are known in `heldHere`).
  return info.pid !== process.pid;
}

/** An acquired lock; {@link release} it on shutdown. */
export class DataDirLock {
  private held = true;
  private readonly onExit = () => this.release();

  private constructor(
    /** Absolute path of the lock file. */
    readonly path: string,
    private readonly contents: string,
    /**
     * Set when a stale lock was taken over: the previous holder's pid, or null when the old lock
     * file could not be read (torn or foreign contents).
     */
    readonly tookOver: { pid: number | null } | null,
  ) {
    heldHere.add(path);
    process.once("exit", this.onExit);
  }

  /**
   * Lock `dir` (created if missing) for this process.
   * @throws UserError when another running process holds it (naming the directory and its pid),
   *   or when the directory or the lock file cannot be created.
   */
  static acquire(dir: string): DataDirLock {
    ensureDataDir(dir);
    const path = join(dir, LOCK_FILE_NAME);
    if (heldHere.has(path)) throw new UserError(`data directory ${dir} is already in use by this process (lock file ${path})`);
    const info: LockInfo = {
      pid: process.pid,
      procStart: processStart(process.pid),
      host: hostname(),
      startedAt: new Date().toISOString(),
    };
    const contents = `${JSON.stringify(info)}\n`;
    let tookOver: { pid: number | null } | null = null;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (createExclusive(path, contents)) return new DataDirLock(path, contents, tookOver);
      let text: string;
      let mtimeMs: number;
      try {
        text = readFileSync(path, "utf8");
        mtimeMs = statSync(path).mtimeMs;
      } catch (e) {
        if (errorCode(e) === "ENOENT") continue; // released meanwhile
        throw new UserError(`cannot read lock file ${path}: ${fsReason(e)}`);
      }
      const holder = parseLock(text);
      if (holder && holderAlive(holder)) {
        throw new UserError(
          `data directory ${dir} is in use by another convex-local (pid ${holder.pid}); ` +
            `stop it or choose another --data-dir (lock file ${path})`,
        );
      }
      if (!holder && Date.now() - mtimeMs < FRESH_MS) {
        sleepSync(50); // another process may be writing it right now
        continue;
      }
      if (moveAsideIfUnchanged(path, text)) tookOver = { pid: holder?.pid ?? null };
    }
    throw new UserError(`cannot lock data directory ${dir}: lock file ${path} keeps changing (several backends starting at once?)`);
  }

  /** Remove the lock file if it is still ours. Idempotent. */
  release(): void {
    if (!this.held) return;
    this.held = false;
    heldHere.delete(this.path);
    process.off("exit", this.onExit);
    try {
      if (readFileSync(this.path, "utf8") === this.contents) unlinkSync(this.path);
    } catch {
      // already gone, or the directory went away: nothing left to release
    }
  }
}

/** Create `path` with `contents` unless it exists. @returns false when it exists. */
function createExclusive(path: string, contents: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, "wx", 0o644);
  } catch (e) {
    if (errorCode(e) === "EEXIST") return false;
    throw new UserError(`cannot create lock file ${path}: ${fsReason(e)}`);
  }
  try {
    writeSync(fd, contents);
  } catch (e) {
    closeSync(fd);
    try {
      unlinkSync(path);
    } catch {
      // best effort
    }
    throw new UserError(`cannot write lock file ${path}: ${fsReason(e)}`);
  }
  closeSync(fd);
  return true;
}

/**
 * Remove a stale lock file, unless another process replaced it after it was read as `expected`
 * (then it is put back). Renaming is atomic, so of several processes taking over the same stale
 * lock only one moves it away.
 * @returns true when the stale file was removed.
 */
function moveAsideIfUnchanged(path: string, expected: string): boolean {
  const aside = `${path}.${process.pid}.stale`;
  try {
    renameSync(path, aside);
  } catch (e) {
    if (errorCode(e) === "ENOENT") return false;
    throw new UserError(`cannot remove stale lock file ${path}: ${fsReason(e)}`);
  }
  let moved = "";
  try {
    moved = readFileSync(aside, "utf8");
  } catch {
    // treat as changed
  }
  if (moved !== expected) {
    // A live lock written after our read: restore it unless yet another one exists by now.
    try {
      const fd = openSync(path, "wx", 0o644);
      writeSync(fd, moved);
      closeSync(fd);
    } catch {
      // someone holds it now; they will be seen on the next attempt
    }
  }
  try {
    unlinkSync(aside);
  } catch {
    // best effort
  }
  return moved === expected;
}
