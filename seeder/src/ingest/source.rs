//! The I/O around the sans-IO parts: read an input, pace it like a live
//! encoder when it is not live already, segment it and send the cuts.

use std::path::PathBuf;

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    sync::mpsc::Sender,
    time::Instant,
};

use super::{
    clip::{ClipLoop, CLIP},
    pace::Pacer,
    segmenter::TsSegmenter,
    sync::PacketSync,
    synthetic::Synthetic,
    ts::Packet,
    Cut, IngestError,
};

/// Without a video stream after this many bytes, the input is not one we can
/// segment; better to say so than to read it forever.
const NO_VIDEO_LIMIT: u64 = 5 * 1024 * 1024;
/// Read size for files and stdin.
const READ_CHUNK: usize = 64 * 1024;

/// What `run` does next.
enum Flow {
    Continue,
    /// The receiver is gone: stop quietly.
    Stop,
}

pub(crate) async fn clip(target_segment_ms: u32, tx: Sender<Cut>) -> Result<(), IngestError> {
    let mut clip = ClipLoop::new(CLIP)?;
    let mut feed = Feed::new(target_segment_ms, tx, true);
    loop {
        if let Flow::Stop = feed.packet(clip.next_packet()).await {
            return Ok(());
        }
    }
}

/// Where a byte stream comes from, for error messages.
pub(crate) enum Origin {
    Stdin,
    File(PathBuf),
}

impl Origin {
    fn error(&self, source: std::io::Error) -> IngestError {
        match self {
            Origin::Stdin => IngestError::Stdin(source),
            Origin::File(path) => IngestError::Read {
                path: path.clone(),
                source,
            },
        }
    }
}

/// Reads TS from `reader` until it ends. `paced`: hold packets back until
/// their PCR time (a file played as live); stdin is live already.
pub(crate) async fn reader(
    mut reader: impl AsyncRead + Unpin,
    origin: Origin,
    paced: bool,
    target_segment_ms: u32,
    tx: Sender<Cut>,
) -> Result<(), IngestError> {
    let mut sync = PacketSync::default();
    let mut feed = Feed::new(target_segment_ms, tx, paced);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        // A live source may go quiet: notice a dropped receiver meanwhile.
        let n = tokio::select! {
            read = reader.read(&mut buf) => read.map_err(|e| origin.error(e))?,
            () = feed.tx.closed() => return Ok(()),
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        let skipped = sync.skipped();
        sync.push(&buf[..n]);
        while let Some(packet) = sync.next_packet(false) {
            if let Flow::Stop = feed.packet(packet).await {
                return Ok(());
            }
        }
        if sync.skipped() > skipped {
            tracing::warn!(
                skipped = sync.skipped() - skipped,
                "input is not aligned MPEG-TS here; skipped bytes to resync"
            );
        }
        if total > NO_VIDEO_LIMIT && !feed.segmenter.has_video() {
            return Err(IngestError::NoVideo { scanned: total });
        }
    }
    while let Some(packet) = sync.next_packet(true) {
        if let Flow::Stop = feed.packet(packet).await {
            return Ok(());
        }
    }
    feed.finish().await;
    if !feed.segmenter.has_video() {
        return Err(IngestError::NoVideo { scanned: total });
    }
    Ok(())
}

pub(crate) async fn synthetic(
    bits_per_sec: u64,
    target_segment_ms: u32,
    tx: Sender<Cut>,
) -> Result<(), IngestError> {
    let mut source = Synthetic::new(bits_per_sec, target_segment_ms, rand::random());
    let start = Instant::now();
    loop {
        let (due, cut) = source.next();
        tokio::select! {
            () = tokio::time::sleep_until(start + due) => {}
            () = tx.closed() => return Ok(()),
        }
        if tx.send(cut).await.is_err() {
            return Ok(());
        }
    }
}

/// Segmenter, optional pacing and the channel, one packet at a time.
struct Feed {
    segmenter: TsSegmenter,
    pacer: Option<Pacer>,
    start: Option<Instant>,
    cuts: Vec<Cut>,
    tx: Sender<Cut>,
}

impl Feed {
    fn new(target_segment_ms: u32, tx: Sender<Cut>, paced: bool) -> Self {
        Self {
            segmenter: TsSegmenter::new(target_segment_ms),
            pacer: paced.then(Pacer::default),
            start: None,
            cuts: Vec::new(),
            tx,
        }
    }

    async fn packet(&mut self, packet: Packet) -> Flow {
        let Some(pacer) = &mut self.pacer else {
            self.segmenter.push_packet(packet, &mut self.cuts);
            return self.send().await;
        };
        let Some((due, packets)) = pacer.push(packet) else {
            return Flow::Continue;
        };
        let start = *self.start.get_or_insert_with(Instant::now);
        tokio::select! {
            () = tokio::time::sleep_until(start + due) => {}
            () = self.tx.closed() => return Flow::Stop,
        }
        for packet in packets {
            self.segmenter.push_packet(packet, &mut self.cuts);
        }
        self.send().await
    }

    async fn send(&mut self) -> Flow {
        for cut in self.cuts.drain(..) {
            if self.tx.send(cut).await.is_err() {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    async fn finish(&mut self) {
        if let Some(pacer) = &mut self.pacer {
            for packet in pacer.flush().1 {
                self.segmenter.push_packet(packet, &mut self.cuts);
            }
        }
        self.cuts.extend(self.segmenter.finish());
        self.send().await;
    }
}
