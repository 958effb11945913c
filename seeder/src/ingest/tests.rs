//! Ingest end to end: the looped clip through the segmenter, checked with an
//! independent TS parser (`mpeg2ts`), plus the `run` front door.

use std::{collections::HashMap, time::Duration};

use mpeg2ts::ts::{ReadTsPacket, TsPacket, TsPacketReader, TsPayload};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{
    clip::{ClipLoop, CLIP},
    pace::Pacer,
    ts::PACKET_LEN,
    *,
};

const VIDEO_PID: u16 = 256;
const SECOND: u64 = 90_000;

/// `passes` passes of the looped clip, as one byte stream.
fn looped_clip(passes: usize) -> Vec<u8> {
    let mut clip = ClipLoop::new(CLIP).expect("bundled clip parses");
    (0..passes * CLIP.len() / PACKET_LEN)
        .flat_map(|_| clip.next_packet())
        .collect()
}

/// All cuts of `input`, pushed in chunks of `chunk` bytes.
fn segment(input: &[u8], chunk: usize, target_ms: u32) -> Vec<Cut> {
    let mut segmenter = TsSegmenter::new(target_ms);
    let mut cuts: Vec<Cut> = input
        .chunks(chunk)
        .flat_map(|c| segmenter.push(c))
        .collect();
    cuts.extend(segmenter.finish());
    cuts
}

/// A segment: its bytes and duration, after checking the piece invariants.
struct Segment {
    data: Vec<u8>,
    duration_ms: u32,
}

fn assemble(cuts: &[Cut]) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut open = false;
    for cut in cuts {
        assert!(!cut.data.is_empty() && cut.data.len() <= MAX_PIECE_BYTES);
        assert_eq!(cut.data.len() % PACKET_LEN, 0);
        assert_eq!(
            cut.first, !open,
            "first flag of a piece of segment {}",
            cut.segment
        );
        if cut.first {
            assert_eq!(
                cut.segment,
                segments.len() as u64,
                "segments are numbered in order"
            );
            segments.push(Segment {
                data: Vec::new(),
                duration_ms: 0,
            });
        }
        assert_eq!(cut.segment + 1, segments.len() as u64);
        let segment = segments.last_mut().expect("opened above");
        segment.data.extend_from_slice(&cut.data);
        if cut.last {
            segment.duration_ms = cut.duration_ms;
        } else {
            assert_eq!(cut.duration_ms, 0);
        }
        open = !cut.last;
    }
    assert!(!open, "the last segment is closed");
    segments
}

fn parse(data: &[u8]) -> Vec<TsPacket> {
    let mut reader = TsPacketReader::new(data);
    let mut packets = Vec::new();
    while let Some(p) = reader.read_ts_packet().expect("valid TS") {
        packets.push(p);
    }
    packets
}

fn pes_start_pts(p: &TsPacket) -> Option<(u64, Option<u64>)> {
    match &p.payload {
        Some(TsPayload::PesStart(pes)) => {
            let pts = pes.header.pts?.as_u64();
            Some((pts, pes.header.dts.map(|d| d.as_u64())))
        }
        _ => None,
    }
}

#[test]
fn clip_cuts_into_one_second_segments_that_play_alone() {
    let cuts = segment(&looped_clip(3), 64 * 1024, 1000);
    let segments = assemble(&cuts);
    assert_eq!(segments.len(), 24, "3 passes of 8 one-second GOPs");
    let mut first_pts = None;
    for (i, segment) in segments.iter().enumerate() {
        let packets = parse(&segment.data);
        assert!(
            matches!(packets[0].payload, Some(TsPayload::Pat(_))),
            "segment {i} starts with PAT"
        );
        match &packets[1].payload {
            Some(TsPayload::Pmt(pmt)) => {
                assert!(pmt
                    .es_info
                    .iter()
                    .any(|es| es.elementary_pid.as_u16() == VIDEO_PID));
            }
            other => panic!("segment {i}: PMT expected second, got {other:?}"),
        }
        let key = &packets[2];
        assert_eq!(
            key.header.pid.as_u16(),
            VIDEO_PID,
            "segment {i}: video third"
        );
        assert!(key
            .adaptation_field
            .as_ref()
            .is_some_and(|af| af.random_access_indicator));
        let (pts, _) = pes_start_pts(key).expect("keyframe PES start with PTS");
        let first = *first_pts.get_or_insert(pts);
        assert_eq!(
            pts,
            first + i as u64 * SECOND,
            "segment {i} starts on the second"
        );
        let mut last = None;
        for p in packets
            .iter()
            .filter(|p| p.header.pid.as_u16() == VIDEO_PID)
        {
            if let Some((pts, _)) = pes_start_pts(p) {
                assert!(
                    last.is_none_or(|l| pts > l),
                    "video PTS rises in segment {i}"
                );
                last = Some(pts);
            }
        }
        if i + 1 < segments.len() {
            assert_eq!(segment.duration_ms, 1000, "segment {i}");
        } else {
            // The last one ends at its last frame: one frame short.
            assert_eq!(segment.duration_ms, 960);
        }
    }
    assert!(cuts.iter().any(|c| !c.last), "segments span several pieces");
}

/// Continuity counters count up by one per payload packet on every PID.
fn assert_continuous(stream: &[u8]) {
    let mut last_cc: HashMap<u16, u8> = HashMap::new();
    for p in parse(stream) {
        let pid = p.header.pid.as_u16();
        if p.payload.is_some() {
            let cc = p.header.continuity_counter.as_u8();
            if let Some(prev) = last_cc.insert(pid, cc) {
                assert_eq!(cc, (prev + 1) % 16, "continuity on PID {pid}");
            }
        }
    }
}

#[test]
fn loop_seams_are_seamless() {
    let cuts = segment(&looped_clip(3), 64 * 1024, 1000);
    let stream: Vec<u8> = cuts.iter().flat_map(|c| c.data.iter().copied()).collect();
    assert_continuous(&stream);
    let mut last_pts: HashMap<u16, u64> = HashMap::new();
    let mut last_dts = None;
    let mut last_pcr = None;
    let mut video_frames = 0;
    for p in parse(&stream) {
        let pid = p.header.pid.as_u16();
        if let Some(pcr) = p.adaptation_field.as_ref().and_then(|af| af.pcr) {
            assert!(last_pcr.is_none_or(|l| pcr.as_u64() > l), "PCR rises");
            last_pcr = Some(pcr.as_u64());
        }
        if let Some((pts, dts)) = pes_start_pts(&p) {
            if let Some(prev) = last_pts.insert(pid, pts) {
                assert!(pts > prev, "PTS rises on PID {pid}: {prev} then {pts}");
            }
            if pid == VIDEO_PID {
                video_frames += 1;
                let dts = dts.unwrap_or(pts);
                assert!(last_dts.is_none_or(|l| dts > l), "video DTS rises");
                last_dts = Some(dts);
            }
        }
    }
    assert_eq!(video_frames, 3 * 200);
    assert_eq!(last_pts.len(), 2, "video and audio both seen");
}

#[test]
fn chunk_size_does_not_change_the_cuts() {
    let input = &looped_clip(2)[..1_000_000];
    let key = |cuts: Vec<Cut>| -> Vec<(Vec<u8>, u64, bool, bool, u32)> {
        cuts.into_iter()
            .map(|c| (c.data.to_vec(), c.segment, c.first, c.last, c.duration_ms))
            .collect()
    };
    let whole = key(segment(input, input.len(), 1000));
    assert!(whole.len() > 10);
    for chunk in [1, 188, 1000, 4096 + 7] {
        assert!(
            key(segment(input, chunk, 1000)) == whole,
            "chunks of {chunk} bytes"
        );
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = StdRng::seed_from_u64(42);
    // Pure noise, and noise with sync bytes in place so it parses as packets.
    let noise: Vec<u8> = (0..1_000_000).map(|_| rng.gen()).collect();
    let mut synced = noise.clone();
    for at in (0..synced.len()).step_by(PACKET_LEN) {
        synced[at] = 0x47;
    }
    // The clip with bursts of junk and flipped bytes.
    let mut damaged = looped_clip(1);
    for _ in 0..200 {
        let at = rng.gen_range(0..damaged.len());
        damaged[at] = rng.gen();
    }
    for _ in 0..20 {
        let at = rng.gen_range(0..damaged.len());
        let junk: Vec<u8> = (0..rng.gen_range(1..600)).map(|_| rng.gen()).collect();
        damaged.splice(at..at, junk);
    }
    for input in [&noise, &synced, &damaged] {
        for chunk in [1, 999, 65_536] {
            let cuts = segment(input, chunk, 1000);
            for cut in &cuts {
                assert!(cut.data.len() <= MAX_PIECE_BYTES && cut.data.len() % PACKET_LEN == 0);
            }
        }
    }
    // The damaged clip still comes out as segments starting with PAT and PMT.
    let segments = assemble(&segment(&damaged, 4096, 1000));
    assert!(segments.len() >= 6, "{} segments", segments.len());
    for segment in &segments {
        assert_eq!(&segment.data[1..3], &[0x40, 0x00], "PAT first");
    }
}

#[test]
fn segments_without_keyframes_are_bounded() {
    // Keyframes come every 1 s, but the target is 200 ms: segments must be
    // cut without a keyframe after 4 × 200 ms.
    let cuts = segment(&looped_clip(1), 64 * 1024, 200);
    // PAT and PMT are inserted mid-GOP here: counters must still run on.
    let stream: Vec<u8> = cuts.iter().flat_map(|c| c.data.iter().copied()).collect();
    assert_continuous(&stream);
    let segments = assemble(&cuts);
    assert!(segments.len() >= 14, "{} segments", segments.len());
    for (i, segment) in segments.iter().enumerate() {
        assert!(
            segment.duration_ms <= 800 + 40,
            "segment {i}: {} ms",
            segment.duration_ms
        );
        assert!(
            segment.duration_ms >= 100,
            "segment {i}: {} ms",
            segment.duration_ms
        );
        let packets = parse(&segment.data);
        assert!(matches!(packets[0].payload, Some(TsPayload::Pat(_))));
        assert!(matches!(packets[1].payload, Some(TsPayload::Pmt(_))));
    }
}

#[test]
fn stream_without_video_gives_nothing() {
    // The clip without its PMT: no way to find the video.
    let input: Vec<u8> = CLIP
        .chunks(PACKET_LEN)
        .filter(|p| ((u16::from(p[1]) & 0x1F) << 8 | u16::from(p[2])) != 4096)
        .flatten()
        .copied()
        .collect();
    let mut segmenter = TsSegmenter::new(1000);
    assert!(segmenter.push(&input).is_empty());
    assert!(segmenter.finish().is_empty());
    assert!(!segmenter.has_video());
}

#[test]
fn looped_clip_paced_like_a_live_encoder() {
    // Each segment must complete when its end is due by the stream clock,
    // and no video frame may be due before its own time.
    let mut clip = ClipLoop::new(CLIP).expect("bundled clip parses");
    let mut pacer = Pacer::default();
    let mut segmenter = TsSegmenter::new(1000);
    let mut first_pts = None;
    let mut completed = 0u64;
    let mut cuts = Vec::new();
    for _ in 0..3 * CLIP.len() / PACKET_LEN {
        let Some((due, packets)) = pacer.push(clip.next_packet()) else {
            continue;
        };
        for p in packets {
            if super::ts::pid(&p) == VIDEO_PID {
                if let Some(pts) = super::ts::pes_times(&p).pts {
                    let first = *first_pts.get_or_insert(pts);
                    let plays = Duration::from_micros((pts - first) * 100 / 9);
                    assert!(due >= plays, "frame due at {due:?}, plays at {plays:?}");
                }
            }
            segmenter.push_packet(p, &mut cuts);
        }
        for cut in cuts.drain(..).filter(|c| c.last) {
            assert_eq!(cut.segment, completed);
            completed += 1;
            let end = Duration::from_secs(completed);
            let lateness = due.as_secs_f64() - end.as_secs_f64();
            assert!(
                lateness.abs() < 0.1,
                "segment {} completed at {due:?}",
                cut.segment
            );
        }
    }
    assert_eq!(completed, 23);
}

#[test]
fn inputs_parse() {
    assert_eq!("clip".parse::<Input>(), Ok(Input::Clip));
    assert_eq!("-".parse::<Input>(), Ok(Input::Stdin));
    assert_eq!(
        "synthetic:2mbps".parse::<Input>(),
        Ok(Input::Synthetic {
            bits_per_sec: 2_000_000
        })
    );
    assert_eq!(
        "synthetic:500kbps".parse::<Input>(),
        Ok(Input::Synthetic {
            bits_per_sec: 500_000
        })
    );
    assert_eq!(
        "synthetic:1.5Mbps".parse::<Input>(),
        Ok(Input::Synthetic {
            bits_per_sec: 1_500_000
        })
    );
    assert_eq!(
        "synthetic:64000bps".parse::<Input>(),
        Ok(Input::Synthetic {
            bits_per_sec: 64_000
        })
    );
    assert_eq!(
        "media/live.ts".parse::<Input>(),
        Ok(Input::File {
            path: "media/live.ts".into(),
            realtime: false
        })
    );
    for bad in [
        "",
        "synthetic",
        "synthetic:",
        "synthetic:fast",
        "synthetic:0kbps",
        "synthetic:2mb",
    ] {
        let err = bad.parse::<Input>().expect_err(bad).to_string();
        assert!(err.starts_with("invalid input"), "{bad:?}: {err}");
    }
    let err = "synthetic:2mb"
        .parse::<Input>()
        .expect_err("no unit")
        .to_string();
    assert!(err.contains("synthetic:2mbps"), "{err}");
}

/// Runs `input` to its end, collecting every cut.
async fn run_to_end(input: Input) -> (Result<(), IngestError>, Vec<Cut>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(run(input, 1000, tx));
    let mut cuts = Vec::new();
    while let Some(cut) = rx.recv().await {
        cuts.push(cut);
    }
    (task.await.expect("ingest task"), cuts)
}

fn temp_file(name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("shoal-ingest-{}-{name}", std::process::id()));
    std::fs::write(&path, data).expect("write temp file");
    path
}

#[tokio::test]
async fn file_input_is_read_to_the_end() {
    let path = temp_file("clip.ts", CLIP);
    let (result, cuts) = run_to_end(Input::File {
        path: path.clone(),
        realtime: false,
    })
    .await;
    let _ = std::fs::remove_file(&path);
    result.expect("reads to the end");
    let segments = assemble(&cuts);
    assert_eq!(segments.len(), 8);
}

#[tokio::test]
async fn bad_files_are_reported() {
    let missing = std::path::PathBuf::from("/nonexistent/shoal/input.ts");
    let (result, _) = run_to_end(Input::File {
        path: missing,
        realtime: false,
    })
    .await;
    let err = result.expect_err("missing file");
    assert!(
        err.to_string().contains("/nonexistent/shoal/input.ts"),
        "{err}"
    );

    let path = temp_file("text.ts", &b"not a transport stream\n".repeat(1000));
    let (result, cuts) = run_to_end(Input::File {
        path: path.clone(),
        realtime: false,
    })
    .await;
    let _ = std::fs::remove_file(&path);
    let err = result.expect_err("no video");
    assert!(matches!(err, IngestError::NoVideo { .. }));
    assert!(
        err.to_string()
            .starts_with("no video stream found in input"),
        "{err}"
    );
    assert!(cuts.is_empty());
}

#[tokio::test]
async fn endless_sources_stop_when_the_receiver_goes() {
    for input in [
        Input::Clip,
        Input::Synthetic {
            bits_per_sec: 8_000_000,
        },
    ] {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let task = tokio::spawn(run(input.clone(), 100, tx));
        let first = rx.recv().await.expect("a first cut");
        assert!(first.first && first.segment == 0, "{input:?}");
        drop(rx);
        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops promptly")
            .expect("ingest task");
        result.expect("a dropped receiver is a normal end");
    }
}
