//! Guardian's library: everything the `guardian` binary does, as modules the binary glues
//! together. See ARCHITECTURE.md for the code map and each module's invariants.

pub mod aggregate;
pub mod child;
pub mod cleanup;
pub mod config;
pub mod daemon;
pub mod fsys;
pub mod git;
pub mod logfmt;
pub mod policy;
pub mod predict;
pub mod protect;
pub mod publish;
pub mod quiet;
pub mod retention;
pub mod scan;
pub mod serve;
pub mod sources;
pub mod survey;
pub mod tasks;
#[doc(hidden)]
pub mod testkit;
pub mod textpath;
