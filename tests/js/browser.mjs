// Shared launch code: Debian's Chromium through playwright-core, and a tiny static server for
// page/ on its own 127.0.0.1 port (a different origin from the edge, so CORS is exercised).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const pageDir = path.join(here, 'page');
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8' };

// `npx playwright install` cannot download a browser here; the system package is used instead.
export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-gpu',
  // The TLS tests serve a self-signed certificate made for the run.
  '--ignore-certificate-errors',
  '--no-first-run',
  '--disable-sync',
  // Background pages/timers must keep running: several pages are driven at once.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

export function servePage() {
  const server = http.createServer((req, res) => {
    const name = new URL(req.url, 'http://x').pathname.replace(/^\/+/, '') || 'index.html';
    const file = path.join(pageDir, path.normalize(name));
    if (name === 'favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    if (!file.startsWith(pageDir) || !fs.existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({ server, origin: `http://127.0.0.1:${server.address().port}` });
    });
  });
}

export async function launchBrowser() {
  // playwright-core launches with a fresh temporary user-data-dir and removes it on close.
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30000,
  });
}

export async function openPage(context, origin, tag) {
  const page = await context.newPage();
  page.on('console', (m) => process.stderr.write(`[page ${tag}] ${m.type()}: ${m.text()}\n`));
  page.on('pageerror', (e) => process.stderr.write(`[page ${tag}] error: ${e}\n`));
  await page.goto(`${origin}/index.html`);
  await page.waitForFunction(() => window.wg !== undefined);
  return page;
}
