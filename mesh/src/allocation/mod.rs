//! Splitting the infrastructure tier's upload across streams, as Antfarm's
//! coordinator does (Peterson and Sirer): each swarm's response curve is
//! estimated from what its viewers report, and the budget goes where it buys
//! the most goodput, after a minimum for every stream and weighted by
//! priority. Sans-IO and deterministic, like [`crate::proto`]: the tracker
//! and the simulator run the same rounds.
//!
//! - [`tally`]: viewer reports summed per swarm;
//! - [`curve`]: a swarm's response curve, estimated;
//! - [`split`]: one budget across streams, by policy;
//! - [`allocator`]: the round that joins them and keeps exploring.

pub mod allocator;
pub mod curve;
pub mod split;
pub mod tally;

pub use allocator::{Allocator, AllocatorConfig, Share, StreamSettings};
pub use curve::{Curve, CurveEstimate, Observation, Prior, Segment};
pub use split::{split, Claim, Policy};
pub use tally::{SwarmReport, SwarmTally, ViewerReport, MAX_INFRA_COPIES};
