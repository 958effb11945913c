//! The live sliding-window HLS media playlist (RFC 8216).

use std::fmt::Write;

use super::timeline::{target_duration_s, Entry};

/// Segments listed in the playlist: about 6 s of 1 s segments, enough for
/// players that start three target durations from the live edge.
pub(crate) const PLAYLIST_SEGMENTS: usize = 6;

/// Renders the newest [`PLAYLIST_SEGMENTS`] of `entries` (oldest first), or
/// `None` before anything is listed. No `EXT-X-ENDLIST`: the stream is live.
pub(crate) fn media_playlist<'a>(
    entries: impl DoubleEndedIterator<Item = &'a Entry> + ExactSizeIterator,
) -> Option<String> {
    let skip = entries.len().saturating_sub(PLAYLIST_SEGMENTS);
    let listed: Vec<&Entry> = entries.skip(skip).collect();
    let first = listed.first()?;
    let max_ms = listed.iter().map(|e| e.duration_ms).max().unwrap_or(0);
    let mut out = String::with_capacity(64 + listed.len() * 40);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
        target_duration_s(max_ms),
        first.msn
    );
    if first.dsn > 0 {
        // Discontinuities that slid out of the window (RFC 8216 §4.3.3.3).
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", first.dsn);
    }
    for (i, e) in listed.iter().enumerate() {
        // The first listed segment's discontinuity is carried by the
        // discontinuity sequence instead.
        if e.discontinuity && i > 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = write!(
            out,
            "#EXTINF:{}.{:03},\n{}.ts\n",
            e.duration_ms / 1_000,
            e.duration_ms % 1_000,
            e.segment
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use m3u8_rs::parse_media_playlist_res;

    use super::*;

    fn entry(segment: u64, msn: u64, dsn: u64, discontinuity: bool, duration_ms: u32) -> Entry {
        Entry {
            segment,
            msn,
            dsn,
            discontinuity,
            duration_ms,
        }
    }

    #[test]
    fn empty_timeline_has_no_playlist() {
        assert_eq!(media_playlist([].iter()), None);
    }

    #[test]
    fn lists_the_newest_segments() {
        let entries: Vec<Entry> = (10..20)
            .map(|n| entry(n, n, 0, false, 1_000 + n as u32 * 10))
            .collect();
        let text = media_playlist(entries.iter()).unwrap();
        let pl = parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(pl.version, Some(3));
        assert_eq!(pl.media_sequence, 14);
        assert_eq!(pl.target_duration, 2); // ceil(1.190 s)
        assert!(!pl.end_list);
        let uris: Vec<&str> = pl.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["14.ts", "15.ts", "16.ts", "17.ts", "18.ts", "19.ts"]);
        assert_eq!(pl.segments[0].duration, 1.14);
        assert!(pl.segments.iter().all(|s| !s.discontinuity));
        assert!(text.contains("#EXTINF:1.190,\n19.ts\n"), "{text}");
        assert!(!text.contains("DISCONTINUITY"));
    }

    #[test]
    fn marks_the_segment_after_a_gap() {
        let entries = [
            entry(3, 3, 0, false, 1_000),
            entry(4, 4, 0, false, 1_000),
            entry(7, 5, 1, true, 2_001),
            entry(8, 6, 1, false, 500),
        ];
        let text = media_playlist(entries.iter()).unwrap();
        let pl = parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(pl.media_sequence, 3);
        assert_eq!(pl.discontinuity_sequence, 0);
        assert_eq!(pl.target_duration, 3);
        let marks: Vec<(&str, bool)> = pl
            .segments
            .iter()
            .map(|s| (s.uri.as_str(), s.discontinuity))
            .collect();
        assert_eq!(
            marks,
            [
                ("3.ts", false),
                ("4.ts", false),
                ("7.ts", true),
                ("8.ts", false)
            ]
        );
        assert_eq!(pl.segments[3].duration, 0.5);
        // Once the gap slides out, the sequence numbers carry it.
        let text = media_playlist(entries[2..].iter()).unwrap();
        let pl = parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!((pl.media_sequence, pl.discontinuity_sequence), (5, 1));
        assert!(pl.segments.iter().all(|s| !s.discontinuity));
    }

    #[test]
    fn target_duration_is_at_least_one() {
        let text = media_playlist([entry(0, 0, 0, false, 0)].iter()).unwrap();
        assert!(text.contains("#EXT-X-TARGETDURATION:1\n"));
        assert!(text.contains("#EXTINF:0.000,\n0.ts\n"));
    }
}
