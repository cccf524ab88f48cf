// A real, certified OpenID provider (oidc-provider) on a loopback port, for strata's sign-in tests.
//
//   REDIRECT_URI=http://127.0.0.1:PORT/login/oidc/callback node provider.mjs
//
// Prints `READY <issuer>` once it listens. One confidential client (`strata`, secret
// `test-client-secret`, client_secret_basic, PKCE S256); any login with any password is accepted
// through the provider's own development login and consent forms; the users' groups:
//   alice: deployers, everyone      bob: everyone
// Signing keys: an RSA key made here (RS256, kid `test-rsa`).
//
// For the refusal tests, `GET /__test/tamper?mode=MODE` makes the token endpoint hand out ID
// tokens changed after the provider issued them: `aud` (another audience), `expired`, `iss`
// (another issuer), `signature` (signed with another key under the same kid), `nonce`, or
// `none` (as issued). Everything else is the provider as shipped.

import crypto from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const redirects = (process.env.REDIRECT_URI || '').split(',').filter(Boolean);
if (redirects.length === 0) {
  console.error('REDIRECT_URI is required');
  process.exit(2);
}

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const { privateKey: otherKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rsa', alg: 'RS256', use: 'sig' };

const groups = { alice: ['deployers', 'everyone'], bob: ['everyone'] };
let tamper = 'none';

const b64 = (value) => Buffer.from(value).toString('base64url');

function resign(token, change, key) {
  const [head, body] = token.split('.');
  const header = JSON.parse(Buffer.from(head, 'base64url'));
  const claims = JSON.parse(Buffer.from(body, 'base64url'));
  change(claims);
  const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
  const signature = crypto.sign('sha256', Buffer.from(input), key);
  return `${input}.${signature.toString('base64url')}`;
}

function tampered(token) {
  const now = Math.floor(Date.now() / 1000);
  switch (tamper) {
    case 'aud':
      return resign(token, (c) => { c.aud = 'someone-else'; }, privateKey);
    case 'expired':
      return resign(token, (c) => { c.iat = now - 400; c.exp = now - 300; }, privateKey);
    case 'iss':
      return resign(token, (c) => { c.iss = 'http://127.0.0.1:9/not-the-issuer'; }, privateKey);
    case 'signature':
      return resign(token, (c) => { c.groups = ['admins']; }, otherKey);
    case 'nonce':
      return resign(token, (c) => { c.nonce = 'another-sign-in'; }, privateKey);
    default:
      return token;
  }
}

const server = http.createServer();
await new Promise((resolve) => server.listen(Number(process.env.PORT || 0), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'strata',
      client_secret: 'test-client-secret',
      redirect_uris: redirects,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [jwk] },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // As most providers are set up for groups: in the ID token. With CONFORM=1 the provider keeps
  // scope claims for the userinfo endpoint, as the specification's default has it.
  conformIdTokenClaims: process.env.CONFORM === '1',
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({
      sub: id,
      preferred_username: id,
      name: id,
      email: `${id}@example.com`,
      email_verified: true,
      groups: groups[id] || [],
    }),
  }),
  pkce: { required: () => true },
  cookies: { keys: ['strata-test-cookie-key'] },
  features: { devInteractions: { enabled: true } },
});

provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.body && ctx.body.id_token) {
    ctx.body = { ...ctx.body, id_token: tampered(ctx.body.id_token) };
  }
});

const callback = provider.callback();
server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/__test/tamper') {
    tamper = url.searchParams.get('mode') || 'none';
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`tamper ${tamper}\n`);
    return;
  }
  callback(req, res);
});

process.stdout.write(`READY ${issuer}\n`);
