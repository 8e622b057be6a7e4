//! JSON Web Tokens as a hub's authorization (feature `jwt`), over real TCP
//! with independent clients: the header and `?token=` (EventSource), claims
//! to topics, refusals with their reasons, a stream that ends at the token's
//! expiry (and a WebSocket session closed then), rotated keys (HMAC ids, a
//! JWKS), RSA and EC keys.

mod common;

use axum::Router;
use common::{client, within, Server, Subscriber};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use tower_sse::{Event, Hub, Jwt, JwtKey, SseLayer};

const SECRET: &[u8] = b"the test secret, 32 bytes or more!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Alice's claims: her orders without asking, any `public/` topic, an hour.
fn alice() -> Value {
    json!({
        "sub": "alice",
        "aud": "shop",
        "exp": now() + 3600,
        "sse": {"follow": ["orders/alice"], "prefixes": ["public/"]},
    })
}

fn sign(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hmac(claims: &Value) -> String {
    sign(
        &EncodingKey::from_secret(SECRET).unwrap(),
        Algorithm::HS256,
        None,
        claims,
    )
}

async fn server(jwt: Jwt) -> Server {
    let hub = Hub::builder().authorize_jwt(jwt).build();
    let layer = SseLayer::new("/events").hub(&hub).websocket("/ws");
    Server::start(Router::new().layer(layer), hub.publisher()).await
}

/// The status and body of a stream request with `token` in the header.
async fn answer(server: &Server, query: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client().get(server.url(&format!("/events{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        return (200, String::new());
    }
    (status, response.text().await.unwrap())
}

/// Opens a granted stream with `token` and checks it gets Alice's orders and
/// the public topic, not Bob's orders.
async fn delivers(server: &Server, request: reqwest::RequestBuilder) {
    let mut stream = Subscriber::connect_with(request).await;
    let p = &server.publisher;
    p.publish_to("orders/bob", Event::default().data("bob's"))
        .unwrap();
    p.publish_to("orders/alice", Event::default().data("alice's"))
        .unwrap();
    p.publish_to("public/news", Event::default().data("news"))
        .unwrap();
    assert_eq!(stream.next().await.unwrap().data, "alice's");
    assert_eq!(stream.next().await.unwrap().data, "news");
}

fn jwt() -> Jwt {
    Jwt::new()
        .key(JwtKey::hmac(SECRET).unwrap())
        .audience("shop")
}

#[tokio::test]
async fn a_bearer_token_grants_its_claims_topics() {
    let server = server(jwt()).await;
    let token = hmac(&alice());
    let request = client()
        .get(server.url("/events?topic=public/news"))
        .bearer_auth(&token);
    delivers(&server, request).await;
    let (status, body) = answer(&server, "?topic=orders/bob", Some(&token)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("orders/bob"), "{body}");
}

#[tokio::test]
async fn a_token_in_the_query_serves_event_source() {
    let server = server(jwt()).await;
    let url = format!("/events?topic=public/news&token={}", hmac(&alice()));
    delivers(&server, client().get(server.url(&url))).await;
    // Off when the app says so.
    let server = self::server(jwt().query_param(None)).await;
    let (status, body) = answer(&server, &format!("?token={}", hmac(&alice())), None).await;
    assert_eq!((status, body.as_str()), (401, "no bearer token\n"));
}

#[tokio::test]
async fn bad_tokens_are_401_with_the_reason_and_no_key_material() {
    let server = server(jwt()).await;
    let mut expired = alice();
    expired["exp"] = json!(now() - 10);
    let mut stranger = alice();
    stranger["aud"] = json!("another-app");
    let mut no_exp = alice();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut bad_claim = alice();
    bad_claim["sse"] = json!({"topics": "not a list"});
    let forged = sign(
        &EncodingKey::from_secret(b"not the secret, but as long as it").unwrap(),
        Algorithm::HS256,
        None,
        &alice(),
    );
    let cases = [
        (None, "no bearer token"),
        (Some(hmac(&expired)), "token expired"),
        (Some(hmac(&stranger)), "wrong audience"),
        (Some(hmac(&no_exp)), "malformed token: no expiry (exp)"),
        (Some(hmac(&bad_claim)), "malformed token: bad topics claim"),
        (Some(forged), "bad signature"),
        (Some("not.a.token".to_owned()), "malformed token"),
        (Some("x".repeat(9000)), "token too long"),
    ];
    for (token, reason) in cases {
        let (status, body) = answer(&server, "", token.as_deref()).await;
        assert_eq!(
            (status, body.as_str()),
            (401, format!("{reason}\n").as_str())
        );
        assert!(!body.contains("secret"));
    }
    // A token of an algorithm no key has.
    let es = rcgen::KeyPair::generate().unwrap();
    let es = EncodingKey::from_ec_pem(es.serialize_pem().as_bytes()).unwrap();
    let token = sign(&es, Algorithm::ES256, None, &alice());
    let (status, body) = answer(&server, "", Some(&token)).await;
    assert_eq!((status, body.as_str()), (401, "no key for this token\n"));
}

#[tokio::test]
async fn the_stream_ends_when_the_token_expires() {
    let server = server(jwt()).await;
    let mut claims = alice();
    claims["exp"] = json!(now() + 2);
    let response = client()
        .get(server.url("/events"))
        .bearer_auth(hmac(&claims))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    // Whatever comes first (the start, keep-alives), the stream ends by itself
    // at the expiry, within the guard.
    within("the end at the token's expiry", async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    // Not before (whole seconds: the clock's second may not have turned yet).
    assert!(now() + 1 >= claims["exp"].as_u64().unwrap());
    // Reconnecting with the same token is refused; a fresh one is admitted.
    let (status, body) = answer(&server, "", Some(&hmac(&claims))).await;
    assert_eq!((status, body.as_str()), (401, "token expired\n"));
    assert_eq!(answer(&server, "", Some(&hmac(&alice()))).await.0, 200);
}

#[tokio::test]
async fn a_websocket_session_is_admitted_by_token_and_closed_at_its_expiry() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let server = server(jwt()).await;
    let url = |token: &str| format!("ws://{}/ws?topic=public/news&token={token}", server.addr);
    let err = tokio_tungstenite::connect_async(url("bogus"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");

    let mut claims = alice();
    claims["exp"] = json!(now() + 2);
    let mut ws = common::ws_open(&url(&hmac(&claims)), None).await;
    assert_eq!(common::next(&mut ws).await["type"], "subscribed");
    server
        .publisher
        .publish_to("orders/alice", Event::default().data("alice's"))
        .unwrap();
    assert_eq!(common::next(&mut ws).await["data"], "alice's");
    let (code, reason) = common::closed(&mut ws).await;
    assert_eq!(code, CloseCode::Library(4001), "{reason}");
}

#[tokio::test]
async fn keys_rotate_while_serving() {
    let (old, new) = (
        b"the old secret, 32 bytes or more!!",
        b"the new secret, 32 bytes or more!!",
    );
    let jwt = Jwt::new()
        .audience("shop")
        .key(JwtKey::hmac(old).unwrap().id("2026-01"));
    let server = server(jwt.clone()).await;
    let signed = |secret: &[u8], kid| {
        sign(
            &EncodingKey::from_secret(secret).unwrap(),
            Algorithm::HS256,
            Some(kid),
            &alice(),
        )
    };
    assert_eq!(
        answer(&server, "", Some(&signed(old, "2026-01"))).await.0,
        200
    );
    let (status, body) = answer(&server, "", Some(&signed(new, "2026-02"))).await;
    assert_eq!((status, body.as_str()), (401, "no key for this token\n"));

    // Both during the rotation, then the new one only.
    jwt.add_key(JwtKey::hmac(new).unwrap().id("2026-02"));
    assert_eq!(
        answer(&server, "", Some(&signed(old, "2026-01"))).await.0,
        200
    );
    assert_eq!(
        answer(&server, "", Some(&signed(new, "2026-02"))).await.0,
        200
    );
    jwt.remove_key("2026-01");
    assert_eq!(
        answer(&server, "", Some(&signed(old, "2026-01"))).await.0,
        401
    );
    assert_eq!(
        answer(&server, "", Some(&signed(new, "2026-02"))).await.0,
        200
    );
    // A token naming one key but signed with another is not let through.
    let (status, body) = answer(&server, "", Some(&signed(old, "2026-02"))).await;
    assert_eq!((status, body.as_str()), (401, "bad signature\n"));
}

#[tokio::test]
async fn rsa_ec_and_a_jwks_verify() {
    let rsa_private = include_bytes!("jwt/rsa-private.pem");
    let rsa_public = include_bytes!("jwt/rsa-public.pem");
    let ec = rcgen::KeyPair::generate().unwrap();
    let jwt = Jwt::new()
        .audience("shop")
        .key(JwtKey::rsa_pem(rsa_public).unwrap().id("rsa"))
        .key(
            JwtKey::ec_pem(ec.public_key_pem().as_bytes())
                .unwrap()
                .id("ec"),
        );
    let server = server(jwt.clone()).await;
    let rsa = EncodingKey::from_rsa_pem(rsa_private).unwrap();
    let es = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
    let rsa_token = sign(&rsa, Algorithm::RS256, Some("rsa"), &alice());
    let ec_token = sign(&es, Algorithm::ES256, Some("ec"), &alice());
    assert_eq!(answer(&server, "", Some(&rsa_token)).await.0, 200);
    assert_eq!(answer(&server, "", Some(&ec_token)).await.0, 200);

    // A key set replaces the keys: only its key is left.
    let jwks = json!({"keys": [{
        "kty": "oct", "kid": "jwks-1", "alg": "HS256",
        "k": base64_url(b"a key from the key set, 32 bytes!"),
    }]});
    jwt.set_jwks(&jwks.to_string()).unwrap();
    assert_eq!(answer(&server, "", Some(&rsa_token)).await.0, 401);
    let from_set = sign(
        &EncodingKey::from_secret(b"a key from the key set, 32 bytes!").unwrap(),
        Algorithm::HS256,
        Some("jwks-1"),
        &alice(),
    );
    assert_eq!(answer(&server, "", Some(&from_set)).await.0, 200);
    // A malformed set is an error, and the keys stay.
    assert!(jwt.set_jwks("{\"keys\": 3}").is_err());
    assert_eq!(answer(&server, "", Some(&from_set)).await.0, 200);
}

/// Base64url without padding, as a JWK's `k`.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
