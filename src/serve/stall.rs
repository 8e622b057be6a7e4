//! Event streams that make no write progress: a `text/event-stream` body
//! that has something to send (it woke its task, or just gave a frame) but
//! that hyper does not poll for that long is stalled, because the client
//! does not read: an HTTP/1.1 socket that stays full, or an HTTP/2 stream
//! whose flow-control window stays shut (hyper
//! polls a body only when the stream has window, so the body itself could
//! never notice). The connection is then closed and its streams resume
//! from their ids, as a stream that fell behind does.
//!
//! The check runs on a timer of its own, per connection, and only while a
//! body waits to be polled: an idle connection, and a healthy one between
//! events, costs no wake-up.

use atomic_waker::AtomicWaker;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};
use tokio::{sync::Notify, time::Instant};

use crate::observe::Stalled;

/// The bodies of one connection, watched for stalls.
pub(super) struct Stalls {
    epoch: Instant,
    timeout: Duration,
    watches: Mutex<Vec<Weak<Watch>>>,
    /// Told when a body starts waiting to be polled.
    waiting: Notify,
}

/// One body's side of the watch: since when it waits to be polled.
struct Watch {
    stalls: Arc<Stalls>,
    /// Set when its stall closes the connection: the stream counts as
    /// lagging (the request carried it to the stream).
    mark: Stalled,
    /// Milliseconds since `epoch`, plus one, of the first wake-up since the
    /// body was last polled; 0 while it is not waiting.
    since: AtomicU64,
    /// The task of hyper's that polls the body.
    task: AtomicWaker,
}

impl Stalls {
    pub(super) fn new(timeout: Duration) -> Arc<Stalls> {
        Arc::new(Stalls {
            epoch: Instant::now(),
            timeout,
            watches: Mutex::new(Vec::new()),
            waiting: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// `body`, watched: waiting from now until its first poll (an HTTP/2
    /// stream whose window never opens is never polled at all).
    fn watch<B>(self: &Arc<Self>, body: B, mark: Stalled) -> Watched<B> {
        let watch = Arc::new(Watch {
            stalls: self.clone(),
            mark,
            since: AtomicU64::new(self.now()),
            task: AtomicWaker::new(),
        });
        if let Ok(mut watches) = self.watches.lock() {
            watches.push(Arc::downgrade(&watch));
        }
        self.waiting.notify_one();
        let waker = Waker::from(watch.clone());
        Watched {
            inner: body,
            watch: Some((watch, waker)),
        }
    }

    /// `body`, not watched.
    fn pass<B>(body: B) -> Watched<B> {
        Watched {
            inner: body,
            watch: None,
        }
    }

    /// Completes once a body of the connection has waited to be polled for
    /// the timeout.
    pub(super) async fn stalled(&self) {
        loop {
            self.waiting.notified().await;
            // Until no body waits: sleep to the earliest deadline, look again.
            while let Some(deadline) = self.check() {
                let now = self.now();
                if deadline <= now {
                    self.mark_stalled(now);
                    return;
                }
                let at = self.epoch + Duration::from_millis(deadline - 1);
                tokio::time::sleep_until(at).await;
            }
        }
    }

    /// Marks the bodies that have waited for the timeout at `now`: the
    /// connection is closed for them.
    fn mark_stalled(&self, now: u64) {
        let timeout = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX / 2);
        let Ok(watches) = self.watches.lock() else {
            return;
        };
        for watch in watches.iter().filter_map(Weak::upgrade) {
            let since = watch.since.load(Ordering::Acquire);
            if since != 0 && since.saturating_add(timeout) <= now {
                watch.mark.set();
            }
        }
    }

    /// The earliest deadline of the waiting bodies (in `now`'s unit), if
    /// any waits; forgets the bodies that are gone.
    fn check(&self) -> Option<u64> {
        let timeout = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX / 2);
        let mut watches = self.watches.lock().ok()?;
        let mut earliest: Option<u64> = None;
        watches.retain(|watch| {
            let Some(watch) = watch.upgrade() else {
                return false;
            };
            let since = watch.since.load(Ordering::Acquire);
            if since != 0 {
                let deadline = since.saturating_add(timeout);
                earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
            }
            true
        });
        earliest
    }
}

impl Watch {
    /// Marks the body as waiting to be polled, from now unless it already
    /// was.
    fn start_waiting(&self) {
        let now = self.stalls.now();
        if self
            .since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.stalls.waiting.notify_one();
        }
    }
}

impl Wake for Watch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.start_waiting();
        self.task.wake();
    }
}

pin_project! {
    /// A response body whose polls are watched (see the module's docs),
    /// or, for a response that is not an event stream, not.
    pub(super) struct Watched<B> {
        #[pin]
        inner: B,
        watch: Option<(Arc<Watch>, Waker)>,
    }
}

impl<B: Body> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some((watch, waker)) = this.watch else {
            return this.inner.poll_frame(cx);
        };
        // Polled: no longer waiting. The body wakes our waker, which marks
        // when it starts waiting again, then hyper's task.
        watch.task.register(cx.waker());
        watch.since.store(0, Ordering::Release);
        let polled = this.inner.poll_frame(&mut Context::from_waker(waker));
        if let Poll::Ready(Some(_)) = &polled {
            // It may have more at once: waiting until hyper asks again
            // (which it does not while the client's socket or window is
            // full).
            watch.start_waiting();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The future of a response whose body is watched.
    pub(super) struct Watching<F> {
        #[pin]
        inner: F,
        stalls: Arc<Stalls>,
        mark: Stalled,
    }
}

impl<F> Watching<F> {
    /// `inner`, a response to a request that carries `mark` (so that an
    /// event stream, stalled, is counted as lagging).
    pub(super) fn new(inner: F, stalls: Arc<Stalls>, mark: Stalled) -> Self {
        Watching {
            inner,
            stalls,
            mark,
        }
    }
}

impl<F, B, E> Future for Watching<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Watched<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        // Event streams only: they never end, and a client that stops
        // reading one holds it for good. Other responses (a download to a
        // slow client, whose next poll may be long in coming while it still
        // reads) are the app's to bound.
        let stream = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        Poll::Ready(Ok(response.map(|body| {
            if stream {
                this.stalls.watch(body, this.mark.clone())
            } else {
                Stalls::pass(body)
            }
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body that wakes its task and is never polled again is stalled
    /// after the timeout; one that is polled after each wake-up is not.
    #[tokio::test(start_paused = true)]
    async fn a_body_woken_and_not_polled_is_stalled_after_the_timeout() {
        let stalls = Stalls::new(Duration::from_secs(10));
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<bytes::Bytes>, std::convert::Infallible>>(4);
        let body = http_body_util::StreamBody::new(tokio_stream_of(rx));
        let mark = Stalled::default();
        let mut watched = stalls.watch(body, mark.clone());
        // Polled at once, pending: registered with the channel.
        assert!(pending(&mut watched));
        let stalled = stalls.stalled();
        tokio::pin!(stalled);
        // Nothing waits yet: no stall, however long.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), stalled.as_mut())
                .await
                .is_err()
        );
        // An event comes and is read: still no stall.
        tx.send(Ok(Frame::data("a".into()))).await.unwrap();
        assert!(watched.frame().await.is_some());
        assert!(pending(&mut watched));
        assert!(
            tokio::time::timeout(Duration::from_secs(60), stalled.as_mut())
                .await
                .is_err()
        );
        // An event comes and nobody polls: stalled after 10 s, not before.
        let start = Instant::now();
        tx.send(Ok(Frame::data("b".into()))).await.unwrap();
        assert!(!mark.is_set());
        stalled.await;
        assert_eq!(start.elapsed().as_secs(), 10);
        // Its stream will count as lagging.
        assert!(mark.is_set());

        // A body never polled at all (a window that never opens) too.
        drop(watched);
        let start = Instant::now();
        let never = stalls.watch(
            http_body_util::Empty::<bytes::Bytes>::new(),
            Stalled::default(),
        );
        stalls.stalled().await;
        assert_eq!(start.elapsed().as_secs(), 10);
        drop(never);
    }

    /// Event streams are watched; other responses (a download to a slow
    /// client) are not.
    #[tokio::test]
    async fn only_event_streams_are_watched() {
        let stalls = Stalls::new(Duration::from_secs(10));
        let respond = |content_type: &'static str| {
            let response = Response::builder()
                .header(http::header::CONTENT_TYPE, content_type)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            Watching::new(
                std::future::ready(Ok::<_, std::convert::Infallible>(response)),
                stalls.clone(),
                Stalled::default(),
            )
        };
        let stream = respond("text/event-stream").await.unwrap();
        assert!(stream.body().watch.is_some());
        let download = respond("application/octet-stream").await.unwrap();
        assert!(download.body().watch.is_none());
    }

    /// Polls `body` once; whether it was pending.
    fn pending<B: Body + Unpin>(body: &mut B) -> bool {
        let waker = Waker::noop();
        Pin::new(body)
            .poll_frame(&mut Context::from_waker(waker))
            .is_pending()
    }

    fn tokio_stream_of<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_core::Stream<Item = T> + Unpin {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
