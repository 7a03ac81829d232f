//! resiliency-operator: replicates Apache ZooKeeper trees and proves the copy is right.

pub mod api;
pub mod cli;
pub mod controllers;
pub mod local_switchover;
pub mod metrics;
pub mod operator;
pub mod remote_cluster;
pub mod resolve;
pub mod schedule;
pub mod serve;
pub mod standalone;
pub mod telemetry;
pub mod text;

// The Kubernetes-free core, re-exported under the paths the rest of the crate uses.
pub use resiliency_core::{backup, continuous, engine, runs, switchover, Reason};
