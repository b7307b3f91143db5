// The bank's OpenAPI document (services/openapi/bank.json) and the platform explorer's
// (superclient/platform/openapi/explorer.json), merged, as a checker: every answer of the fake
// bank and explorer (tests, `npm run mock`) and every request the UI sends to them is validated
// against the spec, so the fakes cannot drift from the real APIs without a test failing.
//
//   checkResponse('POST', '/api/accounts/acc-1/withdrawals', 422, 'application/problem+json', body)
//   checkRequest('POST', '/api/transfers', body)
//   checkSchema('LiveMessage', message)
//
// Each throws a SpecViolation naming the operation and what is wrong.

import Ajv2020 from 'ajv/dist/2020.js';
import { mergedSpec } from '../scripts/api-specs.mjs';

export const spec = mergedSpec();

export class SpecViolation extends Error {
  constructor(message) {
    super(message);
    this.name = 'SpecViolation';
  }
}

// OpenAPI 3.1 schemas are JSON Schema 2020-12; `discriminator` and `example(s)` are annotations
// for other tools, formats are not asserted (as the Rust contract test does).
const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
ajv.addSchema(spec, 'bank.json');
const compiled = new Map();
function validator(pointer) {
  let v = compiled.get(pointer);
  if (!v) {
    v = ajv.compile({ $ref: `bank.json#${pointer}` });
    compiled.set(pointer, v);
  }
  return v;
}

function escapePointer(s) {
  return s.replace(/~/g, '~0').replace(/\//g, '~1');
}

function validate(pointer, value, what) {
  const v = validator(pointer);
  if (!v(value)) {
    const errors = v.errors.map((e) => `${e.instancePath || '(root)'} ${e.message}${e.params ? ` ${JSON.stringify(e.params)}` : ''}`);
    throw new SpecViolation(`${what} does not match the spec (${pointer}):\n  ${errors.join('\n  ')}\n  value: ${JSON.stringify(value)}`);
  }
}

const templates = Object.keys(spec.paths).map((template) => {
  const names = [];
  const re = new RegExp(
    '^' +
      template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{(\w+)\\?\}/g, (_, name) => {
        names.push(name);
        return '([^/]+)';
      }) +
      '$',
  );
  return { template, re, names };
});

/** The operation of a request: `{template, operation, params}`; throws when the spec has none. */
export function operationOf(method, pathname) {
  // Templates with fewer parameters win (`/api/admin/events` before `/api/admin/{x}`).
  const found = templates
    .map((t) => ({ t, m: t.re.exec(pathname) }))
    .filter(({ t, m }) => m && spec.paths[t.template][method.toLowerCase()])
    .sort((a, b) => a.t.names.length - b.t.names.length)[0];
  if (!found) throw new SpecViolation(`${method} ${pathname} is not an operation of the spec`);
  const params = Object.fromEntries(found.t.names.map((n, i) => [n, decodeURIComponent(found.m[i + 1])]));
  return { template: found.t.template, operation: spec.paths[found.t.template][method.toLowerCase()], params };
}

function resolve(obj) {
  if (obj && obj.$ref) {
    const path = obj.$ref.replace(/^#\//, '').split('/');
    return path.reduce((o, k) => o[k.replace(/~1/g, '/').replace(/~0/g, '~')], spec);
  }
  return obj;
}

/** Checks one answer: its status is documented (or falls under `default`), its content type is one the spec lists, its body matches. */
export function checkResponse(method, pathname, status, contentType, body) {
  const { template, operation } = operationOf(method, pathname);
  const key = operation.responses[String(status)] ? String(status) : 'default';
  const response = resolve(operation.responses[key]);
  if (!response) throw new SpecViolation(`${method} ${template} answers ${status}, which the spec does not list`);
  const what = `${method} ${template} → ${status}`;
  if (!response.content) {
    if (body !== undefined && body !== null && body !== '') throw new SpecViolation(`${what} has a body; the spec says none`);
    return;
  }
  const media = (contentType || '').split(';')[0].trim().toLowerCase();
  if (!response.content[media]) {
    throw new SpecViolation(`${what} is sent as ${media || 'nothing'}; the spec allows ${Object.keys(response.content).join(', ')}`);
  }
  const pointer = `/paths/${escapePointer(template)}/${method.toLowerCase()}/responses/${key}`;
  const schemaPointer = operation.responses[key].$ref
    ? `${operation.responses[key].$ref.replace(/^#/, '')}/content/${escapePointer(media)}/schema`
    : `${pointer}/content/${escapePointer(media)}/schema`;
  validate(schemaPointer, body, what);
}

/** Checks a request body against the operation's `requestBody`. */
export function checkRequest(method, pathname, body) {
  const { template, operation } = operationOf(method, pathname);
  const what = `the body of ${method} ${template}`;
  if (!operation.requestBody) {
    if (body !== undefined) throw new SpecViolation(`${what}: the spec takes no body`);
    return;
  }
  if (body === undefined) {
    if (operation.requestBody.required) throw new SpecViolation(`${what} is missing`);
    return;
  }
  validate(`/paths/${escapePointer(template)}/${method.toLowerCase()}/requestBody/content/application~1json/schema`, body, what);
}

/** Checks a value against a named component schema (`LiveMessage`, `Event`, ...). */
export function checkSchema(name, value) {
  if (!spec.components.schemas[name]) throw new SpecViolation(`the spec has no schema ${name}`);
  validate(`/components/schemas/${name}`, value, name);
}
