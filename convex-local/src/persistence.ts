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
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { DbState } from "./protocol.ts";

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

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
    this.snapshotPath = join(dir, "snapshot.json");
    this.logPath = join(dir, "log.jsonl");
  }

  /**
   * Load snapshot + log into a fresh Mirror.
   * @throws Error naming the file when the snapshot is unreadable (a torn log tail is tolerated).
   */
  load(): Mirror {
    const m = new Mirror();
    if (existsSync(this.snapshotPath)) {
      let snap: { version: number; lastTs: string; nextDocId: number; lastCreationTime: number; documents: { _id: string }[] };
      try {
        snap = JSON.parse(readFileSync(this.snapshotPath, "utf8"));
      } catch (e) {
        throw new Error(`corrupt snapshot ${this.snapshotPath}: ${(e as Error).message}`);
      }
      if (snap.version !== 1) throw new Error(`unsupported snapshot version ${snap.version} in ${this.snapshotPath}`);
      for (const doc of snap.documents) m.documents.set(doc._id, JSON.stringify(doc));
      m.nextDocId = snap.nextDocId;
      m.lastCreationTime = snap.lastCreationTime;
      m.lastTs = BigInt(snap.lastTs);
    }
    if (existsSync(this.logPath)) {
      const snapTs = m.lastTs;
      const lines = readFileSync(this.logPath, "utf8").split("\n");
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i];
        if (!line.trim()) continue;
        let rec: CommitRecord;
        try {
          rec = JSON.parse(line);
        } catch {
          if (i >= lines.length - 2) break; // torn final write
          throw new Error(`corrupt record at ${this.logPath}:${i + 1}`);
        }
        if (BigInt(rec.ts) <= snapTs) continue;
        m.apply(rec);
      }
    }
    return m;
  }

  /** Append one committed transaction; returns after the write syscall. */
  append(rec: CommitRecord): void {
    if (this.logFd === null) {
      this.logFd = openSync(this.logPath, "a");
      this.logBytes = existsSync(this.logPath) ? statSync(this.logPath).size : 0;
    }
    const line = `${JSON.stringify(rec)}\n`;
    writeSync(this.logFd, line);
    this.logBytes += Buffer.byteLength(line);
  }

  /** True when the log is large enough that a compaction is worthwhile. */
  needsCompaction(): boolean {
    return this.logBytes > this.compactAfterBytes;
  }

  /** Write the mirror as the new snapshot (atomic rename), then truncate the log. */
  compact(m: Mirror): void {
    const tmp = `${this.snapshotPath}.tmp`;
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
    renameSync(tmp, this.snapshotPath);
    if (this.logFd !== null) {
      closeSync(this.logFd);
      this.logFd = null;
    }
    writeFileSync(this.logPath, "");
    this.logBytes = 0;
  }

  /** Close the log file. */
  close(): void {
    if (this.logFd !== null) {
      closeSync(this.logFd);
      this.logFd = null;
    }
  }
}

