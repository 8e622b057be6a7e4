// Types of tower-sse.js, the browser client of tower-sse (the npm package
// `tower-sse`, and the module a tower-sse layer serves).

/** How the client reaches the server: the event stream (read with `fetch`)
 * or the layer's WebSocket. */
export type Transport = "sse" | "websocket";

/** The connection's state: connecting (or reconnecting), live, or down
 * (waiting to retry; the `error` handler said why). */
export type State = "connecting" | "live" | "down";

/** How this tab gets its events: a SharedWorker holds the connection
 * (`worker`); this tab holds it for the others (`leader`) or reads it from
 * the one that does (`follower`); this tab alone (`tab`); or `closed`. */
export type Role = "worker" | "leader" | "follower" | "tab" | "closed";

/** Why a token is asked for: before a connection (`connect`); after the
 * server refused the last one (`refused`: a `401`, or over WebSocket a
 * failed handshake); or because the last one expired (`expired`: a JSON
 * Web Token whose `exp` has passed, which the server ended the stream at
 * or refused). On `refused` and `expired`, do not answer a cached token:
 * get a fresh one. */
export interface TokenRequest {
  reason: "connect" | "refused" | "expired";
}

/** Answers a token (a JSON Web Token, or any bearer token the server
 * reads), or `null` / `undefined` for none. May be async; must answer
 * within 10 s. */
export type GetToken = (request: TokenRequest) => string | null | undefined | PromiseLike<string | null | undefined>;

export interface ConnectOptions {
  /** `"sse"` (default) or `"websocket"`. */
  transport?: Transport;
  /** The stream's URL, relative to the page. Default: the layer's stream
   * path when the layer served this module; `/events` from npm. */
  url?: string | URL;
  /** The WebSocket's URL (`http:`/`https:`, relative to the page). Default:
   * the layer's WebSocket path when the layer served this module and has
   * one; none from npm. */
  websocket?: string | URL;
  /** The query parameter that names topics. Default: the layer's; `topic`. */
  topicParam?: string;
  /** Share one connection between this browser's tabs (default `true`);
   * `false`: this tab has its own. */
  share?: boolean;
  /** The script a SharedWorker runs: this module's own URL by default.
   * Bundled, the module's URL is the bundle's: give the URL of this file
   * as served (the layer's `client_script` path, of the same version), or
   * `false` to share through an elected tab (Web Locks) instead. */
  worker?: string | URL | false;
  /** Called before each connection, and again after a `401` or at the
   * token's expiry; its token goes with the request. With a SharedWorker,
   * the worker asks the newest tab (the next when it does not answer in
   * 12 s); with an elected tab, that tab's own. Give every tab the same. */
  getToken?: GetToken;
  /** Where the token goes over SSE: `Authorization: Bearer` (`"header"`,
   * default; across origins the server's CORS must allow that header) or
   * the query parameter `tokenParam` (`"query"`, as for `EventSource`).
   * Over WebSocket it always goes in the query. */
  tokenIn?: "header" | "query";
  /** The query parameter of a token. Default: `token`. */
  tokenParam?: string;
  /** `fetch`'s credentials for the stream (cookies across origins need
   * `"include"` and the server's CORS to allow them). Default:
   * `"same-origin"`. */
  credentials?: "omit" | "same-origin" | "include";
  /** `true`: as `credentials: "include"` (`EventSource`'s name for it). */
  withCredentials?: boolean;
}

/** An event of the stream. */
export interface StreamEvent {
  /** Its id (`""` for none). */
  id: string;
  /** Its name: `message` unless the server named it. */
  event: string;
  data: string;
  /** Its topic; `null` for the default topic. */
  topic: string | null;
}

/** Events were missed (the server's history no longer covered the gap, or
 * the page came back from the back/forward cache): reload the state. */
export interface ResetInfo {
  /** The id the stream goes on after. */
  id: string | null;
  /** The page was restored from the back/forward cache. */
  restored?: true;
}

/** Why the connection is down, and when it retries. */
export interface ConnectionError {
  /** `http`: the server answered another status (`status`); `network`: no
   * answer; `websocket`: the WebSocket closed (`code`); `ended`: a stream
   * ended before it delivered anything; `token`: getToken threw, answered
   * something else than a string, or took over 10 s. */
  kind: "http" | "network" | "websocket" | "ended" | "token";
  message: string;
  status?: number;
  code?: number;
  /** The server's `Retry-After`, in seconds. */
  retryAfter?: number;
  /** When it tries again, in ms. */
  retryIn: number;
}

export interface Handlers {
  /** Each event of the subscription's topics, and of the default topic and
   * of the topics the server follows for the user without being asked. */
  message?(event: StreamEvent): void;
  reset?(info: ResetInfo): void;
  state?(state: State): void;
  error?(error: ConnectionError): void;
}

export interface Subscription {
  readonly topics: readonly string[];
  close(): void;
}

export interface Hub {
  readonly state: State;
  readonly transport: Transport;
  readonly role: Role;
  /** Follows `topics` (and the default topic, which every stream follows). */
  subscribe(topics: Iterable<string>, handlers?: Handlers | ((event: StreamEvent) => void)): Subscription;
  /** Connects again now (after signing in, say), with a new token, resuming. */
  reconnect(): void;
  close(): void;
}

/** Connects to the stream, or joins this browser's connection to it. */
export function connect(options?: ConnectOptions): Hub;

export interface ParserHandlers {
  event?(event: StreamEvent): void;
  /** A block without data moved the last event id. */
  id?(lastEventId: string): void;
  retry?(ms: number): void;
}

/** The `text/event-stream` format as the WHATWG HTML standard reads it. */
export class Parser {
  constructor(handlers: ParserHandlers, lastEventId?: string);
  lastEventId: string;
  /** Feeds decoded text; events are dispatched as their blocks end. */
  push(text: string): void;
}
