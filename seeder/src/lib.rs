//! placeholder
pub mod ingest;
