//! Shoal's tools as libraries: the tracker (hint service) and the lab.

pub mod tracker;
