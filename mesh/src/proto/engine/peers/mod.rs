//! The peers an engine deals with: its neighbours (sessions) and its
//! candidates, and how it chooses among them.

pub(super) mod candidates;
pub(super) mod discovery;
pub(super) mod neighbors;
pub(super) mod probe;
pub(super) mod rtt;
pub(super) mod score;
pub(super) mod selection;
