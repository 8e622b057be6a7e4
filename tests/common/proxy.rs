//! A TCP proxy under the test's control, between an instance and its
//! engine, on a free loopback port: it passes traffic, or injects a fault —
//! latency, a stall (nothing moves, both ways, until it ends), a half-open
//! link (what is sent is swallowed, nothing comes back, nothing closes), the
//! connections dropped (FIN) or reset (RST), or refused altogether.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// What the proxy does to traffic now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Passes it.
    None,
    /// Passes each chunk after this long.
    Latency(Duration),
    /// Holds it (both ways) until the fault ends; nothing is lost.
    Stall,
    /// Swallows it (both ways); connections stay open and silent. When the
    /// fault ends, the connections it swallowed from are reset (their
    /// streams lost bytes).
    HalfOpen,
    /// Resets every connection and every new one (an engine down).
    Refuse,
}

#[derive(Clone, Copy, Debug)]
struct Control {
    fault: Fault,
    /// Bumped to close every open connection: with FIN, or RST (`reset`).
    cut: u64,
    reset: bool,
}

/// The proxy; stops (and resets its connections) when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    control: watch::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let control = watch::Sender::new(Control {
            fault: Fault::None,
            cut: 0,
            reset: false,
        });
        let watch = control.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(connection(client, upstream, watch.clone()));
            }
        });
        Proxy {
            addr,
            control,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sets the fault (`Fault::None` ends it).
    pub fn set(&self, fault: Fault) {
        self.control.send_modify(|c| c.fault = fault);
    }

    /// Closes every open connection with a FIN (new ones pass).
    pub fn drop_connections(&self) {
        self.control.send_modify(|c| {
            c.cut += 1;
            c.reset = false;
        });
    }

    /// Resets every open connection (RST; new ones pass).
    pub fn reset_connections(&self) {
        self.control.send_modify(|c| {
            c.cut += 1;
            c.reset = true;
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.set(Fault::Refuse);
    }
}

/// Makes `stream`'s close an RST.
fn linger_zero(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .ok();
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut watch: watch::Receiver<Control>,
) {
    let cut = watch.borrow_and_update().cut;
    if watch.borrow().fault == Fault::Refuse {
        linger_zero(&client);
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        linger_zero(&client);
        return;
    };
    let swallowed = AtomicBool::new(false);
    let (up_watch, down_watch) = (watch.clone(), watch.clone());
    let reset = {
        let end = async {
            loop {
                let control = *watch.borrow_and_update();
                if control.cut != cut {
                    return control.reset;
                }
                let healed = control.fault != Fault::HalfOpen && swallowed.load(Relaxed);
                if control.fault == Fault::Refuse || healed {
                    return true;
                }
                if watch.changed().await.is_err() {
                    return true;
                }
            }
        };
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let (up, down) = (
            pump(client_read, server_write, up_watch, &swallowed),
            pump(server_read, client_write, down_watch, &swallowed),
        );
        tokio::select! {
            reset = end => reset,
            _ = async { tokio::join!(up, down) } => false,
        }
    };
    if reset {
        linger_zero(&client);
        linger_zero(&server);
    }
}

/// Moves bytes from `from` to `to` under the proxy's fault; shuts `to`
/// down when `from` ends.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut watch: watch::Receiver<Control>,
    swallowed: &AtomicBool,
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                to.shutdown().await.ok();
                return;
            }
            Ok(n) => n,
        };
        loop {
            let fault = watch.borrow_and_update().fault;
            match fault {
                Fault::Stall => {
                    if watch.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Fault::HalfOpen => swallowed.store(true, Relaxed),
                Fault::Refuse => return,
                Fault::Latency(delay) => {
                    tokio::time::sleep(delay).await;
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Fault::None => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
            break;
        }
    }
}
