// A real OpenID Connect provider for the gpuclub test-suite, built on `oidc-provider`.
//
// Configuration (environment):
//   OIDC_PORT           listen on 127.0.0.1:OIDC_PORT; the issuer is http://127.0.0.1:OIDC_PORT
//   OIDC_CLIENT_ID      the one confidential client (client_secret_basic or client_secret_post)
//   OIDC_CLIENT_SECRET
//   OIDC_REDIRECT_URIS  comma-separated redirect URIs registered for that client
//   OIDC_CONFORM        1: claims only at userinfo, not in the ID token
//
// Sign-in uses the built-in development interactions: any login and password are accepted and
// the typed login becomes the account id (`sub`). Claims:
//   scope email   -> email, email_verified
//   scope profile -> name
// A login of `unverified:<email>` yields email=<email> and email_verified=false; any other
// login is the email itself with email_verified=true. `name` is the email's local part.
//
// Once listening, exactly one line `READY <issuer>` is written to stdout. Everything else the
// library logs goes to stderr. SIGTERM / SIGINT close the server and exit 0.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import process from 'node:process';

// oidc-provider reports through console.info (stdout) and console.warn (stderr). Keep stdout for
// the READY line only, and drop the notices that are expected for a throwaway test provider.
const EXPECTED_NOTICES = [
  'Unsupported runtime', // oidc-provider 9 prefers Node >= 22; Node 20 works for tests.
  'in-memory adapter',
  'devInteractions is enabled',
];
const toStderr = (...args) => {
  const text = args.map(String).join(' ');
  if (text.startsWith('oidc-provider ') && EXPECTED_NOTICES.some((n) => text.includes(n))) {
    return;
  }
  process.stderr.write(`${text}\n`);
};
console.log = toStderr;
console.info = toStderr;
console.warn = toStderr;

function required(name) {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`provider.mjs: missing environment variable ${name}\n`);
    process.exit(2);
  }
  return value;
}

const port = Number.parseInt(required('OIDC_PORT'), 10);
const clientId = required('OIDC_CLIENT_ID');
const clientSecret = required('OIDC_CLIENT_SECRET');
const redirectUris = required('OIDC_REDIRECT_URIS')
  .split(',')
  .map((uri) => uri.trim())
  .filter(Boolean);
const issuer = `http://127.0.0.1:${port}`;

// Imported after console is patched: the module logs a runtime notice when it loads.
const { default: Provider } = await import('oidc-provider');

function signingKeys() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' }] };
}

function claimsFor(login) {
  const unverified = login.startsWith('unverified:');
  const email = unverified ? login.slice('unverified:'.length) : login;
  const at = email.indexOf('@');
  return {
    sub: login,
    email,
    email_verified: !unverified,
    name: at === -1 ? email : email.slice(0, at),
  };
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      // Either secret method is accepted at the token endpoint regardless of this value.
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
  ],
  jwks: signingKeys(),
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  // Put the scope-granted claims (email, name) into the ID token too, not only at userinfo.
  // OIDC_CONFORM=1 keeps email and name out of the ID token (userinfo only), as strict providers do.
  conformIdTokenClaims: process.env.OIDC_CONFORM === '1',
  // PKCE (S256 only) is required even for this confidential client, so a hub that forgets
  // to send code_challenge fails loudly ("Authorization Server policy requires PKCE").
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    userinfo: { enabled: true },
  },
  // Plain-text error pages, so a failing test shows e.g. "invalid_redirect_uri: ..." directly.
  async renderError(ctx, out) {
    ctx.type = 'text';
    ctx.body = Object.entries(out).map(([key, value]) => `${key}: ${value}`).join('\n');
  },
  // The hub talks to the provider server-side; no browser CORS needed.
  clientBasedCORS: () => false,
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 3600,
    Grant: 3600,
    Session: 3600,
  },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return claimsFor(id);
      },
    };
  },
});

// Unexpected server-side errors are useful in test output.
provider.on('server_error', (_ctx, err) => {
  process.stderr.write(`provider.mjs: server_error: ${err?.stack ?? err}\n`);
});

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
server.on('error', (err) => {
  process.stderr.write(`provider.mjs: ${err.message}\n`);
  process.exit(1);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
