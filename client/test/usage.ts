// Typed use of the package, checked by `tsc -p test` (npm test): the
// declarations describe the API as apps call it. Never run.
import { connect, Parser, type ConnectionError, type Hub, type StreamEvent, type TokenRequest } from "tower-sse";

let cached: string | null = null;
async function getToken({ reason }: TokenRequest): Promise<string | null> {
  if (reason === "connect" && cached) return cached;
  const answer = await fetch("/token", { method: "POST", credentials: "include" });
  cached = answer.ok ? await answer.text() : null;
  return cached;
}

const hub: Hub = connect({ url: "/events", getToken, credentials: "include" });
const sub = hub.subscribe(["room/general"], {
  message(e: StreamEvent) {
    const text: string = e.data;
    const topic: string | null = e.topic;
    console.log(text, topic, e.id, e.event);
  },
  reset({ id, restored }) {
    console.log(id, restored === true);
  },
  state(s) {
    if (s === "live" || s === "down" || s === "connecting") console.log(s);
  },
  error(err: ConnectionError) {
    if (err.kind === "http" && err.status === 401) console.log(err.message, err.retryIn);
  },
});
const topics: readonly string[] = sub.topics;
sub.close();
hub.subscribe(new Set(["a", "b"]), (e) => console.log(e.data));
hub.reconnect();
const role: "worker" | "leader" | "follower" | "tab" | "closed" = hub.role;
console.log(topics, role, hub.state, hub.transport);
hub.close();

connect({ transport: "websocket", websocket: new URL("/ws", location.href), getToken: () => "static" });
connect({ tokenIn: "query", tokenParam: "access_token", withCredentials: true, share: false });
connect({ worker: "/events.js" });
connect({ worker: false, getToken: () => undefined });

const parser = new Parser({ event: (e) => console.log(e.data), retry: (ms: number) => console.log(ms) }, "41");
parser.push("data: x\n\n");
console.log(parser.lastEventId);

// @ts-expect-error: transport is "sse" or "websocket"
connect({ transport: "eventsource" });
// @ts-expect-error: tokenIn is "header" or "query"
connect({ tokenIn: "cookie" });
// @ts-expect-error: getToken answers a string or null
connect({ getToken: () => 42 });
