// JSON-lines RPC over stdin/stdout that drives one headless Chromium for the Rust e2e tests.
//
// First line out: {"event":"ready","origin":...}. Then, for every request line
//   {"id":N,"cmd":"open"}                           -> {"page":P}
//   {"id":N,"cmd":"call","page":P,"fn":F,"args":A}  -> whatever window.wg[F](A) returns
//   {"id":N,"cmd":"goto","url":U}                   -> {"page":P}: a tab on any URL (e.g. the
//                                                      edge's own player page)
//   {"id":N,"cmd":"eval","page":P,"expr":E}         -> the (awaited) value of expression E
//   {"id":N,"cmd":"close","page":P}                 -> closes the tab (no DELETE is sent)
//   {"id":N,"cmd":"quit"}
// one line back: {"id":N,"ok":true,"result":...} or {"id":N,"ok":false,"error":"..."}.
// Requests are served concurrently. Closing stdin also quits. Logs go to stderr.
import readline from 'node:readline';
import { launchBrowser, openPage, servePage } from './browser.mjs';

const { server, origin } = await servePage();
const browser = await launchBrowser();
const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
const pages = new Map();
let nextPage = 1;

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function shutdown(code) {
  await browser.close().catch(() => {});
  server.close();
  process.exit(code);
}

async function handle(req) {
  switch (req.cmd) {
    case 'open': {
      const id = nextPage++;
      pages.set(id, await openPage(context, origin, id));
      return { page: id };
    }
    case 'goto': {
      const id = nextPage++;
      const page = await context.newPage();
      page.on('console', (m) => process.stderr.write(`[page ${id}] ${m.type()}: ${m.text()}\n`));
      page.on('pageerror', (e) => process.stderr.write(`[page ${id}] error: ${e}\n`));
      await page.goto(req.url);
      pages.set(id, page);
      return { page: id };
    }
    case 'eval': {
      const page = pages.get(req.page);
      if (!page) throw new Error(`no page ${req.page}`);
      return page.evaluate((expr) => (0, eval)(expr), req.expr);
    }
    case 'call': {
      const page = pages.get(req.page);
      if (!page) throw new Error(`no page ${req.page}`);
      return page.evaluate(([fn, args]) => window.wg[fn](args), [req.fn, req.args ?? {}]);
    }
    case 'close': {
      const page = pages.get(req.page);
      if (!page) throw new Error(`no page ${req.page}`);
      pages.delete(req.page);
      await page.close({ runBeforeUnload: false });
      return null;
    }
    case 'quit':
      setImmediate(() => shutdown(0));
      return null;
    default:
      throw new Error(`unknown cmd ${req.cmd}`);
  }
}

reply({ event: 'ready', origin, version: browser.version() });

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    reply({ id: null, ok: false, error: `bad json: ${e}` });
    return;
  }
  handle(req).then(
    (result) => reply({ id: req.id, ok: true, result: result ?? null }),
    (err) => reply({ id: req.id, ok: false, error: String(err?.message ?? err) }),
  );
});
rl.on('close', () => shutdown(0));
