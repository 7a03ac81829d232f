//! resiliency-operator: replicates Apache ZooKeeper trees and proves the copy is right.

pub mod api;
pub mod cli;
pub mod engine;
pub mod telemetry;
