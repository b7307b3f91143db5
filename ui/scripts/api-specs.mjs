// The two OpenAPI documents the UI talks to, as one: the bank's (services/openapi/bank.json,
// served by the bfaf) and the platform explorer's (superclient/platform/openapi/explorer.json,
// served by the explorer on its own origin). Their paths do not overlap and the components
// they share (Problem, Session, ...) are the same, so the UI's types and the fakes' checks read
// them merged.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BANK_SPEC = join(root, 'services', 'openapi', 'bank.json');
export const EXPLORER_SPEC = join(root, 'superclient', 'platform', 'openapi', 'explorer.json');

/** bank.json with explorer.json's paths, components and security schemes added. */
export function mergedSpec() {
  const bank = JSON.parse(readFileSync(BANK_SPEC, 'utf8'));
  const explorer = JSON.parse(readFileSync(EXPLORER_SPEC, 'utf8'));
  for (const path of Object.keys(explorer.paths)) {
    if (bank.paths[path]) throw new Error(`${path} is in both bank.json and explorer.json`);
    bank.paths[path] = explorer.paths[path];
  }
  for (const [kind, entries] of Object.entries(explorer.components)) {
    bank.components[kind] ??= {};
    for (const [name, value] of Object.entries(entries)) {
      const mine = bank.components[kind][name];
      if (mine && JSON.stringify(mine) !== JSON.stringify(value)) {
        throw new Error(`components.${kind}.${name} differs between bank.json and explorer.json`);
      }
      bank.components[kind][name] = value;
    }
  }
  bank.tags = [...(bank.tags ?? []), ...(explorer.tags ?? [])];
  return bank;
}
