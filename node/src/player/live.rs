//! `live.ts`: one endless MPEG-TS body for VLC, ffplay or mpv.
//!
//! Segments of MPEG-TS input concatenate into one seamless transport stream,
//! so the body is the listed segments back to back, starting at the live edge
//! and following the [timeline](super::timeline) (which has already decided
//! which gaps to skip). The body is a pull stream: the next segment is taken
//! only when hyper has written the previous one out, so a slow client holds at
//! most one segment plus the socket buffers. A client so slow that the segment
//! after its last one has left the window jumps to the live edge. Dropping the
//! connection drops the stream.

use std::convert::Infallible;

use axum::{
    body::Body,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::Stream;
use tokio::{
    sync::{watch, OwnedSemaphorePermit},
    time::Instant,
};

use super::{timeline::Entry, Player};

/// The segment to send after `last` (`None`: nothing sent yet).
pub(crate) fn pick<'a>(
    mut entries: impl DoubleEndedIterator<Item = &'a Entry>,
    last: Option<u64>,
) -> Option<u64> {
    let Some(last) = last else {
        return entries.next_back().map(|e| e.segment);
    };
    let first = entries.next()?;
    if first.segment > last {
        // Everything after `last` was evicted: the client fell behind the
        // window; it is a live stream, so jump to the edge.
        return entries.next_back().or(Some(first)).map(|e| e.segment);
    }
    std::iter::once(first)
        .chain(entries)
        .find(|e| e.segment > last)
        .map(|e| e.segment)
}

struct Live {
    player: Player,
    changed: watch::Receiver<u64>,
    last: Option<u64>,
    _permit: OwnedSemaphorePermit,
}

impl Live {
    /// The next segment's bytes, once it is listed.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            // Mark the current version seen *before* looking, so a segment
            // listed meanwhile wakes `changed()` below.
            self.changed.borrow_and_update();
            let (next, deadline) = self.player.with_timeline(Instant::now(), |state| {
                let seg = pick(state.timeline.entries().iter(), self.last)?;
                Some((seg, state.store.segment(seg)?))
            });
            if let Some((seg, data)) = next {
                self.last = Some(seg);
                return Some(data);
            }
            match deadline {
                // A gap decision falls due then.
                Some(at) => tokio::select! {
                    r = self.changed.changed() => r.ok()?,
                    () = tokio::time::sleep_until(at) => {}
                },
                None => self.changed.changed().await.ok()?,
            }
        }
    }
}

fn body(live: Live) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::unfold(live, |mut live| async move {
        let data = live.next().await?;
        Some((Ok(data), live))
    })
}

/// The `live.ts` response: 503 while the client limit is reached.
pub(crate) fn response(player: &Player) -> Response {
    let Ok(permit) = player.inner.live_clients.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "too many live.ts clients\n",
        )
            .into_response();
    };
    let live = Live {
        player: player.clone(),
        changed: player.inner.changed.subscribe(),
        last: None,
        _permit: permit,
    };
    (
        [
            (header::CONTENT_TYPE, "video/mp2t"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body(live)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(segments: &[u64]) -> Vec<Entry> {
        segments
            .iter()
            .map(|&segment| Entry {
                segment,
                msn: segment,
                dsn: 0,
                discontinuity: false,
                duration_ms: 1_000,
            })
            .collect()
    }

    #[test]
    fn starts_at_the_edge_then_follows() {
        let e = entries(&[3, 4, 6, 7]);
        assert_eq!(pick(e.iter(), None), Some(7));
        assert_eq!(pick(e.iter(), Some(3)), Some(4));
        assert_eq!(pick(e.iter(), Some(4)), Some(6), "skipped gap");
        assert_eq!(pick(e.iter(), Some(7)), None, "wait for more");
        assert_eq!(pick([].iter(), None), None);
    }

    #[test]
    fn jumps_to_the_edge_after_falling_behind() {
        let e = entries(&[10, 11, 12]);
        assert_eq!(pick(e.iter(), Some(2)), Some(12));
        assert_eq!(pick(e[..1].iter(), Some(2)), Some(10));
    }
}
