//! The event encoder against an independent WHATWG parser
//! (`eventsource-stream`): a name or id with a line break (or an id with NUL)
//! is an error; anything else comes back with the same data (line breaks
//! normalized to `\n`), name and id.
#![no_main]

use futures_util::{FutureExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use tower_sse::Event;

fuzz_target!(|input: &[u8]| {
    // data \0 name \0 id
    let text = String::from_utf8_lossy(input);
    let mut parts = text.splitn(3, '\0');
    let data = parts.next().unwrap_or("");
    let name = parts.next().unwrap_or("");
    let id = parts.next().unwrap_or("");
    let encoded = Event::default().event(name).id(id).data(data).encode();
    let bad_name = name.contains(['\r', '\n']);
    let bad_id = id.contains(['\r', '\n', '\0']);
    let bytes = match encoded {
        Err(_) => {
            assert!(bad_name || bad_id, "refused a valid event");
            return;
        }
        Ok(bytes) => {
            assert!(!bad_name && !bad_id, "accepted an invalid event");
            bytes
        }
    };
    use eventsource_stream::Eventsource;
    let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
    let events: Vec<_> = stream
        .eventsource()
        .collect::<Vec<_>>()
        .now_or_never()
        .unwrap();
    assert_eq!(events.len(), 1, "one event");
    let event = events.into_iter().next().unwrap().unwrap();
    assert_eq!(event.data, data.replace("\r\n", "\n").replace('\r', "\n"));
    assert_eq!(event.event, if name.is_empty() { "message" } else { name });
    assert_eq!(event.id, id);
});
