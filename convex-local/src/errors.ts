/**
 * Errors that are the user's to fix (a flag value, a busy port, a data directory held by another
 * backend, a damaged data file, a rejected key) and how the command line reports errors.
 *
 * A {@link UserError}'s message is complete on one line: what went wrong, where (the flag, the
 * port, the file path) and, where there is one, what to do. The command line prints it as
 * `convex-local: <message>` and exits with its `exitCode`; any other error is a bug and is
 * printed as one line plus a hint to set `CONVEX_LOCAL_DEBUG=1`, which prints stack traces.
 */

/** Exit code of a runtime failure (busy port, locked or damaged data directory, unreachable backend). */
export const EXIT_FAILURE = 1;
/** Exit code of bad usage (unknown flag, bad flag value, rejected admin key). */
export const EXIT_USAGE = 2;

/** An error the user can fix, reported without a stack trace. */
export class UserError extends Error {
  /**
   * @param detail more text (e.g. a stack trace from the function runtime), printed only when
   *   debugging is asked for.
   */
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FAILURE,
    readonly detail: string | null = null,
  ) {
    super(message);
    this.name = "UserError";
  }
}

/** Bad usage of the command line (exit code 2). */
export class UsageError extends UserError {
  constructor(message: string) {
    super(message, EXIT_USAGE);
    this.name = "UsageError";
  }
}

/** The `code` of a Node system error (`ENOENT`, `EACCES`, …), or undefined. */
export function errorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

const FS_REASONS: Record<string, string> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "it is a directory",
  ENOTDIR: "a component of the path is not a directory",
  EEXIST: "it already exists and is not a directory",
  ENOSPC: "no space left on device",
  EROFS: "read-only file system",
  EDQUOT: "disk quota exceeded",
  EMFILE: "too many open files",
};

/** A short reason for a failed file-system call, without the path Node repeats in its message. */
export function fsReason(e: unknown): string {
  const code = errorCode(e);
  if (code && FS_REASONS[code]) return `${FS_REASONS[code]} (${code})`;
  if (code) return code;
  return firstLine((e as Error)?.message ?? String(e));
}

/** True for errors of file-system calls (they carry a `syscall` and an errno `code`). */
export function isFsError(e: unknown): boolean {
  const o = e as { syscall?: unknown; code?: unknown } | null;
  return typeof o?.syscall === "string" && typeof o?.code === "string";
}

/** The first non-empty line of `text`. */
export function firstLine(text: string): string {
  return text.split("\n").find((l) => l.trim() !== "")?.trim() ?? text;
}

/** True when `CONVEX_LOCAL_DEBUG` asks for stack traces (any value but empty, `0` or `false`). */
export function debugEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = (env.CONVEX_LOCAL_DEBUG ?? "").trim().toLowerCase();
  return v !== "" && v !== "0" && v !== "false";
}

/**
 * What the command line prints (to stderr, ending in a newline) and its exit code for an error
 * that reached the top level.
 */
export function describeFatal(e: unknown, debug: boolean): { text: string; exitCode: number } {
  if (e instanceof UserError) {
    const extra = debug ? `\n${e.detail ?? e.stack ?? ""}` : "";
    return { text: `convex-local: ${e.message}${extra}\n`, exitCode: e.exitCode };
  }
  const code = errorCode(e);
  if (code?.startsWith("ERR_PARSE_ARGS")) {
    return { text: `convex-local: ${firstLine((e as Error).message)} (see convex-local --help)\n`, exitCode: EXIT_USAGE };
  }
  if (debug) {
    return { text: `convex-local: internal error: ${(e as Error)?.stack ?? String(e)}\n`, exitCode: EXIT_FAILURE };
  }
  const message = e instanceof Error ? `${e.name}: ${firstLine(e.message)}` : firstLine(String(e));
  return {
    text: `convex-local: internal error: ${message} (set CONVEX_LOCAL_DEBUG=1 for the stack trace)\n`,
    exitCode: EXIT_FAILURE,
  };
}
