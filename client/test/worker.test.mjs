// The SharedWorker's side, under node: the module loaded as the worker
// (SharedWorkerGlobalScope faked), tabs as MessageChannel ports. Its
// connection asks a tab for each token: the newest, and the next newest
// when that one does not answer or leaves; a tab's failing getToken is
// told to every tab, not passed around.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fakeClock, fakeFetch, settle } from "./fake.mjs";

globalThis.SharedWorkerGlobalScope = class {
  static [Symbol.hasInstance](o) {
    return o === globalThis;
  }
};
await import("../tower-sse.js");

const settings = {
  transport: "sse",
  stream: "http://app.test/events",
  websocket: null,
  topicParam: "topic",
  credentials: "same-origin",
  tokenIn: "header",
  tokenParam: "token",
  tokens: true,
  share: true,
  worker: "http://app.test/tower-sse.js",
};

/** A tab joining the worker: what it got, and its port. */
function tab(ports) {
  const { port1, port2 } = new MessageChannel();
  ports.push(port1, port2);
  const got = [];
  port1.onmessage = ({ data }) => got.push(data);
  globalThis.onconnect({ ports: [port2] });
  port1.postMessage({ type: "hello", settings });
  return { port: port1, got, asked: () => got.filter((m) => m.type === "token?") };
}

test("the worker asks the newest tab for a token, then the next when it is silent or gone", async (t) => {
  const clock = fakeClock();
  const server = fakeFetch();
  const ports = [];
  t.after(() => {
    ports.forEach((p) => p.close());
    clock.restore();
    server.restore();
  });
  const a = tab(ports);
  await settle();
  const b = tab(ports);
  await settle();
  const c = tab(ports);
  await settle();
  a.port.postMessage({ type: "topics", topics: ["x"] });
  await settle();
  // C, the newest, is asked; it never answers.
  assert.equal(c.asked().length, 1);
  assert.equal(c.asked()[0].reason, "connect");
  assert.equal(b.asked().length + a.asked().length, 0);
  assert.equal(server.requests.length, 0);
  await clock.advance(12000);
  // Then B, which leaves before answering: A at once.
  assert.equal(b.asked().length, 1);
  b.port.postMessage({ type: "bye" });
  await settle();
  assert.equal(a.asked().length, 1);
  a.port.postMessage({ type: "token", n: a.asked()[0].n, token: "from a" });
  await settle();
  assert.equal(server.requests.length, 1);
  assert.equal(server.requests[0].headers.authorization, "Bearer from a");

  // A 401: a fresh token, asked of the newest tab still there (C, which
  // answers now), at once.
  server.requests[0].refuse(401, "token expired");
  await settle();
  await clock.advance(clock.pending()[0]);
  const again = c.asked().at(-1);
  assert.equal(again.reason, "refused");
  c.port.postMessage({ type: "token", n: again.n, token: "from c" });
  await settle();
  assert.equal(server.requests[1].headers.authorization, "Bearer from c");

  // A tab whose getToken failed: every tab is told, and the worker backs
  // off rather than asking the others.
  server.requests[1].refuse(401, "bad signature");
  await settle();
  await clock.advance(clock.pending()[0]);
  const third = c.asked().at(-1);
  c.port.postMessage({ type: "token", n: third.n, error: "signed out" });
  await settle();
  for (const tab of [a, c]) {
    const error = tab.got.filter((m) => m.type === "error").at(-1)?.error;
    assert.equal(error?.message, "getToken failed: signed out");
    assert.equal(error.kind, "token");
  }
  assert.equal(a.asked().length, 1, "the failure is not passed to another tab");
  assert.ok(clock.pending()[0] >= 2000, `${clock.pending()}`);
});
