// MSW request handlers serving the fake bank (./bank.mjs) under /api: the UI's tests install
// them with msw/node; `npm run mock` (dev/mock-bfaf.mjs) answers its HTTP requests with them.
// Answers are checked against the spec by the fake bank itself.

import { http, HttpResponse } from 'msw';
import { problemBody } from './bank.mjs';

/** `[handler]` answering every /api request from `bank` (any origin: jsdom's, the mock's). */
export function bankHandlers(bank) {
  return [
    http.all(/^[a-z]+:\/\/[^/]+\/api\//, async ({ request }) => {
      const url = new URL(request.url);
      const text = await request.text();
      let body;
      if (text) {
        try {
          body = JSON.parse(text);
        } catch {
          return problemResponse(400, 'bad_request', `the request body is not valid JSON`);
        }
      }
      const headers = Object.fromEntries([...request.headers].map(([k, v]) => [k.toLowerCase(), v]));
      const query = Object.fromEntries(url.searchParams);
      const r = await bank.handle({ method: request.method, path: url.pathname, query, headers, body });
      return new HttpResponse(r.body === undefined ? null : JSON.stringify(r.body), {
        status: r.status,
        headers: { 'Content-Type': r.contentType, 'Cache-Control': 'no-store' },
      });
    }),
  ];
}

function problemResponse(status, code, detail) {
  return new HttpResponse(JSON.stringify(problemBody(status, code, detail)), { status, headers: { 'Content-Type': 'application/problem+json' } });
}
