// Fakes for the module's tests under node: a clock that moves only when a
// test says (setTimeout, clearTimeout, Date.now), and a fetch whose
// requests a test answers by hand, with a stream it writes and ends.

/** Lets promises, and the streams of answered requests, move on. */
export async function settle() {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

export function fakeClock(start = 1_800_000_000_000) {
  const real = { setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout, now: Date.now };
  let now = start;
  let next = 1;
  const timers = new Map(); // id → { at, fn }
  globalThis.setTimeout = (fn, ms = 0) => {
    const id = next++;
    timers.set(id, { at: now + Math.max(0, ms), fn });
    return id;
  };
  globalThis.clearTimeout = (id) => timers.delete(id);
  Date.now = () => now;
  return {
    get now() {
      return now;
    },
    /** The delays (ms from now) of the timers set, soonest first. */
    pending: () => [...timers.values()].map((t) => t.at - now).sort((a, b) => a - b),
    /** Moves the clock `ms` on, firing what falls due, in order. */
    async advance(ms) {
      const until = now + ms;
      for (;;) {
        await settle();
        const due = [...timers].filter(([, t]) => t.at <= until).sort(([, a], [, b]) => a.at - b.at)[0];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = until;
      await settle();
    },
    restore() {
      Object.assign(globalThis, { setTimeout: real.setTimeout, clearTimeout: real.clearTimeout });
      Date.now = real.now;
    },
  };
}

/** `globalThis.fetch`, answered by the test: `requests` in order, each
 * with `url`, `headers`, `credentials`, and `refuse(status, body)` or
 * `stream()` (then `send(text)` and `end()`). */
export function fakeFetch() {
  const real = globalThis.fetch;
  const requests = [];
  globalThis.fetch = (url, init = {}) =>
    new Promise((resolve, reject) => {
      const request = {
        url: new URL(url),
        headers: { ...init.headers },
        credentials: init.credentials,
        aborted: false,
        refuse(status, body = "", headers = {}) {
          resolve(new Response(body, { status, headers }));
        },
        stream() {
          const encoder = new TextEncoder();
          let control;
          const body = new ReadableStream({ start: (c) => (control = c) });
          request.send = (text) => control.enqueue(encoder.encode(text));
          request.end = () => control.close();
          resolve(new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } }));
        },
      };
      init.signal?.addEventListener("abort", () => {
        request.aborted = true;
        reject(new DOMException("aborted", "AbortError"));
      });
      requests.push(request);
    });
  return {
    requests,
    restore: () => (globalThis.fetch = real),
  };
}

/** A JSON Web Token's shape with these claims (unsigned: the module only
 * reads `exp`, the server verifies). */
export function jwt(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.signature`;
}
