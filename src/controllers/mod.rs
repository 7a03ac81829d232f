//! One module per controller. Each holds the pure decision for its kind (desired state from
//! inputs, `now` passed in); drivers (Kubernetes or standalone) read state, call it and apply
//! the result.

pub mod bucket;
pub mod database;
pub mod deletion_guard;
pub mod draft;
pub mod kubernetes_cluster;
pub mod live_synchronization;
pub mod note;
pub mod switchover;
pub mod synchronization;
pub mod synchronization_plan;
