//! How many connections `serve` keeps open: in all (so descriptors never
//! run out) and per client address (so one host cannot take them all).
//! Past either, a connection is answered `503` and closed at once.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
};
use tokio::{
    net::TcpStream,
    task::{Id, JoinSet},
};

/// The open connections, each a task, counted per address.
pub(super) struct Connections {
    pub(super) tasks: JoinSet<()>,
    addresses: HashMap<Id, IpAddr>,
    per_address: HashMap<IpAddr, usize>,
    max: usize,
    max_per_address: usize,
}

impl Connections {
    pub(super) fn new(max: usize, max_per_address: usize) -> Self {
        Connections {
            tasks: JoinSet::new(),
            addresses: HashMap::new(),
            per_address: HashMap::new(),
            max,
            max_per_address,
        }
    }

    /// `tcp`, unless a cap is reached: then it is answered and closed at
    /// once (before any other work is spent on it).
    pub(super) fn admit(&mut self, tcp: TcpStream, peer: SocketAddr) -> Option<TcpStream> {
        self.reap();
        let from_peer = self.per_address.get(&peer.ip()).copied().unwrap_or(0);
        if self.tasks.len() < self.max && from_peer < self.max_per_address {
            return Some(tcp);
        }
        tracing::debug!(
            %peer,
            open = self.tasks.len(),
            from_peer,
            "serve: too many connections; refused"
        );
        // Written only if the socket takes it at once; closed either way.
        let _ = tcp.try_write(TOO_MANY_CONNECTIONS);
        None
    }

    /// Serves an admitted connection of `peer`.
    pub(super) fn spawn<F>(&mut self, peer: SocketAddr, serve: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = self.tasks.spawn(serve);
        self.addresses.insert(task.id(), peer.ip());
        *self.per_address.entry(peer.ip()).or_default() += 1;
    }

    /// Forgets the connections that ended.
    fn reap(&mut self) {
        while let Some(ended) = self.tasks.try_join_next_with_id() {
            let id = match ended {
                Ok((id, ())) => id,
                Err(e) => e.id(),
            };
            let Some(ip) = self.addresses.remove(&id) else {
                continue;
            };
            if let Some(n) = self.per_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&ip);
                }
            }
        }
    }
}

/// The answer to a connection past a cap, written without reading its
/// request (an HTTP/2 or TLS client sees a closed connection instead,
/// which its client library retries alike).
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\nretry-after: 5\r\nconnection: close\r\n\
content-length: 49\r\n\r\ntoo many connections to this server; retry later\n";

/// Connections past which new ones are refused by default: 7/8 of the
/// descriptor limit, keeping at least 128 descriptors for everything else
/// (the listener, the runtime, files, the database's and engine's
/// connections); 10,000 where the limit cannot be read.
pub(super) fn default_max() -> usize {
    match descriptor_limit() {
        Some(limit) => limit.saturating_sub((limit / 8).max(128)).max(1),
        None => 10_000,
    }
}

/// The process's soft limit of open descriptors, if it has one.
#[cfg(unix)]
fn descriptor_limit() -> Option<usize> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current.and_then(|n| usize::try_from(n).ok())
}

#[cfg(not(unix))]
fn descriptor_limit() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_says_its_length() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
    }

    #[test]
    fn the_default_keeps_descriptors_free() {
        let max = default_max();
        if let Some(limit) = descriptor_limit() {
            assert!(max + 128 <= limit.max(129), "{max} of {limit}");
        }
    }
}
