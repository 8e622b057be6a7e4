//! The soak's streams and publisher, and the ledger that checks them: every
//! accepted event is delivered to every stream of its topic, once and in
//! order, or a `reset` came in its place.
//!
//! Checking works as the streams read: a stream's events wait until every
//! publish that may have been accepted before them has been answered (the
//! horizon), then are compared with what was accepted on their topic. So
//! memory stays flat over an hour: nothing is kept per event per stream.

use futures_util::StreamExt;
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::{sync::watch, time::Instant};

/// Longer than a publish waits for its answer (the instance answers within
/// 10 s): an event older than this was accepted or never will be.
pub const HORIZON: Duration = Duration::from_secs(15);

/// What the streams do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Publishing, and streams close and come back (churn).
    Run,
    /// No more publishing or churn: streams read what is left.
    Drain,
    Stop,
}

/// A tiny xorshift: the soak needs spread, not quality.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What was accepted on one engine: each id's topic and sequence number.
#[derive(Default)]
pub struct Accepted {
    by_id: HashMap<u64, (u32, u64)>,
    by_topic: Vec<BTreeMap<u64, u64>>,
    /// The newest id accepted on each topic.
    pub newest: Vec<u64>,
}

impl Accepted {
    pub fn new(topics: usize) -> Accepted {
        Accepted {
            by_id: HashMap::new(),
            by_topic: vec![BTreeMap::new(); topics],
            newest: vec![0; topics],
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// Counts of one engine's soak.
#[derive(Default, Debug)]
pub struct Counts {
    pub published: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub timed_out: AtomicU64,
    /// Streams closed by the client and opened again with Last-Event-ID.
    pub churned: AtomicU64,
    /// Streams the server ended (or that broke), reopened with Last-Event-ID.
    pub ended: AtomicU64,
    /// Connection attempts refused or failed.
    pub connect_failed: AtomicU64,
    pub resets: AtomicU64,
    pub delivered: AtomicU64,
    /// Checked: delivered events that were accepted, as accepted.
    pub verified: AtomicU64,
    /// Accepted events a stream missed, with a reset in their place.
    pub covered: AtomicU64,
    /// Accepted events a stream missed without a reset: a failure.
    pub lost: AtomicU64,
    /// An id not above the stream's last one: a failure.
    pub duplicate_or_disorder: AtomicU64,
    /// An id accepted as another event (topic or sequence): a failure.
    pub wrong: AtomicU64,
    /// Delivered events whose publish was not answered ok (it timed out or
    /// failed after the engine took it): not a failure.
    pub unconfirmed: AtomicU64,
}

enum Item {
    Event { id: u64, seq: u64 },
    Reset,
}

/// One stream (a browser tab): its topic, and what it read, to be checked.
struct Stream {
    topic: u32,
    /// Read but not yet checked, with when it arrived.
    pending: VecDeque<(Instant, Item)>,
    /// The newest checked id, once it had one.
    checked: Option<u64>,
    /// A reset came after `checked`: events missed since are covered.
    reset_since: bool,
    /// The newest id read (the Last-Event-ID it resumes with).
    last_id: Option<u64>,
}

/// One engine's streams and publishes.
pub struct Soak {
    pub counts: Counts,
    accepted: Mutex<Accepted>,
    streams: Vec<Mutex<Stream>>,
    /// Instances' base URLs (`http://127.0.0.1:port`).
    instances: Vec<String>,
    topics: usize,
    http: reqwest::Client,
}

impl Soak {
    pub fn new(instances: Vec<String>, streams: usize, topics: usize) -> Arc<Soak> {
        Arc::new(Soak {
            counts: Counts::default(),
            accepted: Mutex::new(Accepted::new(topics)),
            streams: (0..streams)
                .map(|i| {
                    Mutex::new(Stream {
                        topic: (i % topics) as u32,
                        pending: VecDeque::new(),
                        checked: None,
                        reset_since: false,
                        last_id: None,
                    })
                })
                .collect(),
            instances,
            topics,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
        })
    }

    pub fn accepted(&self) -> std::sync::MutexGuard<'_, Accepted> {
        self.accepted.lock().unwrap()
    }

    /// Runs stream `i` until the phase is `Stop`: it stays open for a while
    /// (`churn`: a random time up to it), closes and opens again with its
    /// Last-Event-ID, on the instances in turn.
    pub async fn stream(self: Arc<Self>, i: usize, churn: Duration, phase: watch::Receiver<Phase>) {
        let mut rng = Rng::new(i as u64 + 1);
        let mut phase = phase;
        let mut attempt = i;
        loop {
            if *phase.borrow() == Phase::Stop {
                return;
            }
            let (topic, last_id) = {
                let s = self.streams[i].lock().unwrap();
                (s.topic, s.last_id)
            };
            let base = &self.instances[attempt % self.instances.len()];
            attempt += 1;
            let mut request = self.http.get(format!("{base}/events?topic=t{topic}"));
            if let Some(id) = last_id {
                request = request.header("last-event-id", id.to_string());
            }
            let response = match request.send().await {
                Ok(r) if r.status().is_success() => r,
                _ => {
                    self.counts.connect_failed.fetch_add(1, Ordering::Relaxed);
                    // As a browser does: wait its retry, then try again.
                    let _ = tokio::time::timeout(
                        Duration::from_millis(200 + rng.below(800)),
                        phase.wait_for(|p| *p == Phase::Stop),
                    )
                    .await;
                    continue;
                }
            };
            let lifetime = Duration::from_millis(rng.below(churn.as_millis() as u64) + 1000);
            let until = Instant::now() + lifetime;
            let mut body = response.bytes_stream();
            let mut parser = Parser::default();
            let why = loop {
                tokio::select! {
                    chunk = body.next() => match chunk {
                        Some(Ok(bytes)) => parser.feed(&bytes, |event| self.read(i, event)),
                        _ => break End::Server,
                    },
                    _ = tokio::time::sleep_until(until), if *phase.borrow() == Phase::Run => {
                        break End::Churn;
                    }
                    changed = phase.changed() => if changed.is_err() || *phase.borrow() == Phase::Stop {
                        return;
                    },
                }
            };
            match why {
                End::Churn => self.counts.churned.fetch_add(1, Ordering::Relaxed),
                End::Server => {
                    self.counts.ended.fetch_add(1, Ordering::Relaxed);
                    let _ = tokio::time::timeout(
                        Duration::from_millis(200 + rng.below(800)),
                        phase.wait_for(|p| *p == Phase::Stop),
                    )
                    .await;
                    0
                }
            };
        }
    }

    /// A dispatched event of stream `i`.
    fn read(&self, i: usize, event: Dispatched) {
        let mut s = self.streams[i].lock().unwrap();
        if let Some(id) = event.id {
            s.last_id = Some(id);
        }
        let now = Instant::now();
        if event.name.as_deref() == Some("reset") {
            self.counts.resets.fetch_add(1, Ordering::Relaxed);
            s.pending.push_back((now, Item::Reset));
        } else if let (Some(id), Some(seq)) = (event.id, event.data.and_then(|d| d.parse().ok())) {
            self.counts.delivered.fetch_add(1, Ordering::Relaxed);
            s.pending.push_back((now, Item::Event { id, seq }));
        }
    }

    /// Sends one event to topic `topic` through instance `instance`.
    pub async fn publish(self: Arc<Self>, seq: u64, topic: u32, instance: usize) {
        self.counts.published.fetch_add(1, Ordering::Relaxed);
        let url = format!(
            "{}/publish?topic=t{topic}&seq={seq}",
            self.instances[instance]
        );
        let answer = async {
            let response = self.http.post(url).send().await.ok()?;
            let ok = response.status().is_success();
            let text = response.text().await.ok()?;
            Some((ok, text))
        };
        match tokio::time::timeout(Duration::from_secs(12), answer).await {
            Ok(Some((true, text))) => match text.parse::<u64>() {
                Ok(id) => {
                    self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                    let mut accepted = self.accepted();
                    if accepted.by_id.insert(id, (topic, seq)).is_some() {
                        // Two publishes answered with one id.
                        self.counts.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    accepted.by_topic[topic as usize].insert(id, seq);
                    let newest = &mut accepted.newest[topic as usize];
                    *newest = (*newest).max(id);
                }
                Err(_) => {
                    self.counts.wrong.fetch_add(1, Ordering::Relaxed);
                }
            },
            Ok(_) => {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.counts.timed_out.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Checks what the streams read before `horizon` (all of it: `None`).
    pub fn check(&self, horizon: Option<Instant>) {
        let accepted = self.accepted();
        for stream in &self.streams {
            let mut s = stream.lock().unwrap();
            while let Some((at, _)) = s.pending.front() {
                if horizon.is_some_and(|h| *at > h) {
                    break;
                }
                let (_, item) = s.pending.pop_front().unwrap();
                self.check_one(&accepted, &mut s, item);
            }
        }
    }

    fn check_one(&self, accepted: &Accepted, s: &mut Stream, item: Item) {
        let c = &self.counts;
        let (id, seq) = match item {
            Item::Reset => {
                s.reset_since = true;
                return;
            }
            Item::Event { id, seq } => (id, seq),
        };
        if let Some(checked) = s.checked {
            if id <= checked {
                c.duplicate_or_disorder.fetch_add(1, Ordering::Relaxed);
                // What it was, for the one who reads the failure.
                eprintln!(
                    "soak: a stream of topic t{} read id {id} (seq {seq}, accepted as {:?}) \
                     after id {checked} (accepted as {:?}){}",
                    s.topic,
                    accepted.by_id.get(&id),
                    accepted.by_id.get(&checked),
                    if s.reset_since {
                        ", a reset between"
                    } else {
                        ""
                    },
                );
                return;
            }
            let missed = accepted.by_topic[s.topic as usize]
                .range(checked + 1..id)
                .count() as u64;
            self.missed(s, missed);
        }
        match accepted.by_id.get(&id) {
            Some(&(topic, accepted_seq)) if topic == s.topic && accepted_seq == seq => {
                c.verified.fetch_add(1, Ordering::Relaxed)
            }
            Some(_) => c.wrong.fetch_add(1, Ordering::Relaxed),
            None => c.unconfirmed.fetch_add(1, Ordering::Relaxed),
        };
        s.checked = Some(id);
        s.reset_since = false;
    }

    fn missed(&self, s: &Stream, missed: u64) {
        if missed > 0 {
            let counter = if s.reset_since {
                &self.counts.covered
            } else {
                &self.counts.lost
            };
            counter.fetch_add(missed, Ordering::Relaxed);
        }
    }

    /// Whether every stream read up to the newest accepted id of its topic
    /// (or was told of a reset after its last event).
    pub fn caught_up(&self) -> bool {
        let accepted = self.accepted();
        self.streams.iter().all(|stream| {
            let s = stream.lock().unwrap();
            let newest = accepted.newest[s.topic as usize];
            s.last_id.is_some_and(|last| last >= newest)
                || matches!(s.pending.back(), Some((_, Item::Reset)))
        })
    }

    /// After the last check: what each stream never read of its topic.
    pub fn finish(&self) {
        let accepted = self.accepted();
        for stream in &self.streams {
            let s = stream.lock().unwrap();
            if let Some(checked) = s.checked {
                let missed = accepted.by_topic[s.topic as usize]
                    .range(checked + 1..)
                    .count() as u64;
                self.missed(&s, missed);
            }
        }
    }

    pub fn topics(&self) -> usize {
        self.topics
    }
}

enum End {
    Churn,
    Server,
}

/// An event as the EventSource parser dispatches it (or an id alone).
#[derive(Default)]
struct Dispatched {
    id: Option<u64>,
    name: Option<String>,
    data: Option<String>,
}

/// The text/event-stream parser of the WHATWG spec, as much as the soak
/// needs: `id`, `event` and `data` fields; an id alone updates the last id.
#[derive(Default)]
struct Parser {
    line: Vec<u8>,
    event: Dispatched,
    fields: bool,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8], mut dispatch: impl FnMut(Dispatched)) {
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.is_empty() {
                if std::mem::take(&mut self.fields) {
                    dispatch(std::mem::take(&mut self.event));
                }
                continue;
            }
            let text = String::from_utf8_lossy(line);
            let (field, value) = match text.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (&*text, ""),
            };
            match field {
                "" => continue,
                "id" => self.event.id = value.parse().ok(),
                "event" => self.event.name = Some(value.to_owned()),
                "data" => self.event.data = Some(value.to_owned()),
                _ => continue,
            }
            self.fields = true;
        }
    }
}
