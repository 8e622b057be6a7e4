// Drives Debian's Chromium (headless) against the bulletin example, whose
// page reads the stream through the layer's client module (/events.js).
// Usage: node client.mjs <scenario> <mode> <base url>
//   tabs worker|leader: ten tabs of one browser go live on one stream (the
//     server counts them); a post from the last shows in all ten; the tab
//     holding the connection closes while events are published, and every
//     other shows each once, in order. "leader" deletes SharedWorker first,
//     so a tab elected with Web Locks holds the stream.
//   topics -: one subscription's events flow while another changes topics
//     ten times, over SSE and over WebSocket: nothing lost or repeated.
//   retry -: the server refuses the first streams with 503 and Retry-After;
//     the page says why, then goes live.
//   restart -: the server restarts (new hub) while the page is open; the
//     page gets the reset, then goes live.
//   ids -: events with the app's own ids (numbers below the hub's, a word)
//     and with the hub's all arrive, once, in order.
//   ends -: a stream that answers 200 then ends at once; the server checks
//     that the module waits longer each time.
//   tokens worker|leader|websocket: the page's getToken gives an expired
//     token first (401), then tokens of two seconds, at whose expiry the
//     server ends the stream, while events flow: each arrives once, in
//     order; getToken was asked again for each ("refused" or "expired").
//     "leader" deletes SharedWorker (an elected tab calls its own
//     getToken); "worker" has the worker ask the newest tab (a second one,
//     until it closes, then the first).
// Run by tests/client.rs, which serves the app and its /test/ hooks.
import { launch } from "./chromium.mjs";

const [scenario, mode, base] = process.argv.slice(2);
const browser = await launch();
const fail = (message) => { throw new Error(message); };
const url = (path) => new URL(path, base);
// What the page lists, oldest first.
const texts = async (page) =>
  (await page.$$eval("#messages li > div:first-child", (items) => items.map((item) => item.textContent))).reverse();
const shows = (page, text) =>
  page.waitForFunction(
    (text) => [...document.querySelectorAll("#messages li > div:first-child")].some((d) => d.textContent === text),
    text,
    { timeout: 15000 },
  );
async function publish(message, room = "general") {
  const answer = await fetch(url("/publish"), { method: "POST", body: new URLSearchParams({ room, message }) });
  if (answer.status !== 202) fail(`publish answered ${answer.status}`);
}
// The server's count of open streams, once it is `open` (it waits up to
// 10 s), and of the streams opened so far.
async function streams(open) {
  const answer = await fetch(url(`/test/streams/${open}`));
  const counts = await answer.json();
  if (!answer.ok) fail(`the server never had ${open} open stream(s): ${JSON.stringify(counts)}`);
  return counts;
}
const roles = (pages) => Promise.all(pages.map((page) => page.$eval("#status", (el) => el.dataset.role)));

async function tabs() {
  const context = await browser.newContext();
  if (mode === "leader") await context.addInitScript(() => { delete window.SharedWorker; });
  const pages = [];
  for (let i = 0; i < 10; i++) {
    const page = await context.newPage();
    await page.goto(base);
    await page.waitForSelector("#status.live");
    pages.push(page);
  }
  const before = await roles(pages);
  const expected = mode === "leader" ? ["leader", ...Array(9).fill("follower")] : Array(10).fill("worker");
  if (JSON.stringify(before) !== JSON.stringify(expected)) fail(`roles: ${JSON.stringify(before)}`);
  const one = await streams(1);
  if (one.opened !== 1) fail(`ten live tabs opened ${one.opened} streams`);

  // A post from the last tab shows in all ten.
  await pages[9].fill("input[name=message]", "hello from tab 10");
  await pages[9].click("form#post button");
  for (const page of pages) await shows(page, "hello from tab 10");

  // The tab holding the stream (the first: the leader, or the worker's
  // first tab) closes while events are published, 10 more after it closed.
  let closedAt = null;
  let sent = 0;
  const publishing = (async () => {
    while (closedAt === null || sent < closedAt + 10) await publish(`event ${++sent}`);
  })();
  await shows(pages[0], "event 5");
  await pages[0].close();
  closedAt = sent;
  await publishing;
  await publish("last");
  const rest = pages.slice(1);
  const all = ["hello from tab 10", ...Array.from({ length: sent }, (_, i) => `event ${i + 1}`), "last"];
  for (const page of rest) {
    await shows(page, "last");
    const seen = await texts(page);
    if (JSON.stringify(seen) !== JSON.stringify(all)) fail(`a tab shows ${JSON.stringify(seen)}`);
  }
  const after = await roles(rest);
  const holders = after.filter((role) => role === (mode === "leader" ? "leader" : "worker")).length;
  if (holders !== (mode === "leader" ? 1 : 9)) fail(`roles after the close: ${JSON.stringify(after)}`);
  const still = await streams(1);
  // With a leader, the next one opened one stream of its own, resuming.
  if (still.opened !== (mode === "leader" ? 2 : 1)) fail(`streams opened: ${still.opened}`);
  await context.close();
  return `ten tabs live on one stream (${mode}); a post reached all ten; after the holder closed while ${sent} events were published (${closedAt} before), nine tabs show each once, in order, on ${still.opened} stream(s) opened in all`;
}

async function retry() {
  const page = await browser.newPage();
  await page.goto(base);
  // The reason, and a wait of Retry-After (1 s) plus at most a fifth.
  await page.waitForSelector("#status.down >> text=/reconnecting in 1\\.[0-2] s: 503 Service Unavailable: busy/", { timeout: 15000 });
  await page.waitForSelector("#status.live", { timeout: 15000 });
  await publish("after the refusals");
  await shows(page, "after the refusals");
  return "the page showed the 503 and its retry, then went live";
}

async function restart() {
  const page = await browser.newPage();
  await page.goto(base);
  await page.waitForSelector("#status.live");
  await publish("before the restart");
  await shows(page, "before the restart");
  const answer = await fetch(url("/test/restart"), { method: "POST" });
  if (!answer.ok) fail(`restart hook answered ${answer.status}`);
  await page.waitForSelector("#status.down");
  await page.waitForSelector("li.notice", { timeout: 20000 });
  await page.waitForSelector("#status.live", { timeout: 20000 });
  await publish("after the restart");
  await shows(page, "after the restart");
  const seen = await texts(page);
  const expected = ["before the restart", "Some messages were missed while disconnected.", "after the restart"];
  if (JSON.stringify(seen) !== JSON.stringify(expected)) fail(`the page shows ${JSON.stringify(seen)}`);
  return "after the restart the page got the reset, went live and shows new posts";
}

// One subscription gets a steady flow of events while another changes its
// topic ten times (ten reconnections over SSE, ten subscribe/unsubscribe
// over WebSocket): the first sees each event once, in order. A subscription
// gets its topics' events once the connection follows them: the server says
// when (/test/following), then the other gets an event of its new topic.
async function topics() {
  const page = await browser.newPage();
  await page.goto(base);
  await page.waitForSelector("#status.live");
  const on = { timeout: 10000 };
  for (const transport of ["sse", "websocket"]) {
    await page.evaluate(async (transport) => {
      const { connect } = await import("/events.js");
      const hub = (window.hub = connect({ transport }));
      window.got = [];
      hub.subscribe(["room/a"], {
        message: (e) => window.got.push(e.data),
        state: (state) => (window.live = state === "live"),
      });
    }, transport);
    await page.waitForFunction(() => window.live, null, on);
    let sent = 0;
    let changing = true;
    const flow = (async () => {
      while (changing || sent < 40) await publish(`${transport} ${++sent}`, "a");
    })();
    for (let k = 1; k <= 10; k++) {
      await page.evaluate((room) => {
        window.other?.close();
        window.other = window.hub.subscribe([`room/${room}`], { message: (e) => (window.otherGot = e.data) });
      }, `b${k}`);
      const following = await fetch(url(`/test/following/b${k}`));
      if (!following.ok) fail(`no stream followed room/b${k}`);
      await publish(`b${k}`, `b${k}`);
      await page.waitForFunction((k) => window.otherGot === `b${k}`, k, on);
    }
    changing = false;
    await flow;
    await publish(`${transport} end`, "a");
    await page.waitForFunction((end) => window.got.includes(end), `${transport} end`, on);
    const got = await page.evaluate(() => window.got);
    const all = [...Array.from({ length: sent }, (_, i) => `${transport} ${i + 1}`), `${transport} end`];
    if (JSON.stringify(got) !== JSON.stringify(all)) fail(`over ${transport}, room/a got ${JSON.stringify(got)}`);
    await page.evaluate(() => window.hub.close());
  }
  return "over SSE and WebSocket, a subscription saw each event once, in order, while another changed topics ten times";
}

// The app's ids need not increase nor be above the hub's (which the
// stream starts at): none is taken for a repeat.
async function ids() {
  const page = await browser.newPage();
  await page.goto(base);
  await page.waitForSelector("#status.live");
  await page.evaluate(async () => {
    const { connect } = await import("/events.js");
    window.got = [];
    connect().subscribe(["room/ids"], { message: (e) => window.got.push(e.data) });
  });
  const following = await fetch(url("/test/following/ids"));
  if (!following.ok) fail("no stream followed room/ids");
  const sent = [["a", "1"], ["b"], ["c", "2"], ["d", "x"], ["e", "10"], ["end", "3"]];
  for (const [data, id] of sent) {
    const query = new URLSearchParams({ topic: "room/ids", data, ...(id && { id }) });
    const answer = await fetch(url(`/test/publish?${query}`), { method: "POST" });
    if (answer.status !== 202) fail(`publish answered ${answer.status}`);
  }
  const all = sent.map(([data]) => data);
  await page
    .waitForFunction((n) => window.got.length >= n, all.length, { timeout: 10000 })
    .catch(async () => fail(`the page got ${JSON.stringify(await page.evaluate(() => window.got))}`));
  const got = await page.evaluate(() => window.got);
  if (JSON.stringify(got) !== JSON.stringify(all)) fail(`the page got ${JSON.stringify(got)}`);
  return "events with the app's ids (1, 2, x, 10, 3) and the hub's all arrived, once, in order";
}

async function ends() {
  const page = await browser.newPage();
  await page.goto(base);
  await page.evaluate(async () => {
    const { connect } = await import("/events.js");
    connect({ url: "/test/ends", share: false }).subscribe(["x"]);
  });
  const answer = await fetch(url("/test/ended/5"));
  if (!answer.ok) fail("the module did not come back five times");
  return "the module came back to a stream that ends at once";
}

async function tokens() {
  const context = await browser.newContext();
  if (mode === "leader") await context.addInitScript(() => { delete window.SharedWorker; });
  const transport = mode === "websocket" ? "websocket" : "sse";
  // A tab whose getToken records why it was asked; its first token lives
  // `ttl` seconds (a negative one: already expired), the next ones two.
  const open = async (ttl) => {
    const page = await context.newPage();
    await page.goto(base);
    await page.evaluate(async ([transport, ttl]) => {
      const { connect } = await import("/events.js");
      Object.assign(window, { got: [], reasons: [], errors: [], live: false });
      const hub = (window.hub = connect({
        transport,
        async getToken({ reason }) {
          window.reasons.push(reason);
          const answer = await fetch(`/token?ttl=${ttl}`);
          ttl = 2;
          return answer.text();
        },
      }));
      hub.subscribe(["public/feed"], {
        message: (e) => window.got.push(e.data),
        state: (s) => (window.live = s === "live"),
        error: (e) => window.errors.push(e),
      });
    }, [transport, ttl]);
    await page.waitForFunction(() => window.live, null, { timeout: 15000 });
    return page;
  };
  const reasonsOf = (page) => page.evaluate(() => window.reasons);
  const page = await open(-30);
  const role = await page.evaluate(() => window.hub.role);
  const expected = { worker: "worker", leader: "leader", websocket: "worker" }[mode];
  if (role !== expected) fail(`role ${role}, not ${expected}`);
  // Events flow (a publish every 40 ms) until `done` says, 15 s at most.
  const sent = [];
  const flow = async (done) => {
    const until = Date.now() + 15000;
    while (!(await done())) {
      if (Date.now() > until) fail(`still waiting after ${sent.length} events`);
      const data = String(sent.length + 1);
      const answer = await fetch(url(`/test/publish?topic=public/feed&data=${data}`), { method: "POST" });
      if (answer.status !== 202) fail(`publish answered ${answer.status}`);
      sent.push(data);
      await new Promise((resolve) => setTimeout(resolve, 40)); // a pace, not a wait for anything
    }
  };
  let note = "";
  if (mode === "worker") {
    // A newer tab: the worker asks it for the next token; once it has
    // closed, the first tab again.
    const newer = await open(2);
    await flow(async () => (await reasonsOf(newer)).length >= 1);
    const before = (await reasonsOf(page)).length;
    await newer.close();
    await flow(async () => (await reasonsOf(page)).length >= before + 2);
    note = "; the newer tab was asked while open, the first after it closed";
  } else {
    const until = Date.now() + 7000; // three expiries or more
    await flow(async () => Date.now() > until);
  }
  await fetch(url("/test/publish?topic=public/feed&data=end"), { method: "POST" });
  sent.push("end");
  await page.waitForFunction(() => window.got.includes("end"), null, { timeout: 15000 }).catch(() => {});
  const { got, reasons, errors } = await page.evaluate(() => ({ got: window.got, reasons: window.reasons, errors: window.errors }));
  if (JSON.stringify(got) !== JSON.stringify(sent)) {
    const missing = sent.filter((d) => !got.includes(d));
    fail(`the page got ${got.length} of ${sent.length} events; missing ${JSON.stringify(missing)}; reasons ${JSON.stringify(reasons)}`);
  }
  const expiries = reasons.filter((r) => r === "expired").length;
  if (reasons[0] !== "connect" || expiries < 2) fail(`getToken was asked for ${JSON.stringify(reasons)}`);
  // One error: the expired first token (over WebSocket, a failed handshake).
  const first = errors[0];
  const refused = mode === "websocket" ? first?.kind === "websocket" : first?.status === 401 && /token expired/.test(first.message);
  if (errors.length !== 1 || !refused) fail(`errors: ${JSON.stringify(errors)}`);
  await context.close();
  return `${mode}: ${sent.length} events, each once, in order; this tab's getToken asked for ${JSON.stringify(reasons)}${note}`;
}

try {
  const scenarios = { tabs, retry, restart, topics, ids, ends, tokens };
  if (!scenarios[scenario]) fail(`no scenario ${scenario}`);
  console.log(`ok: ${await scenarios[scenario]()}`);
} finally {
  await browser.close();
}
