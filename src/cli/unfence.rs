//! `unfence`: lifts the fence a switchover left on an ensemble (its record names every ACL it
//! replaced): what to run when a switchover was interrupted, or to give an old primary its
//! ACLs back without failing back.

use std::process::ExitCode;

use clap::Args;

use super::flags::CliError;
use super::output::fail;
use crate::switchover::fence;

#[derive(Args, Debug)]
pub struct UnfenceArgs {
    /// The fenced ensemble, host:port[,host:port...].
    #[arg(long, value_name = "HOST:PORT,...")]
    pub servers: String,
    /// The fenced tree's root, e.g. /kafka.
    #[arg(long, value_name = "PATH")]
    pub root_path: String,
    /// The credentials the fence keeps ALL for (the Database's), user:password.
    #[arg(
        long,
        env = "RESILIENCY_AUTH",
        value_name = "USER:PASSWORD",
        hide_env_values = true
    )]
    pub auth: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn run_unfence(a: UnfenceArgs) -> ExitCode {
    let auth = match a
        .auth
        .as_deref()
        .map(verifier::DigestAuth::parse)
        .transpose()
    {
        Ok(auth) => auth,
        Err(e) => {
            return fail(
                a.json,
                &CliError::InvalidFlag {
                    flag: "--auth",
                    message: e.to_string(),
                },
            )
        }
    };
    let opts = verifier::ConnectOptions::new(a.servers.clone()).with_auth(auth);
    let client = match verifier::connect(verifier::Side::Source, &opts).await {
        Ok(c) => c,
        Err(e) => return fail(a.json, &e),
    };
    match fence::lift(&client, &a.root_path).await {
        Ok(Some(l)) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "restored": l.restored, "changedSince": l.changed_since, "gone": l.gone})
                );
            }
            eprintln!("unfence: {} nodes got their recorded ACL back; {} changed since were left; {} were gone", l.restored, l.changed_since, l.gone);
            ExitCode::SUCCESS
        }
        Ok(None) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "restored": 0, "fenced": false})
                );
            }
            eprintln!(
                "unfence: {} has no fence record: nothing to lift",
                a.root_path
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(a.json, &e),
    }
}
