// Tokens, credentials and backoff in the module's connection, under node
// with a fake fetch and a fake clock: where the token goes, when getToken
// is asked again (a 401, the token's expiry) and why, that refusals and a
// failing getToken back off (no reconnection storm) and are told.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../tower-sse.js";
import { fakeClock, fakeFetch, jwt, settle } from "./fake.mjs";

const URL_ = "http://app.test/events";

/** A hub with one subscription to `t`, what its handlers got, and the
 * fakes; closed after the test. */
async function open(t, options = {}) {
  const clock = fakeClock();
  const server = fakeFetch();
  const got = { messages: [], states: [], errors: [], asked: [] };
  const hub = connect({ url: URL_, share: false, ...options });
  hub.subscribe(["t"], {
    message: (e) => got.messages.push(e.data),
    state: (s) => got.states.push(s),
    error: (e) => got.errors.push(e),
  });
  t.after(() => {
    hub.close();
    clock.restore();
    server.restore();
  });
  await settle();
  return { hub, clock, requests: server.requests, got };
}

/** A getToken that answers `answers` in turn (a function is called; an
 * Error is thrown) and records the reasons it was asked for. */
function tokens(got, ...answers) {
  let n = 0;
  return ({ reason }) => {
    got.asked.push(reason);
    const answer = answers[Math.min(n++, answers.length - 1)];
    if (answer instanceof Error) throw answer;
    return typeof answer === "function" ? answer() : answer;
  };
}

test("the token goes in an Authorization header, asked for before connecting", async (t) => {
  const got = { asked: [] };
  const { requests } = await open(t, { getToken: tokens(got, "t1") });
  assert.equal(requests.length, 1);
  assert.equal(requests[0].headers.authorization, "Bearer t1");
  assert.equal(requests[0].headers.accept, "text/event-stream");
  assert.equal(requests[0].credentials, "same-origin");
  assert.equal(requests[0].url.searchParams.get("token"), null);
  assert.deepEqual(got.asked, ["connect"]);
});

test("tokenIn: query puts it in ?token= (or tokenParam); withCredentials sends cookies", async (t) => {
  const { requests } = await open(t, { getToken: async () => "a b", tokenIn: "query", withCredentials: true });
  assert.equal(requests[0].url.searchParams.get("token"), "a b");
  assert.equal(requests[0].headers.authorization, undefined);
  assert.equal(requests[0].credentials, "include");
});

test("tokenParam names the query parameter; credentials passes through", async (t) => {
  const { requests } = await open(t, {
    getToken: () => "x",
    tokenIn: "query",
    tokenParam: "access_token",
    credentials: "omit",
  });
  assert.equal(requests[0].url.searchParams.get("access_token"), "x");
  assert.equal(requests[0].credentials, "omit");
});

test("without getToken, or when it gives null, no token is sent", async (t) => {
  const { requests } = await open(t, { getToken: () => null });
  assert.equal(requests[0].headers.authorization, undefined);
  assert.equal(requests[0].url.search.includes("token"), false);
});

test("a 401 asks for a fresh token and tries again at once; refusals in a row back off to 30 s", async (t) => {
  const got = { asked: [] };
  let n = 0;
  const { requests, clock, got: seen } = await open(t, { getToken: tokens(got, () => `t${++n}`) });
  requests[0].refuse(401, "token expired");
  await settle();
  const [first] = seen.errors;
  assert.equal(first.kind, "http");
  assert.equal(first.status, 401);
  assert.match(first.message, /^401 .*token expired$/);
  assert.ok(first.retryIn <= 100, `retried in ${first.retryIn} ms`);
  assert.deepEqual(seen.states.slice(-1), ["down"]);
  await clock.advance(100);
  assert.equal(requests.length, 2);
  assert.equal(requests[1].headers.authorization, "Bearer t2");
  assert.deepEqual(got.asked, ["connect", "refused"]);
  // Still refused: each wait is about twice the last (with jitter), up to 30 s.
  const waits = [];
  for (let i = 1; i < 10; i++) {
    requests[i].refuse(401, "bad signature");
    await settle();
    waits.push(seen.errors.at(-1).retryIn);
    await clock.advance(clock.pending()[0]);
  }
  assert.ok(waits[0] >= 2000 && waits[0] <= 4000, `${waits}`);
  assert.ok(waits[1] >= 4000 && waits[1] <= 8000, `${waits}`);
  assert.ok(waits.every((w) => w <= 30000) && waits.at(-1) >= 15000, `${waits}`);
  assert.equal(requests.length, 11, "one request per wait, no more");
  assert.ok(got.asked.slice(1).every((r) => r === "refused"), `${got.asked}`);
  // Then accepted: live, and the next refusal is tried at once again.
  requests[10].stream();
  requests[10].send("id: 1\ndata: a\n\n");
  await settle();
  assert.deepEqual(seen.states.slice(-1), ["live"]);
  assert.deepEqual(seen.messages, ["a"]);
  requests[10].end();
  await settle();
  await clock.advance(clock.pending()[0]);
  requests[11].refuse(401, "token expired");
  await settle();
  assert.ok(seen.errors.at(-1).retryIn <= 100, `${seen.errors.at(-1).retryIn}`);
});

test("at the token's expiry the stream ends: a fresh token at once, resuming, still live", async (t) => {
  const got = { asked: [] };
  let exp;
  const token = () => jwt({ sub: "alice", exp: (exp = Math.floor(Date.now() / 1000) + 60) });
  const { requests, clock: time, got: seen } = await open(t, { getToken: tokens(got, token) });
  const first = requests[0].headers.authorization;
  requests[0].stream();
  requests[0].send("id: 1\ndata: a\n\n");
  await settle();
  await time.advance(exp * 1000 - Date.now());
  requests[0].end(); // as the server does at `exp`
  await settle();
  assert.ok(time.pending()[0] <= 100, `reconnects in ${time.pending()} ms`);
  await time.advance(100);
  assert.equal(requests.length, 2);
  assert.deepEqual(got.asked, ["connect", "expired"]);
  assert.notEqual(requests[1].headers.authorization, first);
  assert.equal(requests[1].url.searchParams.get("lastEventId"), "1");
  requests[1].stream();
  requests[1].send("id: 2\ndata: b\n\n");
  await settle();
  assert.deepEqual(seen.messages, ["a", "b"]);
  assert.deepEqual(seen.errors, []);
  assert.ok(!seen.states.includes("down"), `${seen.states}`);
});

test("a stream ending long before its token's expiry is an ordinary end", async (t) => {
  const got = { asked: [] };
  const token = () => jwt({ exp: Math.floor(Date.now() / 1000) + 3600 });
  const { requests, clock, got: seen } = await open(t, { getToken: tokens(got, token) });
  requests[0].stream();
  requests[0].send("id: 1\ndata: a\n\n");
  await settle();
  requests[0].end();
  await settle();
  assert.deepEqual(seen.states.slice(-1), ["down"]);
  const [wait] = clock.pending();
  assert.ok(wait >= 500 && wait <= 1000, `${wait}`);
  await clock.advance(wait);
  assert.deepEqual(got.asked, ["connect", "connect"]);
});

test("a getToken that throws is told and backs off; no request goes out meanwhile", async (t) => {
  const got = { asked: [] };
  const no = new Error("signed out");
  const { requests, clock, got: seen } = await open(t, { getToken: tokens(got, no, no, no, "ok") });
  const waits = [];
  for (let i = 0; i < 3; i++) {
    const error = seen.errors.at(-1);
    assert.equal(error.kind, "token");
    assert.equal(error.message, "getToken failed: signed out");
    waits.push(error.retryIn);
    assert.equal(requests.length, 0);
    await clock.advance(clock.pending()[0]);
  }
  assert.ok(waits[0] >= 1000 && waits[0] <= 2000, `${waits}`);
  assert.ok(waits[1] >= 2000 && waits[1] <= 4000, `${waits}`);
  assert.ok(waits[2] >= 4000 && waits[2] <= 8000, `${waits}`);
  assert.equal(requests.length, 1);
  assert.equal(requests[0].headers.authorization, "Bearer ok");
  requests[0].stream();
  await settle();
  assert.deepEqual(seen.states.slice(-1), ["live"]);
});

test("a getToken that never answers fails after 10 s", async (t) => {
  const { clock, got, requests } = await open(t, { getToken: () => new Promise(() => {}) });
  assert.deepEqual(got.errors, []);
  await clock.advance(10000);
  assert.equal(got.errors[0]?.message, "getToken failed: getToken did not answer within 10 s");
  assert.equal(requests.length, 0);
});

test("a getToken that gives a number fails at once", async (t) => {
  const { got } = await open(t, { getToken: () => 42 });
  assert.equal(got.errors[0]?.message, "getToken failed: getToken gave a number, not a string");
});

test("from npm (no layer's defaults), the stream is /events of the page, and no token is sent", async (t) => {
  globalThis.location = { href: "http://app.test/shop/cart", origin: "http://app.test" };
  t.after(() => delete globalThis.location);
  const clock = fakeClock();
  const server = fakeFetch();
  const hub = connect({ share: false });
  hub.subscribe(["a/b"]);
  t.after(() => (hub.close(), clock.restore(), server.restore()));
  await settle();
  const [request] = server.requests;
  assert.equal(`${request.url.origin}${request.url.pathname}`, "http://app.test/events");
  assert.deepEqual(request.url.searchParams.getAll("topic"), ["a/b"]);
  assert.equal(request.headers.authorization, undefined);
  assert.equal(hub.role, "tab");
});

test("options are checked", () => {
  const bad = [
    { credentials: "always" },
    { tokenIn: "cookie" },
    { tokenParam: "" },
    { getToken: "abc" },
    { transport: "eventsource" },
  ];
  for (const options of bad) assert.throws(() => connect({ url: URL_, ...options }), TypeError, JSON.stringify(options));
});
