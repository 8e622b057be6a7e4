// Drives Debian's Chromium (headless) over HTTPS: ten tabs of one browser,
// each with its own EventSource (no sharing), all go live and receive an
// event; each reports the protocol its page was loaded with.
// Usage: node h2.mjs <base url> <publish url>
// Run by tests/h2_browser.rs, which serves the page with tower_sse::serve
// and TLS, and checks on the server side that one connection carried them.
import { launch } from "./chromium.mjs";

const [base, publish] = process.argv.slice(2);
const browser = await launch();
const fail = (message) => { throw new Error(message); };

try {
  // The certificate is made by the test, for 127.0.0.1, by no known CA.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const pages = [];
  for (let i = 0; i < 10; i++) {
    const page = await context.newPage();
    await page.goto(base);
    await page.waitForSelector("body[data-state=live]", { state: "attached" });
    pages.push(page);
  }
  const protocols = await Promise.all(pages.map((page) =>
    page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol)));
  if (protocols.some((p) => p !== "h2")) fail(`protocols: ${JSON.stringify(protocols)}`);

  // The seventh tab and beyond would not load over HTTP/1.1; here all are
  // live: an event reaches every one.
  const answer = await pages[9].evaluate(async (url) => (await fetch(url, { method: "POST" })).status, publish);
  if (answer !== 200) fail(`publish answered ${answer}`);
  for (const page of pages) {
    await page.waitForSelector("body[data-last='to every tab']", { state: "attached" });
  }
  console.log(`ok: ${pages.length} tabs live over ${protocols[0]}`);
} finally {
  await browser.close();
}
