/**
 * Authentication for the local backend: the admin key and RS256 user JWTs.
 *
 * User tokens are verified against the backend's own RSA key (generated on first start and kept in
 * `<dataDir>/jwt-key.json` when a data directory is given) and, optionally, one extra issuer with
 * its JWKS (URL or file). Identity: the claims, plus `issuer`, `subject` and
 * `tokenIdentifier = "<iss>|<sub>"`.
 */
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  exportJWK,
  generateKeyPair,
  importJWK,
  jwtVerify,
  SignJWT,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
} from "jose";
import type { UserIdentityClaims } from "./protocol.ts";
import { errorCode, fsReason, UsageError, UserError } from "./errors.ts";

/** Default issuer of tokens minted by the backend (independent of its port). */
export const DEFAULT_ISSUER = "convex-local";
/** Audience of minted tokens. */
export const DEFAULT_AUDIENCE = "convex";
const KEY_ID = "convex-local-1";

/** Raised for a token that cannot be accepted; `code` is the HTTP error code to report. */
export class AuthFailure extends Error {
  constructor(
    readonly code: "InvalidAuthHeader" | "NoAuthProvider" | "BadAdminKey",
    message: string,
  ) {
    super(message);
  }
}

export interface AuthOptions {
  adminKey: string;
  issuer: string;
  dataDir: string | null;
  /** Extra trusted issuer and its JWKS (https URL or path to a JSON file). */
  extraIssuer?: string;
  extraJwks?: string;
}

/** Generate an admin key of the form `convex-local|<64 hex chars>`. */
export function generateAdminKey(): string {
  return `convex-local|${randomBytes(32).toString("hex")}`;
}

/** Strip an optional `prod:` / `dev:` / `preview:` deployment prefix from an admin key. */
function stripKeyPrefix(key: string): string {
  const m = /^(prod|dev|preview):[^|]*\|/.exec(key);
  return m ? key.slice(key.indexOf(":") + 1) : key.replace(/^(prod|dev|preview):/, "");
}

/** The backend's signing key and verification of incoming tokens. */
export class Authenticator {
  private privateKey!: Awaited<ReturnType<typeof importJWK>>;
  private publicJwk!: JWK;
  private ownJwks!: JWTVerifyGetKey;
  private extraJwks: JWTVerifyGetKey | null = null;

  private constructor(readonly opts: AuthOptions) {}

  /**
   * Load or create the signing key; set up the extra issuer's JWKS if configured.
   * @throws UserError naming the file when the signing key or the JWKS file cannot be read or
   *   is not a key (UsageError for a JWKS URL that is not a URL).
   */
  static async create(opts: AuthOptions): Promise<Authenticator> {
    const a = new Authenticator(opts);
    await a.loadKey();
    if (opts.extraIssuer && opts.extraJwks) a.extraJwks = loadExtraJwks(opts.extraJwks);
    return a;
  }

  private async loadKey(): Promise<void> {
    const keyFile = this.opts.dataDir ? join(this.opts.dataDir, "jwt-key.json") : null;
    let privJwk: JWK;
    if (keyFile && existsSync(keyFile)) {
      privJwk = readSigningKey(keyFile);
      try {
        this.privateKey = await importJWK(privJwk, "RS256");
      } catch (e) {
        throw new UserError(`signing key ${keyFile} is not an RS256 private key: ${(e as Error).message}; ${KEY_HINT}`);
      }
    } else {
      const { privateKey } = await generateKeyPair("RS256", { extractable: true });
      privJwk = await exportJWK(privateKey);
      if (keyFile) {
        try {
          mkdirSync(this.opts.dataDir!, { recursive: true });
          writeFileSync(keyFile, JSON.stringify(privJwk), { mode: 0o600 });
        } catch (e) {
          throw new UserError(`cannot write signing key ${keyFile}: ${fsReason(e)}`);
        }
      }
      this.privateKey = await importJWK(privJwk, "RS256");
    }
    const { n, e, kty } = privJwk;
    this.publicJwk = { kty, n, e, alg: "RS256", use: "sig", kid: KEY_ID };
    this.ownJwks = createLocalJWKSet({ keys: [this.publicJwk] });
  }

  /** Public JWKS served at /.well-known/jwks.json. */
  jwks(): { keys: JWK[] } {
    return { keys: [this.publicJwk] };
  }

  /** True when `key` (optionally with a deployment prefix) equals the admin key. */
  isAdminKey(key: string): boolean {
    return stripKeyPrefix(key) === stripKeyPrefix(this.opts.adminKey);
  }

  /**
   * Mint an RS256 token for `subject`, valid for `ttlSeconds`, with extra claims.
   * @throws Error when subject is empty.
   */
  async mint(subject: string, ttlSeconds = 24 * 3600, claims: Record<string, unknown> = {}): Promise<string> {
    if (!subject) throw new Error("subject must be a non-empty string");
    return await new SignJWT({ ...claims })
      .setProtectedHeader({ alg: "RS256", kid: KEY_ID, typ: "JWT" })
      .setIssuer(this.opts.issuer)
      .setSubject(subject)
      .setAudience(DEFAULT_AUDIENCE)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
      .sign(this.privateKey);
  }

  /**
   * Verify a user JWT and build the identity.
   * @returns identity and expiry (ms since epoch, or null)
   * @throws AuthFailure (InvalidAuthHeader for bad/expired/forged tokens, NoAuthProvider for unknown issuers)
   */
  async verify(token: string): Promise<{ identity: UserIdentityClaims; expiresAtMs: number | null }> {
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(token);
    } catch (e) {
      throw new AuthFailure("InvalidAuthHeader", `Could not parse JWT: ${(e as Error).message}`);
    }
    const iss = unverified.iss;
    let keys: JWTVerifyGetKey;
    if (iss === this.opts.issuer) keys = this.ownJwks;
    else if (iss && iss === this.opts.extraIssuer && this.extraJwks) keys = this.extraJwks;
    else throw new AuthFailure("NoAuthProvider", `No auth provider found matching the given token (issuer '${iss ?? ""}')`);
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, { issuer: iss, algorithms: ["RS256", "ES256"] }));
    } catch (e) {
      throw new AuthFailure("InvalidAuthHeader", `Could not verify token: ${(e as Error).message}`);
    }
    if (!payload.sub) throw new AuthFailure("InvalidAuthHeader", "Token has no 'sub' claim");
    return { identity: identityFromClaims(payload), expiresAtMs: payload.exp ? payload.exp * 1000 : null };
  }
}

const KEY_HINT = "delete it to have a new key made at the next start (tokens signed with the old key are then refused)";

/** Read the stored signing key. @throws UserError naming the file. */
function readSigningKey(keyFile: string): JWK {
  let text: string;
  try {
    text = readFileSync(keyFile, "utf8");
  } catch (e) {
    throw new UserError(`cannot read signing key ${keyFile}: ${fsReason(e)}`);
  }
  let jwk: unknown;
  try {
    jwk = JSON.parse(text);
  } catch (e) {
    throw new UserError(`corrupt signing key ${keyFile}: ${(e as Error).message}; ${KEY_HINT}`);
  }
  const o = jwk as Record<string, unknown> | null;
  if (!o || typeof o !== "object" || o.kty !== "RSA" || typeof o.n !== "string" || typeof o.e !== "string" || typeof o.d !== "string") {
    throw new UserError(`corrupt signing key ${keyFile}: not an RSA private key in JWK form; ${KEY_HINT}`);
  }
  return o as JWK;
}

/** The extra issuer's key set, from an http(s) URL or a JSON file. @throws UserError / UsageError. */
function loadExtraJwks(source: string): JWTVerifyGetKey {
  if (/^https?:\/\//i.test(source)) {
    let url: URL;
    try {
      url = new URL(source);
    } catch {
      throw new UsageError(`--auth-jwks ${source} is not a valid URL`);
    }
    return createRemoteJWKSet(url);
  }
  let text: string;
  try {
    text = readFileSync(source, "utf8");
  } catch (e) {
    const hint = errorCode(e) === "ENOENT" ? " (--auth-jwks takes an https URL or a JSON file)" : "";
    throw new UserError(`cannot read JWKS file ${source}: ${fsReason(e)}${hint}`);
  }
  try {
    return createLocalJWKSet(JSON.parse(text));
  } catch (e) {
    throw new UserError(`JWKS file ${source} is not a JSON Web Key Set: ${(e as Error).message}`);
  }
}

const JWT_ONLY = new Set(["iss", "sub", "aud", "exp", "iat", "nbf", "jti"]);

/** Build a user identity from verified JWT claims. */
export function identityFromClaims(payload: JWTPayload): UserIdentityClaims {
  const identity: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(payload)) {
    if (!JWT_ONLY.has(k) && v !== undefined) identity[k] = v;
  }
  return {
    ...identity,
    issuer: payload.iss!,
    subject: payload.sub!,
    tokenIdentifier: `${payload.iss}|${payload.sub}`,
  };
}

/**
 * Identity for an admin acting as a user (`actingAs` / `impersonating` / `Convex key:<base64>`):
 * `tokenIdentifier` or `issuer` + `subject` must be present.
 * @throws AuthFailure naming the missing field.
 */
export function identityFromActingAs(raw: unknown): UserIdentityClaims {
  if (!raw || typeof raw !== "object") throw new AuthFailure("InvalidAuthHeader", "acting-as identity must be an object");
  const o = raw as Record<string, unknown>;
  const issuer = typeof o.issuer === "string" ? o.issuer : DEFAULT_ISSUER;
  const subject = typeof o.subject === "string" ? o.subject : undefined;
  let tokenIdentifier = typeof o.tokenIdentifier === "string" ? o.tokenIdentifier : undefined;
  if (!tokenIdentifier) {
    if (!subject) throw new AuthFailure("InvalidAuthHeader", "acting-as identity needs tokenIdentifier or subject");
    tokenIdentifier = `${issuer}|${subject}`;
  }
  return { ...o, issuer, subject: subject ?? tokenIdentifier.split("|").slice(1).join("|"), tokenIdentifier };
}
