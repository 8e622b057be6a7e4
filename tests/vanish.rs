//! A subscriber that vanishes with neither FIN nor RST (a laptop lid closed,
//! a phone in a tunnel, a NAT entry dropped) is noticed by the keep-alive
//! write that goes unacknowledged, and its stream is dropped.
//!
//! The client lives in its own network namespace joined to the test by a
//! veth pair; cutting the link makes it vanish without a packet. This needs
//! root and iproute2 (`ip`), so it runs behind the dev-only feature
//! `netns-tests`: `cargo test --features netns-tests --test vanish` (as
//! `.ci/run` does).

mod common;

use axum::Router;
use common::within;
use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    time::Duration,
};
use tokio::io::AsyncWriteExt;
use tower_sse::SseLayer;

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("`ip` (iproute2) is needed for this test: {e}"));
    assert!(
        status.success(),
        "`ip {}` failed: this test needs root (or CAP_NET_ADMIN)",
        args.join(" ")
    );
}

/// A network namespace `tsse-<pid>` with a veth link to this one; removed
/// when dropped.
struct Namespace {
    name: String,
    host_if: String,
    client_if: String,
    host: Ipv4Addr,
    client: Ipv4Addr,
}

impl Namespace {
    fn create() -> Namespace {
        let pid = std::process::id();
        let octet = (pid % 250) as u8 + 1;
        let ns = Namespace {
            name: format!("tsse-{pid}"),
            host_if: format!("tsseh{pid}"),
            client_if: format!("tssec{pid}"),
            host: Ipv4Addr::new(10, 231, octet, 1),
            client: Ipv4Addr::new(10, 231, octet, 2),
        };
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.client_if,
        ]);
        ip(&["link", "set", &ns.client_if, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ns.exec(&[
            "addr",
            "add",
            &format!("{}/30", ns.client),
            "dev",
            &ns.client_if,
        ]);
        ns.exec(&["link", "set", &ns.client_if, "up"]);
        ns
    }

    /// `ip` inside the namespace.
    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Connects to `addr` from inside the namespace: the socket belongs to
    /// the namespace for its whole life.
    fn connect(&self, addr: SocketAddr) -> std::net::TcpStream {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(path).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            std::net::TcpStream::connect_timeout(&addr, common::TIMEOUT).unwrap()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // The link goes first, and by name: the namespace outlives its name
        // while the vanished client's socket still retransmits its FIN (a
        // minute or two), and the veth pair would only go, with netlink
        // events on this side, when it dies. Chromium takes those events for
        // a network change and fails whatever it is loading
        // (ERR_NETWORK_CHANGED): a browser test run after this one failed
        // so. Deleting one end of a veth pair deletes both.
        for args in [
            &["link", "del", &self.host_if][..],
            &["netns", "del", &self.name][..],
        ] {
            Command::new("ip").args(args).status().ok();
        }
    }
}

#[tokio::test]
async fn a_client_that_vanishes_without_fin_or_rst_is_dropped_after_keep_alive() {
    let ns = Namespace::create();
    let layer = SseLayer::new("/events").keep_alive(Duration::from_millis(200));
    let publisher = layer.publisher();
    let addr = common::serve_with_user_timeout(
        (ns.host, 0).into(),
        Duration::from_secs(1),
        Router::new().layer(layer),
    )
    .await;

    let client = ns.connect(addr);
    client.set_nonblocking(true).unwrap();
    let mut client = tokio::net::TcpStream::from_std(client).unwrap();
    client
        .write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Wait for a keep-alive comment: the path works both ways.
    common::read_raw(
        &mut client,
        ":keep-alive\n",
        "a keep-alive over the veth link",
    )
    .await;
    let mut count = publisher.watch_subscribers();
    assert_eq!(*count.borrow(), 1);

    // The client vanishes: its end of the link goes down, no packet leaves.
    ns.exec(&["link", "set", &ns.client_if, "down"]);
    within(
        "the unacknowledged keep-alive to drop the stream",
        count.wait_for(|n| *n == 0),
    )
    .await
    .unwrap();
    drop(client);
}
