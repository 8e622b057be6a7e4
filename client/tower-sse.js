// tower-sse in the browser: one connection for every tab of a site, and for
// every subscription in a tab. A dependency-free ES module, no build step,
// written for tower-sse (MIT OR Apache-2.0). The layer serves it after one
// line of its own defaults (`DEFAULTS`: stream path, WebSocket path, topic
// parameter); the same file runs as the SharedWorker that holds the
// connection. It is also the npm package `tower-sse` (this folder): the one
// file both ship.
//
//   import { connect } from "/events.js";       // or from "tower-sse" (npm)
//   const hub = connect();                       // or connect({ transport: "websocket" })
//   const sub = hub.subscribe(["room/general"], {
//     message(e) {},  // { id, event, data, topic }
//     reset() {},     // events were missed: reload the state
//     state(s) {},    // "connecting", "live" or "down"
//     error(err) {},  // { kind, message, status?, code?, retryAfter?, retryIn }
//   });
//   sub.close(); hub.close();
//
// How the tabs share: a SharedWorker holds the connection; where there is
// none, the tab holding a Web Lock does and relays over a BroadcastChannel
// (another takes over, resuming, when it closes); else each tab has its own.
// Every tab drops an event it already delivered, so a takeover that replays
// a little shows nothing twice.
//
// Tokens: `getToken` runs in a tab (a function cannot reach a worker). The
// tab holding the connection calls its own; the SharedWorker asks the
// newest tab, and the next newest when that one does not answer (closed,
// frozen).

const RESET = "reset";
const FIRST_RETRY = 1000; // ms, until the server's `retry:` says otherwise
const MAX_RETRY = 30000; // ms, the longest backoff
const MIN_RETRY = 100; // ms: a server's `retry: 0` still waits a little
// A stream that ends before it delivered an event or was live this long
// (ms) failed: the next waits longer, so a server that answers 200 and
// closes at once is not asked again and again at the `retry:` pace.
const STABLE = 5000;
const LONGEST_TIMER = 2 ** 31 - 1; // ms; setTimeout fires at once beyond
const RECENT = 4096; // ids remembered, to drop what a takeover replays
// How long the app's getToken may take (ms); a worker waits a little more
// for a tab's answer before it asks the next tab (the tab's own time-out is
// the app's error, told as such; no answer at all is a frozen tab).
const TOKEN_TIMEOUT = 10000;
const TAB_TIMEOUT = TOKEN_TIMEOUT + 2000;
// A stream that ends this close (s) to its token's `exp`, or after, ended
// because the token expired (the server ends it then): clocks differ.
const EXPIRY_SKEW = 5;

// The layer's paths when the layer served this file (its first line defines
// them, relative to this module); from npm, the usual ones, relative to the
// page. (A page's own global of that name is taken only in their shape.)
const LAYER =
  typeof DEFAULTS === "object" && DEFAULTS !== null && typeof DEFAULTS.stream === "string" && "topicParam" in DEFAULTS
    ? { ...DEFAULTS, base: import.meta.url }
    : { stream: "/events", websocket: null, topicParam: "topic", base: null };

const CREDENTIALS = ["omit", "same-origin", "include"];

/** Connects to the layer's stream, or joins this browser's connection to it. */
export function connect(options = {}) {
  const s = settings(options);
  return new Hub(s, tokens(options.getToken));
}

function settings(options) {
  const page = globalThis.location?.href ?? import.meta.url;
  // The app's URLs are relative to the page; the layer's, to this module.
  const url = (given, fallback) =>
    given != null
      ? new URL(given, page).href
      : fallback != null
        ? new URL(fallback, LAYER.base ?? page).href
        : null;
  const credentials = options.credentials ?? (options.withCredentials ? "include" : "same-origin");
  const s = {
    transport: options.transport ?? "sse",
    stream: url(options.url, LAYER.stream),
    websocket: url(options.websocket, LAYER.websocket),
    topicParam: options.topicParam ?? LAYER.topicParam,
    credentials,
    tokenIn: options.tokenIn ?? "header",
    tokenParam: options.tokenParam ?? "token",
    // Part of what tabs share a connection by: a tab without getToken does
    // not join one opened with another tab's token.
    tokens: options.getToken != null,
  };
  const fail = (message) => {
    throw new TypeError(`tower-sse: ${message}`);
  };
  const quoted = JSON.stringify;
  if (s.transport !== "sse" && s.transport !== "websocket") fail(`transport is "sse" or "websocket", not ${quoted(s.transport)}`);
  if (s.transport === "websocket" && !s.websocket) fail("this layer serves no WebSocket (SseLayer::websocket)");
  if (!CREDENTIALS.includes(credentials)) fail(`credentials is "omit", "same-origin" or "include", not ${quoted(credentials)}`);
  if (s.tokenIn !== "header" && s.tokenIn !== "query") fail(`tokenIn is "header" or "query", not ${quoted(s.tokenIn)}`);
  if (typeof s.tokenParam !== "string" || !s.tokenParam) fail("tokenParam is a parameter name");
  if (options.getToken != null && typeof options.getToken !== "function") fail("getToken is a function");
  const worker = options.worker ?? import.meta.url;
  return { ...s, share: options.share ?? true, worker: worker === false ? false : new URL(worker, page).href };
}

/** The app's `getToken` as the connection calls it: always a promise of a
 * string or null, within TOKEN_TIMEOUT; null when the app gave none. */
function tokens(getToken) {
  if (getToken == null) return null;
  return (reason) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`getToken did not answer within ${TOKEN_TIMEOUT / 1000} s`)),
        TOKEN_TIMEOUT,
      );
      const done = (f) => (v) => {
        clearTimeout(timer);
        f(v);
      };
      Promise.resolve()
        .then(() => getToken({ reason }))
        .then((token) => {
          if (token != null && typeof token !== "string") throw new TypeError(`getToken gave a ${typeof token}, not a string`);
          return token ?? null;
        })
        .then(done(resolve), done(reject));
    });
}

/** The `exp` of a JSON Web Token (seconds), or undefined: any other token
 * is opaque. The stream ends then; knowing it tells an expiry from an end. */
function expiry(token) {
  const payload = typeof token === "string" ? token.split(".")[1] : undefined;
  if (!payload) return undefined;
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(payload.length / 4) * 4, "="));
    const exp = JSON.parse(json)?.exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** A page's handle: its subscriptions, and its way to the connection. */
class Hub {
  #settings;
  #token; // the app's getToken, wrapped (null: none)
  #link = null;
  #subs = new Map(); // Subscription → { topics: Set, handlers }
  #seen = new Seen();
  #state = "connecting";
  #queued = false;
  #closed = false;
  // Leaving the page lets another tab take the connection over; coming
  // back from the back/forward cache joins again. The connection it joins
  // moved on while the page was frozen, so its subscriptions get `reset`
  // (reload what they show) rather than silently miss what was published.
  #hide = () => this.#drop();
  #show = (e) => {
    if (!e.persisted || this.#closed) return;
    this.#open();
    for (const sub of this.#subs.values()) call(sub.handlers.reset, { id: null, restored: true });
  };

  constructor(settings, token) {
    this.#settings = settings;
    this.#token = token;
    this.#open();
    globalThis.addEventListener?.("pagehide", this.#hide);
    globalThis.addEventListener?.("pageshow", this.#show);
  }

  /** "connecting", "live" or "down". */
  get state() {
    return this.#state;
  }

  /** "sse" or "websocket". */
  get transport() {
    return this.#settings.transport;
  }

  /** How this tab gets its events: "worker", "leader", "follower" or "tab". */
  get role() {
    return this.#link?.role ?? "closed";
  }

  /** Follows `topics` (and the default topic, which every stream follows). */
  subscribe(topics, handlers = {}) {
    if (this.#closed) throw new Error("tower-sse: this hub is closed");
    const list = [...topics];
    if (list.some((t) => typeof t !== "string")) throw new TypeError("tower-sse: topics are strings");
    if (typeof handlers === "function") handlers = { message: handlers };
    const sub = new Subscription(list, () => {
      this.#subs.delete(sub);
      this.#changed();
    });
    this.#subs.set(sub, { topics: new Set(list), handlers });
    this.#changed();
    queueMicrotask(() => this.#subs.has(sub) && call(handlers.state, this.#state));
    return sub;
  }

  /** Connects again now (say, after signing in), resuming where it was. */
  reconnect() {
    this.#link?.send({ type: "reconnect" });
  }

  close() {
    this.#closed = true;
    this.#subs.clear();
    this.#drop();
    globalThis.removeEventListener?.("pagehide", this.#hide);
    globalThis.removeEventListener?.("pageshow", this.#show);
  }

  #open(worker = true) {
    this.#drop();
    this.#link = link(this.#settings, worker, {
      receive: (m) => this.#receive(m),
      last: () => this.#seen.last,
      token: this.#token,
      // The worker did not start (no module workers here): the next way.
      failed: () => this.#open(false),
    });
    this.#queued = false;
    this.#changed();
  }

  #drop() {
    this.#link?.close();
    this.#link = null;
  }

  // Once per task, so closing a subscription and opening another is one
  // change (one reconnection), not two.
  #changed() {
    if (this.#queued) return;
    this.#queued = true;
    queueMicrotask(() => {
      this.#queued = false;
      let topics = null;
      for (const sub of this.#subs.values()) {
        topics ??= new Set();
        sub.topics.forEach((t) => topics.add(t));
      }
      this.#link?.send({ type: "topics", topics: topics && [...topics] });
    });
  }

  #receive(m) {
    const subs = [...this.#subs.values()];
    switch (m.type) {
      case "event": {
        if (!this.#seen.first(m.id)) return;
        const event = { id: m.id, event: m.event, data: m.data, topic: m.topic };
        for (const sub of subs) if (m.all || sub.topics.has(m.topic)) call(sub.handlers.message, event);
        break;
      }
      case RESET:
        if (this.#seen.reset(m.id)) subs.forEach((sub) => call(sub.handlers.reset, { id: m.id }));
        break;
      case "at":
        this.#seen.at(m.id);
        break;
      case "state":
        if (m.state === this.#state) return;
        this.#state = m.state;
        subs.forEach((sub) => call(sub.handlers.state, m.state));
        break;
      case "error":
        subs.forEach((sub) => call(sub.handlers.error, m.error));
        break;
    }
  }
}

class Subscription {
  #topics;
  #close;

  constructor(topics, close) {
    this.#topics = Object.freeze(topics);
    this.#close = close;
  }

  get topics() {
    return this.#topics;
  }

  close() {
    this.#close?.();
    this.#close = null;
  }
}

// A throwing handler must not keep the others from their events; its error
// still reaches the console.
function call(handler, ...args) {
  if (typeof handler !== "function") return;
  try {
    handler(...args);
  } catch (e) {
    setTimeout(() => {
      throw e;
    });
  }
}

/** What a tab delivered, to drop what a takeover replays. Ids are told
 * apart by identity only, never compared as numbers: an app's ids
 * (`Event::id`) need not increase nor be above the hub's (a stream starts
 * at the hub's id, made of the clock; an app's row id "42" is below it),
 * and ids need not increase across a restart either. A replay after a
 * takeover is short (what the next leader had not read yet), well within
 * what is remembered. */
class Seen {
  last;
  #recent = new Set();
  #reset;

  first(id) {
    if (id === "") return true; // no id: nothing to tell a repeat by
    if (this.#recent.has(id)) return false;
    this.#recent.add(id);
    if (this.#recent.size > RECENT) this.#recent.delete(this.#recent.values().next().value);
    this.last = id;
    return true;
  }

  /** Where a stream starts (or goes on after a change): a point this tab
   * already passed (a replay's start) keeps its own. */
  at(id) {
    if (!this.#recent.has(id)) this.last = id;
  }

  /** The history no longer covered the gap: ids start over after `id`.
   * False when this reset was already told (relayed twice). */
  reset(id) {
    if (this.#reset === id) return false;
    this.#reset = this.last = id;
    this.#recent.clear();
    return true;
  }
}

/** The way from a tab to the connection: a SharedWorker, else an elected
 * tab, else its own. Each sends `topics` (null: no subscription) and
 * `reconnect`, and hands the connection's messages to `hub.receive`; the
 * connection asks `hub.token` (the tab's getToken) for a token. */
function link(s, worker, hub) {
  const key =
    "tower-sse " +
    JSON.stringify([s.transport, s.stream, s.websocket, s.topicParam, s.credentials, s.tokenIn, s.tokenParam, s.tokens]);
  if (s.share && worker && s.worker && typeof SharedWorker === "function") {
    try {
      return workerLink(s, key, hub);
    } catch {
      // Not allowed here (a sandboxed frame, say): the next way.
    }
  }
  if (s.share && typeof BroadcastChannel === "function" && globalThis.navigator?.locks) {
    return electedLink(s, key, hub);
  }
  const connection = new Connection(s, hub.last(), hub.receive, hub.token);
  return {
    role: "tab",
    send: (m) => connection.handle(m),
    close: () => connection.close(),
  };
}

function workerLink(s, key, hub) {
  const worker = new SharedWorker(s.worker, { type: "module", name: key });
  const port = worker.port;
  worker.onerror = hub.failed;
  port.onmessage = ({ data }) => {
    if (data.type !== "token?") return hub.receive(data);
    // The worker's connection needs a token: this tab's getToken answers.
    const answer = (m) => port.postMessage({ type: "token", n: data.n, ...m });
    hub.token(data.reason).then(
      (token) => answer({ token }),
      (e) => answer({ error: String(e?.message ?? e) }),
    );
  };
  port.start();
  port.postMessage({ type: "hello", settings: s });
  return {
    role: "worker",
    send: (m) => port.postMessage(m),
    close() {
      worker.onerror = null;
      port.postMessage({ type: "bye" });
      port.close();
    },
  };
}

// In the SharedWorker: one connection for the topics of every tab.
function serveTabs() {
  const tabs = new Map(); // port → its topics (null: no subscription), oldest first
  let connection = null;
  const broadcast = (m) => tabs.forEach((_, port) => port.postMessage(m));
  const asking = new Map(); // n → { port, answer(m) } of a token asked of a tab
  let asked = 0;
  // A token from a tab: the newest first (likeliest in front, signed in
  // lately), the next when one has gone or does not answer in time. A tab
  // whose getToken failed is the answer: the failure is the app's.
  const token = async (reason) => {
    const tried = new Set();
    for (;;) {
      const port = [...tabs.keys()].reverse().find((p) => !tried.has(p));
      if (!port) throw new Error("no open tab answered for a token");
      tried.add(port);
      const n = ++asked;
      const m = await new Promise((answer) => {
        const timer = setTimeout(() => answer({ silent: true }), TAB_TIMEOUT);
        asking.set(n, { port, answer: (m) => (clearTimeout(timer), answer(m)) });
        port.postMessage({ type: "token?", n, reason });
      });
      asking.delete(n);
      if (m.silent) continue;
      if (m.error != null) throw new Error(m.error);
      return m.token ?? null;
    }
  };
  globalThis.onconnect = ({ ports: [port] }) => {
    port.onmessage = ({ data: m }) => {
      if (m.type === "hello") {
        connection ??= new Connection(m.settings, undefined, broadcast, m.settings.tokens ? token : null);
        tabs.set(port, null);
        port.postMessage({ type: "state", state: connection.state });
        return;
      }
      if (m.type === "token") return asking.get(m.n)?.answer(m);
      if (m.type === "bye") {
        tabs.delete(port);
        asking.forEach((a) => a.port === port && a.answer({ silent: true }));
      }
      if (m.type === "topics") tabs.set(port, m.topics);
      connection?.handle(m.type === "reconnect" ? m : { type: "topics", topics: union(tabs.values()) });
    };
    port.start();
  };
}

function electedLink(s, key, hub) {
  const me = Math.random().toString(36).slice(2) + Date.now().toString(36);
  const channel = new BroadcastChannel(key);
  // Every tab keeps every tab's topics, so whichever leads next connects
  // for all of them at once (a topic added later would miss what its
  // subscribers were owed).
  const tabs = new Map();
  const abort = new AbortController();
  let connection = null;
  let release = null;
  const post = (m) => channel.postMessage(m);
  const update = () => connection?.handle({ type: "topics", topics: union(tabs.values()) });
  channel.onmessage = ({ data: m }) => {
    switch (m.type) {
      case "topics":
        tabs.set(m.tab, m.topics);
        update();
        if (connection) {
          // A tab that just came starts where the connection is.
          if (connection.lastId) post({ type: "at", id: connection.lastId, for: m.tab });
          post({ type: "state", state: connection.state, for: m.tab });
        }
        break;
      case "bye":
        tabs.delete(m.tab);
        update();
        break;
      case "leader":
        post({ type: "topics", tab: me, topics: tabs.get(me) ?? null });
        break;
      case "reconnect":
        connection?.handle(m);
        break;
      default:
        // From the leader, also the last ones of a leader that has gone:
        // Seen drops what the next one replays.
        if (!m.for || m.for === me) hub.receive(m);
    }
  };
  navigator.locks
    .request(key, { signal: abort.signal }, () => {
      // Granted as the tab closed the hub (too late to abort): let it go.
      if (abort.signal.aborted) return;
      connection = new Connection(
        s,
        hub.last(),
        (m) => {
          hub.receive(m);
          post(m);
        },
        hub.token,
      );
      post({ type: "leader", tab: me });
      update();
      // Held until this tab closes the hub or goes away.
      return new Promise((resolve) => (release = resolve));
    })
    .catch(() => {}); // aborted: closed before its turn
  return {
    get role() {
      return connection ? "leader" : "follower";
    },
    send(m) {
      if (m.type === "topics") {
        tabs.set(me, m.topics);
        update();
        post({ type: "topics", tab: me, topics: m.topics });
      } else if (connection) {
        connection.handle(m);
      } else {
        post(m);
      }
    },
    close() {
      post({ type: "bye", tab: me });
      abort.abort();
      connection?.close();
      release?.();
      channel.close();
    },
  };
}

/** The topics of all tabs, or null when none subscribes. */
function union(lists) {
  let topics = null;
  for (const list of lists) {
    if (!list) continue;
    topics ??= new Set();
    list.forEach((t) => topics.add(t));
  }
  return topics;
}

const backoff = (base, failures) =>
  Math.min(MAX_RETRY, Math.max(base, MIN_RETRY) * 2 ** failures) * (0.5 + Math.random() / 2);

/** Seconds from a `Retry-After` header (a number or an HTTP date). */
function retryAfter(value) {
  if (value == null) return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, (at - Date.now()) / 1000);
}

/** The connection itself, wherever it lives: it follows `topics`, resumes
 * after `lastId`, and emits `event`, `reset`, `at` (where a stream starts),
 * `state` and `error` messages. With `token` (a tab's getToken, wrapped),
 * each request carries a token asked for just before it. */
class Connection {
  state = "connecting";
  lastId;
  #s;
  #emit;
  #topics = null; // Set; null: nobody subscribes, so no connection
  #key = null;
  // Topics asked of the server on this connection: their events go to the
  // subscriptions that follow them; others (the default topic, topics the
  // server adds, as a private one) go to every subscription.
  #asked = new Set();
  #following = new Set(); // a WebSocket session's topics now
  #retry = FIRST_RETRY;
  #failures = 0; // in a row: refused, unreachable, or ended at once
  #liveAt = 0; // when this run's stream went live (0: it is not)
  #delivered = false; // this run's stream delivered an event
  #run = 0; // bumped to stop what a run started
  #timer;
  #waiting = false; // for the timer: a change of topics waits too (Retry-After)
  #abort;
  #ws;
  #closed = false;
  #token; // (reason) => Promise<string | null>; null: no tokens
  #reason = "connect"; // why the next token is asked: "connect", "refused", "expired"
  #exp; // the last token's expiry (s), when it is a JSON Web Token
  #refused = 0; // tokens refused in a row

  constructor(s, lastId, emit, token = null) {
    this.#s = s;
    this.lastId = lastId;
    this.#emit = emit;
    this.#token = token;
    emit({ type: "state", state: this.state });
  }

  handle(m) {
    if (m.type === "reconnect") {
      if (this.#topics) this.#start();
      return;
    }
    const topics = m.topics && new Set(m.topics);
    const key = topics && JSON.stringify([...topics].sort());
    if (key === this.#key) return;
    [this.#topics, this.#key] = [topics, key];
    if (!topics) this.#stop();
    else if (this.#ws?.readyState === 1) this.#resubscribe(); // OPEN
    else if (!this.#waiting) this.#start();
  }

  close() {
    this.#closed = true;
    this.#stop();
  }

  #stop() {
    this.#run++;
    this.#waiting = false;
    clearTimeout(this.#timer);
    this.#abort?.abort();
    if (this.#ws) {
      this.#ws.onclose = null;
      this.#ws.close();
      this.#ws = null;
    }
  }

  #start() {
    this.#settle();
    this.#stop();
    if (this.#closed || !this.#topics) return;
    // Changing topics while live is no news to the subscribers.
    if (this.state !== "live") this.#setState("connecting");
    if (this.#s.transport === "websocket") this.#websocket(this.#run);
    else this.#sse(this.#run);
  }

  #setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.#emit({ type: "state", state });
  }

  #url(base) {
    const url = new URL(base);
    this.#topics.forEach((t) => url.searchParams.append(this.#s.topicParam, t));
    return url;
  }

  // The token for the next request (null: none); undefined when the run
  // was stopped meanwhile, or getToken failed (told, and tried again later).
  async #credential(run) {
    if (!this.#token) return null;
    let token;
    try {
      token = await this.#token(this.#reason);
    } catch (e) {
      if (run === this.#run) this.#failed(run, { kind: "token", message: `getToken failed: ${e?.message ?? e}` });
      return undefined;
    }
    if (run !== this.#run) return undefined;
    this.#reason = "connect";
    this.#exp = expiry(token);
    return token;
  }

  #expired() {
    return this.#exp !== undefined && Date.now() / 1000 >= this.#exp - EXPIRY_SKEW;
  }

  async #sse(run) {
    const token = await this.#credential(run);
    if (token === undefined) return;
    const url = this.#url(this.#s.stream);
    // (Unless topics are named `with` there: then events go to everyone.)
    if (this.#s.topicParam !== "with") url.searchParams.set("with", "topic");
    const headers = { accept: "text/event-stream" };
    if (this.lastId) {
      // The header EventSource sends; across origins the query parameter,
      // which needs no CORS preflight.
      if (url.origin === globalThis.location?.origin) headers["last-event-id"] = this.lastId;
      else url.searchParams.set("lastEventId", this.lastId);
    }
    if (token != null) {
      // A header across origins needs the server's CORS to allow it (a
      // preflight); the query parameter does not.
      if (this.#s.tokenIn === "query") url.searchParams.set(this.#s.tokenParam, token);
      else headers.authorization = `Bearer ${token}`;
    }
    const asked = new Set(this.#topics);
    const abort = (this.#abort = new AbortController());
    try {
      const response = await fetch(url, {
        headers,
        signal: abort.signal,
        cache: "no-store",
        credentials: this.#s.credentials,
      });
      if (run !== this.#run) return;
      const type = response.headers.get("content-type") ?? "";
      if (response.status !== 200 || !type.startsWith("text/event-stream")) {
        const text = (await response.text().catch(() => "")).trim().slice(0, 300);
        if (run !== this.#run) return;
        const message = `${response.status} ${response.statusText}${text ? ": " + text : ""}`;
        return this.#failed(run, {
          kind: "http",
          message,
          status: response.status,
          retryAfter: retryAfter(response.headers.get("retry-after")),
        });
      }
      this.#asked = asked;
      this.#wentLive();
      // The server's reset is the first event of a stream, with no topic
      // and no data; publishers cannot name an event `reset`, and one that
      // came another way (written into an engine) is an ordinary event.
      let first = true;
      const genuine = (e) => first && e.event === RESET && e.topic == null && e.data === "";
      const parser = new Parser({
        event: (e) => {
          if (run !== this.#run) return;
          if (genuine(e)) this.#reset(e.id);
          else this.#dispatch(e);
          first = false;
        },
        id: (id) => run === this.#run && this.#at(id),
        retry: (ms) => (this.#retry = ms),
      }, this.lastId);
      const reader = response.body.getReader();
      // The parser drops a byte order mark itself, as the format says.
      const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
      for (;;) {
        const { done, value } = await reader.read();
        if (run !== this.#run) return;
        if (done) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
      this.#ended(run);
    } catch (e) {
      if (run === this.#run) this.#failed(run, { kind: "network", message: `network error: ${e.message}` });
    }
  }

  async #websocket(run) {
    const token = await this.#credential(run);
    if (token === undefined) return;
    const url = this.#url(this.#s.websocket);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (this.lastId) url.searchParams.set("lastEventId", this.lastId);
    // A browser's WebSocket cannot send a header: the token goes in the query.
    if (token != null) url.searchParams.set(this.#s.tokenParam, token);
    const ws = (this.#ws = new WebSocket(url));
    this.#asked = new Set(this.#topics);
    this.#following = new Set(this.#topics);
    let live = false;
    ws.onmessage = ({ data }) => {
      if (run !== this.#run) return;
      const m = JSON.parse(data);
      if (m.type === "event") this.#dispatch({ id: m.id, event: m.event, data: m.data, topic: m.topic || null });
      else if (m.type === RESET) this.#reset(m.after);
      else if (m.type === "subscribed") {
        this.#at(m.after);
        if (!live) {
          live = true;
          this.#wentLive();
        }
      }
    };
    ws.onclose = ({ code, reason }) => {
      if (run !== this.#run) return;
      this.#ws = null;
      if (!live) {
        // A refused handshake: the browser does not say why (a status, a
        // topic not allowed, a limit), only that it closed.
        const error = { kind: "websocket", code, message: `the WebSocket closed before it was live (${code})` };
        return this.#failed(run, error, true);
      }
      // The token expired (4001): come back with a fresh one.
      if (code === 4001) return this.#ended(run, true);
      // Going away, restarting, or this session fell behind: come back.
      if ([1000, 1001, 1012, 1013].includes(code)) return this.#ended(run);
      this.#failed(run, { kind: "websocket", code, message: `the WebSocket closed: ${code}${reason ? " " + reason : ""}` });
    };
  }

  // The session changes topics and goes on right after what it sent.
  #resubscribe() {
    const drop = [...this.#following].filter((t) => !this.#topics.has(t));
    const add = [...this.#topics].filter((t) => !this.#following.has(t));
    if (drop.length) this.#ws.send(JSON.stringify({ type: "unsubscribe", topics: drop }));
    if (add.length) this.#ws.send(JSON.stringify({ type: "subscribe", topics: add }));
    // A dropped topic's last events may still come: they still go by topic.
    add.forEach((t) => this.#asked.add(t));
    this.#following = new Set(this.#topics);
  }

  #dispatch({ id, event, data, topic }) {
    this.#delivered = true;
    this.lastId = id;
    const all = topic == null || !this.#asked.has(topic);
    this.#emit({ type: "event", id, event, data, topic, all });
  }

  #reset(id) {
    this.#delivered = true;
    this.lastId = id;
    this.#emit({ type: RESET, id });
  }

  #at(id) {
    this.lastId = id;
    this.#emit({ type: "at", id });
  }

  #wentLive() {
    this.#refused = 0;
    this.#liveAt = Date.now();
    this.#delivered = false;
    this.#setState("live");
  }

  // A stream that was live, and delivered or lasted, ends the failures in
  // a row; one that ended at once is one more.
  #settle() {
    const well = this.#liveAt > 0 && (this.#delivered || Date.now() - this.#liveAt >= STABLE);
    if (well) this.#failures = 0;
    this.#liveAt = 0;
    return well;
  }

  // The server ended a live stream (the hub closed, the subscriber fell
  // behind, its user signed out): back after the server's retry delay, or
  // later when it ended at once (backing off as after a refusal). At the
  // token's expiry (the server ends the stream then), back at once with a
  // fresh token, still "live" to the subscribers: nothing is missed, the
  // next stream resumes after the last id.
  #ended(run, expired = this.#token != null && this.#expired()) {
    if (expired) this.#reason = "expired";
    if (!this.#settle()) {
      return this.#failed(run, { kind: "ended", message: "the stream ended before it delivered anything" });
    }
    if (expired) return this.#later(run, backoff(MIN_RETRY, 0));
    this.#setState("down");
    this.#later(run, backoff(this.#retry, 0));
  }

  // Refused or unreachable: back off, exponentially and with jitter, or
  // when the server's Retry-After says. A refused token (401; over
  // WebSocket, whose browser API hides the status, any failed handshake)
  // makes the next token asked for fresh; the first refusal in a row is
  // tried again at once (the token expired on its way, a key rotated), the
  // next ones back off like any failure.
  #failed(run, error, refusal = error.status === 401) {
    this.#settle();
    this.#failures++;
    const refused = this.#token != null && refusal;
    if (refused) {
      this.#reason = this.#expired() ? "expired" : "refused";
      this.#refused++;
    }
    const delay =
      error.retryAfter > 0
        ? error.retryAfter * 1000 * (1 + Math.random() / 5)
        : refused && this.#refused === 1
          ? backoff(MIN_RETRY, 0)
          : backoff(this.#retry, this.#failures);
    error.retryIn = Math.round(delay);
    this.#setState("down");
    this.#emit({ type: "error", error });
    this.#later(run, delay);
  }

  #later(run, delay) {
    clearTimeout(this.#timer);
    this.#waiting = true;
    this.#timer = setTimeout(() => run === this.#run && this.#start(), Math.min(delay, LONGEST_TIMER));
  }
}

/** The `text/event-stream` format, as the WHATWG HTML standard reads it:
 * a leading byte order mark dropped, lines ended by CR, LF or CRLF (also
 * split across chunks), comments, `data` lines joined by LF, an `id` with
 * NUL ignored, `retry` only as digits, unknown fields ignored (but
 * `topic`, which tower-sse sends with `with=topic`). Handlers: `event(e)`
 * with `{ id, event, data, topic }`, `id(lastEventId)` when a block without
 * data moves it, `retry(ms)`. Exported for tests. */
export class Parser {
  lastEventId = "";
  #handlers;
  #rest = "";
  #started = false;
  #afterCR = false; // the last chunk ended with CR: a LF first is its pair
  #id = "";
  #event = "";
  #data = "";
  #topic = null;

  /** `lastEventId`: where the previous stream left it, as an
   * `EventSource` keeps it across reconnections. */
  constructor(handlers, lastEventId = "") {
    this.#handlers = handlers;
    this.lastEventId = this.#id = lastEventId ?? "";
  }

  push(text) {
    if (!text) return; // (a decoder holding half a character gives "")
    if (!this.#started) {
      this.#started = true;
      if (text[0] === "\uFEFF") text = text.slice(1);
    }
    let rest = this.#rest + text;
    let start = 0;
    if (this.#afterCR && rest[0] === "\n") start = 1;
    this.#afterCR = false;
    const lineEnd = /\r\n|\r|\n/g;
    lineEnd.lastIndex = start;
    for (let m; (m = lineEnd.exec(rest)); start = lineEnd.lastIndex) {
      this.#line(rest.slice(start, m.index));
      if (m[0] === "\r" && lineEnd.lastIndex === rest.length) this.#afterCR = true;
    }
    this.#rest = rest.slice(start);
  }

  #line(line) {
    if (line === "") return this.#dispatch();
    if (line[0] === ":") return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "data") this.#data += value + "\n";
    else if (field === "event") this.#event = value;
    else if (field === "id" && !value.includes("\0")) this.#id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.#handlers.retry?.(Number(value));
    else if (field === "topic") this.#topic = value;
  }

  #dispatch() {
    const moved = this.lastEventId !== this.#id;
    this.lastEventId = this.#id;
    const [event, data, topic] = [this.#event, this.#data, this.#topic];
    [this.#event, this.#data, this.#topic] = ["", "", null];
    if (data === "") {
      if (moved) this.#handlers.id?.(this.lastEventId);
      return;
    }
    this.#handlers.event?.({ id: this.lastEventId, event: event || "message", data: data.slice(0, -1), topic });
  }
}

if (typeof SharedWorkerGlobalScope === "function" && globalThis instanceof SharedWorkerGlobalScope) serveTabs();
