//! The tracker's hint protocol: HTTP/JSON wire types and a small client.
//!
//! Every peer (viewer, seeder, reflector) periodically `POST`s an [`Announce`]
//! to `/v1/announce` and gets [`Hints`] back: ranked candidate neighbours, the
//! stream's infrastructure to fall back to, and when to announce again.
//! A reflector also `POST`s a [`ReflectorAnnounce`] to `/v1/reflectors` and
//! gets its [`Assignments`] back: the streams it is to carry and their parents.
//! `GET /v1/streams` lists live streams as a [`StreamList`]. Errors come back
//! as a 4xx/5xx status with an [`ErrorBody`].
//!
//! Hints are advice held as soft state: a peer that stops announcing is
//! forgotten after a few intervals, and the mesh keeps working while the
//! tracker is down, so callers treat every [`HintsError`] as "try again later".
//!
//! Ids and addresses stay plain strings here (stream id: 64 hex chars, peer id:
//! libp2p base58, addresses: multiaddr text) so this module needs no libp2p.

use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::proto::Locality;

/// Length of a stream id in hex characters (a 32-byte key digest).
pub const STREAM_ID_HEX_LEN: usize = 64;
/// Longest peer id the tracker accepts, in bytes.
pub const MAX_PEER_ID_LEN: usize = 128;
/// Most listen addresses one announce may carry.
pub const MAX_ADDRS: usize = 16;
/// Longest multiaddr string the tracker accepts, in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Longest `name` / `http` string the tracker accepts, in bytes.
pub const MAX_TEXT_LEN: usize = 256;
/// Largest `counters` object the tracker keeps, as serialized JSON bytes.
pub const MAX_COUNTERS_BYTES: usize = 4096;
/// Candidates asked for when an announce does not say.
pub const DEFAULT_WANT: u32 = 10;
/// The tracker never returns more candidates than this, whatever `want` says.
pub const MAX_WANT: u32 = 200;

/// Largest downstream fan-out a reflector may announce.
pub const MAX_FAN_OUT: u32 = 4096;
/// Most streams a reflector may list in `carrying`, and most it is assigned.
pub const MAX_CARRYING: usize = 1024;
/// Longest `failure_domain` the tracker accepts, in bytes.
pub const MAX_FAILURE_DOMAIN_LEN: usize = 64;
/// Most addresses of one parent in an [`Assignment`], so that a reflector's
/// answer stays bounded however many streams it carries.
pub const MAX_PARENT_ADDRS: usize = 8;

/// Largest response body the client reads; the tracker's answers are far smaller.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Largest [`Assignments`] the client reads: [`MAX_CARRYING`] streams, two
/// parents each with [`MAX_PARENT_ADDRS`] addresses, fit.
const MAX_ASSIGNMENTS_BYTES: usize = 8 << 20;
/// Per-request timeout of [`TrackerClient::new`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a peer does for the stream: the mesh's own [`Role`], which the
/// tracker's JSON spells in lower case.
pub use crate::proto::Role;

use crate::allocation::ViewerReport;

/// Body of `POST /v1/announce`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announce {
    /// Stream id, 64 hex characters.
    pub stream: String,
    pub peer_id: String,
    /// Multiaddrs the peer listens on; a peer with none is never offered as a candidate.
    pub addrs: Vec<String>,
    pub role: Role,
    /// Current number of neighbours.
    pub degree: u32,
    pub max_degree: u32,
    /// Upload capacity; 0 = unknown or unlimited.
    #[serde(default)]
    pub upload_kbps: u32,
    /// Infrastructure only: base URL of its HTTP origin.
    #[serde(default)]
    pub http: Option<String>,
    /// Seeders: the stream's human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    /// Most candidates wanted (the tracker clamps it to [`MAX_WANT`]).
    #[serde(default = "default_want")]
    pub want: u32,
    /// Free-form stats for operators.
    #[serde(default)]
    pub counters: serde_json::Value,
    /// The peer's network coordinate, when it has one.
    #[serde(default)]
    pub coord: Option<crate::proto::Coord>,
    /// Viewers: what the interval since the last announce brought, for
    /// the coordinator (docs/coordinator.md).
    #[serde(default)]
    pub report: Option<ViewerReport>,
    /// Infrastructure: the stream's bitrate, kbit/s (0: not known).
    #[serde(default)]
    pub bitrate_kbps: u32,
}

fn default_want() -> u32 {
    DEFAULT_WANT
}

/// Why the tracker refuses an announce (see the `MAX_*` limits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAnnounce {
    #[error("stream id must be {STREAM_ID_HEX_LEN} hex characters")]
    StreamId,
    #[error(
        "peer_id must be 1..={MAX_PEER_ID_LEN} bytes without whitespace or control characters"
    )]
    PeerId,
    #[error("at most {MAX_ADDRS} addrs allowed")]
    TooManyAddrs,
    #[error("each addr must be a multiaddr ('/...') of at most {MAX_ADDR_LEN} bytes")]
    Addr,
    #[error("{0} must be at most {MAX_TEXT_LEN} bytes")]
    TextTooLong(&'static str),
    #[error("counters must be at most {MAX_COUNTERS_BYTES} bytes of JSON")]
    CountersTooLarge,
    #[error("fan_out must be 1..={MAX_FAN_OUT}")]
    FanOut,
    #[error("carrying may list at most {MAX_CARRYING} streams")]
    TooManyCarried,
    #[error("each stream in carrying must be {STREAM_ID_HEX_LEN} hex characters")]
    CarriedStreamId,
    #[error("failure_domain must be at most {MAX_FAILURE_DOMAIN_LEN} bytes")]
    FailureDomain,
}

impl Announce {
    /// A bare announce of `peer_id` in `stream`: no addresses, no
    /// neighbours and a degree cap of 0, the wire's defaults (§12.2) for
    /// the rest. Callers fill in what they know.
    pub fn new(stream: impl Into<String>, peer_id: impl Into<String>, role: Role) -> Self {
        Announce {
            stream: stream.into(),
            peer_id: peer_id.into(),
            addrs: Vec::new(),
            role,
            degree: 0,
            max_degree: 0,
            upload_kbps: 0,
            http: None,
            name: None,
            want: DEFAULT_WANT,
            counters: serde_json::Value::Null,
            coord: None,
            report: None,
            bitrate_kbps: 0,
        }
    }

    /// Checks the limits the tracker enforces, so a client can catch a bad
    /// announce before sending it. `want` is not checked: the tracker clamps it.
    pub fn validate(&self) -> Result<(), InvalidAnnounce> {
        if !is_stream_id(&self.stream) {
            return Err(InvalidAnnounce::StreamId);
        }
        validate_peer(&self.peer_id, &self.addrs, self.http.as_deref())?;
        if self.name.as_ref().is_some_and(|s| s.len() > MAX_TEXT_LEN) {
            return Err(InvalidAnnounce::TextTooLong("name"));
        }
        // Serializing a Value cannot fail (its map keys are strings).
        let counters_len = serde_json::to_vec(&self.counters).map_or(usize::MAX, |v| v.len());
        if counters_len > MAX_COUNTERS_BYTES {
            return Err(InvalidAnnounce::CountersTooLarge);
        }
        Ok(())
    }
}

/// The rules on who a peer is and where it is reached, one definition for
/// [`Announce`] and [`ReflectorAnnounce`].
fn validate_peer(
    peer_id: &str,
    addrs: &[String],
    http: Option<&str>,
) -> Result<(), InvalidAnnounce> {
    let id_ok = !peer_id.is_empty()
        && peer_id.len() <= MAX_PEER_ID_LEN
        && !peer_id.chars().any(|c| c.is_whitespace() || c.is_control());
    if !id_ok {
        return Err(InvalidAnnounce::PeerId);
    }
    if addrs.len() > MAX_ADDRS {
        return Err(InvalidAnnounce::TooManyAddrs);
    }
    if addrs
        .iter()
        .any(|a| !a.starts_with('/') || a.len() > MAX_ADDR_LEN)
    {
        return Err(InvalidAnnounce::Addr);
    }
    if http.is_some_and(|s| s.len() > MAX_TEXT_LEN) {
        return Err(InvalidAnnounce::TextTooLong("http"));
    }
    Ok(())
}

/// Whether `s` has the shape of a stream id: exactly 64 hex digits (either case).
pub fn is_stream_id(s: &str) -> bool {
    s.len() == STREAM_ID_HEX_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A candidate neighbour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerHint {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub role: Role,
    pub degree: u32,
    pub max_degree: u32,
    /// Its network coordinate, when it announced one.
    #[serde(default)]
    pub coord: Option<crate::proto::Coord>,
    /// Its AS and subnet as the tracker sees them (zero: unknown).
    #[serde(default)]
    pub loc: Locality,
}

/// A seeder or reflector of the stream, to fall back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfraHint {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// Base URL of its HTTP origin, if it has one.
    pub http: Option<String>,
}

/// Answer to an announce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hints {
    /// Best first; never more than the announce's `want`, never the announcer.
    #[serde(default)]
    pub candidates: Vec<PeerHint>,
    #[serde(default)]
    pub seeders: Vec<InfraHint>,
    /// Announce again after this many seconds.
    pub interval_s: u32,
    /// The announcer's own AS and subnet as the tracker sees them (zero:
    /// unknown), for its engine ([`crate::proto::Input::Located`]).
    #[serde(default)]
    pub you: Locality,
    /// Viewers the tracker knows in this stream, about (0: not said): a
    /// node sizes its share of long links by it.
    #[serde(default)]
    pub viewers: u32,
    /// Infrastructure: the upload it may spend on this stream, bit/s, as
    /// the coordinator split it (`None`: no budget, as before).
    #[serde(default)]
    pub budget_bps: Option<u64>,
    /// Reflectors serve the stream's viewers (docs/coordinator.md): its
    /// seeders then feed the reflectors only.
    #[serde(default)]
    pub reflected: bool,
}

/// One live stream, as listed by `GET /v1/streams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub stream: String,
    /// The name its seeder announced.
    pub name: Option<String>,
    pub viewers: u32,
    /// Live infrastructure: seeders and reflectors.
    pub seeders: u32,
}

/// Body of `GET /v1/streams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamList {
    pub streams: Vec<StreamInfo>,
}

/// Body of `POST /v1/reflectors`: a reflector offering itself to carry
/// whatever streams the coordinator assigns it (docs/coordinator.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReflectorAnnounce {
    pub peer_id: String,
    /// Multiaddrs it listens on, for its children and viewers to dial.
    pub addrs: Vec<String>,
    /// Base URL of its HTTP origin, if it has one.
    #[serde(default)]
    pub http: Option<String>,
    /// Downstream sessions it can hold across all streams: viewers and
    /// the reflectors it feeds.
    pub fan_out: u32,
    /// Upload capacity; 0 = unknown.
    #[serde(default)]
    pub upload_kbps: u32,
    /// Stream ids it carries now.
    #[serde(default)]
    pub carrying: Vec<String>,
    /// Where it shares fate with others (a rack, a site): reflectors of one
    /// domain are not each other's only parents when that can be avoided.
    #[serde(default)]
    pub failure_domain: Option<String>,
}

impl ReflectorAnnounce {
    /// Checks the limits the tracker enforces (docs/protocol.md §12.8).
    pub fn validate(&self) -> Result<(), InvalidAnnounce> {
        validate_peer(&self.peer_id, &self.addrs, self.http.as_deref())?;
        if !(1..=MAX_FAN_OUT).contains(&self.fan_out) {
            return Err(InvalidAnnounce::FanOut);
        }
        if self.carrying.len() > MAX_CARRYING {
            return Err(InvalidAnnounce::TooManyCarried);
        }
        if !self.carrying.iter().all(|s| is_stream_id(s)) {
            return Err(InvalidAnnounce::CarriedStreamId);
        }
        let domain_len = self.failure_domain.as_ref().map_or(0, String::len);
        if domain_len > MAX_FAILURE_DOMAIN_LEN {
            return Err(InvalidAnnounce::FailureDomain);
        }
        Ok(())
    }
}

/// Answer to a [`ReflectorAnnounce`]: every stream the reflector is to carry.
/// A stream it carries that is not listed is no longer its to carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignments {
    /// Announce again after this many seconds.
    pub interval_s: u32,
    pub streams: Vec<Assignment>,
}

/// One stream a reflector carries, and where it takes it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub stream: String,
    /// The nodes that feed it full copies (seeders or reflectors), usually two.
    pub parents: Vec<ParentHint>,
    /// Downstream sessions it may hold for this stream.
    pub max_degree: u32,
    /// The upload it may spend on this stream, bit/s, as in [`Hints::budget_bps`].
    #[serde(default)]
    pub budget_bps: Option<u64>,
}

/// A parent of a reflector for one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentHint {
    pub peer_id: String,
    /// At most [`MAX_PARENT_ADDRS`].
    pub addrs: Vec<String>,
    /// `seeder` or `reflector`.
    pub role: Role,
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HintsError {
    #[error("bad tracker URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The tracker answered with a non-success status; `message` is its
    /// [`ErrorBody::error`] or, failing that, the start of the body text.
    #[error("tracker answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("tracker unreachable: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("tracker answer not understood: {0}")]
    Decode(String),
}

/// Client for one tracker. Cheap to clone (shares the connection pool).
#[derive(Clone, Debug)]
pub struct TrackerClient {
    http: reqwest::Client,
    announce_url: Url,
    reflectors_url: Url,
    streams_url: Url,
}

impl TrackerClient {
    /// A client for the tracker at `base_url` (e.g. `http://127.0.0.1:7070`),
    /// with a 3 s timeout per request.
    pub fn new(base_url: &str) -> Result<Self, HintsError> {
        Self::with_timeout(base_url, DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(base_url: &str, timeout: Duration) -> Result<Self, HintsError> {
        let bad = |reason: &str| HintsError::BadUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("scheme must be http or https"));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(bad("no host"));
        }
        // Resolve the endpoints below any path prefix the tracker is mounted at.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        base.set_fragment(None);
        let join = |p: &str| base.join(p).map_err(|e| bad(&e.to_string()));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(HintsError::Transport)?;
        Ok(Self {
            announce_url: join("v1/announce")?,
            reflectors_url: join("v1/reflectors")?,
            streams_url: join("v1/streams")?,
            http,
        })
    }

    pub async fn announce(&self, a: &Announce) -> Result<Hints, HintsError> {
        let resp = self
            .http
            .post(self.announce_url.clone())
            .json(a)
            .send()
            .await?;
        decode(resp, MAX_RESPONSE_BYTES).await
    }

    /// Offers a reflector to the tracker; the answer is what it is to carry.
    pub async fn reflect(&self, a: &ReflectorAnnounce) -> Result<Assignments, HintsError> {
        let resp = self
            .http
            .post(self.reflectors_url.clone())
            .json(a)
            .send()
            .await?;
        decode(resp, MAX_ASSIGNMENTS_BYTES).await
    }

    pub async fn streams(&self) -> Result<Vec<StreamInfo>, HintsError> {
        let resp = self.http.get(self.streams_url.clone()).send().await?;
        Ok(decode::<StreamList>(resp, MAX_RESPONSE_BYTES)
            .await?
            .streams)
    }
}

async fn decode<T: serde::de::DeserializeOwned>(
    mut resp: reqwest::Response,
    max_bytes: usize,
) -> Result<T, HintsError> {
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max_bytes {
            return Err(HintsError::Decode(format!(
                "response larger than {max_bytes} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => e.error,
            Err(_) => String::from_utf8_lossy(&body).chars().take(512).collect(),
        };
        return Err(HintsError::Status {
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&body).map_err(|e| HintsError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce() -> Announce {
        Announce {
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            degree: 1,
            max_degree: 8,
            ..Announce::new("ab".repeat(32), "12D3KooWPeer", Role::Viewer)
        }
    }

    #[test]
    fn wire_names_and_defaults() {
        let v = serde_json::to_value(announce()).unwrap();
        assert_eq!(v["role"], "viewer");
        assert_eq!(v["max_degree"], 8);
        assert_eq!(
            serde_json::to_value(Role::Reflector).unwrap(),
            serde_json::json!("reflector")
        );
        let minimal = serde_json::json!({
            "stream": "ab".repeat(32), "peer_id": "p", "addrs": [],
            "role": "seeder", "degree": 0, "max_degree": 4
        });
        let a: Announce = serde_json::from_value(minimal).unwrap();
        assert_eq!(a.want, DEFAULT_WANT);
        assert_eq!(a.upload_kbps, 0);
        assert_eq!(a.name, None);
        assert_eq!(a.counters, serde_json::Value::Null);
        assert!(serde_json::from_value::<Role>(serde_json::json!("Viewer")).is_err());
    }

    #[test]
    fn hints_locality_fields_default_to_unknown() {
        // An older tracker's answer has neither `you` nor `loc`.
        let old = serde_json::json!({
            "candidates": [{"peer_id": "p", "addrs": [], "role": "viewer",
                            "degree": 1, "max_degree": 8}],
            "interval_s": 5
        });
        let h: Hints = serde_json::from_value(old).unwrap();
        assert_eq!(h.you, Locality::default());
        assert_eq!(h.viewers, 0, "an older tracker does not say");
        assert_eq!(h.budget_bps, None, "nor does one without a coordinator");
        assert_eq!(h.candidates[0].loc, Locality::default());

        let ip = "203.0.113.9".parse().unwrap();
        let h = Hints {
            you: Locality::of_ip(ip, 64500),
            ..h
        };
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["you"]["asn"], 64500);
        assert_eq!(v["you"]["subnet"], (1u64 << 32) | (0xcb00_7109u64 >> 8));
        assert_eq!(v["candidates"][0]["loc"]["asn"], 0);
        assert_eq!(serde_json::from_value::<Hints>(v).unwrap(), h);
    }

    #[test]
    fn validate_limits() {
        assert_eq!(announce().validate(), Ok(()));
        let mut a = announce();
        a.stream = "xy".repeat(32);
        assert_eq!(a.validate(), Err(InvalidAnnounce::StreamId));
        a.stream = "ab".repeat(31);
        assert_eq!(a.validate(), Err(InvalidAnnounce::StreamId));
        let mut a = announce();
        a.peer_id = String::new();
        assert_eq!(a.validate(), Err(InvalidAnnounce::PeerId));
        a.peer_id = "p".repeat(MAX_PEER_ID_LEN + 1);
        assert_eq!(a.validate(), Err(InvalidAnnounce::PeerId));
        let mut a = announce();
        a.addrs = vec!["/ip4/1.2.3.4/tcp/1".into(); MAX_ADDRS + 1];
        assert_eq!(a.validate(), Err(InvalidAnnounce::TooManyAddrs));
        a.addrs = vec!["ip4/1.2.3.4".into()];
        assert_eq!(a.validate(), Err(InvalidAnnounce::Addr));
        let mut a = announce();
        a.counters = serde_json::json!({ "blob": "x".repeat(MAX_COUNTERS_BYTES) });
        assert_eq!(a.validate(), Err(InvalidAnnounce::CountersTooLarge));
    }

    fn reflector() -> ReflectorAnnounce {
        ReflectorAnnounce {
            peer_id: "12D3KooWRefl".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4002".into()],
            http: Some("http://127.0.0.1:8081".into()),
            fan_out: 256,
            upload_kbps: 0,
            carrying: vec!["cd".repeat(32)],
            failure_domain: Some("rack-1".into()),
        }
    }

    #[test]
    fn reflector_announce_limits_and_defaults() {
        assert_eq!(reflector().validate(), Ok(()));
        let minimal = serde_json::json!({ "peer_id": "r", "addrs": [], "fan_out": 1 });
        let a: ReflectorAnnounce = serde_json::from_value(minimal).unwrap();
        assert_eq!((a.http, a.upload_kbps, a.failure_domain), (None, 0, None));
        assert!(a.carrying.is_empty());

        let bad = |f: fn(&mut ReflectorAnnounce)| {
            let mut a = reflector();
            f(&mut a);
            a.validate().unwrap_err()
        };
        assert_eq!(bad(|a| a.peer_id = "a b".into()), InvalidAnnounce::PeerId);
        assert_eq!(bad(|a| a.addrs = vec!["x".into()]), InvalidAnnounce::Addr);
        let long_url = |a: &mut ReflectorAnnounce| a.http = Some("h".repeat(MAX_TEXT_LEN + 1));
        assert_eq!(bad(long_url), InvalidAnnounce::TextTooLong("http"));
        assert_eq!(bad(|a| a.fan_out = 0), InvalidAnnounce::FanOut);
        assert_eq!(
            bad(|a| a.fan_out = MAX_FAN_OUT + 1),
            InvalidAnnounce::FanOut
        );
        let many = |a: &mut ReflectorAnnounce| a.carrying = vec!["ab".repeat(32); MAX_CARRYING + 1];
        assert_eq!(bad(many), InvalidAnnounce::TooManyCarried);
        let odd = |a: &mut ReflectorAnnounce| a.carrying.push("ab".into());
        assert_eq!(bad(odd), InvalidAnnounce::CarriedStreamId);
        let domain = |a: &mut ReflectorAnnounce| {
            a.failure_domain = Some("d".repeat(MAX_FAILURE_DOMAIN_LEN + 1))
        };
        assert_eq!(bad(domain), InvalidAnnounce::FailureDomain);
    }

    #[test]
    fn client_urls() {
        assert!(matches!(
            TrackerClient::new("not a url"),
            Err(HintsError::BadUrl { .. })
        ));
        assert!(matches!(
            TrackerClient::new("ftp://host/"),
            Err(HintsError::BadUrl { .. })
        ));
        let c = TrackerClient::new("http://127.0.0.1:7070").unwrap();
        assert_eq!(c.announce_url.as_str(), "http://127.0.0.1:7070/v1/announce");
        assert_eq!(
            c.reflectors_url.as_str(),
            "http://127.0.0.1:7070/v1/reflectors"
        );
        let c = TrackerClient::new("http://h:1/shard/3?x=1").unwrap();
        assert_eq!(c.streams_url.as_str(), "http://h:1/shard/3/v1/streams");
    }
}
