/**
 * Operator entry points (admin key only): the public writes, acting for an
 * explicit `userId` (importer CLI in operator mode, maintenance scripts).
 */
import { v } from "convex/values";
import { internalMutation, type MutationCtx } from "./_generated/server";
import { requestRecomputeForUser } from "./dashboard";
import { setTimeZoneForUser } from "./settings";
import { requireUserIdArg } from "./users";
import {
  vDeleteResult,
  vImportResult,
  vRecomputeResult,
  vSeqResult,
  vWatchEventInput,
  type DeleteResult,
  type ImportResult,
  type WatchEventInput,
} from "./validators";
import { deleteRangeForUser, importEventsForUser } from "./watchEvents";

/** Handler of `admin:importBatch`. */
export async function importBatchHandler(
  ctx: MutationCtx,
  args: { userId: string; events: WatchEventInput[] },
): Promise<ImportResult> {
  return await importEventsForUser(ctx, requireUserIdArg(args.userId), args.events);
}

/** Handler of `admin:deleteRange`. */
export async function deleteRangeHandler(
  ctx: MutationCtx,
  args: { userId: string; fromMs?: number; toMs?: number },
): Promise<DeleteResult> {
  return await deleteRangeForUser(ctx, requireUserIdArg(args.userId), args);
}

/** Handler of `admin:setTimeZone`. */
export async function setTimeZoneHandler(
  ctx: MutationCtx,
  args: { userId: string; timeZone: string },
): Promise<{ seq: number | null }> {
  return await setTimeZoneForUser(ctx, requireUserIdArg(args.userId), args.timeZone);
}

/** Handler of `admin:requestRecompute`. */
export async function requestRecomputeHandler(
  ctx: MutationCtx,
  args: { userId: string },
): Promise<{ seq: number }> {
  return await requestRecomputeForUser(ctx, requireUserIdArg(args.userId));
}

/**
 * `watchEvents:importBatch` for `userId` (importer CLI, operator mode).
 * Same limits, validation and idempotency: ≤ 1000 events, duplicates skipped,
 * one `"import"` change when anything was inserted.
 */
export const importBatch = internalMutation({
  args: { userId: v.string(), events: v.array(vWatchEventInput) },
  returns: vImportResult,
  handler: importBatchHandler,
});

/**
 * `watchEvents:deleteRange` for `userId` (operators): ≤ 2000 per call, call
 * again while `hasMore`; bounds in epoch ms, inclusive.
 */
export const deleteRange = internalMutation({
  args: { userId: v.string(), fromMs: v.optional(v.number()), toMs: v.optional(v.number()) },
  returns: vDeleteResult,
  handler: deleteRangeHandler,
});

/** `settings:setTimeZone` for `userId` (operators). Idempotent; `seq` null when unchanged. */
export const setTimeZone = internalMutation({
  args: { userId: v.string(), timeZone: v.string() },
  returns: vSeqResult,
  handler: setTimeZoneHandler,
});

/** `dashboard:requestRecompute` for `userId` (operators). Appends a `"manual"` change each call. */
export const requestRecompute = internalMutation({
  args: { userId: v.string() },
  returns: vRecomputeResult,
  handler: requestRecomputeHandler,
});
