//! The stream request parser, through the public service: any query, any
//! `Last-Event-ID` bytes, any method. The answer is always one of the
//! documented statuses, never a panic or a 500, and a stream always starts
//! with its id line or the reset event.
#![no_main]

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use libfuzzer_sys::fuzz_target;
use std::{convert::Infallible, sync::OnceLock};
use tower::{service_fn, ServiceExt};
use tower_layer::Layer;
use tower_sse::{Access, Event, SseLayer, Hub};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn layer() -> &'static SseLayer {
    static LAYER: OnceLock<SseLayer> = OnceLock::new();
    LAYER.get_or_init(|| {
        let layer = SseLayer::new("/events").hub(&Hub::builder().history(8).build())
            .authorize(|_| async { Ok(Access::none().allow_prefix("ok/")) });
        let publisher = layer.publisher();
        for i in 0..12 {
            publisher
                .publish(Event::default().id(format!("app-{i}")).data("x"))
                .unwrap();
        }
        layer
    })
}

fuzz_target!(|input: &[u8]| {
    // method byte | query \0 last-event-id
    let Some((&method, rest)) = input.split_first() else {
        return;
    };
    let (query, last_id) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let method =
        [Method::GET, Method::HEAD, Method::POST, Method::OPTIONS][method as usize % 4].clone();
    let uri = format!("/events?{}", String::from_utf8_lossy(query));
    let mut request = Request::builder().method(method);
    if let Some(id) = last_id {
        match HeaderValue::from_bytes(id) {
            Ok(value) => request = request.header("last-event-id", value),
            Err(_) => return, // hyper would refuse the request before us
        }
    }
    let Ok(request) = request.uri(uri.as_str()).body(()) else {
        return;
    };

    let service = layer().layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    runtime().block_on(async {
        let response = service.oneshot(request).await.unwrap();
        let status = response.status();
        assert!(
            [
                StatusCode::OK,
                StatusCode::BAD_REQUEST,
                StatusCode::FORBIDDEN,
                StatusCode::METHOD_NOT_ALLOWED
            ]
            .contains(&status),
            "unexpected status {status}"
        );
        if status == StatusCode::OK {
            let mut body = response.into_body();
            if let Some(Some(Ok(frame))) = body.frame().now_or_never() {
                let data = frame.into_data().unwrap();
                assert!(
                    data.starts_with(b"id: ")
                        || data.starts_with(b"event: reset\n")
                        || data.starts_with(b"data: x\n"),
                    "a stream starts with {data:?}"
                );
            }
        }
    });
});
