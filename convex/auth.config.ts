/**
 * Who may sign users in (a real deployment). Public functions identify the caller by
 * `ctx.auth.getUserIdentity().tokenIdentifier` ("<issuer>|<subject>"), so every user-facing call
 * needs a JWT from a provider listed here: set the deployment's environment variables
 * `AUTH_ISSUER_URL` (the OIDC issuer, e.g. https://your-tenant.clerk.accounts.dev) and optionally
 * `AUTH_APPLICATION_ID` (the token's `aud`, default "convex"). Without them no user can sign in;
 * the worker is unaffected (it uses the admin/deploy key).
 *
 * The local backend (`convex-local/`) does not read this file: it verifies tokens signed by its own
 * key (`npx convex-local token`) and optionally one issuer given with `--auth-issuer/--auth-jwks`.
 */
const issuer = process.env.AUTH_ISSUER_URL;

export default {
  providers: issuer ? [{ domain: issuer, applicationID: process.env.AUTH_APPLICATION_ID ?? "convex" }] : [],
};
