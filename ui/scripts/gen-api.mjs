#!/usr/bin/env node
// Generates src/api/schema.ts (the UI's API types) from the bank's OpenAPI document,
// services/openapi/bank.json, and the platform explorer's, superclient/platform/openapi/explorer.json
// (merged: scripts/api-specs.mjs), with openapi-typescript.
//
//   npm run gen:api            write src/api/schema.ts
//   npm run gen:api -- --check  exit 1 when src/api/schema.ts is not what the spec gives
//
// `npm run build` runs the check and `npm test` has a test doing the same: the committed types
// cannot drift from the spec.

import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript';
import { mergedSpec } from './api-specs.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const OUT = join(here, '..', 'src', 'api', 'schema.ts');

/** The text schema.ts must have. */
export async function generateApiTypes() {
  const ast = await openapiTS(mergedSpec());
  return `${COMMENT_HEADER}${astToString(ast)}`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const text = await generateApiTypes();
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(OUT, 'utf8');
    } catch {
      // missing: a drift too
    }
    if (current !== text) {
      console.error(`src/api/schema.ts is not generated from bank.json and explorer.json as they are now: run \`npm run gen:api\` and commit the result.`);
      process.exit(1);
    }
    console.log('src/api/schema.ts matches services/openapi/bank.json and superclient/platform/openapi/explorer.json');
  } else {
    writeFileSync(OUT, text);
    console.log(`wrote ${OUT}`);
  }
}
