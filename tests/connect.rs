//! Connecting while a server starts: a fresh or restarting ZooKeeper refuses connections, then
//! answers ruok but closes sessions for a moment. A connect keeps trying until its timeout.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::*;
use verifier::{ConnectError, ConnectOptions};
use zookeeper_client::{Acls, CreateMode};

/// Rounds of "kill the server, start it again and connect at the same instant".
const ROUNDS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_made_while_the_server_starts_waits_for_it() {
    let mut zk = ZkServer::start(ZkOptions::default());
    let servers = zk.connect_string();
    for round in 0..ROUNDS {
        zk.kill();
        // The server comes up on another thread while the connect starts now, before it
        // even listens.
        let starting = std::thread::spawn(move || {
            zk.start_again();
            zk
        });
        let mut opts = ConnectOptions::new(&servers);
        opts.connect_timeout = Duration::from_secs(60);
        let client = verifier::connect(verifier::Side::Destination, &opts)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        // The session serves requests: it is not a half-open one.
        let path = format!("/round-{round}");
        client
            .create(
                &path,
                b"x",
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: create: {e}"));
        assert_eq!(client.get_data(&path).await.unwrap().0, b"x");
        drop(client);
        zk = starting.join().unwrap();
    }
    let c = client(&zk).await;
    assert_eq!(
        c.list_children("/").await.unwrap().len(),
        ROUNDS + 1,
        "every round's node and /zookeeper"
    );
}

#[tokio::test]
async fn an_unreachable_ensemble_is_tried_until_the_timeout_and_the_error_says_what_was_tried() {
    let servers = format!("127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let mut opts = ConnectOptions::new(&servers);
    opts.connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = verifier::connect(verifier::Side::Source, &opts)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    let ConnectError::Unreachable { attempts, .. } = &err else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert!(*attempts > 1, "tried once only: {err}");
    // It gave up because the timeout passed, not at the first refusal.
    assert!(
        waited >= opts.connect_timeout,
        "gave up after {waited:?}: {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("source ensemble \"{servers}\" is unreachable"))
            && text.contains("attempts, each on every server")
            && text.contains("last error"),
        "{text}"
    );
}
