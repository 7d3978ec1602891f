# Shared by the testnet/ commands. Layout under $SHOAL_TESTNET_DIR (default
# /var/tmp/shoal-testnet, outside the repository):
#   size                number of peers
#   peerI/              data dir of peer I (identity, store, api.url, p2p.addrs)
#   peerI/log           its log
#   peerI/pid           its process id while it runs
#   ports_base          peer I listens on ports_base + 2I (API) and ports_base + 2I + 1 (libp2p)
# Ports are fixed per peer and below Linux's ephemeral range (32768+), so a restarted peer
# gets its ports back and no outgoing connection can take them meanwhile.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTNET_DIR=${SHOAL_TESTNET_DIR:-/var/tmp/shoal-testnet}
if [[ -n ${SHOAL_BIN_DIR:-} ]]; then
  BIN_DIR=$SHOAL_BIN_DIR
  export CARGO_TARGET_DIR=$(dirname "$BIN_DIR")
else
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/shoal-target}
  BIN_DIR=$CARGO_TARGET_DIR/release
fi

die() { echo "testnet: $*" >&2; exit 1; }

# Prints the Debian packages that building rocksdb needs and the file tree under $1
# (default /) lacks, one a line. bindgen dlopens exactly what clang-sys globs for: an
# unversioned `libclang.so` or `libclang-N.so`; `libclang-cpp.so.N`, which a fresh image
# already ships, is another library and does not count.
missing_system_packages() {
  local root=${1:-} lib found=0
  [[ -x $root/usr/bin/c++ ]] || echo g++ # RocksDB is C++
  [[ -x $root/usr/bin/clang ]] || echo clang
  for lib in "$root"/usr/lib/llvm-*/lib/libclang.so "$root"/usr/lib/llvm-*/lib/libclang-[0-9]*.so \
    "$root"/usr/lib/*-linux-gnu/libclang.so "$root"/usr/lib/*-linux-gnu/libclang-[0-9]*.so; do
    [[ -e $lib ]] && found=1
  done
  (( found )) || echo libclang-dev
}

# Installs what missing_system_packages names, then checks the install did its job.
ensure_system_packages() {
  local missing sudo=""
  missing=$(missing_system_packages)
  [[ -z $missing ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "building needs" $missing "and installing them needs root or sudo"
    sudo=sudo
  fi
  echo "testnet: installing" $missing >&2
  $sudo apt-get update -qq
  # shellcheck disable=SC2086 # one package a word
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
  missing=$(missing_system_packages)
  [[ -z $missing ]] || die "still missing after apt-get install:" $missing
}

# Builds the binaries, unless the caller (a test) already points at built ones.
build() {
  [[ -n ${SHOAL_BIN_DIR:-} ]] && return 0
  ensure_system_packages
  # The same targets as scripts/test, so neither build undoes the other's.
  (cd "$REPO" && cargo build --release --locked --workspace --bins --examples) >&2
}

# Port bases in use by testnets on this machine, one directory each, holding the path of
# the testnet that claimed it, so testnets started at once (tests run in parallel) never
# share ports. A claim whose testnet folder is gone is stale and taken over.
PORT_CLAIMS=${TMPDIR:-/tmp}/shoal-testnet-ports

claim_ports_base() {
  mkdir -p "$PORT_CLAIMS"
  local base claim
  for _ in $(seq 1 500); do
    base=$((20000 + RANDOM % 60 * 200))
    claim="$PORT_CLAIMS/$base"
    if [[ -f $claim/testnet && ! -d $(cat "$claim/testnet") ]]; then
      rm -rf "$claim"
    fi
    if mkdir "$claim" 2>/dev/null; then
      echo "$TESTNET_DIR" >"$claim/testnet"
      echo "$base"
      return 0
    fi
  done
  die "no free port range for a testnet (claims in $PORT_CLAIMS)"
}

release_ports_base() {
  local base
  base=$(cat "$TESTNET_DIR/ports_base" 2>/dev/null) || return 0
  if [[ $(cat "$PORT_CLAIMS/$base/testnet" 2>/dev/null) == "$TESTNET_DIR" ]]; then
    rm -rf "${PORT_CLAIMS:?}/$base"
  fi
}

peer_dir() { echo "$TESTNET_DIR/peer$1"; }
size() { cat "$TESTNET_DIR/size" 2>/dev/null || die "no testnet in $TESTNET_DIR; start one with testnet/up"; }

check_index() {
  [[ $1 =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= $(size) )) || die "no peer $1 (peers are 1..$(size))"
}

# Running and not a zombie waiting to be reaped.
is_running() {
  local pid_file pid
  pid_file="$(peer_dir "$1")/pid"
  [[ -f $pid_file ]] || return 1
  pid=$(cat "$pid_file")
  kill -0 "$pid" 2>/dev/null && [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

api_url() { cat "$(peer_dir "$1")/api.url"; }

# Every known peer address but peer $1's, comma-separated, for --bootstrap.
bootstrap_for() {
  local i addrs=()
  for ((i = 1; i <= $(size); i++)); do
    [[ $i -eq $1 ]] && continue
    [[ -f "$(peer_dir "$i")/p2p.addrs" ]] && addrs+=("$(head -n 1 "$(peer_dir "$i")/p2p.addrs")")
  done
  local IFS=,
  echo "${addrs[*]}"
}

# Starts peer $1 in the background. Failure detection, anti-entropy and collection run on
# short timers here (override with SHOAL_FAILURE_GRACE_MS, SHOAL_ANTI_ENTROPY_INTERVAL_MS,
# SHOAL_GC_GRACE_MS, SHOAL_GC_INTERVAL_MS), and fault injection is on, for churn, repair
# and deletion experiments.
start_peer() {
  local i=$1 dir base
  dir=$(peer_dir "$i")
  base=$(cat "$TESTNET_DIR/ports_base")
  mkdir -p "$dir"
  is_running "$i" && die "peer $i is already running"
  rm -f "$dir/api.url" "$dir/p2p.addrs"
  SHOAL_LOG=${SHOAL_LOG:-info} \
    SHOAL_FAILURE_GRACE_MS=${SHOAL_FAILURE_GRACE_MS:-2000} \
    SHOAL_ANTI_ENTROPY_INTERVAL_MS=${SHOAL_ANTI_ENTROPY_INTERVAL_MS:-1000} \
    SHOAL_GC_GRACE_MS=${SHOAL_GC_GRACE_MS:-10000} SHOAL_GC_INTERVAL_MS=${SHOAL_GC_INTERVAL_MS:-1000} \
    setsid "$BIN_DIR/shoald" --data-dir "$dir" --fault-injection \
    --listen "/ip4/127.0.0.1/tcp/$((base + 2 * i + 1))" --api-addr "127.0.0.1:$((base + 2 * i))" \
    --bootstrap "$(bootstrap_for "$i")" >>"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
}

# Polls until peer $1 has published its addresses, or fails with its log.
wait_started() {
  local i=$1 dir deadline=$((SECONDS + 30))
  dir=$(peer_dir "$i")
  until [[ -f $dir/api.url && -f $dir/p2p.addrs ]]; do
    if ! is_running "$i"; then
      tail -n 5 "$dir/log" >&2
      die "peer $i exited during start-up (log: $dir/log)"
    fi
    (( SECONDS < deadline )) || die "peer $i did not start within 30 s (log: $dir/log)"
    sleep 0.1
  done
}

# Starts peers $1..$2 (peer 1 alone first when it is among them) and waits for the network.
start_peers() {
  local i first=$1
  if (( first == 1 )); then
    start_peer 1
    wait_started 1
    first=2
  fi
  for ((i = first; i <= $2; i++)); do start_peer "$i"; done
  for ((i = first; i <= $2; i++)); do wait_started "$i"; done
  wait_network 60
}

# A field of `shoal status --json` for peer $1.
status_field() {
  "$BIN_DIR/shoal" --api "$(api_url "$1")" status --json 2>/dev/null |
    grep -o "\"$2\":[0-9]*" | cut -d: -f2
}

# Polls until every running peer has every other running peer in its routing table.
wait_network() {
  local deadline=$((SECONDS + ${1:-60})) i running=() settled
  for ((i = 1; i <= $(size); i++)); do is_running "$i" && running+=("$i"); done
  while true; do
    settled=1
    for i in "${running[@]}"; do
      local seen
      seen=$(status_field "$i" routing_table_peers || true)
      [[ -n $seen && $seen -ge $((${#running[@]} - 1)) ]] || { settled=0; break; }
    done
    (( settled )) && return 0
    (( SECONDS < deadline )) || die "peers did not form one network within ${1:-60} s"
    sleep 0.2
  done
}
