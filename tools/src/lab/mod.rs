//! `shoal-lab`: local meshes on loopback, with every role real.

pub mod allocate;
pub mod baseline;
pub mod bench;
pub mod cli;
pub mod demo;
mod fault_window;
mod layout;
mod measure;
pub mod mix;
pub mod nat;
mod population;
mod reflection;
mod reflectors;
pub mod report;
pub mod result;
pub mod run;
pub mod scenario;
pub mod sim;
pub mod sim_streams;
mod stream_figures;
pub mod system;
pub mod topology;
pub mod tracker_bench;
mod upload_split;
pub mod usage;
pub mod worker;

pub use demo::{run_demo, DemoConfig};
