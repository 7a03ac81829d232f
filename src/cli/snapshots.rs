//! `snapshots`: list the snapshots at a location.

use std::process::ExitCode;

use clap::Args;

use super::output::{fail, print_json};
use super::store::StoreArgs;
use crate::backup;

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Where the snapshots are.
    #[arg(long, value_name = "URL")]
    pub from: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn run_snapshots(a: SnapshotsArgs) -> ExitCode {
    let json = a.store.json;
    let location = match a.store.location("--from", &a.from) {
        Ok(l) => l,
        Err(e) => return fail(json, &e),
    };
    match backup::list(&location).await {
        Ok(all) => {
            if json {
                print_json(&all);
            } else {
                for m in &all {
                    println!(
                        "{}  {}  {} nodes  {} bytes  {}  root {}  {}",
                        m.name,
                        m.created_at,
                        m.nodes,
                        m.object_bytes,
                        m.root_path,
                        verifier::short_hash(&m.root_hash),
                        match &m.suspect {
                            Some(s) => format!("SUSPECT: {}", s.reason),
                            None => m.standing().as_str().to_string(),
                        }
                    );
                }
                if all.is_empty() {
                    println!("no snapshots at {}", location.describe());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(json, &e),
    }
}
