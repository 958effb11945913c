//! The systems Shoal is compared against in `shoal-lab bench`.
//!
//! Each reports per-viewer [`shoal_mesh::proto::Stats`] with the definitions
//! the Shoal engine uses, so `Summary::new(viewers, infra, http_payload)`
//! compares like with like:
//!
//! - [`meter`]: the viewer-side measurement (payload by source, duplicates,
//!   lag, start-up, continuity) by the engine's playback rules, for systems
//!   that do not run the engine;
//! - [`gossipsub`]: the stream flooded over real libp2p-gossipsub;
//! - [`client_server`]: every viewer pulls from the seeder's HTTP origin.

pub mod client_server;
pub mod gossipsub;
pub mod meter;

pub use meter::Meter;
