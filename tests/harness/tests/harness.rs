//! Integration tests for zk-test-harness: real ZooKeeper servers, no mocks.

use std::time::Instant;
use zk_test_harness::{ZkOptions, ZkServer};

/// Reads a `Key: value` line from a four-letter-word reply.
fn field(reply: &str, key: &str) -> String {
    reply
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {key:?} in reply:\n{reply}"))
}

fn java_cmdline(server: &mut ZkServer) -> String {
    let pid = server.pid().expect("server should have a JVM pid");
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read /proc/PID/cmdline");
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

#[test]
fn start_answers_srvr_standalone() {
    let t = Instant::now();
    let mut zk = ZkServer::start_default();
    eprintln!("start took {:?}", t.elapsed());
    assert!(zk.is_running());
    assert_eq!(zk.connect_string(), format!("127.0.0.1:{}", zk.port()));
    assert!(zk.data_dir().is_dir());
    let srvr = zk.four_letter("srvr").expect("srvr");
    assert!(srvr.contains("Mode: standalone"), "{srvr}");
    assert!(zk
        .four_letter("mntr")
        .expect("mntr")
        .contains("zk_server_state"));
    let cmdline = java_cmdline(&mut zk);
    assert!(cmdline.contains("ZooKeeperServerMain"), "{cmdline}");
    assert!(!cmdline.contains("extendedTypesEnabled"), "{cmdline}");
    assert!(zk.log_path().is_file());
    assert_eq!(zk.session_ids().expect("cons"), Vec::<i64>::new());
}

#[test]
fn stop_kill_start_again_cycle_keeps_port_and_data() {
    let mut zk = ZkServer::start_default();
    let port = zk.port();
    let data_dir = zk.data_dir().to_path_buf();
    let nodes = field(&zk.four_letter("srvr").expect("srvr"), "Node count:");

    zk.stop();
    assert!(!zk.is_running());
    assert!(
        zk.four_letter("srvr").is_err(),
        "stopped server still answers"
    );
    zk.start_again();
    assert!(zk.is_running());
    assert_eq!(zk.port(), port);
    assert_eq!(zk.data_dir(), data_dir);
    let srvr = zk.four_letter("srvr").expect("srvr after start_again");
    assert!(srvr.contains("Mode: standalone"), "{srvr}");
    assert_eq!(field(&srvr, "Node count:"), nodes);
    // A snapshot was written to the data dir that survived the restart.
    assert!(data_dir.join("version-2").is_dir());

    zk.kill();
    assert!(!zk.is_running());
    assert!(
        zk.four_letter("ruok").is_err(),
        "killed server still answers"
    );
    zk.start_again();
    assert_eq!(zk.port(), port);
    assert_eq!(zk.four_letter("ruok").expect("ruok"), "imok");

    let t = Instant::now();
    zk.restart();
    eprintln!("restart took {:?}", t.elapsed());
    assert_eq!(zk.port(), port);
    assert!(zk
        .four_letter("srvr")
        .expect("srvr")
        .contains("Mode: standalone"));
}

#[test]
#[should_panic(expected = "already running")]
fn start_again_while_running_panics() {
    let mut zk = ZkServer::start_default();
    zk.start_again();
}

#[test]
fn kill_makes_four_letter_fail() {
    let mut zk = ZkServer::start_default();
    let pid = zk.pid().expect("pid");
    zk.kill();
    assert!(zk.four_letter("srvr").is_err());
    assert!(!zk.is_running());
    assert_eq!(zk.pid(), None);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "JVM {pid} still exists after kill()"
    );
}

#[test]
fn parallel_servers_get_different_ports() {
    let handles: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(ZkServer::start_default))
        .collect();
    let servers: Vec<ZkServer> = handles
        .into_iter()
        .map(|h| h.join().expect("start thread"))
        .collect();
    let mut ports: Vec<u16> = servers.iter().map(ZkServer::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), servers.len(), "duplicate ports");
    for zk in &servers {
        assert_eq!(zk.four_letter("ruok").expect("ruok"), "imok");
        let conf = zk.four_letter("conf").expect("conf");
        assert!(conf.contains(&*zk.data_dir().to_string_lossy()), "{conf}");
    }
}

#[test]
fn options_reach_the_jvm_and_config() {
    let mut zk = ZkServer::start(ZkOptions {
        extended_types: true,
        jute_maxbuffer: Some(4 << 20),
        heap_mib: 128,
        extra_config: vec!["globalOutstandingLimit=2000".to_owned()],
    });
    let cmdline = java_cmdline(&mut zk);
    assert!(
        cmdline.contains("-Dzookeeper.extendedTypesEnabled=true"),
        "{cmdline}"
    );
    assert!(cmdline.contains("-Djute.maxbuffer=4194304"), "{cmdline}");
    assert!(cmdline.contains("-Xmx128m"), "{cmdline}");
    let envi = zk.four_letter("envi").expect("envi");
    assert!(
        envi.contains("jute.maxbuffer=4194304") || envi.contains("java"),
        "{envi}"
    );
    let cfg = std::fs::read_to_string(zk.data_dir().parent().expect("tempdir").join("zoo.cfg"))
        .expect("zoo.cfg");
    assert!(cfg.contains("extendedTypesEnabled=true"), "{cfg}");
    assert!(cfg.contains("globalOutstandingLimit=2000"), "{cfg}");
}

#[test]
fn drop_kills_jvm_and_removes_tempdir() {
    let mut zk = ZkServer::start_default();
    let pid = zk.pid().expect("pid");
    let dir = zk.data_dir().parent().expect("tempdir").to_path_buf();
    drop(zk);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
}

/// Env var that turns `orphan_helper` on, with the way the helper process ends.
const ORPHAN_MODE: &str = "ZK_HARNESS_ORPHAN_MODE";

/// Child-process half of `server_in_static_dies_with_its_process`: starts a server,
/// leaks it in a `static` (whose Drop never runs) and then exits or waits to be killed.
/// Does nothing unless `ZK_HARNESS_ORPHAN_MODE` is set.
#[test]
#[ignore = "helper, run by server_in_static_dies_with_its_process"]
fn orphan_helper() {
    static LEAKED: std::sync::OnceLock<std::sync::Mutex<ZkServer>> = std::sync::OnceLock::new();
    let Ok(mode) = std::env::var(ORPHAN_MODE) else {
        return;
    };
    let server = LEAKED.get_or_init(|| std::sync::Mutex::new(ZkServer::start_default()));
    let mut guard = server.lock().expect("lock");
    let pid = guard.pid().expect("pid");
    let dir = guard
        .data_dir()
        .parent()
        .expect("tempdir")
        .display()
        .to_string();
    drop(guard);
    println!("JAVA_PID={pid} TEMP_DIR={dir}");
    use std::io::Write;
    std::io::stdout().flush().expect("flush");
    if mode == "exit" {
        std::process::exit(0);
    }
    std::thread::sleep(std::time::Duration::from_secs(120));
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn server_in_static_dies_with_its_process() {
    use std::io::BufRead;
    for mode in ["exit", "sigkill"] {
        let mut child = std::process::Command::new(std::env::current_exe().expect("current_exe"))
            .args([
                "orphan_helper",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ORPHAN_MODE, mode)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let stdout = child.stdout.take().expect("stdout");
        let line = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split_once("JAVA_PID=").map(|(_, rest)| rest.to_owned()))
            .expect("helper printed no JAVA_PID");
        let (pid, dir) = line.split_once(" TEMP_DIR=").expect("TEMP_DIR");
        let pid: u32 = pid.parse().expect("pid");
        let dir = std::path::PathBuf::from(dir.trim());
        assert!(dir.is_dir(), "{mode}: temp dir {} missing", dir.display());
        assert!(alive(pid), "{mode}: JVM {pid} not running");
        if mode == "sigkill" {
            child.kill().expect("SIGKILL helper");
        }
        child.wait().expect("wait helper");
        let t = Instant::now();
        while alive(pid) {
            assert!(
                t.elapsed().as_secs() < 5,
                "{mode}: JVM {pid} outlived its test process"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        eprintln!(
            "{mode}: orphaned JVM gone {:?} after its process",
            t.elapsed()
        );
        // The watchdog also removes the temp dir of the orphaned server.
        while dir.exists() {
            assert!(
                t.elapsed().as_secs() < 10,
                "{mode}: {} not removed",
                dir.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
