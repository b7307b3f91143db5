#!/usr/bin/env node
// End-to-end walk through the bank and the explorer in headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core; no browser download).
//
// It needs the running stack (bfaf serving the built UI at / and the API at /api; the
// platform's explorer on its own address, which the walk finds through the bank's link):
//   SEQUENT_URL            where the stack is            (default http://127.0.0.1:8080)
//   SEQUENT_EXPLORER_URL   the explorer, if not the link (default: the bank's link)
//   SEQUENT_ADMIN_USER     explorer operator name        (default admin)
//   SEQUENT_ADMIN_PASSWORD explorer operator password    (default admin)
//   CHROMIUM               browser binary                (default /usr/bin/chromium)
//   E2E_TIMEOUT_MS         wait for each expectation     (default 20000)
//   E2E_HEADFUL=1          show the browser (needs a display)
//   SEQUENT_BIN            the dev stack's binary, for `sequent add services/nectar.lua`
//                          (default target/debug/sequent; it takes the stack's ports and data
//                          directory from SEQUENT_NATS_PORT, SEQUENT_REDIS_PORT, SEQUENT_DATA_DIR)
// The stack must run without nectar (`sequent --without nectar`): the walk adds it while the bank
// runs and a page is open, and watches its points appear live.
// Screenshots of the main screens go to ui/screenshots/ (git-ignored).
// Exit code 0 when every step passed, 1 otherwise (the failing step is named and captured).

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.SEQUENT_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const ADMIN_USER = process.env.SEQUENT_ADMIN_USER || 'admin';
const ADMIN_PASSWORD = process.env.SEQUENT_ADMIN_PASSWORD || 'admin';
const EXECUTABLE = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = Number(process.env.E2E_TIMEOUT_MS || 20_000);
const SHOTS = join(here, '..', 'screenshots');
const ROOT = join(here, '..', '..');
const SEQUENT_BIN = process.env.SEQUENT_BIN || join(ROOT, 'target', 'debug', 'sequent');

const run = Date.now().toString(36);
const alice = { username: `alice-${run}`, password: 'correct-horse-1' };
const bob = { username: `bob-${run}`, password: 'battery-staple-2' };

// ------------------------------------------------------------------ tiny harness

let current = 'start';
const passed = [];
async function step(name, fn) {
  current = name;
  const t0 = Date.now();
  process.stdout.write(`• ${name} … `);
  await fn();
  passed.push(name);
  console.log(`ok (${Date.now() - t0} ms)`);
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Waits until the locator's text matches (the UI updates live, so poll rather than read once). */
async function expectText(locator, expected, what = 'text') {
  const deadline = Date.now() + TIMEOUT;
  let last = '';
  while (Date.now() < deadline) {
    try {
      last = (await locator.first().textContent({ timeout: 1000 })) ?? '';
      if (expected instanceof RegExp ? expected.test(last) : last.includes(expected)) return last;
    } catch {
      // not attached yet
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`${what}: expected ${expected} but saw ${JSON.stringify(last)}`);
}

async function expectCount(locator, n, what) {
  const deadline = Date.now() + TIMEOUT;
  let c = -1;
  while (Date.now() < deadline) {
    c = await locator.count();
    if (c === n) return;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`${what}: expected ${n}, found ${c}`);
}

const balanceOf = (page, accountId) =>
  page.locator(`[data-testid="account-card"][data-account-id="${accountId}"] [data-testid="balance"]`);

async function signUp(page, user) {
  await page.goto(`${BASE}/signup`);
  await page.getByLabel('Username').fill(user.username);
  await page.getByLabel('Password').fill(user.password);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.getByRole('heading', { name: 'Your accounts' }).waitFor({ timeout: TIMEOUT });
}

async function logIn(page, user) {
  await page.goto(`${BASE}/login`);
  await page.getByLabel('Username').fill(user.username);
  await page.getByLabel('Password').fill(user.password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Your accounts' }).waitFor({ timeout: TIMEOUT });
}

async function waitLive(page) {
  await expectText(page.getByRole('status').filter({ hasText: /^Live updates:/ }), /Live$/, 'live connection');
}

async function transfer(page, from, to, amount) {
  await page.goto(`${BASE}/transfer?from=${encodeURIComponent(from)}`);
  await page.getByLabel('From account').selectOption(from);
  await page.getByLabel('To account').fill(to);
  await page.getByLabel('Amount').fill(amount);
  await page.getByRole('button', { name: 'Send money' }).click();
  const card = page.getByTestId('transfer-progress').first();
  await card.waitFor({ timeout: TIMEOUT });
  return card;
}

const pointsOf = (page, accountId) =>
  page.locator(`[data-testid="account-card"][data-account-id="${accountId}"] [data-testid="points"]`);

/**
 * `sequent add services/nectar.lua`: registers nectar with the running bank and runs an instance
 * (`stop()` ends it: a SIGTERM, which `sequent add` passes on, and the wait for both to exit).
 * `ready` resolves once the instance is ready: it built its state from the stream, so transfers
 * completed from now on are its to reward.
 */
function addNectar() {
  const child = spawn(SEQUENT_BIN, ['add', 'services/nectar.lua'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
  };
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nectar was not ready within ${Math.max(TIMEOUT, 120_000)} ms:\n${output.slice(-2000)}`)), Math.max(TIMEOUT, 120_000));
    const read = (chunk) => {
      output += chunk;
      if (output.includes('superclient ready')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    child.once('error', (e) => reject(new Error(`${SEQUENT_BIN} add: ${e.message} (SEQUENT_BIN)`)));
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${SEQUENT_BIN} add services/nectar.lua exited (${code ?? signal}) before nectar was ready:\n${output.slice(-2000)}`));
    });
  });
  return { ready, stop, output: () => output };
}

// ------------------------------------------------------------------ the walk

async function main() {
  await rm(SHOTS, { recursive: true, force: true });
  await mkdir(SHOTS, { recursive: true });
  // playwright-core gives every launch a fresh temporary profile (the --user-data-dir of a
  // manual launch), and every browser context its own storage: contexts are separate users.
  const browser = await chromium.launch({
    executablePath: EXECUTABLE,
    headless: !process.env.E2E_HEADFUL,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
  });
  let page;
  let nectar;
  try {
    const ctxA = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    page = await ctxA.newPage();
    page.setDefaultTimeout(TIMEOUT);

    await step('the UI loads and shows the log-in page', async () => {
      await page.goto(BASE);
      await page.getByRole('heading', { name: 'Log in' }).waitFor();
      await shot(page, '01-login');
    });

    await step('sign up', async () => {
      await page.goto(`${BASE}/signup`);
      await shot(page, '02-signup');
      await signUp(page, alice);
      await waitLive(page);
    });

    let acc1;
    let acc2;
    await step('open two accounts', async () => {
      const cards = page.getByTestId('account-card');
      await page.getByRole('button', { name: 'Open a new account' }).click();
      await expectCount(cards, 1, 'accounts after the first opening');
      await page.getByRole('button', { name: 'Open a new account' }).click();
      await expectCount(cards, 2, 'accounts after the second opening');
      acc1 = await cards.nth(0).getAttribute('data-account-id');
      acc2 = await cards.nth(1).getAttribute('data-account-id');
      if (!acc1 || !acc2 || acc1 === acc2) throw new Error(`account ids ${acc1} / ${acc2}`);
      await expectText(balanceOf(page, acc1), '$0.00', 'new balance');
    });

    await step('deposit $100.00 into the first account', async () => {
      await page.goto(`${BASE}/accounts/${encodeURIComponent(acc1)}`);
      await page.getByLabel('Amount to deposit').fill('100.00');
      await page.getByRole('button', { name: 'Deposit' }).click();
      await expectText(page.getByTestId('balance'), '$100.00', 'balance after deposit');
      await expectText(page.getByTestId('statement-entry'), /deposit.*\+\$100\.00/i, 'statement line');
      await shot(page, '04-account');
    });

    await step('a withdrawal above the balance is refused in plain words', async () => {
      await page.getByLabel('Amount to withdraw').fill('500');
      await page.getByRole('button', { name: 'Withdraw' }).click();
      await page.getByText('Not enough money in this account').first().waitFor();
    });

    // A second tab of the same user shows the dashboard; it must change without a reload.
    const watcher = await ctxA.newPage();
    await step('transfer $30.00 and see both balances change live', async () => {
      await logIn(watcher, alice);
      await waitLive(watcher);
      await expectCount(watcher.getByTestId('account-card'), 2, "accounts on the second tab's dashboard");
      await expectText(balanceOf(watcher, acc1), '$100.00', 'watcher balance 1 before');
      await expectText(balanceOf(watcher, acc2), '$0.00', 'watcher balance 2 before');
      const card = await transfer(page, acc1, acc2, '30.00');
      await expectText(card.getByTestId('transfer-status'), /Transfer completed/, 'transfer status');
      await shot(page, '05-transfer-completed');
      await expectText(balanceOf(watcher, acc1), '$70.00', 'live balance of the source');
      await expectText(balanceOf(watcher, acc2), '$30.00', 'live balance of the destination');
      await shot(watcher, '03-dashboard');
    });

    let completedTransfer;
    await step('remember the transfer id', async () => {
      completedTransfer = await page.getByTestId('transfer-progress').first().getAttribute('data-transfer-id');
      if (!completedTransfer) throw new Error('no transfer id on the progress card');
    });

    await step('a transfer with insufficient funds shows its reason', async () => {
      const card = await transfer(page, acc2, acc1, '1000');
      await expectText(card.getByTestId('transfer-status'), /Transfer failed: Not enough money in this account/, 'failed transfer');
      await shot(page, '06-transfer-failed');
      await expectText(balanceOf(watcher, acc2), '$30.00', 'balance unchanged after a failed transfer');
    });

    await step('the dashboard works on a phone-sized screen', async () => {
      await watcher.setViewportSize({ width: 375, height: 812 });
      await watcher.goto(`${BASE}/`);
      await expectText(balanceOf(watcher, acc1), '$70.00', 'phone balance');
      const overflow = await watcher.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      if (overflow > 1) throw new Error(`the page is ${overflow}px wider than a 375px screen`);
      await shot(watcher, '07-dashboard-phone');
    });

    await step("a second user cannot see the first user's accounts", async () => {
      const ctxB = await browser.newContext({ viewport: { width: 1280, height: 860 } });
      const other = await ctxB.newPage();
      other.setDefaultTimeout(TIMEOUT);
      await signUp(other, bob);
      await other.getByText('You have no accounts yet.').waitFor();
      await other.goto(`${BASE}/accounts/${encodeURIComponent(acc1)}`);
      await other.getByText('That account does not exist').first().waitFor();
      if ((await other.getByText('$70.00').count()) > 0) throw new Error("bob sees alice's balance");
      await shot(other, '08-isolation');
      await ctxB.close();
    });

    await step('the bank runs without nectar: the dashboard says its rewards are not running', async () => {
      await watcher.setViewportSize({ width: 1280, height: 860 });
      await expectText(watcher.getByTestId('nectar'), 'Nectar rewards are not running', 'nectar panel');
      await expectCount(watcher.getByTestId('points'), 0, 'points shown without nectar');
      await shot(watcher, '14-nectar-not-running');
    });

    // The talk's demo: a new service joins the running bank with one command, no restart, while
    // the customer's page stays open (the watcher tab is not reloaded from here on).
    await step('add nectar to the running bank (sequent add services/nectar.lua)', async () => {
      nectar = addNectar();
      await nectar.ready;
    });

    await step('transfers over $100 earn points, which appear live on the open dashboard', async () => {
      await page.goto(`${BASE}/accounts/${encodeURIComponent(acc1)}`);
      await page.getByLabel('Amount to deposit').fill('200.00');
      await page.getByRole('button', { name: 'Deposit' }).click();
      await expectText(page.getByTestId('balance'), '$270.00', 'balance after the deposit');
      // $150 there and back: 10% of each as points for its sender; the balances end as before.
      let card = await transfer(page, acc1, acc2, '150.00');
      await expectText(card.getByTestId('transfer-status'), /Transfer completed/, 'first transfer over $100');
      await expectText(pointsOf(watcher, acc1), '1,500 points', 'live points of the sender');
      await expectText(pointsOf(watcher, acc2), '0 points', 'the receiver earns nothing');
      card = await transfer(page, acc2, acc1, '150.00');
      await expectText(card.getByTestId('transfer-status'), /Transfer completed/, 'second transfer over $100');
      await expectText(pointsOf(watcher, acc2), '1,500 points', 'live points of the second sender');
      await expectText(watcher.getByTestId('nectar-total'), '3,000 points', 'live total of points');
      await expectText(balanceOf(watcher, acc1), '$270.00', 'balance after both transfers');
      await expectText(balanceOf(watcher, acc2), '$30.00', 'balance after both transfers');
      await shot(watcher, '15-nectar-points');
    });

    await step('log out', async () => {
      await page.getByRole('button', { name: 'Log out' }).click();
      await page.getByRole('heading', { name: 'Log in' }).waitFor();
      await page.goto(`${BASE}/`);
      await page.getByRole('heading', { name: 'Log in' }).waitFor();
    });

    const ops = await (await browser.newContext({ viewport: { width: 1440, height: 900 } })).newPage();
    ops.setDefaultTimeout(TIMEOUT);
    // The explorer is the platform's, on its own address: the bank's log-in page links to it.
    let EXPLORER = (process.env.SEQUENT_EXPLORER_URL || '').replace(/\/$/, '');
    await step("explorer: the bank links to the platform's explorer", async () => {
      await page.goto(`${BASE}/login`);
      const link = page.getByRole('link', { name: 'Open the explorer' });
      await link.waitFor();
      const href = await link.getAttribute('href');
      if (!href) throw new Error('the link goes nowhere');
      EXPLORER ||= new URL(href, BASE).origin;
    });
    await step('explorer: operator log-in and live tail', async () => {
      await ops.goto(`${EXPLORER}/explorer`);
      await ops.getByLabel('Operator name').fill(ADMIN_USER);
      await ops.getByLabel('Operator password').fill(ADMIN_PASSWORD);
      await ops.getByRole('button', { name: 'Log in to the explorer' }).click();
      await ops.getByRole('heading', { name: 'Live tail' }).waitFor();
      await expectText(ops.getByRole('status').filter({ hasText: /^Live tail:/ }), /Live$/, 'tail connection');
    });

    await step('explorer: the live tail shows a new deposit', async () => {
      await logIn(page, alice);
      await page.goto(`${BASE}/accounts/${encodeURIComponent(acc2)}`);
      await page.getByLabel('Amount to deposit').fill('1.23');
      await page.getByRole('button', { name: 'Deposit' }).click();
      await expectText(page.getByTestId('balance'), '$31.23', 'balance after the second deposit');
      await expectText(ops.getByTestId('event-row'), new RegExp(acc2.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'tail row for the deposit');
      await shot(ops, '09-explorer-live');
    });

    await step("explorer: the transfer's causal tree", async () => {
      await ops.goto(`${EXPLORER}/explorer/trace`);
      await ops.getByLabel('Correlation ID').fill(completedTransfer);
      await ops.getByRole('button', { name: 'Show causal tree' }).click();
      const tree = ops.getByRole('tree');
      await tree.waitFor();
      const nodes = ops.getByTestId('causal-node');
      const deadline = Date.now() + TIMEOUT;
      while ((await nodes.count()) < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      if ((await nodes.count()) < 3) throw new Error(`the causal tree has ${await nodes.count()} events, expected at least 3`);
      const nested = await ops.locator('[role="treeitem"][aria-level="2"]').count();
      if (nested < 1) throw new Error('the causal tree is flat: no event has a cause in the unit of work');
      await shot(ops, '10-explorer-trace');
    });

    await step('explorer: key history, services and parked keys render', async () => {
      await ops.goto(`${EXPLORER}/explorer/keys/${encodeURIComponent(acc1)}`);
      await ops.getByRole('list', { name: `History of ${acc1}` }).waitFor();
      await shot(ops, '11-explorer-key-history');
      await ops.goto(`${EXPLORER}/explorer/services`);
      await ops.getByTestId('service-card').first().waitFor();
      await shot(ops, '12-explorer-services');
      await ops.goto(`${EXPLORER}/explorer/parked`);
      await ops.getByRole('heading', { name: 'Parked keys' }).waitFor();
      await ops.getByTestId('parked-row').first().or(ops.getByText('No parked keys.')).waitFor();
      await shot(ops, '13-explorer-parked');
    });

    await step('explorer: rebuild a service and see it finish', async () => {
      await ops.goto(`${EXPLORER}/explorer/services`);
      const card = ops.getByTestId('service-card').filter({ has: ops.getByRole('heading', { name: 'transfers', exact: true }) });
      ops.once('dialog', (d) => void d.accept());
      await card.getByRole('button', { name: 'Rebuild' }).click();
      await card.locator('[data-testid="rebuild"][data-status="done"]').waitFor({ timeout: Math.max(TIMEOUT, 60_000) });
      await expectText(card.getByTestId('rebuild'), /Rebuilt from \d+ events/, 'the finished rebuild');
      await shot(ops, '16-explorer-rebuild');
    });

    await step('explorer: release a parked key (when there is one)', async () => {
      const rows = ops.getByTestId('parked-row');
      const before = await rows.count();
      if (before === 0) {
        console.log('(none parked: skipped) ', '');
        return;
      }
      await rows.first().getByRole('button', { name: /^Release / }).click();
      await ops.getByText(/^Released /).waitFor();
      await expectCount(rows, before - 1, 'parked rows after a release');
    });
  } catch (e) {
    console.log('FAILED');
    console.error(`\nStep "${current}" failed: ${e instanceof Error ? e.message : e}`);
    if (page) await shot(page, `failure-${current.replace(/[^a-z0-9]+/gi, '-')}`).catch(() => {});
    // Every other open tab too (a second tab of the same user, the operators' page), to see
    // what each showed when the step failed.
    const others = browser.contexts().flatMap((c) => c.pages()).filter((p) => p !== page);
    for (const [i, other] of others.entries()) {
      await shot(other, `failure-${current.replace(/[^a-z0-9]+/gi, '-')}-tab-${i + 2}`).catch(() => {});
    }
    console.error(`Passed before it: ${passed.length ? passed.join('; ') : 'none'}`);
    console.error(`Is the stack running at ${BASE}? (SEQUENT_URL; the explorer: SEQUENT_EXPLORER_URL)`);
    process.exitCode = 1;
  } finally {
    await browser.close().catch(() => {});
    await nectar?.stop();
  }
  if (!process.exitCode) console.log(`\nAll ${passed.length} steps passed. Screenshots in ${SHOTS}`);
}

main();
