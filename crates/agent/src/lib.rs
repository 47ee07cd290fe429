//! The Warden host agent.
//!
//! Data flows one way: sources (DogStatsD listeners, host collector, checks, the agent's own
//! telemetry) produce [`Outgoing`] batches of plain `warden_model` values; the forwarder turns
//! them into Datadog-format payloads and ships them over TLS, queueing through outages.
//! Sources never know about HTTP; the forwarder never knows where data came from.

pub mod api;
pub mod appsec_rc;
pub mod checks;
pub mod collector;
pub mod config;
pub mod dogstatsd;
pub mod forwarder;
mod gui;
mod run;
pub mod secrets;
pub mod telemetry;
pub mod traces;

use warden_model::{Event, Series, ServiceCheck, SketchSeries};

pub use config::AgentConfig;
pub use run::{AgentError, RunOptions, run, run_with};
pub use telemetry::Telemetry;

/// A batch handed from a source to the forwarder.
#[derive(Clone, Debug, PartialEq)]
pub enum Outgoing {
    Series(Vec<Series>),
    Sketches(Vec<SketchSeries>),
    ServiceChecks(Vec<ServiceCheck>),
    Events(Vec<Event>),
    /// Tracer payloads from the trace intake, forwarded as `AgentPayload`s.
    Traces(Vec<warden_proto::trace::TracerPayload>),
}

/// Sending half of the channel every source writes to.
pub type OutTx = tokio::sync::mpsc::Sender<Outgoing>;
/// Receiving half, owned by the forwarder.
pub type OutRx = tokio::sync::mpsc::Receiver<Outgoing>;
