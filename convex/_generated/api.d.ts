/* eslint-disable */
/**
 * Generated `api` utility.
 *
 * THIS CODE IS AUTOMATICALLY GENERATED.
 *
 * To regenerate, run `npx convex dev`.
 * @module
 */

import type {
  ApiFromModules,
  FilterApi,
  FunctionReference,
} from "convex/server";
import type * as admin from "../admin.js";
import type * as changeLog from "../changeLog.js";
import type * as dashboard from "../dashboard.js";
import type * as errors from "../errors.js";
import type * as filters from "../filters.js";
import type * as settings from "../settings.js";
import type * as timeZones from "../timeZones.js";
import type * as users from "../users.js";
import type * as validators from "../validators.js";
import type * as watchEvents from "../watchEvents.js";
import type * as worker from "../worker.js";

/**
 * A utility for referencing Convex functions in your app's API.
 *
 * Usage:
 * ```js
 * const myFunctionReference = api.myModule.myFunction;
 * ```
 */
declare const fullApi: ApiFromModules<{
  admin: typeof admin;
  changeLog: typeof changeLog;
  dashboard: typeof dashboard;
  errors: typeof errors;
  filters: typeof filters;
  settings: typeof settings;
  timeZones: typeof timeZones;
  users: typeof users;
  validators: typeof validators;
  watchEvents: typeof watchEvents;
  worker: typeof worker;
}>;
export declare const api: FilterApi<
  typeof fullApi,
  FunctionReference<any, "public">
>;
export declare const internal: FilterApi<
  typeof fullApi,
  FunctionReference<any, "internal">
>;
