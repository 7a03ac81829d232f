//! The two ensembles and subtrees `sync` and `verify` compare, and how to reach them.

use clap::Args;
use verifier::{ConnectOptions, HashOptions, VerifyOptions, WalkOptions};

use super::flags::{
    connect_options, seconds, CliError, Credentials, Ephemerals, Side, Wording, CONNECT_TIMEOUT,
    DESTINATION, SOURCE,
};

#[derive(Args, Debug, Clone)]
pub struct Endpoints {
    /// Source ensemble, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT,...")]
    pub source: String,
    /// Destination ensemble, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT,...")]
    pub destination: String,
    /// Root of the subtree on the source.
    #[arg(long, value_name = "PATH")]
    pub root_path: String,
    /// Root of the subtree on the destination [default: --root-path].
    #[arg(long, value_name = "PATH")]
    pub destination_root_path: Option<String>,
    #[command(flatten)]
    pub source_auth: Credentials<SourceWording>,
    #[command(flatten)]
    pub destination_auth: Credentials<DestinationWording>,
    /// Seconds to wait for a session before calling an ensemble unreachable.
    #[arg(long, default_value_t = CONNECT_TIMEOUT, value_name = "SECONDS")]
    pub connect_timeout: f64,
    /// ZooKeeper session timeout in seconds.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub session_timeout: f64,
    /// Do not compare or copy ACLs.
    #[arg(long)]
    pub no_acl: bool,
    /// What to do with ephemeral source nodes.
    #[arg(long, value_enum, default_value_t = Ephemerals::Skip)]
    pub ephemerals: Ephemerals,
    /// Print one JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Nodes read concurrently from each ensemble.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub read_window: usize,
}

/// Help texts are written as clap renders doc comments: no final period.
#[derive(Debug, Clone)]
pub struct SourceWording;

impl Wording for SourceWording {
    const SIDE: Side = SOURCE;
    const HELP: Option<&'static str> = Some("Source digest credentials, user:password");
    const FILE_HELP: Option<&'static str> = Some(
        "File holding the source user:password (keeps it out of shell history); wins over \
         --source-auth and RESILIENCY_SOURCE_AUTH",
    );
}

#[derive(Debug, Clone)]
pub struct DestinationWording;

impl Wording for DestinationWording {
    const SIDE: Side = DESTINATION;
    const HELP: Option<&'static str> = Some("Destination digest credentials, user:password");
    const FILE_HELP: Option<&'static str> = Some("File holding the destination user:password");
}

impl Endpoints {
    pub(super) fn connect_options(&self) -> Result<(ConnectOptions, ConnectOptions), CliError> {
        let connect = seconds("--connect-timeout", self.connect_timeout)?;
        let session = seconds("--session-timeout", self.session_timeout)?;
        let source = connect_options(&self.source, self.source_auth.read()?, connect);
        let destination =
            connect_options(&self.destination, self.destination_auth.read()?, connect);
        Ok((
            ConnectOptions {
                session_timeout: session,
                ..source
            },
            ConnectOptions {
                session_timeout: session,
                ..destination
            },
        ))
    }

    pub(super) fn destination_root(&self) -> String {
        self.destination_root_path
            .clone()
            .unwrap_or_else(|| self.root_path.clone())
    }

    pub(super) fn verify_options(&self, max_paths: usize) -> VerifyOptions {
        VerifyOptions {
            walk: WalkOptions {
                hash: HashOptions { acl: !self.no_acl },
                ephemerals: self.ephemerals.into(),
                window: self.read_window,
            },
            max_paths,
        }
    }
}
