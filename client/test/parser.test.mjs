// The client module's text/event-stream parser against the WHATWG rules,
// fed whole and cut at every character (a line end split across chunks).
// `node --test client/test/`; tests/client.rs runs it on the module as the
// layer serves it (TOWER_SSE_MODULE: that file).
import { test } from "node:test";
import assert from "node:assert/strict";
import { pathToFileURL } from "node:url";

const module = process.env.TOWER_SSE_MODULE;
const { Parser } = await import(module ? pathToFileURL(module).href : "../tower-sse.js");

function parse(chunks) {
  const seen = [];
  const parser = new Parser({
    event: (e) => seen.push(["event", e]),
    id: (id) => seen.push(["id", id]),
    retry: (ms) => seen.push(["retry", ms]),
  });
  for (const chunk of chunks) parser.push(chunk);
  return seen;
}

const event = (data, more = {}) => ["event", { id: "", event: "message", data, topic: null, ...more }];
const cases = [
  ["a leading BOM is dropped", "\uFEFFdata: x\n\n", [event("x")]],
  ["only one BOM", "\uFEFF\uFEFFdata: x\n\n", []],
  ["LF, CR and CRLF end lines", "data: a\rdata: b\r\ndata: c\n\r\n", [event("a\nb\nc")]],
  ["one space after the colon is dropped", "data:  two\ndata:none\n\n", [event(" two\nnone")]],
  ["a field without colon is an empty value", "data\ndata\n\n", [event("\n")]],
  ["comments and unknown fields are ignored", ": keep-alive\nfoo: bar\ndata: x\n\n", [event("x")]],
  ["no data, no event", "event: e\n\n", []],
  ["event name, id and topic", "event: said\ntopic: room/1\ndata: hi\nid: 42\n\n", [event("hi", { event: "said", id: "42", topic: "room/1" })]],
  ["the id stays for the next event; the event name and topic do not", "event: e\ntopic: t\nid: 7\ndata: a\n\ndata: b\n\n", [event("a", { event: "e", id: "7", topic: "t" }), event("b", { id: "7" })]],
  ["an id with NUL is ignored", "id: 1\ndata: a\n\nid: 2\u00003\ndata: b\n\n", [event("a", { id: "1" }), event("b", { id: "1" })]],
  ["an id alone moves the last id without an event", "id: 9\n\n:keep-alive\n\n", [["id", "9"]]],
  ["an empty id clears it", "id: 9\n\nid\ndata: x\n\n", [["id", "9"], event("x", { id: "" })]],
  ["retry takes digits only", "retry: 1500\nretry: 2s\nretry: -1\n\n", [["retry", 1500]]],
  ["an unfinished event is not dispatched", "data: x\n", []],
];

for (const [name, text, expected] of cases) {
  test(name, () => {
    // Whole, and cut at every place (CR and LF of a CRLF in two chunks too).
    const cuts = [[text], ...Array.from(text, (_, i) => [text.slice(0, i), text.slice(i)])];
    for (const chunks of cuts) assert.deepEqual(parse(chunks), expected, JSON.stringify(chunks));
  });
}

test("an empty chunk inside a CRLF (a decoder holding half a character)", () => {
  assert.deepEqual(parse(["data: a\r", "", "\ndata: b\n\n"]), [event("a\nb")]);
});

test("one character at a time, a CRLF-separated stream of many events", () => {
  const many = Array.from({ length: 50 }, (_, i) => `id: ${i}\r\ndata: ${i}\r\n\r\n`).join("");
  const got = parse(Array.from(many));
  assert.equal(got.length, 50);
  got.forEach(([, e], i) => assert.deepEqual([e.data, e.id], [String(i), String(i)]));
});

test("the last event id goes on from the previous stream, as EventSource keeps it", () => {
  // An event without id there still has it.
  const resumed = [];
  const next = new Parser({ event: (e) => resumed.push(e.id), id: (id) => resumed.push(`moved ${id}`) }, "41");
  next.push("id: 41\n\ndata: x\n\nid: 42\ndata: y\n\n");
  assert.deepEqual(resumed, ["41", "42"]);
});
