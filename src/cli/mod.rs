//! Command line: `sync` and `verify` against live ensembles, `run -f` (standalone), `crd`,
//! `operator` (the Kubernetes controllers), and `backup`, `restore` and `snapshots`. One file
//! per subcommand, its flags beside what it does; this one parses and dispatches.

pub mod backup;
mod continuous;
pub mod crd;
mod endpoints;
pub mod flags;
pub mod operator;
mod output;
pub mod restore;
pub mod run;
pub mod snapshots;
pub mod store;
pub mod switchover;
pub mod sync;
pub mod unfence;
pub mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use backup::BackupArgs;
pub use crd::CrdArgs;
pub use endpoints::Endpoints;
pub use flags::{CliError, Ephemerals};
pub use operator::OperatorArgs;
pub use output::{EXIT_DIVERGED, EXIT_ERROR};
pub use restore::RestoreArgs;
pub use run::RunArgs;
pub use snapshots::SnapshotsArgs;
pub use sync::{held_hint, sync_options, GuardArgs, SyncArgs, EXIT_DELETES_HELD};
pub use verify::VerifyArgs;

#[derive(Parser, Debug)]
#[command(
    name = "resiliency-operator",
    version,
    about = "Replicates Apache ZooKeeper trees and proves the copy is right"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make the destination subtree equal to the source subtree, once (or continuously with
    /// --continuous).
    Sync(Box<SyncArgs>),
    /// Compare two subtrees: exit 0 when equal, 1 when they diverge, 2 on error.
    Verify(VerifyArgs),
    /// Run the manifests in files (Secrets, Databases, Synchronizations, SynchronizationPlans,
    /// LiveSynchronizations) without Kubernetes: exit 0 when every Synchronization succeeded
    /// with equal trees and no LiveSynchronization failed or diverged. Plans and
    /// LiveSynchronizations run until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions, or write them to a directory (one file each plus
    /// crds.yaml).
    Crd(CrdArgs),
    /// Run the Kubernetes controllers (client config from KUBECONFIG or in-cluster).
    Operator(OperatorArgs),
    /// Snapshot a subtree to a directory, S3 or GCS (compressed, with a manifest holding its
    /// verifier root hash).
    Backup(BackupArgs),
    /// Restore a snapshot into an absent or empty path, checked before anything is written
    /// and verified against the manifest after.
    Restore(RestoreArgs),
    /// List the snapshots at a location.
    Snapshots(SnapshotsArgs),
    /// Make the destination the primary: stream it, catch up, optionally fence the source
    /// (--fence acl), prove zero loss (planned) or report the window (unplanned), optionally
    /// stream back (--reverse). Exit 0 when promoted, 1 when refused or rolled back, 2 on error.
    Switchover(Box<switchover::SwitchoverArgs>),
    /// Lift the fence a switchover left on a tree (every node still fenced gets its recorded
    /// ACL back).
    Unfence(unfence::UnfenceArgs),
}

impl Command {
    /// Runs the subcommand; the exit code says how it went.
    pub async fn run(self) -> ExitCode {
        match self {
            Command::Sync(a) => sync::run_sync(*a).await,
            Command::Verify(a) => verify::run_verify(a).await,
            Command::Run(a) => run::run_standalone(a).await,
            Command::Crd(a) => crd::run_crd(a),
            Command::Operator(a) => operator::run_operator(a).await,
            Command::Backup(a) => backup::run_backup(a).await,
            Command::Restore(a) => restore::run_restore(a).await,
            Command::Snapshots(a) => snapshots::run_snapshots(a).await,
            Command::Switchover(a) => switchover::run_switchover(*a).await,
            Command::Unfence(a) => unfence::run_unfence(a).await,
        }
    }
}
