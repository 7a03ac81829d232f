//! Bad input gets a clear error naming what is wrong, a non-zero exit, and no destination write.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::*;

fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args(args)
        .args(["--progress", "0"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_input_is_refused_without_writing() {
    let (s, d) = shared_pair();
    let root = unique_root("bad");
    let c = client(s).await;
    mk(&c, &root, b"data").await;
    mk(&c, &format!("{root}/child"), b"x").await;
    let dc = client(d).await;
    mk(&dc, &root, b"precious destination data").await;
    mk(&dc, &format!("{root}/only-here"), b"keep me").await;
    let before = fingerprint(d, &root).await;
    let (src, dst) = (s.connect_string(), d.connect_string());
    let dead = format!("127.0.0.1:{}", free_port());
    let inside = format!("{root}/child");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--source",
                &dead,
                "--destination",
                &dst,
                "--root-path",
                &root,
                "--connect-timeout",
                "2",
            ],
            "source ensemble",
        ),
        (
            vec![
                "--source",
                &src,
                "--destination",
                &dead,
                "--root-path",
                &root,
                "--connect-timeout",
                "2",
            ],
            "destination ensemble",
        ),
        (
            vec![
                "--source",
                &src,
                "--destination",
                &dst,
                "--root-path",
                "/does-not-exist",
            ],
            "source root /does-not-exist does not exist",
        ),
        (
            vec![
                "--source",
                &src,
                "--destination",
                &dst,
                "--root-path",
                "relative",
            ],
            "must be an absolute path",
        ),
        (
            vec![
                "--source",
                &src,
                "--destination",
                &dst,
                "--root-path",
                &root,
                "--destination-root-path",
                "/zookeeper/x",
            ],
            "never replicated",
        ),
        (
            vec![
                "--source",
                &src,
                "--destination",
                &dst,
                "--root-path",
                &root,
                "--source-auth",
                "no-colon",
            ],
            "--source-auth: expected user:password",
        ),
        (
            vec![
                "--source",
                &src,
                "--destination",
                &src,
                "--root-path",
                &root,
                "--destination-root-path",
                &inside,
            ],
            "overlaps",
        ),
        (
            vec![
                "--source",
                "not a server list",
                "--destination",
                &dst,
                "--root-path",
                &root,
            ],
            "not a valid connection string",
        ),
        (
            vec![
                "--source",
                &src,
                "--destination",
                &dst,
                "--root-path",
                &root,
                "--ttl",
                "/x=abc",
            ],
            "--ttl",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["sync"];
        full.extend(args.iter().copied());
        let (code, stdout, stderr) = cli(&full);
        assert_eq!(code, Some(2), "{full:?}\n{stdout}\n{stderr}");
        assert!(
            stderr.contains(expected),
            "{full:?}: expected {expected:?} in {stderr}"
        );
        assert_eq!(
            fingerprint(d, &root).await,
            before,
            "{full:?} wrote to the destination"
        );
    }
    // Missing auth file names the flag.
    let (code, _, stderr) = cli(&[
        "sync",
        "--source",
        &src,
        "--destination",
        &dst,
        "--root-path",
        &root,
        "--source-auth-file",
        "/nonexistent/auth",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--source-auth-file: cannot read /nonexistent/auth"),
        "{stderr}"
    );
    // JSON errors for machines.
    let (code, stdout, _) = cli(&[
        "sync",
        "--source",
        &src,
        "--destination",
        &dst,
        "--root-path",
        "/does-not-exist",
        "--json",
    ]);
    assert_eq!(code, Some(2));
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert!(doc["error"].as_str().unwrap().contains("does not exist"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_and_unreadable_source_root() {
    let (s, d) = shared_pair();
    let root = unique_root("auth");
    let admin = "admin:secret";
    let id = verifier::DigestAuth::parse(admin).unwrap().acl_id();
    let c = client_at(&s.connect_string(), Some(admin)).await;
    let acl = [zookeeper_client::Acl::new(
        zookeeper_client::Permission::ALL,
        zookeeper_client::AuthId::new("digest", &id),
    )];
    mk_with(
        &c,
        &root,
        b"secret",
        zookeeper_client::CreateMode::Persistent,
        &acl,
    )
    .await;
    let before = fingerprint(d, &root).await;
    let (code, _, stderr) = cli(&[
        "sync",
        "--source",
        &s.connect_string(),
        "--destination",
        &d.connect_string(),
        "--root-path",
        &root,
        "--source-auth",
        "admin:wrong-password",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("source: not authorized to read")
            && stderr.contains("digest user \"admin\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-password"),
        "the password leaked into the error: {stderr}"
    );
    assert_eq!(fingerprint(d, &root).await, before);
    // The right credentials, given through the environment, work.
    let out = Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args([
            "sync",
            "--source",
            &s.connect_string(),
            "--destination",
            &d.connect_string(),
            "--root-path",
            &root,
            "--progress",
            "0",
            "--verify",
        ])
        .env("RESILIENCY_SOURCE_AUTH", admin)
        .env("RESILIENCY_DESTINATION_AUTH", admin)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn node_too_big_for_the_destination_and_ttl_without_extended_types() {
    // A source that accepts 2 MiB nodes; a destination without TTL support.
    let big_src = ZkServer::start(ZkOptions {
        jute_maxbuffer: Some(4 << 20),
        ..ZkOptions::default()
    });
    let plain_dst = ZkServer::start(ZkOptions::default());
    let root = unique_root("limits");
    let c = client(&big_src).await;
    mk(&c, &root, b"").await;
    mk(&c, &format!("{root}/small"), b"s").await;
    mk(&c, &format!("{root}/huge"), &vec![7u8; 2 << 20]).await;
    let o = sync_opts(&big_src, &root, &plain_dst, &root);
    let err = resiliency_operator::engine::sync(&o)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{root}/huge")) && err.contains("jute.maxbuffer"),
        "{err}"
    );

    let root2 = unique_root("ttl");
    mk(&c, &root2, b"").await;
    mk(&c, &format!("{root2}/t"), b"").await;
    let mut o = sync_opts(&big_src, &root2, &plain_dst, &root2);
    o.type_rules = vec![resiliency_operator::engine::TypeRule::new(
        &format!("{root2}/t"),
        verifier::NodeKind::Ttl { ttl_ms: 1000 },
    )
    .unwrap()];
    let err = resiliency_operator::engine::sync(&o)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("extendedTypesEnabled") && err.contains(&format!("{root2}/t")),
        "{err}"
    );
}
