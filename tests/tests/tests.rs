//! End-to-end tests across the crates, built as one binary.

mod bad_input;
mod dht;
mod lab;
mod mesh;
mod nat;
mod reflector;
mod tracker_shards;
mod unreachable;
