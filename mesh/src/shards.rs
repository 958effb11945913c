//! Trackers shard by stream (docs/protocol.md §12.9): a node given several
//! tracker URLs announces a stream to the tracker that rendezvous
//! (highest-random-weight) hashing of the stream id names, and to the next
//! in that order when it does not answer. Trackers share no state, so every
//! node must reach the same choice from the same list: the weight is a
//! BLAKE3 digest, never std's per-process randomised hasher.
//!
//! Rendezvous hashing (Thaler & Ravishankar, 1998) moves only the streams of
//! a tracker that is added or removed; every other stream keeps its tracker.
//! Each announce starts again from the preferred tracker, so a stream goes
//! back to it as soon as it answers again.

use crate::hints::{Announce, Assignments, Hints, HintsError, ReflectorAnnounce, TrackerClient};

/// Most tracker URLs one node takes: failover tries them in turn.
pub const MAX_TRACKERS: usize = 64;

/// `url`'s weight for `stream`: the first 8 bytes of
/// BLAKE3(url ‖ 0x00 ‖ lower-case stream id), little-endian.
pub fn weight(stream: &str, url: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(url.as_bytes());
    h.update(&[0]);
    h.update(stream.to_ascii_lowercase().as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Indices of `urls` in the order a node tries them for `stream`: highest
/// weight first, ties to the earlier URL.
pub fn rendezvous_order<S: AsRef<str>>(stream: &str, urls: &[S]) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = (urls.iter().enumerate())
        .map(|(i, u)| (weight(stream, u.as_ref()), i))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    order.into_iter().map(|(_, i)| i).collect()
}

/// A URL as it is hashed: trimmed, without a trailing `/`, so that
/// `http://t:7070/` and `http://t:7070` name the same tracker.
fn canonical(url: &str) -> &str {
    url.trim().trim_end_matches('/')
}

/// The trackers a node was given, each with its client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Trackers {
    urls: Vec<String>,
    clients: Vec<TrackerClient>,
}

impl Trackers {
    /// One or more tracker base URLs, comma-separated (`--tracker A,B`).
    pub fn parse(list: &str) -> Result<Self, HintsError> {
        Self::from_urls(list.split(','))
    }

    /// Each item may itself be a comma-separated list (a repeated
    /// `--tracker` flag, each maybe a list); empty items are skipped,
    /// duplicates kept once.
    pub fn from_urls<I, S>(urls: I) -> Result<Self, HintsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<String> = Vec::new();
        for item in urls {
            for url in item.as_ref().split(',').map(canonical) {
                if !url.is_empty() && !list.iter().any(|u| u == url) {
                    list.push(url.to_owned());
                }
            }
        }
        let bad = |reason: String| HintsError::BadUrl {
            url: list.join(","),
            reason,
        };
        if list.is_empty() {
            return Err(bad("no tracker URL".into()));
        }
        if list.len() > MAX_TRACKERS {
            return Err(bad(format!("at most {MAX_TRACKERS} trackers")));
        }
        let clients = (list.iter())
            .map(|u| TrackerClient::new(u))
            .collect::<Result<_, _>>()?;
        Ok(Trackers {
            urls: list,
            clients,
        })
    }

    /// The URLs, canonical, in the order given.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The order `stream`'s announces try the trackers in.
    pub fn order(&self, stream: &str) -> Vec<usize> {
        rendezvous_order(stream, &self.urls)
    }

    /// Announces to `a.stream`'s tracker, or the next that answers; returns
    /// the hints and the index of the tracker that gave them.
    pub async fn announce(&self, a: &Announce) -> Result<(Hints, usize), HintsError> {
        let mut last = None;
        for i in self.order(&a.stream) {
            match self.clients[i].announce(a).await {
                Ok(hints) => return Ok((hints, i)),
                Err(e) if is_final(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!(tracker = %self.urls[i], "no answer, next tracker: {e}");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("a Trackers holds at least one URL"))
    }

    /// Offers a reflector to the first tracker, in the order given, that
    /// answers: a reflector carries streams of any shard, and one
    /// coordinator assigns it (docs/coordinator.md).
    pub async fn reflect(&self, a: &ReflectorAnnounce) -> Result<Assignments, HintsError> {
        let mut last = None;
        for (url, client) in self.urls.iter().zip(&self.clients) {
            match client.reflect(a).await {
                Ok(assignments) => return Ok(assignments),
                Err(e) if is_final(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!(tracker = %url, "no answer, next tracker: {e}");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("a Trackers holds at least one URL"))
    }
}

/// A refusal every tracker would repeat (the request itself is wrong): no
/// failover. A tracker that is down, full (503) or answers nonsense is
/// skipped.
fn is_final(e: &HintsError) -> bool {
    matches!(e, HintsError::Status { status, .. } if (400..500).contains(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(i: u32) -> String {
        format!("{:064x}", u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    const TWO: [&str; 2] = ["http://127.0.0.1:7070", "http://127.0.0.1:7071"];

    #[test]
    fn the_order_is_stable_and_names_every_tracker_once() {
        let three = ["http://a:1", "http://b:1", "http://c:1"];
        for i in 0..50 {
            let order = rendezvous_order(&stream(i), &three);
            assert_eq!(order, rendezvous_order(&stream(i), &three));
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2]);
            // The order of the list given does not matter, nor the case of the id.
            let reversed = ["http://c:1", "http://b:1", "http://a:1"];
            let back: Vec<usize> = (rendezvous_order(&stream(i), &reversed).iter())
                .map(|&j| 2 - j)
                .collect();
            assert_eq!(back, order);
            let upper = stream(i).to_ascii_uppercase();
            assert_eq!(rendezvous_order(&upper, &three), order);
        }
        // A known value: every node, every build, the same answer.
        assert_eq!(
            weight(&stream(1), TWO[0]),
            weight(&stream(1).to_ascii_uppercase(), TWO[0])
        );
        assert_ne!(weight(&stream(1), TWO[0]), weight(&stream(1), TWO[1]));
    }

    #[test]
    fn twenty_streams_use_both_trackers() {
        let first: Vec<usize> = (0..20)
            .map(|i| rendezvous_order(&stream(i), &TWO)[0])
            .collect();
        let on_0 = first.iter().filter(|&&t| t == 0).count();
        assert!((4..=16).contains(&on_0), "{on_0} of 20 on tracker 0");
        // Over many streams, close to even.
        let on_0 = (0..2000)
            .filter(|&i| rendezvous_order(&stream(i), &TWO)[0] == 0)
            .count();
        assert!((900..=1100).contains(&on_0), "{on_0} of 2000 on tracker 0");
    }

    #[test]
    fn removing_a_tracker_moves_only_its_streams() {
        let four = ["http://a:1", "http://b:1", "http://c:1", "http://d:1"];
        let without_c = ["http://a:1", "http://b:1", "http://d:1"];
        let mut moved = 0;
        for i in 0..400 {
            let before = four[rendezvous_order(&stream(i), &four)[0]];
            let after = without_c[rendezvous_order(&stream(i), &without_c)[0]];
            if before == "http://c:1" {
                moved += 1;
                // Its new tracker is its second choice before.
                assert_eq!(after, four[rendezvous_order(&stream(i), &four)[1]]);
            } else {
                assert_eq!(before, after, "stream {i} moved though its tracker stayed");
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn urls_parse_from_lists_and_repeats() {
        let t = Trackers::parse("http://a:1/, http://b:1").unwrap();
        assert_eq!(t.urls(), ["http://a:1", "http://b:1"]);
        let t = Trackers::from_urls(["http://a:1", "http://b:1,http://a:1/"]).unwrap();
        assert_eq!(t.urls(), ["http://a:1", "http://b:1"]);
        assert!(matches!(
            Trackers::parse(" , "),
            Err(HintsError::BadUrl { .. })
        ));
        assert!(matches!(
            Trackers::parse("http://a:1,ftp://b"),
            Err(HintsError::BadUrl { .. })
        ));
        let too_many: Vec<String> = (0..=MAX_TRACKERS)
            .map(|i| format!("http://t{i}:1"))
            .collect();
        assert!(Trackers::from_urls(&too_many).is_err());
    }

    #[test]
    fn only_wrong_requests_stop_the_failover() {
        let status = |status| HintsError::Status {
            status,
            message: String::new(),
        };
        assert!(is_final(&status(400)));
        assert!(is_final(&status(413)));
        assert!(!is_final(&status(503)));
        assert!(!is_final(&status(500)));
        assert!(!is_final(&HintsError::Decode("junk".into())));
    }
}
