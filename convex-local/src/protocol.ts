/** Messages exchanged between the backend's main thread and its function-runtime worker thread. */

/** An identity as passed to `convex-test`'s `withIdentity` (tokenIdentifier, issuer, subject, claims). */
export type UserIdentityClaims = Record<string, unknown> & {
  tokenIdentifier: string;
  issuer: string;
  subject: string;
};

/** Who calls a function: admin (internal functions allowed) and/or a user identity. */
export interface Caller {
  admin: boolean;
  user: UserIdentityClaims | null;
}

export type UdfType = "query" | "mutation" | "action" | "any";

/** Persisted database state handed to a (re)started runtime. Documents are convex_encoded_json strings. */
export interface DbState {
  documents: string[];
  nextDocId: number;
  lastTs: string; // bigint as decimal string
  lastCreationTime: number;
}

export type ToWorker =
  | { kind: "init"; functionsDir: string; state: DbState }
  | {
      kind: "run";
      opId: number;
      udfType: UdfType;
      path: string;
      argsJson: string;
      caller: Caller;
    }
  | {
      kind: "http";
      opId: number;
      method: string;
      url: string;
      headers: [string, string][];
      body: Uint8Array | null;
      caller: Caller;
    };

/**
 * What a query execution read, for reactivity (set by the runtime on query results, ok or error):
 * `reads` = the tables it read (system tables included); absent when unknown (e.g. the runtime
 * failed the query itself, or it read a component's tables). `snapshotTs` = the commit timestamp
 * its transaction read at (bigint as decimal string), absent if no transaction began.
 */
export interface ReadSet {
  reads?: string[];
  snapshotTs?: string;
}

export type RunResult =
  | ({
      ok: true;
      valueJson: string;
      logLines: string[];
      ts: string | null;
      udfType: "query" | "mutation" | "action";
    } & ReadSet)
  | ({
      ok: false;
      errorMessage: string;
      errorDataJson?: string;
      logLines: string[];
    } & ReadSet);

export interface HttpResult {
  status: number;
  headers: [string, string][];
  body: Uint8Array;
}

export type FromWorker =
  | { kind: "ready"; lastTs: string }
  | {
      kind: "initError";
      /** One line: what failed. */
      message: string;
      /** The error's stack (or text), for debugging. */
      stack: string;
      /**
       * `functions`: the functions could not be loaded (a user module threw or does not compile);
       * `data`: the stored documents could not be restored; `setup`: the functions directory is
       * incomplete (the message says what to do); `internal`: anything else.
       */
      cause: "functions" | "data" | "setup" | "internal";
    }
  | {
      kind: "commit";
      opId: number | null;
      ts: string;
      writes: [string, string | null][];
      /** Tables of the written documents (deduplicated). */
      tables: string[];
      nextDocId: number;
      lastCreationTime: number;
    }
  | { kind: "txBegin"; opId: number | null }
  | { kind: "txEnd" }
  | { kind: "result"; opId: number; result: RunResult }
  | { kind: "httpResult"; opId: number; result: HttpResult };
