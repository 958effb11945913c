//! The stream muxer that hands out shaped substreams.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use libp2p::{
    core::muxing::{StreamMuxer, StreamMuxerEvent},
    PeerId,
};

use super::{Shaped, Shaper};

/// A stream muxer whose substreams are [`Shaped`].
pub struct ShapedMuxer<M> {
    inner: Pin<Box<M>>,
    remote: PeerId,
    shaper: Shaper,
}

impl<M> ShapedMuxer<M> {
    /// Shapes the substreams of a connection to `remote`.
    pub fn new(inner: M, remote: PeerId, shaper: &Shaper) -> Self {
        ShapedMuxer {
            inner: Box::pin(inner),
            remote,
            shaper: shaper.clone(),
        }
    }
}

impl<M> fmt::Debug for ShapedMuxer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShapedMuxer")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl<M> StreamMuxer for ShapedMuxer<M>
where
    M: StreamMuxer,
    M::Substream: Unpin,
{
    type Substream = Shaped<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let (remote, shaper) = (&this.remote, &this.shaper);
        this.inner
            .as_mut()
            .poll_inbound(cx)
            .map_ok(|s| Shaped::new(s, remote, shaper))
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let (remote, shaper) = (&this.remote, &this.shaper);
        this.inner
            .as_mut()
            .poll_outbound(cx)
            .map_ok(|s| Shaped::new(s, remote, shaper))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().inner.as_mut().poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        self.get_mut().inner.as_mut().poll(cx)
    }
}
