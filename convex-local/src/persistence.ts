/**
 * Durable storage for the local backend's database: a JSON snapshot plus an append-only log of
 * committed transactions, both in the data directory.
 *
 * Layout of `<dataDir>`:
 *   snapshot.json  `{version: 1, lastTs, nextDocId, lastCreationTime, documents: [encoded doc]}`,
 *                  replaced atomically (write `snapshot.json.tmp`, fsync, rename).
 *   log.jsonl      one line per committed transaction with writes:
 *                  `{ts, nextDocId, lastCreationTime, writes: [[id, encodedDocJson | null]]}`.
 * Each commit is appended (one `write` syscall) before the function's result is reported to the
 * client, so it survives a process crash or SIGKILL (not a power loss: no fsync per commit).
 * On start the snapshot is loaded, log records newer than it are replayed (a torn last line is
 * ignored), and the result is compacted into a fresh snapshot.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { DbState } from "./protocol.ts";
import { errorCode, fsReason, UserError } from "./errors.ts";
import { ensureDataDir } from "./lock.ts";

/** What to do about a damaged data file, appended to the error naming it. */
export const DAMAGED_HINT = "move the data directory's files away (or restore them from a backup) to start the backend";

/** One committed transaction as stored in the log. */
export interface CommitRecord {
  ts: string;
  nextDocId: number;
  lastCreationTime: number;
  writes: [string, string | null][];
}

/** In-memory copy of the committed database (id → encoded document JSON) and its clocks. */
export class Mirror {
  documents = new Map<string, string>();
  nextDocId = 10000;
  lastCreationTime = 0;
  lastTs = 0n;

  /** Apply a committed transaction. */
  apply(rec: CommitRecord): void {
    for (const [id, doc] of rec.writes) {
      if (doc === null) this.documents.delete(id);
      else this.documents.set(id, doc);
    }
    this.nextDocId = Math.max(this.nextDocId, rec.nextDocId);
    this.lastCreationTime = Math.max(this.lastCreationTime, rec.lastCreationTime);
    const ts = BigInt(rec.ts);
    if (ts > this.lastTs) this.lastTs = ts;
  }

  /** State to hand to a (re)started function runtime. */
  state(): DbState {
    return {
      documents: [...this.documents.values()],
      nextDocId: this.nextDocId,
      lastTs: this.lastTs.toString(),
      lastCreationTime: this.lastCreationTime,
    };
  }
}

/** Snapshot + append-only log in one directory. */
export class DiskStore {
  readonly snapshotPath: string;
  readonly logPath: string;
  private logFd: number | null = null;
  private logBytes = 0;
  /** Compact when the log grows beyond this many bytes. */
  compactAfterBytes = 64 * 1024 * 1024;

  /** @throws UserError when the directory cannot be created. */
  constructor(readonly dir: string) {
    ensureDataDir(dir);
    this.snapshotPath = join(dir, "snapshot.json");
    this.logPath = join(dir, "log.jsonl");
  }

  /**
   * Load snapshot + log into a fresh Mirror.
   * @throws UserError naming the file (and the line of the log) when a file cannot be read or is
   *   damaged; a torn last line of the log (a write cut short by a crash) is tolerated.
   */
  load(): Mirror {
    const m = new Mirror();
    const snapText = readIfExists(this.snapshotPath);
    if (snapText !== null) {
      let snap: unknown;
      try {
        snap = JSON.parse(snapText);
      } catch (e) {
        throw new UserError(`corrupt snapshot ${this.snapshotPath}: ${(e as Error).message}; ${DAMAGED_HINT}`);
      }
      const problem = snapshotProblem(snap);
      if (problem) throw new UserError(`corrupt snapshot ${this.snapshotPath}: ${problem}; ${DAMAGED_HINT}`);
      const ok = snap as SnapshotFile;
      for (const doc of ok.documents) m.documents.set(doc._id, JSON.stringify(doc));
      m.nextDocId = ok.nextDocId;
      m.lastCreationTime = ok.lastCreationTime;
      m.lastTs = BigInt(ok.lastTs);
    }
    const logText = readIfExists(this.logPath);
    if (logText !== null) {
      const snapTs = m.lastTs;
      const lines = logText.split("\n");
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i];
        if (!line.trim()) continue;
        let rec: unknown;
        try {
          rec = JSON.parse(line);
        } catch (e) {
          if (i >= lines.length - 2) break; // torn final write
          throw new UserError(`corrupt record at ${this.logPath}:${i + 1}: ${(e as Error).message}; ${DAMAGED_HINT}`);
        }
        const problem = recordProblem(rec);
        if (problem) throw new UserError(`corrupt record at ${this.logPath}:${i + 1}: ${problem}; ${DAMAGED_HINT}`);
        const ok = rec as CommitRecord;
        if (BigInt(ok.ts) <= snapTs) continue;
        m.apply(ok);
      }
    }
    return m;
  }

  /**
   * Append one committed transaction; returns after the write syscall.
   * @throws UserError naming the log when it cannot be written (full disk, removed directory).
   */
  append(rec: CommitRecord): void {
    const line = `${JSON.stringify(rec)}\n`;
    try {
      if (this.logFd === null) {
        this.logFd = openSync(this.logPath, "a");
        this.logBytes = existsSync(this.logPath) ? statSync(this.logPath).size : 0;
      }
      writeSync(this.logFd, line);
    } catch (e) {
      throw new UserError(`cannot append to log ${this.logPath}: ${fsReason(e)}`);
    }
    this.logBytes += Buffer.byteLength(line);
  }

  /** True when the log is large enough that a compaction is worthwhile. */
  needsCompaction(): boolean {
    return this.logBytes > this.compactAfterBytes;
  }

  /**
   * Write the mirror as the new snapshot (atomic rename), then truncate the log.
   * @throws UserError naming the file that could not be written.
   */
  compact(m: Mirror): void {
    const tmp = `${this.snapshotPath}.tmp`;
    try {
      this.writeSnapshot(tmp, m);
    } catch (e) {
      throw new UserError(`cannot write snapshot ${tmp}: ${fsReason(e)}`);
    }
    try {
      renameSync(tmp, this.snapshotPath);
    } catch (e) {
      throw new UserError(`cannot replace snapshot ${this.snapshotPath}: ${fsReason(e)}`);
    }
    if (this.logFd !== null) {
      closeSync(this.logFd);
      this.logFd = null;
    }
    try {
      writeFileSync(this.logPath, "");
    } catch (e) {
      throw new UserError(`cannot truncate log ${this.logPath}: ${fsReason(e)}`);
    }
    this.logBytes = 0;
  }

  private writeSnapshot(tmp: string, m: Mirror): void {
    const fd = openSync(tmp, "w");
    try {
      writeSync(
        fd,
        `{"version":1,"lastTs":"${m.lastTs}","nextDocId":${m.nextDocId},"lastCreationTime":${m.lastCreationTime},"documents":[`,
      );
      let first = true;
      let buf: string[] = [];
      for (const doc of m.documents.values()) {
        buf.push(first ? doc : `,${doc}`);
        first = false;
        if (buf.length >= 4096) {
          writeSync(fd, buf.join(""));
          buf = [];
        }
      }
      writeSync(fd, `${buf.join("")}]}`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /** Close the log file. */
  close(): void {
    if (this.logFd !== null) {
      closeSync(this.logFd);
      this.logFd = null;
    }
  }
}


interface SnapshotFile {
  version: 1;
  lastTs: string;
  nextDocId: number;
  lastCreationTime: number;
  documents: { _id: string }[];
}

const TS_PATTERN = /^[0-9]+$/;

/** What is wrong with a parsed snapshot, or null when it has the expected shape. */
function snapshotProblem(snap: unknown): string | null {
  if (!snap || typeof snap !== "object" || Array.isArray(snap)) return "not a JSON object";
  const o = snap as Record<string, unknown>;
  if (o.version !== 1) return `unsupported version ${JSON.stringify(o.version) ?? "(missing)"}, expected 1`;
  if (typeof o.lastTs !== "string" || !TS_PATTERN.test(o.lastTs)) return "'lastTs' is not a timestamp string";
  if (!Number.isFinite(o.nextDocId)) return "'nextDocId' is not a number";
  if (!Number.isFinite(o.lastCreationTime)) return "'lastCreationTime' is not a number";
  if (!Array.isArray(o.documents)) return "'documents' is not an array";
  for (let i = 0; i < o.documents.length; i++) {
    const doc = o.documents[i] as Record<string, unknown> | null;
    if (!doc || typeof doc !== "object" || typeof doc._id !== "string" || typeof doc._creationTime !== "number") {
      return `document ${i} has no string _id and numeric _creationTime`;
    }
  }
  return null;
}

/** What is wrong with a parsed log record, or null when it has the expected shape. */
function recordProblem(rec: unknown): string | null {
  if (!rec || typeof rec !== "object" || Array.isArray(rec)) return "not a JSON object";
  const o = rec as Record<string, unknown>;
  if (typeof o.ts !== "string" || !TS_PATTERN.test(o.ts)) return "'ts' is not a timestamp string";
  if (!Number.isFinite(o.nextDocId)) return "'nextDocId' is not a number";
  if (!Number.isFinite(o.lastCreationTime)) return "'lastCreationTime' is not a number";
  if (!Array.isArray(o.writes)) return "'writes' is not an array";
  for (const w of o.writes) {
    if (!Array.isArray(w) || w.length !== 2 || typeof w[0] !== "string" || (w[1] !== null && typeof w[1] !== "string")) {
      return "'writes' holds an entry that is not [id, document JSON or null]";
    }
  }
  return null;
}

/** The file's text, or null when it does not exist. @throws UserError naming the file. */
function readIfExists(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    if (errorCode(e) === "ENOENT") return null;
    throw new UserError(`cannot read ${path}: ${fsReason(e)}`);
  }
}
