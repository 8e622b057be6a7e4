//! [`NatsBuilder`]: how to reach NATS and which stream to use.

use super::*;

/// How to reach NATS and which stream to use: [`NatsBackplane::builder`].
#[derive(Debug)]
pub struct NatsBuilder {
    pub(super) servers: String,
    pub(super) options: Option<ConnectOptions>,
    pub(super) stream: String,
    pub(super) subject: String,
    pub(super) replicas: usize,
}

impl NatsBuilder {
    /// The servers, comma-separated (`nats://host:4222`, with
    /// `user:password@` or `tls://` as NATS takes them). Default
    /// `nats://127.0.0.1:4222`.
    pub fn servers(mut self, servers: impl Into<String>) -> Self {
        self.servers = servers.into();
        self
    }

    /// The client's options (credentials, NKeys, TLS roots, names, …), as
    /// `async-nats` takes them. The engine sets the request timeout to 2 s
    /// (a question a cluster electing a leader leaves unanswered should
    /// fail soon, so that the hub retries); without options, the connection
    /// timeout is 2 s too.
    pub fn options(mut self, options: ConnectOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// The stream's name (default `TOWER_SSE`): instances that share a
    /// stream share its name and subject.
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self
    }

    /// The subject prefix (default `tower-sse.events`); the stream holds it
    /// and `<prefix>.>`.
    pub fn subject(mut self, prefix: impl Into<String>) -> Self {
        self.subject = prefix.into();
        self
    }

    /// On how many servers of a cluster the stream keeps each message
    /// (default 1; 3 survives losing one, 5 two). A stream made earlier
    /// with another count is changed to this one.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Connects and makes sure the stream exists. Fails with
    /// [`Error::Backplane`] when NATS (with JetStream) cannot be reached
    /// now, or refuses the stream.
    pub async fn connect(self) -> Result<NatsBackplane, Error> {
        let valid = |token: &str| {
            !token.is_empty()
                && !token
                    .chars()
                    .any(|c| c.is_whitespace() || c == '*' || c == '>')
        };
        if !self.subject.split('.').all(valid) {
            return Err(Error::Backplane(
                format!(
                    "invalid subject prefix {:?}: tokens separated by `.`, \
                     without spaces, `*` or `>`",
                    self.subject
                )
                .into(),
            ));
        }
        let servers: Vec<&str> = self
            .servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let options = self
            .options
            .unwrap_or_else(|| ConnectOptions::new().connection_timeout(Duration::from_secs(2)))
            .request_timeout(Some(ASK));
        let client = options.connect(servers).await.map_err(backplane_error)?;
        // Every question to JetStream (the client's request timeout) and
        // every acknowledgement awaited (the context's) within ASK: while a
        // cluster elects a leader, or places a consumer on a server it has
        // not yet noticed is gone, answers never come.
        let mut context = jetstream::new(client);
        context.set_timeout(ASK);
        let backplane = NatsBackplane {
            inner: Arc::new(Inner {
                context,
                stream: self.stream,
                subject: self.subject,
                replicas: self.replicas,
                retention: Mutex::new(None),
                epoch: Mutex::new((0, 0)),
                instance: instance_id(),
                sent: AtomicU64::new(0),
            }),
        };
        backplane.ensure_stream().await.map_err(Error::Backplane)?;
        Ok(backplane)
    }
}
