//! `shoal-lab`: local meshes on loopback, with every role real.

pub mod demo;
pub mod result;
pub mod scenario;

pub use demo::{run_demo, DemoConfig};
