//! Property: for any interleaving of publishing, reading, disconnecting and
//! reconnecting with `Last-Event-ID` (as a browser does), every subscriber
//! receives exactly the ids published to its topics, in order — also when
//! it is cut off for lagging.

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use proptest::prelude::*;
use std::convert::Infallible;
use tower::{service_fn, ServiceExt};
use tower_layer::Layer;
use tower_sse::{Event, Hub, SseBody, SseLayer};

const TOPICS: [&str; 3] = ["a", "b", "c"];

/// Which topics each subscriber follows (the default topic always).
const FOLLOWS: [&[&str]; 3] = [&["a"], &["a", "b"], &[]];

#[derive(Clone, Debug)]
enum Op {
    /// Publish to `TOPICS[i]`, or the default topic for 3.
    Publish(usize),
    /// Several events at once to one topic, faster than anyone reads.
    Burst(usize, usize),
    /// Read what the subscriber's stream has ready.
    Read(usize),
    /// Drop the connection and reconnect with the last id.
    Reconnect(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize).prop_map(Op::Publish),
        1 => (0..4usize, 2..12usize).prop_map(|(t, n)| Op::Burst(t, n)),
        4 => (0..3usize).prop_map(Op::Read),
        1 => (0..3usize).prop_map(Op::Reconnect),
    ]
}

/// A browser's view of one stream: parses blocks, tracks `lastEventId`.
struct Client {
    body: Option<SseBody<Empty<Bytes>>>,
    pending: Vec<u8>,
    id_buffer: Option<String>,
    last_event_id: Option<String>,
    /// The id the very first stream started after.
    start: Option<u64>,
    received: Vec<u64>,
}

impl Client {
    fn new() -> Self {
        Client {
            body: None,
            pending: Vec::new(),
            id_buffer: None,
            last_event_id: None,
            start: None,
            received: Vec::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        let mut data = false;
        let mut name = None;
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            if line.is_empty() {
                self.last_event_id = self.id_buffer.clone();
                let id = self.last_event_id.clone().unwrap();
                if data {
                    assert_ne!(
                        name.as_deref(),
                        Some("reset"),
                        "no reset: history covers all"
                    );
                    self.received.push(id.parse().unwrap());
                } else {
                    self.start.get_or_insert(id.parse().unwrap());
                }
                data = false;
                name = None;
            } else if let Some(v) = line.strip_prefix(b"id: ") {
                self.id_buffer = Some(String::from_utf8(v.to_vec()).unwrap());
            } else if let Some(v) = line.strip_prefix(b"event: ") {
                name = Some(String::from_utf8(v.to_vec()).unwrap());
            } else if line.starts_with(b"data") {
                data = true;
            }
        }
        assert!(self.pending.is_empty(), "frames hold whole events");
    }
}

fn stream_request(topics: &[&str], last_event_id: Option<&str>) -> Request<()> {
    let query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
    let mut request = Request::get(format!("/events?{}", query.join("&")));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.body(()).unwrap()
}

async fn connect(layer: &SseLayer, follows: &[&str], client: &mut Client) {
    let service = layer.layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let request = stream_request(follows, client.last_event_id.as_deref());
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    client.body = Some(response.into_body());
}

/// Reads every frame ready now; reconnects (once) if the stream ended.
async fn read(layer: &SseLayer, follows: &[&str], client: &mut Client) {
    if client.body.is_none() {
        connect(layer, follows, client).await;
    }
    while let Some(frame) = client.body.as_mut().unwrap().frame().now_or_never() {
        match frame {
            Some(frame) => client.feed(&frame.unwrap().into_data().unwrap()),
            None => {
                client.body = None;
                return;
            }
        }
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let layer =
            SseLayer::new("/events").hub(&Hub::builder().max_lag(3).history(100_000).build());
        let publisher = layer.publisher();
        let mut published: Vec<(u64, Option<&str>)> = Vec::new();
        let mut clients: Vec<Client> = (0..3).map(|_| Client::new()).collect();
        for (i, client) in clients.iter_mut().enumerate() {
            connect(&layer, FOLLOWS[i], client).await;
        }
        let mut publish = |topic: usize| {
            let event = Event::default().data("x");
            let (id, topic) = match TOPICS.get(topic) {
                Some(t) => (publisher.publish_to(t, event), Some(*t)),
                None => (publisher.publish(event), None),
            };
            published.push((id.unwrap().id().unwrap().as_u64(), topic));
        };
        for op in ops {
            match op {
                Op::Publish(t) => publish(t),
                Op::Burst(t, n) => (0..n).for_each(|_| publish(t)),
                Op::Read(c) => read(&layer, FOLLOWS[c], &mut clients[c]).await,
                Op::Reconnect(c) => clients[c].body = None,
            }
        }
        for (c, client) in clients.iter_mut().enumerate() {
            // Read to the end, reconnecting after every cut-off.
            let follows = FOLLOWS[c];
            loop {
                read(&layer, follows, client).await;
                if client.body.is_some() {
                    break;
                }
            }
            let start = client.start.unwrap();
            let expected: Vec<u64> = published
                .iter()
                .filter(|(id, topic)| *id > start && topic.is_none_or(|t| follows.contains(&t)))
                .map(|(id, _)| *id)
                .collect();
            prop_assert_eq!(&client.received, &expected, "subscriber {}", c);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn every_subscriber_gets_exactly_its_topics_events_in_order(ops in prop::collection::vec(op(), 0..120)) {
        run(ops)?;
    }
}
