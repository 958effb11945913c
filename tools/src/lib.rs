//! Shoal's tools as libraries: the tracker (hint service) and the lab.

pub mod lab;
pub mod tracker;
