//! History per topic, over real TCP with independent clients: a flood on
//! one topic never costs a quiet topic its resume; a state topic gives every
//! stream its current value first (SSE, WebSocket, `Subscribe`); history
//! reads; rules checked when the hub is built.

mod common;

use axum::Router;
use common::{id, next, ws_open, Server, Subscriber};
use futures_util::StreamExt;
use std::time::Duration;
use tower_sse::{
    BuildError, Event, EventId, HistoryQuery, HistoryRule, Hub, SseLayer, MAX_HISTORY_READ,
    RESET_EVENT,
};

async fn server(hub: &Hub) -> Server {
    let layer = SseLayer::new("/events").hub(hub).websocket("/ws");
    let publisher = layer.publisher();
    Server::start(Router::new().layer(layer), publisher).await
}

fn data(text: impl Into<String>) -> Event {
    Event::default().data(text.into())
}

#[tokio::test]
async fn a_flood_on_a_busy_topic_nobody_follows_never_costs_a_quiet_topic_its_resume() {
    // The defaults: each topic keeps 1,024 events, the hub 32 MiB.
    let hub = Hub::new();
    let server = server(&hub).await;
    let p = &server.publisher;
    let url = server.url("/events?topic=user/quiet");

    let mut client = Subscriber::connect(&url).await;
    let seen = id(p.publish_to("user/quiet", data("seen")));
    assert_eq!(client.next().await.unwrap().data, "seen");
    let last = client.last_event_id().unwrap();
    assert_eq!(last, seen.to_string());
    drop(client);

    let missed = id(p.publish_to("user/quiet", data("missed")));
    for i in 0..5_000 {
        p.publish_to("room/busy", data(format!("flood {i}")))
            .unwrap();
    }
    let (events, _) = p.history_size();
    assert_eq!(events, 1_024 + 2, "the busy topic keeps its own 1,024");

    let mut back = Subscriber::resume(&url, Some(&last)).await;
    let event = back.next().await.unwrap();
    assert_eq!(
        (event.event.as_str(), event.id, event.data.as_str()),
        ("message", missed.to_string(), "missed"),
        "the missed event, not a reset"
    );
    let live = id(p.publish_to("user/quiet", data("live")));
    assert_eq!(back.next().await.unwrap().id, live.to_string());
}

#[tokio::test]
async fn over_the_byte_budget_the_topic_holding_the_most_gives_first() {
    // Room for about 20 events of 1,000 bytes in all.
    let hub = Hub::builder().history_bytes(20 * 2_400).build();
    let server = server(&hub).await;
    let p = &server.publisher;
    let big = |i: usize| data(format!("{i:01000}"));
    let quiet: Vec<EventId> = (0..3)
        .map(|i| id(p.publish_to("user/quiet", big(i))))
        .collect();
    for i in 0..200 {
        p.publish_to("room/busy", big(i)).unwrap();
    }
    let (events, bytes) = p.history_size();
    assert!(bytes <= 20 * 2_400, "{bytes} bytes held");
    assert!(events > 3, "the busy topic keeps what is left: {events}");

    // A client that saw the first quiet event resumes without loss.
    let url = server.url("/events?topic=user/quiet");
    let mut back = Subscriber::resume(&url, Some(&quiet[0].to_string())).await;
    let got: Vec<String> = back.take(2).await.into_iter().map(|e| e.id).collect();
    assert_eq!(got, [quiet[1].to_string(), quiet[2].to_string()]);
    // One that saw an early busy event gets the reset.
    let url = server.url("/events?topic=room/busy");
    let mut reset = Subscriber::resume(&url, Some(&quiet[2].to_string())).await;
    assert_eq!(reset.next().await.unwrap().event, RESET_EVENT);
}

fn prices() -> Hub {
    Hub::builder()
        .history_rule("prices/", HistoryRule::latest())
        .history(2)
        .build()
}

#[tokio::test]
async fn a_state_topic_gives_every_new_stream_its_current_value_first() {
    let hub = prices();
    let server = server(&hub).await;
    let p = &server.publisher;
    for price in ["1.00", "1.01", "1.02"] {
        p.publish_to("prices/eur", data(price)).unwrap();
    }
    let newest = id(p.publish_to("other", data("newer, elsewhere")));

    // Raw bytes: the current value, then the id the stream starts after,
    // so a browser cut here resumes from where the stream began.
    let response = common::client()
        .get(server.url("/events?topic=prices/eur&topic=other"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let text = common::read_until(
        &mut body,
        format!("id: {newest}\n\n").as_bytes(),
        "the start",
    )
    .await;
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("data: 1.02\n"), "{text}");
    assert!(
        !text.contains("1.01") && !text.contains("elsewhere"),
        "{text}"
    );
    assert!(
        text.find("data: 1.02").unwrap() < text.rfind(&format!("id: {newest}\n\n")).unwrap(),
        "{text}"
    );

    // Then live, in order.
    let mut stream = Subscriber::connect(&server.url("/events?topic=prices/eur")).await;
    assert_eq!(stream.next().await.unwrap().data, "1.02");
    let live = id(p.publish_to("prices/eur", data("1.03")));
    let event = stream.next().await.unwrap();
    assert_eq!((event.id, event.data), (live.to_string(), "1.03".into()));

    // A resume from before what the topic keeps: the reset, then the value.
    let mut resumed = Subscriber::resume(&server.url("/events?topic=prices/eur"), Some("1")).await;
    assert_eq!(resumed.next().await.unwrap().event, RESET_EVENT);
    assert_eq!(resumed.next().await.unwrap().data, "1.03");
    // A resume from the value itself: nothing is sent again.
    let mut current = Subscriber::resume(
        &server.url("/events?topic=prices/eur"),
        Some(&live.to_string()),
    )
    .await;
    let after = id(p.publish_to("prices/eur", data("1.04")));
    assert_eq!(current.next().await.unwrap().id, after.to_string());
}

#[tokio::test]
async fn a_state_topic_gives_its_current_value_over_websocket_and_to_a_record_stream() {
    let hub = prices();
    let server = server(&hub).await;
    let p = &server.publisher;
    p.publish_to("prices/eur", data("1.00")).unwrap();
    let current = id(p.publish_to("prices/eur", data("1.01")));

    let mut ws = ws_open(&format!("ws://{}/ws?topic=prices/eur", server.addr), None).await;
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    let value = next(&mut ws).await;
    assert_eq!(
        (value["data"].as_str(), value["id"].as_str()),
        (Some("1.01"), Some(&*current.to_string()))
    );

    let mut records = p.subscribe().topic("prices/eur").records().await.unwrap();
    let record = common::within("the value", records.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((record.id(), record.data()), (current, "1.01"));
    let live = id(p.publish_to("prices/eur", data("1.02")));
    let record = common::within("a live one", records.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.id(), live);
    assert_eq!(next(&mut ws).await["data"], "1.02");
}

#[tokio::test]
async fn history_reads_give_the_newest_or_those_after_an_id_clipped_and_told() {
    let hub = Hub::builder().history(5).build();
    let p = hub.publisher();
    let ids: Vec<EventId> = (0..8)
        .map(|i| id(p.publish_to("orders/42", data(i.to_string()))))
        .collect();

    let page = p
        .history_of("orders/42", HistoryQuery::last(3))
        .await
        .unwrap();
    let got: Vec<&str> = page.events.iter().map(|e| e.data()).collect();
    assert_eq!(
        (got, page.clipped, page.reset),
        (vec!["5", "6", "7"], true, false)
    );

    let page = p
        .history_of("orders/42", HistoryQuery::since(ids[4].to_string()))
        .await
        .unwrap();
    let got: Vec<&str> = page.events.iter().map(|e| e.data()).collect();
    assert_eq!(
        (got, page.clipped, page.reset),
        (vec!["5", "6", "7"], false, false)
    );

    // Left the history already: from the oldest held, and told.
    let page = p
        .history_of("orders/42", HistoryQuery::since(ids[0].to_string()))
        .await
        .unwrap();
    assert_eq!((page.events.len(), page.reset), (5, true));
    // An id from the future, or one that is not an id: told too.
    for since in [u64::MAX.to_string(), "nonsense".into()] {
        let page = p
            .history_of("orders/42", HistoryQuery::since(since))
            .await
            .unwrap();
        assert!(page.reset);
    }
    // Past the cap: clipped, and said.
    let page = p
        .history_of("orders/42", HistoryQuery::last(MAX_HISTORY_READ + 1))
        .await
        .unwrap();
    assert_eq!((page.events.len(), page.clipped), (5, false));
    // A topic with nothing, and a bad topic.
    let page = p.history_of("nobody", HistoryQuery::last(3)).await.unwrap();
    assert!(page.events.is_empty() && !page.reset);
    assert!(p.history_of("a b", HistoryQuery::last(3)).await.is_err());
    // The default topic.
    let everyone = id(p.publish(data("all")));
    let page = p.history(HistoryQuery::last(1)).await.unwrap();
    assert_eq!(page.events[0].id(), everyone);
}

#[tokio::test]
async fn a_read_past_the_cap_is_clipped_and_says_so() {
    let hub = Hub::builder().history(MAX_HISTORY_READ + 10).build();
    let p = hub.publisher();
    for i in 0..MAX_HISTORY_READ + 10 {
        p.publish_to("log", data(i.to_string())).unwrap();
    }
    let page = p
        .history_of("log", HistoryQuery::last(MAX_HISTORY_READ + 10))
        .await
        .unwrap();
    assert_eq!((page.events.len(), page.clipped), (MAX_HISTORY_READ, true));
    assert_eq!(page.events[0].data(), "10", "the newest ones");
}

#[tokio::test(start_paused = true)]
async fn events_older_than_their_rule_leave_and_a_resume_there_is_a_reset() {
    let hub = Hub::builder()
        .history_rule(
            "chat/",
            HistoryRule::events(500).ttl(Duration::from_secs(60)),
        )
        .build();
    let p = hub.publisher();
    let old = id(p.publish_to("chat/a", data("old")));
    let kept = id(p.publish_to("notes", data("kept, no age limit")));
    tokio::time::advance(Duration::from_secs(61)).await;
    let page = p
        .history_of("chat/a", HistoryQuery::last(10))
        .await
        .unwrap();
    assert!(page.events.is_empty(), "aged out");
    let records = p
        .subscribe()
        .topic("chat/a")
        .after((old.as_u64() - 1).to_string())
        .records()
        .await
        .unwrap();
    assert!(records.is_reset());
    let page = p.history_of("notes", HistoryQuery::last(10)).await.unwrap();
    assert_eq!(page.events[0].id(), kept);
}

#[test]
fn rules_that_make_no_sense_are_refused_when_the_hub_is_built() {
    let refused = |builder: tower_sse::HubBuilder| builder.try_build().unwrap_err();
    assert_eq!(
        refused(Hub::builder().history_rule("", HistoryRule::latest())),
        BuildError::EmptyPrefix
    );
    assert_eq!(
        refused(
            Hub::builder()
                .history_rule("a/", HistoryRule::latest())
                .history_rule("a/", HistoryRule::events(3))
        ),
        BuildError::DuplicatePrefix("a/".into())
    );
    assert_eq!(
        refused(Hub::builder().history_rule("a/", HistoryRule::events(1).ttl(Duration::ZERO))),
        BuildError::ZeroTtl("a/".into())
    );
    assert_eq!(
        refused(Hub::builder().history_ttl(Duration::ZERO)),
        BuildError::ZeroTtl(String::new())
    );
    assert_eq!(
        refused(Hub::builder().history_rule("a?", HistoryRule::latest())),
        BuildError::InvalidPrefix("a?".into())
    );
    let panic = std::panic::catch_unwind(|| {
        Hub::builder()
            .history_rule("tmp/", HistoryRule::nothing().state())
            .build()
    })
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("`tmp/` is a state topic that keeps no event"),
        "{message}"
    );
}
