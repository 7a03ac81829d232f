#!/usr/bin/env bash
# Local demo of the main job: copy a ZooKeeper tree from one ensemble to another and prove it.
#
# Starts two throw-away standalone ZooKeeper servers on free loopback ports (SOURCE and
# DESTINATION), seeds an app-like tree under /demo on the source, then runs
# resiliency-operator sync/verify against them. Everything is removed on exit.
# Runs on a fresh Debian 12 machine as root: `bash scripts/demo.sh`.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=/dev/null
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) [ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH" ;; esac

JAR=${ZOOKEEPER_JAR:-/usr/share/java/zookeeper.jar}
ZKCLI=/usr/share/zookeeper/bin/zkCli.sh
AUTH=admin:secret

section() { printf '\n\033[1m==== %s ====\033[0m\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }
# Prints a command, then runs it; returns its exit code (never aborts the script).
show() { printf '\n$ %s\n' "$*" | sed "s#$BIN#resiliency-operator#g"; }
run() {
    show "$@"
    local rc=0
    "$@" || rc=$?
    echo "(exit code $rc)"
    return "$rc"
}

section "1. Dependencies and release build"
bash scripts/install-deps.sh --demo
[ -x "$ZKCLI" ] || die "$ZKCLI not found (Debian package zookeeper)"
cargo build --release
BIN="$(pwd)/${CARGO_TARGET_DIR:-target}/release/resiliency-operator"
[ -x "$BIN" ] || die "$BIN was not built"

# ---------------------------------------------------------------------------------------------
# Two standalone ZooKeeper servers
# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/resiliency-demo.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# True when something accepts connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sends a four-letter word and prints the reply.
four_letter() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf '%s' "$2" >&3
        timeout 5 cat <&3
    ) 2>/dev/null
}

# free_port FIRST: the first port from FIRST up on which nothing listens.
free_port() {
    local p=$1
    while listening "$p"; do
        p=$((p + 1))
        [ "$p" -lt $(($1 + 100)) ] || die "no free port in $1-$(($1 + 99))"
    done
    echo "$p"
}

# start_zk NAME PORT: starts a server with its own data dir under $WORK/NAME.
start_zk() {
    local name=$1 port=$2 dir="$WORK/$1" cp="$JAR"
    mkdir -p "$dir/data"
    cat >"$dir/zoo.cfg" <<CFG
tickTime=2000
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
extendedTypesEnabled=true
CFG
    [ -d /etc/zookeeper/conf ] && cp="/etc/zookeeper/conf:$JAR"
    java -Xmx256m -Dzookeeper.extendedTypesEnabled=true -Dzookeeper.admin.enableServer=false \
        -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" \
        </dev/null >"$dir/server.log" 2>&1 &
    PIDS+=("$!")
    local pid=$! i
    for i in $(seq 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$dir/server.log" >&2
            die "$name ZooKeeper exited during start-up (log above)"
        fi
        # imok, and from this server (its own dataDir), not from another one on the port.
        if [ "$(four_letter "$port" ruok)" = imok ] &&
            four_letter "$port" conf | grep -qF "dataDir=$dir/data"; then
            echo "$name ZooKeeper is up on 127.0.0.1:$port (pid $pid, data in $dir)"
            return 0
        fi
        sleep 0.2
    done
    tail -n 30 "$dir/server.log" >&2
    die "$name ZooKeeper did not answer imok within 60 s (log above)"
}

section "2. Start two standalone ZooKeeper servers"
SRC_PORT=$(free_port 21810)
DST_PORT=$(free_port $((SRC_PORT + 1)))
start_zk source "$SRC_PORT"
start_zk destination "$DST_PORT"
SRC=127.0.0.1:$SRC_PORT
DST=127.0.0.1:$DST_PORT

# zkcli SERVER FILE: runs the zkCli commands in FILE in one JVM, prints what it did.
# zkCli.sh reads commands from stdin when stdin is not a terminal. UTF-8 is forced so the
# unicode node name survives whatever the machine's locale is.
zkcli() {
    LC_ALL=C.UTF-8 CLIENT_JVMFLAGS="-Dfile.encoding=UTF-8 -Dsun.stdout.encoding=UTF-8 -Dsun.stdin.encoding=UTF-8" \
        "$ZKCLI" -server "$1" <"$2" >"$2.out" 2>&1 || true
    grep -E '^(Created|Node does not exist|Node already exists|Authentication|Insufficient|KeeperErrorCode|Exception)' "$2.out" || true
}

# check_zkcli FILE: every create/set/delete in FILE must have succeeded.
check_zkcli() {
    local want got
    want=$(grep -cE '^create ' "$1" || true)
    got=$(grep -cE '^Created ' "$1.out" || true)
    if [ "$want" != "$got" ] || grep -qE 'Exception|KeeperErrorCode|Node does not exist|Insufficient' "$1.out"; then
        echo "--- zkCli output ($1.out) ---" >&2
        cat "$1.out" >&2
        die "seeding with zkCli failed: $got of $want creates succeeded"
    fi
}

section "3. Seed sample data on the SOURCE ($SRC) under /demo"
# admin:secret -> admin:<base64(sha1)>, as ZooKeeper computes it.
DIGEST=$(java -cp "$JAR" org.apache.zookeeper.server.auth.DigestAuthenticationProvider "$AUTH" 2>/dev/null |
    sed -n 's/^.*->//p' | tail -n 1)
[ -n "$DIGEST" ] || die "could not compute the digest of $AUTH"
echo "digest id for $AUTH: $DIGEST"
BINARY=$(printf 'BIN\001\002\003\177\302\251end') # control bytes and a 2-byte UTF-8 char
cat >"$WORK/seed.zk" <<SEED
create /demo
create /demo/config
create /demo/config/db.url jdbc:postgresql://db.internal:5432/orders
create /demo/config/log.level INFO
create /demo/config/max.connections 200
create /demo/config/feature.checkout-v2 enabled
create /demo/brokers
create /demo/brokers/ids
create /demo/brokers/ids/1 {"host":"kafka-1.internal","port":9092}
create /demo/brokers/ids/2 {"host":"kafka-2.internal","port":9092}
create /demo/brokers/ids/3 {"host":"kafka-3.internal","port":9092}
create /demo/brokers/topics
create /demo/brokers/topics/orders {"partitions":{"0":[1,2],"1":[2,3]}}
create /demo/blob $BINARY
create /demo/ünïcode-名前 "unicode node name"
create /demo/queue
create -s /demo/queue/job- payload-a
create -s /demo/queue/job- payload-b
create -s /demo/queue/job- payload-c
create /demo/readonly "world-readable, nobody may add children"
create /demo/readonly/frozen "created before the ACL was locked"
setAcl /demo/readonly world:anyone:r
addauth digest $AUTH
create /demo/secret top-secret digest:$DIGEST:cdrwa
ls -R /demo
getAcl /demo/secret
SEED
seed=$(<"$WORK/seed.zk")
printf '%s\n' "${seed//"$BINARY"/<bytes 42 49 4e 01 02 03 7f c2 a9 65 6e 64>}" | sed 's/^/  zk> /'
echo "(one zkCli.sh session, commands on stdin)"
zkcli "$SRC" "$WORK/seed.zk"
check_zkcli "$WORK/seed.zk"
echo "source tree (ls -R /demo):"
grep -E '^/demo' "$WORK/seed.zk.out" | sed 's/^/  /'

COMMON=(--source "$SRC" --destination "$DST" --root-path /demo --source-auth "$AUTH" --destination-auth "$AUTH")

section "4a. First copy: sync --verify (destination /demo does not exist yet)"
run "$BIN" sync "${COMMON[@]}" --verify || die "the first sync did not verify"

section "4b. Change the source, then verify: expect DIVERGED (exit code 1) with exact paths"
cat >"$WORK/change1.zk" <<CHG
set /demo/config/log.level DEBUG
delete /demo/brokers/ids/3
create /demo/brokers/ids/4 {"host":"kafka-4.internal","port":9092}
create -s /demo/queue/job- payload-d
CHG
sed 's/^/  zk> /' "$WORK/change1.zk"
zkcli "$SRC" "$WORK/change1.zk"
check_zkcli "$WORK/change1.zk"
rc=0
run "$BIN" verify "${COMMON[@]}" || rc=$?
[ "$rc" -eq 1 ] || die "verify should have exited 1 (DIVERGED), got $rc"

section "4c. Sync again: only the changed nodes are written, and it verifies"
run "$BIN" sync "${COMMON[@]}" --verify || die "the second sync did not verify"

section "4d. Dry run: change one key, see what a sync would do, write nothing"
cat >"$WORK/change2.zk" <<CHG
set /demo/config/max.connections 500
CHG
sed 's/^/  zk> /' "$WORK/change2.zk"
zkcli "$SRC" "$WORK/change2.zk"
check_zkcli "$WORK/change2.zk"
run "$BIN" sync "${COMMON[@]}" --dry-run || die "the dry run failed"
echo
echo "Now apply it for real (credentials from the environment this time):"
run env RESILIENCY_SOURCE_AUTH="$AUTH" RESILIENCY_DESTINATION_AUTH="$AUTH" \
    "$BIN" sync --source "$SRC" --destination "$DST" --root-path /demo --progress 0 \
    || die "the third sync failed"

section "4e. The deletion guard: a deleteall at the source does not reach the copy"
cat >"$WORK/change3.zk" <<CHG
deleteall /demo/brokers
CHG
sed 's/^/  zk> /' "$WORK/change3.zk"
zkcli "$SRC" "$WORK/change3.zk"
check_zkcli "$WORK/change3.zk"
echo "(the demo tree is small, so the guard's limits are lowered from 100 nodes and 10% to 3 nodes)"
rc=0
run "$BIN" sync "${COMMON[@]}" --progress 0 --max-deletes 3 || rc=$?
[ "$rc" -eq 3 ] || die "the deletion guard should have held the deletes (exit 3), got $rc"
echo
echo "The copy still has /demo/brokers: recover the source from it (a copy the other way):"
run "$BIN" sync --source "$DST" --destination "$SRC" --root-path /demo/brokers \
    --source-auth "$AUTH" --destination-auth "$AUTH" --progress 0 --verify \
    || die "recovering /demo/brokers from the copy failed"
run "$BIN" verify "${COMMON[@]}" || die "source and copy differ after the recovery"

section "5. The same copy from Kubernetes manifests, without Kubernetes: run -f"
# The seed's Secrets, Databases and Synchronization, pointed at the two local servers; the
# second Synchronization remaps the root to /demo-dr. Same resolver and reconcile logic as the
# operator; each status change is printed.
USER_NAME=${AUTH%%:*}
PASSWORD=${AUTH#*:}
mkdir -p "$WORK/manifests"
cat >"$WORK/manifests/demo.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: zookeeper-source
stringData:
  user: $USER_NAME
  password: $PASSWORD
---
apiVersion: assets.astronetes.io/v1alpha1
kind: Database
metadata:
  name: zookeeper-source
spec:
  zookeeper:
    client:
      servers:
        - $SRC
---
apiVersion: v1
kind: Secret
metadata:
  name: zookeeper-destination
stringData:
  user: $USER_NAME
  password: $PASSWORD
---
apiVersion: assets.astronetes.io/v1alpha1
kind: Database
metadata:
  name: zookeeper-destination
spec:
  zookeeper:
    client:
      servers:
        - $DST
---
apiVersion: automation.astronetes.io/v1alpha1
kind: Synchronization
metadata:
  generateName: synchronize-zookeeper-
spec:
  plugin: zookeeper-to-zookeeper-nodes
  config:
    sourceName: zookeeper-source
    destinationName: zookeeper-destination
    rootPath: /demo
---
apiVersion: automation.astronetes.io/v1alpha1
kind: Synchronization
metadata:
  name: demo-dr
spec:
  plugin: zookeeper-to-zookeeper-nodes
  config:
    sourceName: zookeeper-source
    destinationName: zookeeper-destination
    rootPath: /demo
    destinationRootPath: /demo-dr
YAML
run "$BIN" run -f "$WORK/manifests" || die "the manifests did not run to equal trees"

section "6. Live sync: stream every change, verify while it runs"
# A full sync, then each source change streamed through a persistent recursive watch. Every 2 s
# the lag-aware verifier compares the trees; --repair re-syncs what it confirms divergent.
show "$BIN" sync "${COMMON[@]}" --continuous --verify-interval 2 --repair --progress 1 "&"
"$BIN" sync "${COMMON[@]}" --continuous --verify-interval 2 --repair --progress 1 \
    2>"$WORK/live.log" &
LIVE_PID=$!
for _ in $(seq 1 100); do
    grep -q "continuous: Streaming" "$WORK/live.log" && break
    kill -0 "$LIVE_PID" 2>/dev/null || { cat "$WORK/live.log" >&2; die "the live sync stopped"; }
    sleep 0.2
done
grep -q "continuous: Streaming" "$WORK/live.log" || die "the live sync never started streaming"
cat >"$WORK/change3.zk" <<CHG
set /demo/config/log.level WARN
create /demo/config/new.flag on
create -s /demo/queue/job- payload-e
delete /demo/brokers/topics/orders
create /demo/brokers/topics/payments {"partitions":{"0":[1,4]}}
CHG
sed 's/^/  zk> /' "$WORK/change3.zk"
zkcli "$SRC" "$WORK/change3.zk"
check_zkcli "$WORK/change3.zk"
echo "Someone writes to the DESTINATION behind the stream's back:"
cat >"$WORK/tamper.zk" <<CHG
create /demo/config/rogue.key "not on the source"
CHG
sed 's/^/  zk> /' "$WORK/tamper.zk"
zkcli "$DST" "$WORK/tamper.zk"
check_zkcli "$WORK/tamper.zk"
# Wait for the verifier to confirm the rogue node, repair it and find the trees in sync.
for _ in $(seq 1 150); do
    grep -q "verify: repaired" "$WORK/live.log" && grep -A100 "verify: repaired" "$WORK/live.log" | grep -q "verify: IN SYNC" && break
    sleep 0.2
done
kill -TERM "$LIVE_PID"
wait "$LIVE_PID" || die "the live sync did not stop cleanly"
sed 's/^/  /' "$WORK/live.log"
grep -q "verify: repaired" "$WORK/live.log" || die "the verifier never repaired the rogue node"

section "7. Final check: verify --json"
show "$BIN" verify "${COMMON[@]}" --json "| python3 -m json.tool"
if command -v python3 >/dev/null 2>&1; then
    set +e
    "$BIN" verify "${COMMON[@]}" --json | python3 -m json.tool
    status=("${PIPESTATUS[@]}")
    set -e
    final=${status[0]}
    [ "${status[1]}" -eq 0 ] || echo "(python3 could not pretty-print the JSON)" >&2
else
    final=0
    "$BIN" verify "${COMMON[@]}" --json || final=$?
fi
echo "(exit code $final)"

echo
if [ "$final" -eq 0 ]; then
    echo "DEMO OK: destination equals source"
else
    echo "DEMO FAILED: final verify exited $final" >&2
    exit 1
fi
