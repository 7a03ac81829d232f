//! The Kubernetes-free core of resiliency-operator: one-shot copies and live streams between
//! ZooKeeper ensembles (`engine`, `continuous`), the registry of background runs (`runs`) and
//! backups to object storage (`backup`). The operator, the CLI and standalone mode drive it;
//! it depends on none of them, and on no Kubernetes crate (`cargo tree -p resiliency-core`).

pub mod backup;
pub mod continuous;
pub mod engine;
pub mod reason;
pub mod runs;
pub mod switchover;

pub use reason::Reason;
