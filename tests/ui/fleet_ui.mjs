// Headless Chromium against `ota serve --fleet`'s /ui page (started by
// crates/ota-server/tests/fleet_ui.rs, which also makes the devices report over DDI).
// Environment: OTA_UI_URL (http://127.0.0.1:PORT), OTA_UI_TOKEN (the admin token, never in a
// URL), OTA_UI_ROLLOUT (the rollout id), OTA_UI_SHOTS (folder for the screenshots).
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.OTA_UI_URL;
const token = process.env.OTA_UI_TOKEN;
const rollout = process.env.OTA_UI_ROLLOUT;
const shots = process.env.OTA_UI_SHOTS;
if (!base || !token || !rollout || !shots) {
  console.error("fleet_ui.mjs: set OTA_UI_URL, OTA_UI_TOKEN, OTA_UI_ROLLOUT and OTA_UI_SHOTS");
  process.exit(2);
}
const step = (m) => console.log(`STEP ${m}`);
const fail = (m) => { throw new Error(m); };

const profile = mkdtempSync(join(tmpdir(), "ota-ui-chromium-"));
// A fresh profile folder each run (playwright passes it as --user-data-dir).
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  timeout: 60000,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1100, height: 900 },
});
let code = 0;
try {
  const page = ctx.pages()[0] ?? await ctx.newPage();
  page.setDefaultTimeout(30000);
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const dialogs = [];
  page.on("dialog", async (d) => { dialogs.push(d.message()); await d.dismiss(); });

  // 1. Without a session: the login form, and a wrong token is refused.
  await page.goto(`${base}/ui`);
  await page.locator("#token").waitFor();
  await page.fill("#token", "not-the-admin-token");
  await page.click("#login");
  await page.locator("p.error").waitFor();
  if ((await ctx.cookies()).some((c) => c.name === "ota_ui")) fail("a wrong token got a session cookie");
  step("wrong token refused");

  // 2. The right token: the page with the rollout.
  await page.fill("#token", token);
  await page.click("#login");
  await page.locator(`#rollout-${rollout}`).waitFor();
  const cookie = (await ctx.cookies()).find((c) => c.name === "ota_ui");
  if (!cookie) fail("no session cookie after sign-in");
  if (!cookie.httpOnly || cookie.sameSite !== "Strict") fail(`cookie flags: ${JSON.stringify(cookie)}`);
  if (cookie.value.includes(token)) fail("the cookie holds the token");
  if ((await page.evaluate(() => document.cookie)).includes("ota_ui")) fail("script can read the session cookie");
  step("signed in");

  // 3. Device-supplied strings are text, never markup.
  const hostile = page.locator("#devices td", { hasText: "<img src=x onerror=" });
  if ((await hostile.count()) === 0) fail("the hostile attribute is not shown as text");
  if ((await page.locator("#main img").count()) !== 0) fail("a device attribute became an element");
  if (await page.evaluate(() => window.__pwned === true)) fail("a device attribute ran script");
  step("device strings escaped");

  // 4. The rollout advances while devices report through DDI: group 1 finished, group 2 started.
  const art = `#rollout-${rollout}`;
  await page.waitForFunction((art) => {
    const g = document.querySelectorAll(`${art} tr.group`);
    return g.length >= 3 && g[0].dataset.state === "finished" &&
      g[1].dataset.state === "running" && Number(g[1].dataset.success) >= 1;
  }, art, { timeout: 60000, polling: 250 });
  const bar = await page.locator(`${art} tr.group[data-group="0"] .bar`).getAttribute("aria-valuenow");
  step(`rollout advancing (group 1 done: ${bar})`);
  await page.screenshot({ path: join(shots, "fleet-ui.png"), fullPage: true });

  // 5. Stop: the rollout is stopped and the buttons go.
  await page.locator(`${art} button[data-action="stop"]`).click();
  await page.waitForFunction((art) => document.querySelector(art)?.dataset.state === "stopped",
    art, { timeout: 30000, polling: 250 });
  if ((await page.locator(`${art} button[data-action="stop"]`).count()) !== 0) fail("stop still offered");
  step("stopped");
  await page.screenshot({ path: join(shots, "fleet-ui-stopped.png"), fullPage: true });

  if (requests.some((u) => u.includes(token))) fail("the token appeared in a URL");
  if (requests.some((u) => !u.startsWith(base))) fail(`a request left the server: ${requests.filter((u) => !u.startsWith(base))}`);
  if (dialogs.length) fail(`dialogs opened: ${dialogs}`);
  step("done");
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  code = 1;
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
