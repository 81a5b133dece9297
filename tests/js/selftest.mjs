// Chromium self-test with no server: fake camera -> loopback peer connection in one page.
// Proves the browser, its flags and the stats collection work on this machine. Prints one JSON
// line: {"ok":..., "stats":...}.
import { launchBrowser, openPage, servePage } from './browser.mjs';

const { server, origin } = await servePage();
const browser = await launchBrowser();
let code = 1;
try {
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await openPage(context, origin, 'selftest');
  const stats = await page.evaluate(() => window.wg.loopback({ width: 640, height: 480, seconds: 15 }));
  const ok = stats?.video?.framesDecoded > 10
    && stats.video.frameWidth === 640 && stats.video.frameHeight === 480
    && stats.audio?.totalAudioEnergy > 0;
  process.stdout.write(JSON.stringify({ ok, version: browser.version(), stats }) + '\n');
  code = ok ? 0 : 1;
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e) }) + '\n');
} finally {
  await browser.close();
  server.close();
}
process.exit(code);
