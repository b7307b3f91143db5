#!/usr/bin/env node
// A FAKE bfaf and explorer on one origin, for UI development only: serves ../dist at `/` (the
// explorer's page, explorer.html, under /explorer) and answers `/api` from the fake bank
// (../fake/bank.mjs) through the same MSW handlers the UI's tests use. Every answer, every
// request and every live message is checked against services/openapi/bank.json and
// superclient/platform/openapi/explorer.json; a violation
// answers 500 and is printed here. It is not Sequent: no NATS, no Redis, no Lua.
//
//   npm run build && npm run mock            # http://127.0.0.1:8090
//   SEQUENT_URL=http://127.0.0.1:8090 npm run test:e2e
//
// Env: MOCK_PORT (8090), MOCK_ADMIN_USER / MOCK_ADMIN_PASSWORD (admin / admin),
//      MOCK_TOKEN_TTL_MS (token lifetime, default 1 h), MOCK_STEP_MS (saga step delay, 250).

import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getResponse } from 'msw';
import { WebSocketServer } from 'ws';
import { createFakeBank, problemBody } from '../fake/bank.mjs';
import { bankHandlers } from '../fake/handlers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const DIST = join(here, '..', 'dist');
const PORT = Number(process.env.MOCK_PORT || 8090);
const ADMIN_USER = process.env.MOCK_ADMIN_USER || 'admin';
const ADMIN_PASSWORD = process.env.MOCK_ADMIN_PASSWORD || 'admin';

const bank = createFakeBank({
  adminUser: ADMIN_USER,
  adminPassword: ADMIN_PASSWORD,
  tokenTtlMs: Number(process.env.MOCK_TOKEN_TTL_MS || 3600_000),
  stepMs: Number(process.env.MOCK_STEP_MS || 250),
  onRequestViolation: (e) => console.warn(`\nwarning: ${e.message}\n`),
});
const handlers = bankHandlers(bank);

async function api(req, res) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const body = chunks.length ? Buffer.concat(chunks) : undefined;
  const request = new Request(`http://127.0.0.1:${PORT}${req.url}`, {
    method: req.method,
    headers: Object.entries(req.headers).filter(([, v]) => typeof v === 'string'),
    body: req.method === 'GET' || req.method === 'HEAD' ? undefined : body,
  });
  let response;
  try {
    response = await getResponse(handlers, request);
  } catch (e) {
    console.error(`\n${req.method} ${req.url}: ${e instanceof Error ? e.message : e}\n`);
    response = Response.json(problemBody(500, 'internal', `the fake bank broke its spec: ${e instanceof Error ? e.message : e}`), { status: 500 });
  }
  if (!response) response = Response.json(problemBody(404, 'not_found', `no route for ${req.method} ${req.url}`), { status: 404 });
  res.writeHead(response.status, Object.fromEntries(response.headers));
  res.end(Buffer.from(await response.arrayBuffer()));
}

// ---------------------------------------------------------------- static files

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.map': 'application/json', '.png': 'image/png' };

async function serveStatic(res, pathname) {
  const safe = normalize(pathname).replace(/^(\.\.[/\\])+/, '');
  let file = join(DIST, safe);
  try {
    if (!(await stat(file)).isFile()) throw new Error('dir');
  } catch {
    // SPA fallback: client-side routes (the explorer's have a page of their own)
    file = join(DIST, /^\/explorer(\/|$)/.test(pathname) ? 'explorer.html' : 'index.html');
  }
  try {
    const body = await readFile(file);
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] || 'application/octet-stream' });
    res.end(body);
  } catch {
    res.writeHead(500, { 'Content-Type': 'text/plain' });
    res.end('dist/ is missing: run `npm run build` first.');
  }
}

const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname.startsWith('/api/')) {
    api(req, res).catch((e) => {
      console.error(e);
      res.writeHead(500, { 'Content-Type': 'application/problem+json' });
      res.end(JSON.stringify(problemBody(500, 'internal', 'Something broke in the mock.')));
    });
  } else {
    serveStatic(res, url.pathname);
  }
});

// ---------------------------------------------------------------- WebSockets

const wss = new WebSocketServer({ noServer: true });
const list = (s) => (s || '').split(',').map((x) => x.trim()).filter(Boolean);
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  const token = url.searchParams.get('token') || '';
  if (url.pathname !== '/api/live' && url.pathname !== '/api/admin/live') return socket.destroy();
  wss.handleUpgrade(req, socket, head, (ws) => {
    const send = (m) => ws.send(JSON.stringify(m));
    const stop =
      url.pathname === '/api/live'
        ? bank.connect(token, send)
        : bank.tail(token, { types: list(url.searchParams.get('types')), keys: list(url.searchParams.get('keys')), fromSeq: Number(url.searchParams.get('from_seq')) || undefined }, send);
    if (!stop) return ws.close(4401, 'invalid or expired token');
    ws.on('close', stop);
  });
});

server.listen(PORT, '127.0.0.1', () => {
  console.log(`mock bfaf (FAKE, for UI development; answers checked against bank.json and explorer.json) on http://127.0.0.1:${PORT}  admin: ${ADMIN_USER}/${ADMIN_PASSWORD}`);
});
