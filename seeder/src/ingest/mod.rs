//! Ingest: from the broadcaster's bytes to piece-sized cuts.
//!
//! ```text
//! Input ──read/loop──▶ packets ──pace (PCR)──▶ TsSegmenter ──▶ Cut ──▶ mpsc
//! ```
//!
//! - [`Input::Clip`]: the bundled 8 s test card looped as an endless live
//!   channel, timestamps and continuity counters rewritten at each seam.
//! - [`Input::Stdin`]: MPEG-TS from a live encoder (`ffmpeg -re … -f mpegts -`).
//! - [`Input::File`]: a `.ts` file, optionally paced as if live.
//! - [`Input::Synthetic`]: random bytes at a bitrate, for benchmarks.
//!
//! MPEG-TS is cut into segments at video keyframes (about `target_segment_ms`
//! each, so each is an HLS segment) that start with PAT and PMT, and segments
//! into pieces of at most [`MAX_PIECE_BYTES`] made of whole 188-byte packets.
//! The cutting itself, [`TsSegmenter`], is sans-IO; [`run`] adds the I/O.

use std::{fmt, path::PathBuf, str::FromStr};

use bytes::Bytes;
use shoal_mesh::proto::MAX_PIECE_BYTES;
use tokio::sync::mpsc::Sender;

mod clip;
mod keyframe;
mod pace;
mod psi;
mod segmenter;
mod source;
mod sync;
mod synthetic;
mod ts;

pub use segmenter::TsSegmenter;

/// One piece-sized cut of the stream, in order. Pieces of a segment are
/// emitted as soon as they fill up (so data flows before the segment ends);
/// the last piece of a segment is emitted when the next keyframe arrives.
#[derive(Debug, Clone)]
pub struct Cut {
    /// At most [`MAX_PIECE_BYTES`]; for TS input, whole 188-byte packets.
    pub data: Bytes,
    /// Segment index, counting from 0.
    pub segment: u64,
    /// First piece of its segment.
    pub first: bool,
    /// Last piece of its segment (a piece may be both first and last).
    pub last: bool,
    /// The segment's duration on its last piece (from the PTS of its
    /// keyframe to the next one's); 0 on the other pieces.
    pub duration_ms: u32,
}

/// Where the stream comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The bundled clip, looped forever as a live channel.
    Clip,
    /// MPEG-TS on standard input, live already.
    Stdin,
    /// An MPEG-TS file; `realtime` paces it by its clock like a live source,
    /// otherwise it is read as fast as the receiver takes the cuts.
    File { path: PathBuf, realtime: bool },
    /// Random bytes at this bitrate, never ending.
    Synthetic { bits_per_sec: u64 },
}

impl FromStr for Input {
    type Err = InputParseError;

    /// `clip`, `-` (stdin), `synthetic:<rate>` with a rate such as `2mbps`,
    /// `500kbps` or `64000bps`, or else the path of a TS file (not paced; set
    /// `realtime` afterwards if wanted).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let error = |why: &str| InputParseError(format!("invalid input {s:?}: {why}"));
        if s.is_empty() {
            return Err(error(
                "expected clip, - (stdin), a .ts file or synthetic:<rate>",
            ));
        }
        if s == "clip" {
            return Ok(Input::Clip);
        }
        if s == "-" {
            return Ok(Input::Stdin);
        }
        if let Some(rate) = s.strip_prefix("synthetic") {
            let rate = rate.strip_prefix(':').ok_or_else(|| {
                error("expected synthetic:<rate>, e.g. synthetic:2mbps or synthetic:500kbps")
            })?;
            let bits_per_sec = shoal_mesh::rate::parse_bitrate(rate).ok_or_else(|| {
                error("the rate must be a positive number with a unit bps, kbps, mbps or gbps, e.g. synthetic:2mbps")
            })?;
            return Ok(Input::Synthetic { bits_per_sec });
        }
        Ok(Input::File {
            path: PathBuf::from(s),
            realtime: false,
        })
    }
}

/// Why an `--input` string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputParseError(String);

impl fmt::Display for InputParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputParseError {}

/// Why ingest stopped before the end of its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read standard input")]
    Stdin(#[source] std::io::Error),
    #[error(
        "no video stream found in input (no PAT/PMT naming an H.264, HEVC or MPEG-2 video \
         stream in {scanned} bytes; is it MPEG-TS?)"
    )]
    NoVideo { scanned: u64 },
    #[error("the bundled clip is unusable: {0}")]
    BadClip(&'static str),
    #[error("target segment duration must be at least 1 ms")]
    ZeroTarget,
}

/// Reads the input and sends cuts in real time (live pacing) until the input
/// ends (Clip and Synthetic never end) or the receiver is dropped. Returns
/// `Ok(())` at the end of the input and when the receiver is gone.
pub async fn run(input: Input, target_segment_ms: u32, tx: Sender<Cut>) -> Result<(), IngestError> {
    if target_segment_ms == 0 {
        return Err(IngestError::ZeroTarget);
    }
    match input {
        Input::Clip => source::clip(target_segment_ms, tx).await,
        Input::Stdin => {
            let stdin = tokio::io::stdin();
            source::reader(stdin, source::Origin::Stdin, false, target_segment_ms, tx).await
        }
        Input::File { path, realtime } => {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|source| IngestError::Read {
                    path: path.clone(),
                    source,
                })?;
            let origin = source::Origin::File(path);
            source::reader(file, origin, realtime, target_segment_ms, tx).await
        }
        Input::Synthetic { bits_per_sec } => {
            source::synthetic(bits_per_sec, target_segment_ms, tx).await
        }
    }
}

// Pieces are whole packets: keep the bound we promise in `Cut` honest.
const _: () = assert!(MAX_PIECE_BYTES >= ts::PACKET_LEN);

#[cfg(test)]
mod tests;
