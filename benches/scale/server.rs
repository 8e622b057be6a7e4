//! The instances under test: this binary re-executed with
//! `SCALE_ROLE=server`, each serving the benches' tower-sse app (see
//! `common/app.rs`) with `tower_sse::serve` (the lean HTTP/1.1 path on, as by
//! default), with a backplane when `SCALE_ENGINE` names one; or, with
//! `SCALE_APP=axum`, the hand-rolled axum peer with `axum::serve`.

use crate::{
    engine::Engine,
    usage::{self, Memory},
};
use std::{
    process::{Child, Command},
    time::Duration,
};

/// Descriptors kept for what is not a connection: the listener, the
/// runtime's, the engine's connections, the parent's requests.
const SPARE_DESCRIPTORS: usize = 256;

/// Raises this process's soft descriptor limit to its hard limit; the limit
/// now in force.
pub fn raise_nofile() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).expect("raise RLIMIT_NOFILE to its hard limit");
    limit
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// A running instance; stopped when dropped.
pub struct Instance {
    child: Child,
    pub port: u16,
}

impl Instance {
    /// Starts an instance, with `engine` as its backplane (and the engine's
    /// URL) when given; returns once it listens and, with an engine, reads
    /// the engine's log.
    pub fn start(engine: Option<(Engine, String)>) -> Instance {
        let mut command = Command::new(std::env::current_exe().unwrap());
        if let Some((engine, url)) = engine {
            command
                .env("SCALE_ENGINE", engine.short_name())
                .env("SCALE_ENGINE_URL", url);
        }
        Self::spawn(&mut command)
    }

    /// Starts the hand-rolled axum peer (`axum::serve`, `Sse` over a
    /// `broadcast` receiver: see `common/app.rs`), for the latencies the
    /// issue's targets compare with.
    pub fn axum_peer() -> Instance {
        Self::spawn(Command::new(std::env::current_exe().unwrap()).env("SCALE_APP", "axum"))
    }

    fn spawn(command: &mut Command) -> Instance {
        let (child, port) = crate::common::start_server(command.env("SCALE_ROLE", "server"));
        Instance { child, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn memory(&self) -> Memory {
        usage::memory(self.child.id())
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> Duration {
        usage::cpu_of(self.child.id())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Its cue to stop; then it exits with every stream still open.
        drop(self.child.stdin.take());
        self.child.wait().ok();
    }
}

/// Runs an instance (the child side of [`Instance`]) until its stdin closes.
pub fn serve() {
    let limit = raise_nofile();
    let backplane = std::env::var("SCALE_ENGINE").ok().map(|name| {
        let engine = Engine::ALL
            .into_iter()
            .find(|e| e.short_name() == name)
            .unwrap_or_else(|| panic!("unknown engine {name}"));
        (
            engine,
            std::env::var("SCALE_ENGINE_URL").expect("the engine's URL"),
        )
    });
    let runtime = crate::common::runtime(2);
    runtime.block_on(async {
        // A backlog for thousands of clients connecting at once (tokio's
        // `bind` gives 1,024).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(4096).unwrap();
        if std::env::var_os("SCALE_APP").is_some() {
            println!("{}", listener.local_addr().unwrap().port());
            tokio::select! {
                result = axum::serve(listener, crate::app::hand_rolled()) => result.unwrap(),
                () = crate::common::stdin_closed() => {}
            }
            return;
        }
        let app = crate::app::tower_sse(backplane, None).await;
        println!("{}", listener.local_addr().unwrap().port());
        // Every client comes from a handful of loopback addresses: no limit
        // per address; in all, what the descriptors allow.
        let server = tower_sse::serve(listener, app)
            .max_connections(limit.saturating_sub(SPARE_DESCRIPTORS))
            .max_connections_per_address(usize::MAX);
        tokio::select! {
            result = server => result.expect("the listener failed"),
            () = crate::common::stdin_closed() => {}
        }
    });
}
