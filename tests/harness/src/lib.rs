//! Starts real standalone Apache ZooKeeper 3.8 servers (Debian's `zookeeper`
//! package: `java` plus `/usr/share/java/zookeeper.jar`, or `$ZOOKEEPER_JAR`)
//! on loopback for integration tests and benchmarks.
//!
//! ```no_run
//! use zk_test_harness::{ZkOptions, ZkServer};
//!
//! let mut zk = ZkServer::start(ZkOptions { extended_types: true, ..ZkOptions::default() });
//! let connect = zk.connect_string(); // "127.0.0.1:PORT"
//! assert!(zk.four_letter("srvr").expect("srvr").contains("Mode: standalone"));
//! zk.restart(); // same port, same data
//! # drop(connect);
//! ```
//!
//! Every server runs in a fresh temporary directory (`zoo.cfg`, `data/`,
//! `server.log`, `java.pid`) that is removed when the [`ZkServer`] is dropped.
//!
//! # Orphan safety
//!
//! The JVM is not a direct child of the test process: it is started by a small
//! `sh` wrapper that also runs a watchdog subshell. The watchdog polls the test
//! process (`kill -0 $PARENT`) every 0.5 s and, once it is gone, `kill -9`s the
//! JVM and removes the temporary directory. So servers kept in `static`s (whose
//! `Drop` never runs), test binaries that exit, panic, get SIGKILLed or Ctrl-C'd
//! leave no JVM behind for more than about half a second.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long [`ZkServer::start`] / [`ZkServer::start_again`] wait for readiness.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`ZkServer::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Readiness poll interval.
const POLL: Duration = Duration::from_millis(100);
/// Number of new ports tried after the first one fails on the first start.
const PORT_RETRIES: usize = 3;
/// Default location of Debian's ZooKeeper jar.
const DEFAULT_JAR: &str = "/usr/share/java/zookeeper.jar";
/// Debian's ZooKeeper configuration directory (holds log4j.properties).
const DEBIAN_CONF_DIR: &str = "/etc/zookeeper/conf";
const NOT_INSTALLED: &str = "ZooKeeper is not installed: run `apt-get install -y zookeeper default-jre-headless` (or set ZOOKEEPER_JAR)";

/// Wrapper script run as `sh -c SCRIPT zk-test-harness PARENT_PID PID_FILE TEMP_DIR JAVA ARGS...`.
///
/// It starts the JVM in the background, publishes its pid atomically, starts a
/// watchdog subshell that kills the JVM (and removes the temporary directory)
/// once the parent (test) process is gone, then waits for the JVM and exits with its status. The wrapper therefore
/// exits as soon as the JVM does, which is what `stop`/`kill` wait for.
const WRAPPER_SCRIPT: &str = r#"
PARENT=$1
PIDFILE=$2
TMPDIR_TO_REMOVE=$3
shift 3
"$@" </dev/null &
JPID=$!
echo "$JPID" > "$PIDFILE.tmp" && mv -f "$PIDFILE.tmp" "$PIDFILE"
(
  while kill -0 "$PARENT" 2>/dev/null; do
    kill -0 "$JPID" 2>/dev/null || exit 0
    sleep 0.5
  done
  kill -9 "$JPID" 2>/dev/null
  N=0
  while kill -0 "$JPID" 2>/dev/null && [ $N -lt 50 ]; do sleep 0.1; N=$((N+1)); done
  case "$TMPDIR_TO_REMOVE" in */zk-test-harness-*) rm -rf "$TMPDIR_TO_REMOVE" ;; esac
) &
WPID=$!
trap 'kill -9 "$JPID" 2>/dev/null' HUP INT TERM
wait "$JPID"
RC=$?
if kill -0 "$PARENT" 2>/dev/null; then kill "$WPID" 2>/dev/null; else wait "$WPID"; fi
exit $RC
"#;

/// Ports handed out by this process (never handed out twice).
static USED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Options for [`ZkServer::start`].
#[derive(Clone, Debug)]
pub struct ZkOptions {
    /// zookeeper.extendedTypesEnabled (TTL nodes). Default false.
    pub extended_types: bool,
    /// jute.maxbuffer in bytes for the server JVM (-Djute.maxbuffer=N). Default None (server default ~1 MiB).
    pub jute_maxbuffer: Option<usize>,
    /// JVM max heap in MiB. Default 256.
    pub heap_mib: u32,
    /// Extra zoo.cfg lines. Default empty.
    pub extra_config: Vec<String>,
}

impl Default for ZkOptions {
    /// No TTL nodes, default jute.maxbuffer, 256 MiB heap, no extra config.
    fn default() -> Self {
        ZkOptions {
            extended_types: false,
            jute_maxbuffer: None,
            heap_mib: 256,
            extra_config: Vec::new(),
        }
    }
}

/// A running (or stopped) standalone ZooKeeper server owned by the test.
///
/// Dropping it kills the JVM and removes its temporary directory.
pub struct ZkServer {
    opts: ZkOptions,
    port: u16,
    dir: tempfile::TempDir,
    /// `<tempdir>/data`.
    data_path: PathBuf,
    java: PathBuf,
    jar: PathBuf,
    /// The `sh` wrapper whose exit means the JVM has exited.
    wrapper: Option<Child>,
    /// Pid of the JVM itself (read from the pid file).
    java_pid: Option<u32>,
}

/// Why a start attempt failed.
enum StartError {
    /// The port was unusable (bind failure, early exit or a foreign server); worth retrying elsewhere.
    Port(String),
    /// Did not become ready before the deadline.
    Timeout(String),
}

impl ZkServer {
    /// Starts a server on a free 127.0.0.1 port with a fresh temporary data dir; returns when it answers `ruok` with `imok` (and `srvr` shows Mode: standalone). Panics with a clear message (including the tail of the server log) if java/the jar is missing or it does not come up within 60 s.
    pub fn start(opts: ZkOptions) -> ZkServer {
        ZkServer::start_on(opts, allocate_port())
    }

    /// `start` with a given first port (a fresh one is allocated for each retry).
    fn start_on(opts: ZkOptions, first_port: u16) -> ZkServer {
        let (java, jar) = find_installation();
        let dir = tempfile::Builder::new()
            .prefix("zk-test-harness-")
            .tempdir()
            .expect("create temporary directory for ZooKeeper");
        let data_path = dir.path().join("data");
        fs::create_dir_all(&data_path).expect("create ZooKeeper data dir");
        let mut server = ZkServer {
            opts,
            port: first_port,
            dir,
            data_path,
            java,
            jar,
            wrapper: None,
            java_pid: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut failures = Vec::new();
        for attempt in 0..=PORT_RETRIES {
            if attempt > 0 {
                server.port = allocate_port();
            }
            match server.launch(deadline) {
                Ok(()) => return server,
                Err(StartError::Port(why)) => {
                    server.kill_now();
                    failures.push(format!("port {}: {why}", server.port));
                }
                Err(StartError::Timeout(why)) => {
                    // The 60 s budget is shared by all attempts: give up.
                    server.kill_now();
                    failures.push(format!("port {}: {why}", server.port));
                    break;
                }
            }
        }
        let msg = format!(
            "ZooKeeper server did not start ({}).\n--- tail of {} ---\n{}",
            failures.join("; "),
            server.log_path().display(),
            server.log_tail()
        );
        panic!("{msg}");
    }

    /// Same as start(ZkOptions::default()).
    pub fn start_default() -> ZkServer {
        ZkServer::start(ZkOptions::default())
    }

    /// "127.0.0.1:PORT"
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port (stays the same across `start_again`/`restart`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The ZooKeeper `dataDir` (snapshots and transaction logs), kept across restarts.
    pub fn data_dir(&self) -> &Path {
        &self.data_path
    }

    /// Whether the JVM is still running (the wrapper process has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.wrapper.as_mut() {
            None => false,
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                Ok(Some(_)) | Err(_) => {
                    self.wrapper = None;
                    self.java_pid = None;
                    false
                }
            },
        }
    }

    /// Graceful stop (SIGTERM via `kill -TERM pid`), waits for exit (kills after 10 s).
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        if let Some(pid) = self.java_pid {
            signal(pid, "TERM");
        }
        if self.wait_wrapper(STOP_TIMEOUT).is_none() {
            self.kill_now();
        }
        self.wrapper = None;
        self.java_pid = None;
    }

    /// Hard kill (SIGKILL), waits for exit.
    pub fn kill(&mut self) {
        self.kill_now();
    }

    /// Starts it again on the SAME port and SAME data dir (data survives), waits until ready. Panics if already running.
    pub fn start_again(&mut self) {
        assert!(
            !self.is_running(),
            "ZkServer::start_again: server on port {} is already running",
            self.port
        );
        let deadline = Instant::now() + START_TIMEOUT;
        if let Err(StartError::Port(why) | StartError::Timeout(why)) = self.launch(deadline) {
            self.kill_now();
            let msg = format!(
                "ZooKeeper server did not start again on port {}: {why}\n--- tail of {} ---\n{}",
                self.port,
                self.log_path().display(),
                self.log_tail()
            );
            panic!("{msg}");
        }
    }

    /// stop() then start_again().
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Sends a four-letter word command (e.g. "srvr", "mntr", "cons") and returns the reply text; Err on connection failure.
    pub fn four_letter(&self, cmd: &str) -> io::Result<String> {
        four_letter_word(self.port, cmd, Duration::from_secs(10))
    }

    /// Path of the server log file (stdout+stderr of the JVM).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Pid of the server JVM while it is running (e.g. for SIGSTOP/SIGCONT or `/proc` inspection).
    pub fn pid(&mut self) -> Option<u32> {
        if self.is_running() {
            self.java_pid
        } else {
            None
        }
    }

    /// Convenience for tests that need sessions killed server side: returns the session ids listed by `cons`.
    ///
    /// Connections without a session (such as the `cons` request itself) are skipped.
    pub fn session_ids(&self) -> io::Result<Vec<i64>> {
        Ok(parse_cons_session_ids(&self.four_letter("cons")?))
    }
}

impl Drop for ZkServer {
    /// Kills the JVM and waits for it; the temporary directory is removed afterwards.
    fn drop(&mut self) {
        self.kill_now();
    }
}

impl ZkServer {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("zoo.cfg")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("java.pid")
    }

    /// Writes zoo.cfg for the current port.
    fn write_config(&self) {
        let mut cfg = format!(
            "tickTime=500\n\
             minSessionTimeout=1000\n\
             maxSessionTimeout=60000\n\
             dataDir={}\n\
             clientPort={}\n\
             clientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=*\n\
             maxClientCnxns=0\n",
            self.data_path.display(),
            self.port
        );
        if self.opts.extended_types {
            cfg.push_str("extendedTypesEnabled=true\n");
        }
        for line in &self.opts.extra_config {
            cfg.push_str(line);
            cfg.push('\n');
        }
        fs::write(self.config_path(), cfg).expect("write zoo.cfg");
    }

    /// JVM command line (after the `java` executable).
    fn jvm_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("-Xmx{}m", self.opts.heap_mib),
            "-XX:+UseSerialGC".to_owned(),
            "-Xshare:auto".to_owned(),
            "-Dzookeeper.admin.enableServer=false".to_owned(),
        ];
        if self.opts.extended_types {
            args.push("-Dzookeeper.extendedTypesEnabled=true".to_owned());
        }
        if let Some(n) = self.opts.jute_maxbuffer {
            args.push(format!("-Djute.maxbuffer={n}"));
        }
        let mut classpath = String::new();
        if Path::new(DEBIAN_CONF_DIR).is_dir() {
            classpath.push_str(DEBIAN_CONF_DIR);
            classpath.push(':');
        }
        classpath.push_str(&self.jar.to_string_lossy());
        args.push("-cp".to_owned());
        args.push(classpath);
        args.push("org.apache.zookeeper.server.ZooKeeperServerMain".to_owned());
        args.push(self.config_path().to_string_lossy().into_owned());
        args
    }

    /// Spawns the wrapper + JVM on `self.port` and waits until the server is ready.
    fn launch(&mut self, deadline: Instant) -> Result<(), StartError> {
        self.write_config();
        let pid_file = self.pid_file();
        let _ = fs::remove_file(&pid_file);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open ZooKeeper server log");
        let args = self.jvm_args();
        writeln!(
            log,
            "=== zk-test-harness: starting ZooKeeper on 127.0.0.1:{}: {} {}",
            self.port,
            self.java.display(),
            args.join(" ")
        )
        .expect("write ZooKeeper server log");
        let log_err = log.try_clone().expect("clone log file handle");
        let child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER_SCRIPT)
            .arg("zk-test-harness")
            .arg(std::process::id().to_string())
            .arg(&pid_file)
            .arg(self.dir.path())
            .arg(&self.java)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn `sh` to run the ZooKeeper JVM");
        self.wrapper = Some(child);
        self.java_pid = None;

        let expected_data_dir = self.data_path.to_string_lossy().into_owned();
        loop {
            if self.java_pid.is_none() {
                self.java_pid = read_pid_file(&pid_file);
            }
            if let Some(status) = self.wrapper_exited() {
                let bind = if self.log_tail().contains("Address already in use") {
                    " (Address already in use)"
                } else {
                    ""
                };
                return Err(StartError::Port(format!(
                    "JVM exited early with {status}{bind}"
                )));
            }
            let ruok = four_letter_word(self.port, "ruok", Duration::from_secs(2));
            if matches!(&ruok, Ok(reply) if reply.trim() == "imok") && self.java_pid.is_some() {
                // Make sure the server answering on this port is ours, not a server
                // another process started on the same port in the meantime.
                let conf =
                    four_letter_word(self.port, "conf", Duration::from_secs(5)).unwrap_or_default();
                if conf.contains("dataDir=") && !conf_has_data_dir(&conf, &expected_data_dir) {
                    return Err(StartError::Port(
                        "port is served by another ZooKeeper (foreign dataDir in `conf`)".into(),
                    ));
                }
                let srvr =
                    four_letter_word(self.port, "srvr", Duration::from_secs(5)).unwrap_or_default();
                if conf.contains("dataDir=") && srvr.contains("Mode: standalone") {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(StartError::Timeout(format!(
                    "not ready (ruok -> {ruok:?}) within {} s",
                    START_TIMEOUT.as_secs()
                )));
            }
            sleep(POLL);
        }
    }

    /// Returns the exit status if the wrapper (hence the JVM) has exited.
    fn wrapper_exited(&mut self) -> Option<ExitStatus> {
        self.wrapper
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Polls the wrapper for up to `timeout`; returns its status if it exited.
    fn wait_wrapper(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.wrapper_exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the JVM (if any) and reaps the wrapper.
    fn kill_now(&mut self) {
        let Some(mut child) = self.wrapper.take() else {
            self.java_pid = None;
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let mut pid = self.java_pid.take();
            // The pid file is written right after the JVM is forked; give it a moment.
            let until = Instant::now() + Duration::from_secs(2);
            while pid.is_none() && Instant::now() < until {
                pid = read_pid_file(&self.pid_file());
                if pid.is_none() {
                    sleep(Duration::from_millis(10));
                }
            }
            match pid {
                Some(pid) => signal(pid, "KILL"),
                // The wrapper traps TERM and SIGKILLs the JVM itself.
                None => signal(child.id(), "TERM"),
            }
        }
        let _ = child.wait();
        self.java_pid = None;
    }

    /// Last part of the server log (for panic messages).
    fn log_tail(&self) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_end(&mut buf);
        }
        const MAX: usize = 6000;
        let start = buf.len().saturating_sub(MAX);
        String::from_utf8_lossy(&buf[start..]).into_owned()
    }
}

/// Locates `java` and the ZooKeeper jar, panicking with installation hints if missing.
fn find_installation() -> (PathBuf, PathBuf) {
    let jar = std::env::var_os("ZOOKEEPER_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_JAR));
    if !jar.is_file() {
        panic!("{NOT_INSTALLED} [jar {} not found]", jar.display());
    }
    let from_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("java"))
            .find(|p| is_executable(p))
    });
    let from_home = || {
        std::env::var_os("JAVA_HOME")
            .map(|home| PathBuf::from(home).join("bin").join("java"))
            .filter(|p| is_executable(p))
    };
    match from_path.or_else(from_home) {
        Some(java) => (java, jar),
        None => panic!("{NOT_INSTALLED} [`java` not found on PATH or in $JAVA_HOME/bin]"),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A free loopback port that this process has not handed out before.
fn allocate_port() -> u16 {
    let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local_addr of listener")
            .port();
        drop(listener);
        if used.insert(port) {
            return port;
        }
    }
    panic!("could not find a free 127.0.0.1 port not already used by this process");
}

fn read_pid_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Sends `kill -SIG pid`, ignoring failures (the process may already be gone).
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether a `conf` reply names `data_dir` (ZooKeeper prints `dataDir=<dataDir>/version-2`).
fn conf_has_data_dir(conf: &str, data_dir: &str) -> bool {
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("dataDir="))
        .any(|v| v == data_dir || v.strip_prefix(data_dir).is_some_and(|r| r.starts_with('/')))
}

/// Sends a four-letter word to 127.0.0.1:port and reads the reply to EOF.
fn four_letter_word(port: u16, cmd: &str, timeout: Duration) -> io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(cmd.as_bytes())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Extracts the `sid=0x...` values of a `cons` reply (skipping sessionless connections).
fn parse_cons_session_ids(cons: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    for line in cons.lines() {
        let Some(pos) = line.find("sid=0x") else {
            continue;
        };
        let hex: String = line[pos + 6..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        if let Ok(id) = u64::from_str_radix(&hex, 16) {
            let id = i64::from_ne_bytes(id.to_ne_bytes());
            if id != 0 && !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

#[cfg(test)]
mod unit_tests {
    use super::{parse_cons_session_ids, ZkOptions, ZkServer};

    #[test]
    fn retries_on_a_port_held_by_a_plain_listener() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let taken = listener.local_addr().expect("local_addr").port();
        let zk = ZkServer::start_on(ZkOptions::default(), taken);
        assert_ne!(zk.port(), taken);
        assert_eq!(zk.four_letter("ruok").expect("ruok"), "imok");
        let log = std::fs::read_to_string(zk.log_path()).expect("log");
        assert!(log.contains(&format!("127.0.0.1:{taken}")), "{log}");
    }

    #[test]
    fn retries_on_a_port_held_by_a_foreign_zookeeper() {
        let other = ZkServer::start_default();
        let zk = ZkServer::start_on(ZkOptions::default(), other.port());
        assert_ne!(zk.port(), other.port());
        let conf = zk.four_letter("conf").expect("conf");
        assert!(conf.contains(&*zk.data_dir().to_string_lossy()), "{conf}");
    }

    #[test]
    fn parses_cons_output() {
        let cons = " /127.0.0.1:42478[1](queued=0,recved=4,sent=4,sid=0x100009ae0ba0000,lop=PING,to=30000)\n \
                    /127.0.0.1:42480[0](queued=0,recved=1,sent=0)\n \
                    /127.0.0.1:42482[1](queued=0,recved=4,sent=4,sid=0xffffffffffffffff,lop=PING)\n";
        assert_eq!(
            parse_cons_session_ids(cons),
            vec![0x0100_009a_e0ba_0000, -1]
        );
    }
}
