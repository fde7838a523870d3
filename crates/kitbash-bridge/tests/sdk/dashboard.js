// Drives the dashboard in the system's headless Chromium with playwright-core (no browser
// download): `node dashboard.js URL OUTDIR`, then one command per stdin line, one JSON answer
// per stdout line:
//   open                      load URL
//   wait EXPR                 wait (30 s) until the JS expression EXPR is truthy on the page
//   eval EXPR                 the value of EXPR on the page
//   screenshot NAME W H [full]  resize to W×H and save OUTDIR/NAME (full: the whole page)
//   errors                    console errors, page errors and failed requests since the last call
//   quit
'use strict';
const { chromium } = require('playwright-core');
const readline = require('readline');

(async () => {
  const [url, outdir] = process.argv.slice(2);
  const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
  const browser = await chromium.launch({
    executablePath: process.env.KITBASH_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  const failed = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('requestfailed', (r) => failed.push(`${r.url()} ${r.failure() ? r.failure().errorText : ''}`));
  page.on('response', (r) => { if (r.status() >= 400) failed.push(`${r.url()} ${r.status()}`); });
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const sp = line.indexOf(' ');
    const cmd = sp < 0 ? line.trim() : line.slice(0, sp);
    const arg = sp < 0 ? '' : line.slice(sp + 1);
    try {
      if (cmd === 'open') {
        await page.goto(url, { waitUntil: 'load' });
        out({ ok: true });
      } else if (cmd === 'wait') {
        await page.waitForFunction(arg, null, { timeout: 30000, polling: 100 });
        out({ ok: true });
      } else if (cmd === 'eval') {
        out({ ok: true, value: await page.evaluate(arg) });
      } else if (cmd === 'screenshot') {
        const [name, w, h, full] = arg.split(' ');
        await page.setViewportSize({ width: Number(w), height: Number(h) });
        await page.waitForTimeout(400);
        await page.screenshot({ path: `${outdir}/${name}`, fullPage: full === 'full' });
        out({ ok: true });
      } else if (cmd === 'errors') {
        out({ ok: true, value: { errors: errors.splice(0), failed: failed.splice(0) } });
      } else if (cmd === 'quit') {
        await browser.close();
        out({ ok: true });
        process.exit(0);
      } else {
        out({ ok: false, error: `unknown command ${cmd}` });
      }
    } catch (e) {
      out({ ok: false, error: String(e && e.message ? e.message : e) });
    }
  }
  await browser.close();
})();
