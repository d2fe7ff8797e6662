/**
 * Access to a `convexTest` instance's internal state (its databases and transaction manager).
 * convex-test enters that state through `AsyncLocalStorage.run` on every call of the accessor; this
 * captures it once by observing one `t.run` call.
 */
import { AsyncLocalStorage } from "node:async_hooks";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyRecord = Record<string, any>;

export interface ConvexTestInternals {
  /** `components[path].db` is the `DatabaseFake` of a component; "" is the root. */
  components: Record<string, AnyRecord>;
  transactionManager: AnyRecord;
}

/** @throws Error when the state cannot be found (unsupported convex-test version). */
export async function captureInternals(t: { run: (fn: (ctx: unknown) => Promise<unknown>) => Promise<unknown> }): Promise<ConvexTestInternals> {
  let captured: AnyRecord | undefined;
  const origRun = AsyncLocalStorage.prototype.run;
  AsyncLocalStorage.prototype.run = function (this: AsyncLocalStorage<unknown>, store: unknown, cb: any, ...rest: any[]) { // eslint-disable-line @typescript-eslint/no-explicit-any
    if (store && typeof store === "object" && "transactionManager" in store && "components" in store) {
      captured = store as AnyRecord;
    }
    return origRun.call(this, store, cb, ...rest);
  } as typeof origRun;
  try {
    await t.run(async () => null);
  } finally {
    AsyncLocalStorage.prototype.run = origRun;
  }
  if (!captured) throw new Error("could not attach to convex-test internals (unsupported convex-test version)");
  return captured as ConvexTestInternals;
}
