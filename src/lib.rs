//! resiliency-operator: replicates Apache ZooKeeper trees and proves the copy is right.

pub mod api;
pub mod backup;
pub mod cli;
pub mod continuous;
pub mod controllers;
pub mod engine;
pub mod metrics;
pub mod operator;
pub mod remote_cluster;
pub mod resolve;
pub mod runs;
pub mod schedule;
pub mod standalone;
pub mod telemetry;
