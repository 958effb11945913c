//! The peers an engine deals with: its neighbours (sessions), its
//! candidates and how it chooses among them, and a reflector's parents.

pub(super) mod candidates;
pub(super) mod discovery;
pub(super) mod neighbors;
pub(super) mod parents;
pub(super) mod probe;
pub(super) mod rtt;
pub(super) mod score;
pub(super) mod selection;
