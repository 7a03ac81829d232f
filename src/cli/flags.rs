//! Flags several subcommands share, the checks of their values, and the command line's errors.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use verifier::{ConnectOptions, DigestAuth, EphemeralPolicy};

/// Errors of the command line itself (bad flags, unreadable files).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{flag}: {message}")]
    InvalidFlag { flag: &'static str, message: String },
    #[error("{0}")]
    Stream(String),
    #[error("{flag}: cannot read {path}: {source}")]
    AuthFile {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ephemerals {
    /// Leave ephemeral nodes out.
    Skip,
    /// Copy them as persistent nodes.
    Persistent,
}

impl From<Ephemerals> for EphemeralPolicy {
    fn from(e: Ephemerals) -> Self {
        match e {
            Ephemerals::Skip => EphemeralPolicy::Skip,
            Ephemerals::Persistent => EphemeralPolicy::Persistent,
        }
    }
}

/// Which ensemble a pair of credential flags reaches: their names and environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Side {
    /// The inline flag.
    pub auth: &'static str,
    /// The flag naming a file that holds the credentials.
    pub auth_file: &'static str,
    pub env: &'static str,
}

pub const SOURCE: Side = Side {
    auth: "--source-auth",
    auth_file: "--source-auth-file",
    env: "RESILIENCY_SOURCE_AUTH",
};

pub const DESTINATION: Side = Side {
    auth: "--destination-auth",
    auth_file: "--destination-auth-file",
    env: "RESILIENCY_DESTINATION_AUTH",
};

/// One command's wording of the credential flags of one side: the help differs between
/// commands, the flags do not.
pub trait Wording: Debug + Clone + Send + Sync + 'static {
    const SIDE: Side;
    const HELP: Option<&'static str>;
    const FILE_HELP: Option<&'static str>;
}

/// Digest credentials for one ensemble, user:password inline (or from the environment) or
/// from a file.
#[derive(Args, Debug, Clone)]
// No implicit group: two of these (source, destination) may sit in one command.
#[group(skip)]
pub struct Credentials<W: Wording> {
    #[arg(
        id = long(W::SIDE.auth),
        long = long(W::SIDE.auth),
        env = W::SIDE.env,
        value_name = "USER:PASSWORD",
        hide_env_values = true,
        help = W::HELP
    )]
    pub inline: Option<String>,
    #[arg(
        id = long(W::SIDE.auth_file),
        long = long(W::SIDE.auth_file),
        value_name = "FILE",
        help = W::FILE_HELP
    )]
    pub file: Option<PathBuf>,
    #[arg(skip)]
    wording: PhantomData<W>,
}

impl<W: Wording> Credentials<W> {
    /// The credentials given, if any. An explicit file wins over the flag or its environment
    /// variable.
    pub fn read(&self) -> Result<Option<DigestAuth>, CliError> {
        let side = W::SIDE;
        let text = match (&self.file, &self.inline) {
            (Some(p), _) => std::fs::read_to_string(p).map_err(|source| CliError::AuthFile {
                flag: side.auth_file,
                path: p.clone(),
                source,
            })?,
            (None, Some(s)) => s.clone(),
            (None, None) => return Ok(None),
        };
        DigestAuth::parse(text.trim())
            .map(Some)
            .map_err(|message| CliError::InvalidFlag {
                flag: side.auth,
                message,
            })
    }

    /// How to reach `servers` with these credentials, giving up after `connect_timeout`
    /// seconds (`--connect-timeout`, checked after the credentials).
    pub fn connect(&self, servers: &str, connect_timeout: f64) -> Result<ConnectOptions, CliError> {
        let auth = self.read()?;
        let timeout = seconds("--connect-timeout", connect_timeout)?;
        Ok(connect_options(servers, auth, timeout))
    }
}

/// How to reach `servers` with `auth`, giving up after `connect_timeout`.
pub fn connect_options(
    servers: &str,
    auth: Option<DigestAuth>,
    connect_timeout: Duration,
) -> ConnectOptions {
    ConnectOptions {
        auth,
        connect_timeout,
        ..ConnectOptions::new(servers)
    }
}

/// A flag's name as clap takes it: without its dashes.
fn long(flag: &'static str) -> &'static str {
    flag.trim_start_matches('-')
}

/// `--connect-timeout`'s default, in seconds: a reachable ensemble answers well within it.
pub const CONNECT_TIMEOUT: f64 = 10.0;

/// Ten years, in seconds: `Duration::from_secs_f64` panics past its range, and no timeout
/// or interval needs more.
const MAX_SECONDS: f64 = 3.2e8;

pub(crate) fn seconds(flag: &'static str, v: f64) -> Result<Duration, CliError> {
    if v.is_finite() && v > 0.0 && v < MAX_SECONDS {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(CliError::InvalidFlag {
            flag,
            message: format!("{v} is not a positive number of seconds"),
        })
    }
}

/// A duration flag where 0 means "off" (or "at once"): refuses negative, non-finite and
/// absurd values with a message instead of a panic.
pub(crate) fn seconds_or_zero(flag: &'static str, v: f64) -> Result<Duration, CliError> {
    if v == 0.0 {
        Ok(Duration::ZERO)
    } else {
        seconds(flag, v).map_err(|_| CliError::InvalidFlag {
            flag,
            message: format!("{v} is not a number of seconds from 0 to ten years"),
        })
    }
}
