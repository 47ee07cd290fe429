// Drives the agent GUI in headless Chromium (playwright-core + Debian's chromium) and prints
// one JSON object of observations on stdout; crates/warden/tests/agent_api_gui.rs asserts them.
//
// Usage: node gui_flow.js <sign-in URL> <check name>
'use strict';
const http = require('http');
const { chromium } = require('playwright-core');

const [intentUrl, checkName] = process.argv.slice(2);
const origin = new URL(intentUrl).origin;

async function main() {
  const out = {};
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  try {
    // The GUI certificate is self-signed and generated at agent start.
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await ctx.newPage();

    // 1. The intent link signs in: redirect to the status page with a session cookie.
    const first = await page.goto(intentUrl);
    out.signin = {
      status: first.status(),
      path: new URL(page.url()).pathname,
      shows_status: (await page.content()).includes('Agent status'),
      cache_control: first.headers()['cache-control'] || null,
      csp: first.headers()['content-security-policy'] || null,
    };
    // The certificate error is ignored, so at least check whose certificate it was.
    const tls = await first.securityDetails();
    out.tls = tls ? { protocol: tls.protocol, subject: tls.subjectName, issuer: tls.issuer } : null;
    const cookie = (await ctx.cookies()).find((c) => c.name === '__Host-warden_session');
    out.cookie = cookie
      ? { httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite,
          length: cookie.value.length, expires_in: Math.round(cookie.expires - Date.now() / 1000) }
      : null;
    out.cookie_visible_to_js = await page.evaluate(() => document.cookie.includes('warden_session'));

    // 2. The legitimate form (with its CSRF token) runs the check.
    await page.goto(origin + '/checks');
    const [runResp] = await Promise.all([
      page.waitForNavigation(),
      page.click(`form[action="/checks/run"]:has(input[value="${checkName}"]) button`),
    ]);
    out.run_now = {
      status: runResp.status(),
      ran: (await page.content()).includes('Ran check'),
    };

    // 3. Same-origin form POSTs with the session cookie but without / with a made-up CSRF
    // token (forms built in the page: its CSP allows no script-initiated fetch at all).
    const forgedForm = async (fields) => {
      const [resp] = await Promise.all([
        page.waitForNavigation(),
        page.evaluate((fields) => {
          const f = document.createElement('form');
          f.method = 'post';
          f.action = '/checks/run';
          for (const [k, v] of Object.entries(fields)) {
            const i = document.createElement('input');
            i.type = 'hidden';
            i.name = k;
            i.value = v;
            f.appendChild(i);
          }
          document.body.appendChild(f);
          f.submit();
        }, fields),
      ]);
      return resp.status();
    };
    out.post_without_csrf = await forgedForm({ check: checkName });
    await page.goto(origin + '/checks');
    out.post_with_wrong_csrf = await forgedForm({ check: checkName, csrf_token: 'a'.repeat(64) });
    // A script on the page cannot even send a request (CSP connect-src falls back to 'none').
    out.script_fetch_blocked = await page.evaluate(async () => {
      try { await fetch('/checks/run', { method: 'POST' }); return false; } catch (e) { return true; }
    });

    // 4. A cross-site page auto-submits a form to the GUI (classic CSRF).
    const evil = http.createServer((req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(`<!doctype html><body><form id="f" method="post" action="${origin}/checks/run">
        <input type="hidden" name="check" value="${checkName}"></form>
        <script>document.getElementById('f').submit()</script></body>`);
    });
    await new Promise((r) => evil.listen(0, '127.0.0.1', r));
    const evilUrl = `http://127.0.0.1:${evil.address().port}/`;
    const [csrfResp] = await Promise.all([
      page.waitForResponse((r) => r.url() === origin + '/checks/run'),
      page.goto(evilUrl),
    ]);
    out.cross_site_post = { status: csrfResp.status(), body_refused: (await csrfResp.text()).includes('refused') };
    evil.close();

    // 5. The logs page shows recent (scrubbed) log lines.
    const logs = await page.goto(origin + '/logs');
    out.logs = { status: logs.status(), has_session_line: (await page.content()).includes('GUI session opened') };

    // 6. A fresh browser profile: the used intent is refused, and pages need a session.
    const ctx2 = await browser.newContext({ ignoreHTTPSErrors: true });
    const page2 = await ctx2.newPage();
    const reused = await page2.goto(intentUrl);
    out.reused_intent = { status: reused.status(), cookies: (await ctx2.cookies()).length };
    const anon = await page2.goto(origin + '/');
    out.anonymous_status_page = anon.status();
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
