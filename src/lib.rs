//! bowline: a GitOps reconciler and promotion engine for Kubernetes.
//!
//! The crate follows the data flow of the daemon, one module per step:
//! [`source`] (the repository snapshot) → [`config`] (typed, validated documents) →
//! [`render`] (Kubernetes objects per application and environment) → [`plan`] (what would
//! happen). [`diagnostic`] is the shared error report for user input.

#![warn(missing_docs)]

pub mod canary;
pub mod check;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod desired;
pub mod destination;
pub mod diagnostic;
pub mod diff;
pub mod forge;
pub mod object;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod redact;
pub mod render;
pub mod server;
pub mod source;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod template;
