//! An order tracker whose streams are admitted by JSON Web Tokens: each
//! user follows their own orders, on the layer's stream and over WebSocket
//! alike, and a stream ends when its token expires.
//!
//! `cargo run --example jwt --features axum,jwt`, then:
//!
//! ```text
//! TOKEN=$(curl -s localhost:3000/login/alice)          # a demo sign-in: an HS256 token, 60 s
//! curl -N "localhost:3000/events?token=$TOKEN"         # as EventSource would (or -H "authorization: Bearer $TOKEN")
//! curl -X POST localhost:3000/orders/alice -d paid     # Alice's stream gets it
//! curl -X POST localhost:3000/orders/bob -d shipped    # hers does not
//! curl -N "localhost:3000/events?token=$TOKEN&topic=orders/bob"   # 403
//! ```

use axum::{
    extract::Path,
    routing::{get, post},
    Router,
};
use jsonwebtoken::{EncodingKey, Header};
use std::time::{SystemTime, UNIX_EPOCH};
use tower_sse::{Error, Event, Hub, Jwt, JwtKey, Publisher, SseLayer};

/// A demo secret: a real app reads its key (or its identity provider's
/// key set, `Jwt::set_jwks`) from its configuration.
const SECRET: &[u8] = b"demo secret: replace it, 32 bytes+";

/// A token for `user`, valid for a minute, following `orders/<user>`. A
/// real app gets this from its identity provider after a real sign-in.
async fn login(Path(user): Path<String>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        "sub": user,
        "exp": now + 60,
        "sse": { "follow": [format!("orders/{user}")] },
    });
    let key = EncodingKey::from_secret(SECRET).expect("a non-empty secret");
    jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap_or_default()
}

/// Publishes an order's new state to its owner's topic.
async fn order(
    Path(user): Path<String>,
    publisher: Publisher,
    state: String,
) -> Result<String, Error> {
    let event = Event::default().event("order").data(state);
    let id = publisher
        .publish_to(&format!("orders/{user}"), event)?
        .await?;
    Ok(format!("published as {id}\n"))
}

fn app() -> Router {
    let jwt = Jwt::new().key(JwtKey::hmac(SECRET).expect("a non-empty secret"));
    let hub = Hub::builder().authorize_jwt(jwt).build();
    Router::new()
        .route("/login/{user}", get(login))
        .route("/orders/{user}", post(order))
        .layer(SseLayer::new("/events").hub(&hub))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("order tracker at http://{}", listener.local_addr()?);
    axum::serve(listener, app()).await
}
