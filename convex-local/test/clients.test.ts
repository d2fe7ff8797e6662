/**
 * The local backend against the `convex` npm clients: `ConvexClient` (convex/browser, over a real
 * WebSocket) and `ConvexHttpClient`.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { ConvexError } from "convex/values";
import { openClient, randomChannel, startBackend, type RunningBackend } from "./support";

const api = anyApi;
let backend: RunningBackend;
const clients: ConvexClient[] = [];

function newClient(): ConvexClient {
  return openClient(backend.url, clients);
}

function channel(): string {
  return randomChannel("js");
}

/** Resolve with the first value passing `pred` delivered to `onUpdate`. */
function waitForValue<T>(client: ConvexClient, ref: unknown, args: Record<string, unknown>, pred: (v: T) => boolean): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no matching value within 10 s")), 10_000);
    const unsubscribe = client.onUpdate(ref as never, args as never, (v: unknown) => {
      if (pred(v as T)) {
        clearTimeout(timer);
        unsubscribe();
        resolve(v as T);
      }
    });
  });
}

beforeAll(async () => {
  backend = await startBackend();
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await backend?.stop();
});

describe("ConvexClient (WebSocket)", () => {
  test("subscription sees the initial value, then another client's mutation", async () => {
    const ch = channel();
    const subscriber = newClient();
    const writer = newClient();
    const seen: number[] = [];
    const done = new Promise<void>((resolve) => {
      subscriber.onUpdate(api.messages.count, { channel: ch }, (v: number) => {
        seen.push(v);
        if (v === 1) resolve();
      });
    });
    await waitForValue<number>(subscriber, api.messages.count, { channel: ch }, (v) => v === 0);
    const t0 = performance.now();
    await writer.mutation(api.messages.send, { channel: ch, author: "js", body: "hi" });
    await done;
    console.log(`JS subscription update after mutation: ${(performance.now() - t0).toFixed(1)} ms`);
    expect(seen[0]).toBe(0);
    expect(seen.at(-1)).toBe(1);
  });

  test("mutation result and read-your-writes", async () => {
    const ch = channel();
    const c = newClient();
    const id = await c.mutation(api.messages.send, { channel: ch, author: "a", body: "b" });
    expect(typeof id).toBe("string");
    expect(await c.query(api.messages.list, { channel: ch })).toEqual([{ author: "a", body: "b" }]);
  });

  test("ConvexError data and rollback", async () => {
    const ch = channel();
    const c = newClient();
    const err = await c.mutation(api.messages.sendThenFail, { channel: ch }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConvexError);
    expect((err as ConvexError<{ code: string }>).data).toEqual({ code: "ROLLED_BACK", detail: 42 });
    expect(await c.query(api.messages.count, { channel: ch })).toBe(0);
  });

  test("user auth: a minted token is confirmed and sets ctx.auth", async () => {
    const c = newClient();
    const token = await backend.mintToken("js-user");
    const confirmed = new Promise<boolean>((resolve) => c.setAuth(async () => token, resolve));
    expect(await confirmed).toBe(true);
    expect(await c.query(api.messages.whoami, {})).toEqual({
      tokenIdentifier: "convex-local|js-user",
      subject: "js-user",
      issuer: "convex-local",
    });
  });

  test("user auth: a forged token is refused", async () => {
    const c = newClient();
    const token = await backend.mintToken("victim");
    const [h, p, s] = token.split(".");
    const claims = JSON.parse(Buffer.from(p, "base64url").toString());
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...claims, sub: "attacker" })).toString("base64url")}.${s}`;
    const result = new Promise<boolean>((resolve) => c.setAuth(async () => forged, resolve));
    expect(await result).toBe(false);
  });

  test("internal functions are hidden from the public", async () => {
    const c = newClient();
    await expect(c.query(api.messages.internalList, { channel: "x" })).rejects.toThrow(
      /Could not find public function for 'messages:internalList'/,
    );
  });
});

describe("ConvexHttpClient", () => {
  test("query, mutation, action, ConvexError and admin auth", async () => {
    const ch = channel();
    const http = new ConvexHttpClient(backend.url, { skipConvexDeploymentUrlCheck: true });
    await http.mutation(api.messages.send, { channel: ch, author: "h", body: "1" });
    expect(await http.query(api.messages.count, { channel: ch })).toBe(1);
    expect(await http.action(api.actions.sendViaAction, { channel: ch, body: "2" })).toBe(2);
    const err = await http.mutation(api.messages.sendThenFail, { channel: ch }).catch((e: unknown) => e);
    expect((err as ConvexError<{ code: string }>).data).toEqual({ code: "ROLLED_BACK", detail: 42 });
    await expect(http.query(api.messages.internalList, { channel: ch })).rejects.toThrow(/Could not find public function/);
    (http as unknown as { setAdminAuth(k: string): void }).setAdminAuth(backend.adminKey);
    expect(await http.query(api.messages.internalList, { channel: ch })).toEqual(["1", "2"]);
  });

  test("user token over HTTP", async () => {
    const http = new ConvexHttpClient(backend.url, { skipConvexDeploymentUrlCheck: true });
    http.setAuth(await backend.mintToken("http-user"));
    expect(await http.query(api.messages.whoami, {})).toMatchObject({ tokenIdentifier: "convex-local|http-user" });
  });

  test("HTTP action on the site port", async () => {
    const res = await fetch(`${backend.siteUrl}/hello?channel=${channel()}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ hello: "world", count: 0 });
  });
});
