// End-to-end test of examples/chat in headless Chromium.
//
//   cargo build --example chat
//   cd tests/browser && npm install && node --test
//
// Env: CHAT_BIN (server binary; default ../../target/debug/examples/chat relative to
// this file), CHROMIUM (default /usr/bin/chromium), SCREENSHOT (optional PNG path).
// Uses the system Chromium; never downloads a browser. Only talks to 127.0.0.1.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHAT_BIN = process.env.CHAT_BIN
  ? path.resolve(process.env.CHAT_BIN)
  : path.resolve(here, '../../target/debug/examples/chat');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const STARTUP_TIMEOUT = 30_000;
const STEP_TIMEOUT = 10_000;
const URL_RE = /http:\/\/127\.0\.0\.1:\d+\//;

let server; // ChildProcess
let serverOutput = ''; // last few KiB of stdout+stderr, for failure messages
let browser;
let baseUrl;
const pages = {}; // { a, b }
const pageErrors = [];

function remember(chunk) {
  serverOutput = (serverOutput + chunk).slice(-4096);
}

function serverAlive() {
  return server && server.exitCode === null && server.signalCode === null;
}

function startServer() {
  if (!existsSync(CHAT_BIN)) {
    throw new Error(`chat server binary not found at ${CHAT_BIN}: build it with ` +
      '`cargo build --example chat` or set CHAT_BIN');
  }
  server = spawn(CHAT_BIN, ['--addr', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  server.stderr.setEncoding('utf8');
  server.stderr.on('data', remember);
  const lines = createInterface({ input: server.stdout }); // keeps draining stdout afterwards too

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`server did not print its http://127.0.0.1:PORT/ line within ` +
        `${STARTUP_TIMEOUT / 1000} s; output so far:\n${serverOutput}`));
    }, STARTUP_TIMEOUT);
    lines.on('line', (line) => {
      remember(line + '\n');
      const m = URL_RE.exec(line);
      if (m && !baseUrl) {
        baseUrl = m[0];
        clearTimeout(timer);
        resolve(baseUrl);
      }
    });
    server.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`failed to spawn ${CHAT_BIN}: ${err.message}`));
    });
    server.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited early (code ${code}, signal ${signal}); output:\n${serverOutput}`));
    });
  });
}

async function stopServer() {
  if (!serverAlive()) return;
  const exited = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  const t = setTimeout(() => { if (serverAlive()) server.kill('SIGKILL'); }, 5_000);
  await exited;
  clearTimeout(t);
}

// Last resort if the runner is torn down without running `after`.
process.on('exit', () => { if (serverAlive()) server.kill('SIGKILL'); });

async function openPage(label) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on('pageerror', (err) => pageErrors.push(`${label}: ${err.message}`));
  await page.goto(baseUrl, { timeout: STEP_TIMEOUT });
  return page;
}

const statusOf = (page) => page.locator('#status').textContent();

function waitForStatus(page, predicate, arg) {
  return page.waitForFunction(predicate, arg, { timeout: STEP_TIMEOUT, polling: 50 });
}

function waitForMessage(page, needle) {
  return page.waitForFunction(
    (s) => [...document.querySelectorAll('#log > .msg')].some((el) => el.textContent.includes(s)),
    needle,
    { timeout: STEP_TIMEOUT, polling: 50 },
  );
}

describe('examples/chat in a browser', { timeout: 120_000 }, () => {
  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) ` +
        'or set CHROMIUM to its path');
    }
    await startServer();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      timeout: 30_000,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    pages.a = await openPage('A');
    pages.b = await openPage('B');
  }, { timeout: 90_000 });

  after(async () => {
    try {
      if (browser) await browser.close();
    } catch { /* ignore */ }
    await stopServer();
  }, { timeout: 20_000 });

  test('both pages connect', { timeout: 30_000 }, async () => {
    for (const page of [pages.a, pages.b]) {
      await waitForStatus(page,
        () => document.querySelector('#status')?.textContent === 'connected');
      assert.equal(await page.locator('#status').getAttribute('data-state'), 'connected');
      assert.match(await page.locator('#name').inputValue(), /^guest-\d+$/);
    }
  });

  test('a message typed in A reaches B and A', { timeout: 30_000 }, async () => {
    const { a, b } = pages;
    const unique = `hello-${process.pid}-${Date.now()}`;
    await a.fill('#name', 'alice');
    await a.fill('#text', unique);
    await a.click('#send');
    await Promise.all([
      waitForMessage(b, `alice: ${unique}`),
      waitForMessage(a, `alice: ${unique}`),
    ]);
    assert.equal(await a.locator('#text').inputValue(), '', '#text is cleared after sending');
    // exactly one copy in each log
    for (const page of [a, b]) {
      const n = await page.locator('#log > .msg', { hasText: unique }).count();
      assert.equal(n, 1);
    }

    // B answers with markup and A renders it as text, not HTML.
    const markup = `<b id="injected">bold-${Date.now()}</b>`;
    await b.fill('#text', markup);
    await b.press('#text', 'Enter');
    await waitForMessage(a, markup);
    assert.equal(await a.locator('#injected').count(), 0, 'message text must not be parsed as HTML');

    // A non-JSON frame (from another client) is shown raw and breaks nothing.
    const raw = `not json ${Date.now()} {`;
    await a.evaluate((text) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://${location.host}/ws${location.search}`);
      ws.onopen = () => { ws.send(text); setTimeout(() => { ws.close(); resolve(); }, 100); };
      ws.onerror = () => reject(new Error('raw websocket failed'));
    }), raw);
    await Promise.all([waitForMessage(a, raw), waitForMessage(b, raw)]);

    // The log keeps its newest message in view.
    const atBottom = await b.evaluate(() => {
      const log = document.getElementById('log');
      return log.scrollHeight - log.scrollTop - log.clientHeight < 2;
    });
    assert.ok(atBottom, '#log is scrolled to the bottom');

    if (process.env.SCREENSHOT) await b.screenshot({ path: process.env.SCREENSHOT });
    assert.deepEqual(pageErrors, []);
  });

  test('pages notice when the server goes away', { timeout: 30_000 }, async () => {
    assert.ok(serverAlive(), 'server still running before the kill');
    server.kill('SIGTERM');
    await Promise.all([pages.a, pages.b].map((page) => waitForStatus(page,
      () => ['disconnected', 'connecting'].includes(document.querySelector('#status')?.textContent))));
    for (const page of [pages.a, pages.b]) {
      assert.match(await statusOf(page), /^(disconnected|connecting)$/);
      assert.match(await page.locator('#status').getAttribute('data-state'), /^(disconnected|connecting)$/);
    }
    assert.deepEqual(pageErrors, []);
  });
});
