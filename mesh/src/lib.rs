//! Shoal's live-stream mesh, as a library.
//!
//! - [`proto`]: the protocol as deterministic sans-IO state machines;
//! - [`allocation`]: the coordinator's split of infrastructure upload across streams;
//! - [`net`]: the libp2p + tokio driver that runs an engine for real;
//! - [`sim`]: a discrete-event simulator that runs many engines in virtual time;
//! - [`hints`]: the tracker's HTTP/JSON hint protocol (types and client);
//! - [`reach`]: which addresses can be dialled from where.

pub mod allocation;
pub mod hints;
pub mod net;
pub mod proto;
pub mod rate;
pub mod reach;
pub mod shards;
pub mod sim;
