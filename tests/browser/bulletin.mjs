// Drives Debian's Chromium (headless) against the bulletin example, whose
// page reads the stream through the layer's client module: two pages see
// each other's posts live; after the server drops every stream, the module
// reconnects by itself and shows each missed message exactly once, in order;
// then one page switches to WebSocket and changes rooms on the same
// connection; signing out ends the user's stream in another tab at once.
// Usage: node bulletin.mjs <base url> <screenshot path>
// Run by tests/browser.rs, which serves the app and the /test/drop hook.
import { launch } from "./chromium.mjs";

const [base, screenshot] = process.argv.slice(2);
const browser = await launch();
const fail = (message) => { throw new Error(message); };
const texts = (page) =>
  page.$$eval("#messages li > div:first-child", (items) => items.map((item) => item.textContent));

try {
  const a = await browser.newPage();
  const b = await browser.newPage();
  for (const page of [a, b]) {
    await page.goto(base);
    await page.waitForSelector("#status.live");
  }

  // Live: a post in one page appears in the other.
  await a.fill("input[name=message]", "hello from A");
  await a.click("form#post button");
  await b.waitForSelector("li >> text=hello from A");

  // The server ends every stream and publishes while the browsers are away
  // (they wait the 2 s retry delay the example sets before reconnecting).
  const dropped = await fetch(new URL("/test/drop", base), { method: "POST" });
  if (!dropped.ok) fail(`drop hook answered ${dropped.status}`);
  await b.waitForSelector("#status.down");
  await b.waitForSelector("#status.live", { timeout: 15000 });

  // One more live message: everything before it has arrived once it shows.
  const after = await fetch(new URL("/publish", base), {
    method: "POST",
    body: new URLSearchParams({ message: "after the reconnect" }),
  });
  if (after.status !== 202) fail(`publish answered ${after.status}`);
  const expected = ["after the reconnect", "missed 3", "missed 2", "missed 1", "hello from A"];
  for (const page of [a, b]) {
    await page.waitForSelector("li >> text=after the reconnect");
    const seen = await texts(page);
    if (JSON.stringify(seen) !== JSON.stringify(expected)) {
      fail(`page shows ${JSON.stringify(seen)}, expected ${JSON.stringify(expected)}`);
    }
  }

  await b.setViewportSize({ width: 800, height: 520 });
  await b.screenshot({ path: screenshot });

  // WebSocket: page B switches transport and gets A's posts; then it changes
  // room on the same connection and gets that room's posts only.
  await b.selectOption("#transport", "ws");
  await b.waitForSelector("#status.live >> text=(WebSocket)");
  await a.fill("input[name=message]", "over websocket");
  await a.click("form#post button");
  await b.waitForSelector("li >> text=over websocket");
  await b.selectOption("#room", "random");
  await b.waitForSelector("#status.live >> text=#random (WebSocket)");
  await a.fill("input[name=message]", "for general only");
  await a.click("form#post button");
  await a.waitForSelector("li >> text=for general only");
  await a.selectOption("#room", "random");
  await a.waitForSelector("#status.live >> text=#random");
  await a.fill("input[name=message]", "for random");
  await a.click("form#post button");
  await b.waitForSelector("li >> text=for random");
  const onB = await texts(b);
  if (JSON.stringify(onB) !== JSON.stringify(["for random"])) {
    fail(`after the room change over WebSocket, page B shows ${JSON.stringify(onB)}`);
  }
  // Signing out ends the user's streams in every tab: ann signs in, opens a
  // second tab, gets a private message there, signs out in the first tab;
  // the second tab's stream ends within 1 s, and a private message sent
  // after that does not reach it.
  const ann = await browser.newContext();
  const c1 = await ann.newPage();
  await c1.goto(base);
  await c1.fill("input[name=name]", "ann");
  await c1.click("#who button");
  await c1.waitForSelector("#who >> text=signed in as ann");
  await c1.waitForSelector("#status.live");
  const c2 = await ann.newPage();
  await c2.goto(base);
  await c2.waitForSelector("#status.live");
  await c2.waitForSelector("#here >> text=ann");
  await a.fill("input[name=to]", "ann");
  await a.fill("input[name=message]", "psst, ann");
  await a.click("form#post button");
  await c2.waitForSelector("li.private >> text=psst, ann");
  const signedOut = Date.now();
  await c1.click("#who >> text=Sign out");
  await c2.waitForSelector("#status.down", { timeout: 1000 });
  const ended = Date.now() - signedOut;
  await a.fill("input[name=to]", "ann");
  await a.fill("input[name=message]", "too late, ann");
  await a.click("form#post button");
  await c2.waitForSelector("#status.live", { timeout: 15000 });
  const marker = await fetch(new URL("/publish", base), {
    method: "POST",
    body: new URLSearchParams({ message: "public after sign-out" }),
  });
  if (marker.status !== 202) fail(`publish answered ${marker.status}`);
  await c2.waitForSelector("li >> text=public after sign-out");
  const onC2 = await texts(c2);
  if (onC2.includes("too late, ann")) fail(`a signed-out tab got a private message: ${JSON.stringify(onC2)}`);
  console.log(`ok: live in both pages; resumed after the drop without loss or duplicate; WebSocket live and changes rooms; a sign-out ended the other tab's stream in ${ended} ms; screenshot ${screenshot}`);
} finally {
  await browser.close();
}
