//! [`Jwt`] (feature `jwt`): a hub's authorization from JSON Web Tokens, the
//! way Mercure and Centrifugo admit subscribers — the token's claims carry
//! the subscriber's user, expiry and topics, checked the same way on every
//! transport.

use http::{header, request::Parts, Response, StatusCode};
use jsonwebtoken::{errors::ErrorKind, jwk::JwkSet, Algorithm, DecodingKey, TokenData, Validation};
use serde::Deserialize;
use std::{
    fmt,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use crate::authorize::Access;

/// Verifies a bearer token on every stream of a hub and maps its claims to
/// an [`Access`]: set it with
/// [`HubBuilder::authorize_jwt`](crate::HubBuilder::authorize_jwt) (or
/// [`SseLayer::authorize_jwt`](crate::SseLayer::authorize_jwt)).
///
/// * The token comes from the `Authorization: Bearer …` header, or else
///   from the `token` query parameter (`?token=…`), for `EventSource`, which
///   cannot set headers. The crate never logs it (mind your own access logs:
///   a URL's query is often logged by proxies; prefer the header or a
///   short-lived token there).
/// * It must be signed by one of the keys ([`JwtKey`]: HMAC, RSA, EC, Ed25519;
///   a token's `kid` picks the key of that id), not expired (`exp`, which is
///   required), and, when set, of the [`audience`](Jwt::audience) and
///   [`issuer`](Jwt::issuer).
/// * Claims: `sub` → [`Access::user`]; `exp` → [`Access::expires_at`] (the
///   stream ends then; the client reconnects with a fresh token); and the
///   `sse` claim (name: [`claim`](Jwt::claim)) →
///   `{"topics": [exact names], "prefixes": ["room/"], "follow": ["user/alice"]}`,
///   each optional, as [`Access::only`], [`Access::allow_prefix`],
///   [`Access::follow`]. A token without it follows the default topic only.
/// * Refusals are `401` with the reason in the body ("token expired",
///   "bad signature", "wrong audience", "no key for this token"…), never
///   key material; a token longer than [`max_len`](Jwt::max_len) (8 KiB) is
///   refused before it is parsed. A topic the claims do not grant is `403`.
///
/// Keys rotate while serving: clones share one key set, so
/// [`add_key`](Jwt::add_key), [`remove_key`](Jwt::remove_key) and
/// [`set_jwks`](Jwt::set_jwks) on any clone take effect for the next stream.
///
/// ```
/// # fn main() -> Result<(), tower_sse::JwtKeyError> {
/// use tower_sse::{Hub, Jwt, JwtKey};
///
/// let jwt = Jwt::new()
///     .key(JwtKey::hmac(b"a secret of at least 32 bytes, really")?.id("2026-01"))
///     .audience("my-app");
/// let hub = Hub::builder().authorize_jwt(jwt.clone()).build();
/// // Later: a new key, then the old one retired once its tokens expired.
/// jwt.add_key(JwtKey::hmac(b"the next secret, also 32 bytes long")?.id("2026-02"));
/// jwt.remove_key("2026-01");
/// # let _ = hub;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Jwt {
    keys: Arc<RwLock<Vec<JwtKey>>>,
    audience: Vec<String>,
    issuer: Vec<String>,
    claim: Arc<str>,
    query_param: Option<Arc<str>>,
    max_len: usize,
    leeway: u64,
}

/// A key [`Jwt`] verifies tokens with: its algorithm, and an id (`kid`) when
/// tokens name theirs.
#[derive(Clone)]
pub struct JwtKey {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// A key that could not be read (a malformed PEM or JWK).
#[derive(Debug)]
pub struct JwtKeyError(jsonwebtoken::errors::Error);

impl fmt::Display for JwtKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unusable JWT key: {}", self.0)
    }
}

impl std::error::Error for JwtKeyError {}

impl JwtKey {
    /// An HMAC secret (HS256); an empty one is an error.
    pub fn hmac(secret: &[u8]) -> Result<Self, JwtKeyError> {
        let key = DecodingKey::from_secret(secret).map_err(JwtKeyError)?;
        Ok(JwtKey::with(Algorithm::HS256, key))
    }

    /// An RSA public key in PEM (RS256; choose another RSA algorithm with
    /// [`algorithm`](JwtKey::algorithm)).
    pub fn rsa_pem(pem: &[u8]) -> Result<Self, JwtKeyError> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(JwtKeyError)?;
        Ok(JwtKey::with(Algorithm::RS256, key))
    }

    /// An EC public key in PEM (ES256 for P-256; `algorithm(Algorithm::ES384)`
    /// for P-384).
    pub fn ec_pem(pem: &[u8]) -> Result<Self, JwtKeyError> {
        let key = DecodingKey::from_ec_pem(pem).map_err(JwtKeyError)?;
        Ok(JwtKey::with(Algorithm::ES256, key))
    }

    /// An Ed25519 public key in PEM (EdDSA).
    pub fn ed_pem(pem: &[u8]) -> Result<Self, JwtKeyError> {
        let key = DecodingKey::from_ed_pem(pem).map_err(JwtKeyError)?;
        Ok(JwtKey::with(Algorithm::EdDSA, key))
    }

    fn with(algorithm: Algorithm, key: DecodingKey) -> Self {
        JwtKey {
            id: None,
            algorithm,
            key,
        }
    }

    /// The key's id: a token whose header names a `kid` is verified with
    /// the key of that id only.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The algorithm tokens of this key use (a token with another is refused).
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key itself.
        f.debug_struct("JwtKey")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The claims read from a token.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    // Required (`Validation`); an `Option` so a missing one is told apart.
    exp: Option<u64>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// The topics claim.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Grant {
    topics: Vec<String>,
    prefixes: Vec<String>,
    follow: Vec<String>,
}

impl Default for Jwt {
    fn default() -> Self {
        Jwt::new()
    }
}

impl Jwt {
    /// A verifier without keys yet (every token is refused until one is
    /// added), reading the `sse` claim and the `token` query parameter.
    pub fn new() -> Self {
        install_crypto();
        Jwt {
            keys: Arc::new(RwLock::new(Vec::new())),
            audience: Vec::new(),
            issuer: Vec::new(),
            claim: "sse".into(),
            query_param: Some("token".into()),
            max_len: 8 * 1024,
            leeway: 0,
        }
    }

    /// Also verifies with `key`.
    pub fn key(self, key: JwtKey) -> Self {
        self.add_key(key);
        self
    }

    /// Adds `key` to the key set every clone shares (a rotation's new key).
    pub fn add_key(&self, key: JwtKey) {
        self.write().push(key);
    }

    /// Removes the keys of id `id` (a rotation's retired key): tokens signed
    /// with it are refused from the next stream on.
    pub fn remove_key(&self, id: &str) {
        self.write().retain(|key| key.id.as_deref() != Some(id));
    }

    /// Replaces the key set with a JSON Web Key Set (`{"keys": [...]}`, as an
    /// identity provider publishes it at its `jwks_uri`): fetch it on your
    /// schedule and call this. On an error the keys stay as they were.
    pub fn set_jwks(&self, jwks: &str) -> Result<(), JwtKeyError> {
        let set: JwkSet = serde_json::from_str(jwks)
            .map_err(|e| JwtKeyError(ErrorKind::Json(Arc::new(e)).into()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk).map_err(JwtKeyError)?;
            let algorithm = match jwk.common.key_algorithm {
                Some(alg) => alg.to_string().parse().map_err(JwtKeyError)?,
                None => match key.family() {
                    jsonwebtoken::AlgorithmFamily::Hmac => Algorithm::HS256,
                    jsonwebtoken::AlgorithmFamily::Rsa => Algorithm::RS256,
                    jsonwebtoken::AlgorithmFamily::Ec => Algorithm::ES256,
                    jsonwebtoken::AlgorithmFamily::Ed => Algorithm::EdDSA,
                },
            };
            keys.push(JwtKey {
                id: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        *self.write() = keys;
        Ok(())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<JwtKey>> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens must be for this audience (`aud`); may be given several times.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience.push(audience.into());
        self
    }

    /// Tokens must come from this issuer (`iss`); may be given several times.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer.push(issuer.into());
        self
    }

    /// The claim that carries the topics. Default: `sse`.
    pub fn claim(mut self, name: impl Into<String>) -> Self {
        self.claim = name.into().into();
        self
    }

    /// The query parameter a token may come in (for `EventSource`), or
    /// `None` to accept the header only. Default: `token`.
    pub fn query_param(mut self, name: Option<&str>) -> Self {
        self.query_param = name.map(Arc::from);
        self
    }

    /// The longest token accepted; longer ones are refused before they are
    /// parsed. Default: 8 KiB.
    pub fn max_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    /// How far past `exp` (and before `nbf`) a token is still accepted, for
    /// clocks that differ; its stream ends that long after `exp`. Default:
    /// none.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.as_secs();
        self
    }

    /// The [`Access`] the request's token grants, or the `401` that says why
    /// not: what the hub's hook does with it. For a hook of your own that
    /// checks more (a revocation list, say).
    // The error is a hook's (`HubBuilder::authorize`), as large as theirs.
    #[allow(clippy::result_large_err)]
    pub fn access(&self, parts: &Parts) -> Result<Access, Response<String>> {
        self.grant(parts).map_err(refuse)
    }

    fn grant(&self, parts: &Parts) -> Result<Access, &'static str> {
        let token = self.token(parts).ok_or("no bearer token")?;
        if token.len() > self.max_len {
            return Err("token too long");
        }
        let claims = self.verify(&token)?.claims;
        let exp = claims.exp.ok_or("malformed token: no expiry (exp)")?;
        let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(exp.saturating_add(self.leeway));
        // In its last second the library still takes it; the stream would
        // not open.
        if expires <= SystemTime::now() {
            return Err("token expired");
        }
        let mut access = match claims.rest.get(&*self.claim) {
            None => Access::none(),
            Some(value) => {
                let grant =
                    Grant::deserialize(value).map_err(|_| "malformed token: bad topics claim")?;
                let mut access = Access::only(grant.topics);
                for prefix in grant.prefixes {
                    access = access.allow_prefix(prefix);
                }
                for topic in grant.follow {
                    access = access.follow(topic);
                }
                access
            }
        };
        if let Some(sub) = claims.sub {
            access = access.user(sub);
        }
        Ok(access.expires_at(expires))
    }

    /// The token of a request: the bearer header, else the query parameter.
    fn token(&self, parts: &Parts) -> Option<String> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let value = value.to_str().ok()?;
            let (scheme, token) = value.split_once(' ')?;
            return scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned());
        }
        let param = self.query_param.as_deref()?;
        form_urlencoded::parse(parts.uri.query()?.as_bytes())
            .find(|(key, _)| key == param)
            .map(|(_, token)| token.into_owned())
    }

    fn verify(&self, token: &str) -> Result<TokenData<Claims>, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let candidates: Vec<&JwtKey> = keys
            .iter()
            .filter(|key| key.algorithm == header.alg)
            .filter(|key| match (&header.kid, &key.id) {
                (Some(kid), Some(id)) => kid == id,
                (Some(_), None) | (None, _) => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err("no key for this token");
        }
        let mut reason = "bad signature";
        for key in candidates {
            let mut validation = Validation::new(key.algorithm);
            validation.leeway = self.leeway;
            validation.set_required_spec_claims(&["exp"]);
            validation.validate_aud = !self.audience.is_empty();
            if !self.audience.is_empty() {
                validation.set_audience(&self.audience);
            }
            if !self.issuer.is_empty() {
                validation.set_issuer(&self.issuer);
            }
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return Ok(data),
                Err(e) => match e.kind() {
                    // Another key may have signed it.
                    ErrorKind::InvalidSignature => {}
                    ErrorKind::ExpiredSignature => return Err("token expired"),
                    ErrorKind::ImmatureSignature => return Err("token not valid yet"),
                    ErrorKind::InvalidAudience => return Err("wrong audience"),
                    ErrorKind::InvalidIssuer => return Err("wrong issuer"),
                    ErrorKind::MissingRequiredClaim(_) => {
                        return Err("malformed token: no expiry (exp)")
                    }
                    _ => reason = "malformed token",
                },
            }
        }
        Err(reason)
    }
}

/// The `401` of a refused token, saying why (never the token or a key).
fn refuse(reason: &str) -> Response<String> {
    let mut response = Response::new(format!("{reason}\n"));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// jsonwebtoken verifies through a process-wide provider: ours (RustCrypto)
/// unless the app installed one, or another crate's features pick one.
fn install_crypto() {
    if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    }
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Jwt")
            .field("keys", &*keys)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}
