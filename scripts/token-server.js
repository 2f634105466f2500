#!/usr/bin/env node
// A bearer-token server for the token-auth test registry that scripts/registry.sh starts: the
// Docker/distribution token flow (GET /token?service=..&scope=..) on loopback, plain Node.js.
//
// Who gets what: a request without credentials gets a token granting `pull` only, so anonymous
// pulls work through the token flow exactly as they do against a public registry; a request with
// the configured Basic credentials gets every action it asks for (pull, push, delete, ...); a
// request with wrong credentials gets 401.
//
// Tokens are JWTs signed RS256 with --key. The registry (distribution 2.8) trusts them when the
// header's `kid` names a key in its `rootcertbundle` (--cert here); it derives key ids the libtrust
// way, which `libtrustKeyId` reproduces (checked against the registry: a token whose kid differs
// in one group is refused as "signed by untrusted key"). Distribution would also accept an `x5c`
// chain instead, but it looks at `x5c` before `kid`, so sending both would leave the kid untested.
//
// Usage: token-server.js --addr 127.0.0.1:5446 --key token.key --cert token.pem
//          --issuer ISSUER --service SERVICE --user USER --password PASSWORD
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');

const TOKEN_LIFETIME_S = 300;

function parseArgs(argv) {
  const wanted = ['addr', 'key', 'cert', 'issuer', 'service', 'user', 'password'];
  const opts = {};
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!wanted.includes(name) || i + 1 >= argv.length) {
      throw new Error(`unknown or incomplete option ${argv[i]}`);
    }
    opts[name] = argv[i + 1];
  }
  for (const name of wanted) {
    if (opts[name] === undefined) throw new Error(`missing --${name}`);
  }
  return opts;
}

// libtrust's key id: base32 of the first 240 bits of sha256(DER SubjectPublicKeyInfo), in groups of
// four characters joined by ':'. 240 bits are exactly 48 base32 characters, so there is no padding.
function libtrustKeyId(publicKey) {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  const digest = crypto.createHash('sha256').update(der).digest().subarray(0, 30);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of digest) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  return out.match(/.{4}/g).join(':');
}

function base64url(data) {
  return Buffer.from(data).toString('base64url');
}

// `scope` is TYPE:NAME:ACTIONS, and NAME may itself contain ':' (a port in a plugin name, say),
// so split at the first and the last colon.
function parseScope(scope) {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) return null;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter(Boolean),
  };
}

// Returns the authenticated user name, '' for an anonymous request, or null for bad credentials.
function authenticate(header, opts) {
  if (!header) return '';
  const match = /^Basic\s+(\S+)$/i.exec(header);
  if (!match) return null;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  const user = Buffer.from(decoded.slice(0, colon));
  const password = Buffer.from(decoded.slice(colon + 1));
  const wantUser = Buffer.from(opts.user);
  const wantPassword = Buffer.from(opts.password);
  const ok =
    user.length === wantUser.length &&
    password.length === wantPassword.length &&
    crypto.timingSafeEqual(user, wantUser) &&
    crypto.timingSafeEqual(password, wantPassword);
  return ok ? opts.user : null;
}

function grant(scopes, user) {
  const access = [];
  for (const raw of scopes) {
    const scope = parseScope(raw);
    if (!scope) continue;
    let actions;
    if (user) {
      actions = scope.actions;
    } else if (scope.type === 'repository') {
      actions = scope.actions.filter((a) => a === 'pull');
    } else {
      actions = [];
    }
    if (actions.length > 0) access.push({ type: scope.type, name: scope.name, actions });
  }
  return access;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const privateKey = crypto.createPrivateKey(fs.readFileSync(opts.key));
  const certPem = fs.readFileSync(opts.cert, 'utf8');
  const cert = new crypto.X509Certificate(certPem);
  const header = {
    typ: 'JWT',
    alg: 'RS256',
    kid: libtrustKeyId(cert.publicKey),
  };
  const encodedHeader = base64url(JSON.stringify(header));

  const sign = (claims) => {
    const payload = `${encodedHeader}.${base64url(JSON.stringify(claims))}`;
    const signature = crypto.sign('sha256', Buffer.from(payload), privateKey);
    return `${payload}.${base64url(signature)}`;
  };

  const reply = (res, status, body, extraHeaders = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...extraHeaders });
    res.end(JSON.stringify(body));
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://token-server');
    if (req.method !== 'GET' || url.pathname !== '/token') {
      reply(res, 404, { errors: [{ code: 'NOT_FOUND', message: 'only GET /token is served' }] });
      return;
    }
    const user = authenticate(req.headers.authorization, opts);
    if (user === null) {
      console.log(`${new Date().toISOString()} 401 bad credentials`);
      reply(
        res,
        401,
        { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] },
        { 'WWW-Authenticate': 'Basic realm="msb-test-token"' },
      );
      return;
    }
    const service = url.searchParams.get('service') || opts.service;
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' '));
    const now = Math.floor(Date.now() / 1000);
    const access = grant(scopes, user);
    const token = sign({
      iss: opts.issuer,
      sub: user,
      aud: service,
      exp: now + TOKEN_LIFETIME_S,
      // A little slack for the registry's clock; both run on this host.
      nbf: now - 10,
      iat: now,
      jti: crypto.randomBytes(16).toString('hex'),
      access,
    });
    console.log(
      `${new Date().toISOString()} 200 user=${user || '(anonymous)'} ` +
        `scopes=${JSON.stringify(scopes)} granted=${JSON.stringify(access)}`,
    );
    reply(res, 200, {
      token,
      access_token: token,
      expires_in: TOKEN_LIFETIME_S,
      issued_at: new Date(now * 1000).toISOString(),
    });
  });

  const colon = opts.addr.lastIndexOf(':');
  const host = opts.addr.slice(0, colon);
  const port = Number(opts.addr.slice(colon + 1));
  server.listen(port, host, () => {
    console.log(`token server on http://${opts.addr}/token, kid ${header.kid}`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
