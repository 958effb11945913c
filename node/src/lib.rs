//! placeholder
pub mod player;
