# Shared by the testnet/ commands. Layout under $SHOAL_TESTNET_DIR (default
# /var/tmp/shoal-testnet, outside the repository):
#   size                number of peers
#   peerI/              peer I: its data dir (identity, store, api.url, p2p.addrs)
#                       or, with --hosts, its disk/ holding the data dir
#   peerI/log           its log
#   peerI/pid           its process id while it runs
#   peerI/clock_skew_ms its clock offset, if testnet/skew gave it one
#   ports_base          peer I listens on ports_base + 2I (API) and ports_base + 2I + 1 (libp2p)
#   hosts               with --hosts only: the testnet's index K (see "Hosts" below)
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
  local missing sudo="" probe=${1:-missing_system_packages}
  missing=$($probe)
  [[ -z $missing ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "building needs" $missing "and installing them needs root or sudo"
    sudo=sudo
  fi
  echo "testnet: installing" $missing >&2
  $sudo apt-get update -qq
  # Packages installed to build or test (nginx) never start a service: a policy-rc.d
  # that refuses every start stands while apt-get runs, unless the machine has its own.
  local policy=/usr/sbin/policy-rc.d own_policy=1
  if [[ ! -e $policy ]]; then
    own_policy=0
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
  fi
  # shellcheck disable=SC2086 # one package a word
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null || {
    (( own_policy )) || $sudo rm -f "$policy"
    die "apt-get install" $missing "failed"
  }
  (( own_policy )) || $sudo rm -f "$policy"
  missing=$($probe)
  [[ -z $missing ]] || die "still missing after apt-get install:" $missing
}

# The same for a testnet of hosts: namespaces, veth and bridges come from iproute2, faults
# from iptables.
missing_host_packages() {
  local root=${1:-}
  [[ -x $root/usr/sbin/ip || -x $root/usr/bin/ip || -x $root/bin/ip ]] || echo iproute2
  [[ -x $root/usr/sbin/iptables ]] || echo iptables
}

# The same for the test suite's TLS example (bin/shoald/tests/tls_proxy.rs): nginx in
# front of the API, a test certificate from openssl, curl as the HTTPS client.
missing_test_packages() {
  local root=${1:-}
  [[ -x $root/usr/sbin/nginx ]] || echo nginx
  [[ -x $root/usr/bin/openssl ]] || echo openssl
  [[ -x $root/usr/bin/curl ]] || echo curl
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
data_dir() {
  if hosts_mode; then echo "$TESTNET_DIR/peer$1/disk"; else echo "$TESTNET_DIR/peer$1"; fi
}
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

api_url() { cat "$(data_dir "$1")/api.url"; }

# Every known peer address but peer $1's, comma-separated, for --bootstrap.
bootstrap_for() {
  local i addrs=()
  for ((i = 1; i <= $(size); i++)); do
    [[ $i -eq $1 ]] && continue
    [[ -f "$(data_dir "$i")/p2p.addrs" ]] && addrs+=("$(head -n 1 "$(data_dir "$i")/p2p.addrs")")
  done
  local IFS=,
  echo "${addrs[*]}"
}

# The key of a private testnet (testnet/up --private); an open one has none.
network_key() { echo "$TESTNET_DIR/swarm.key"; }

# A testnet of hosts serves its APIs beyond loopback, so they need a token: the daemons
# read api-tokens, the CLI (SHOAL_TOKEN) and shoal-chaos the bare token in api-token. A
# loopback testnet has neither.
api_token_file() { echo "$TESTNET_DIR/api-token"; }
make_api_token() {
  local token
  token=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  (umask 077 && echo "$token" >"$(api_token_file)" && echo "read-write $token" >"$TESTNET_DIR/api-tokens")
  export SHOAL_TOKEN=$token
}

# Starts peer $1 in the background: on its ports of 127.0.0.1, or on a testnet of hosts in
# its namespace, on 0.0.0.0 and announcing its host's address. Failure detection,
# anti-entropy and collection run on short timers here (override with
# SHOAL_FAILURE_GRACE_MS, SHOAL_ANTI_ENTROPY_INTERVAL_MS, SHOAL_GC_GRACE_MS,
# SHOAL_GC_INTERVAL_MS), and fault injection is on, for churn, repair, deletion and clock
# experiments (testnet/skew's offset is kept in peerI/clock_skew_ms).
start_peer() {
  local i=$1 dir data base where=() addrs=() key=()
  dir=$(peer_dir "$i")
  data=$(data_dir "$i")
  mkdir -p "$dir"
  is_running "$i" && die "peer $i is already running"
  if hosts_mode; then
    host_up "$i"
    where=(ip netns exec "$(host_ns "$i")")
    addrs=(--listen /ip4/0.0.0.0/tcp/4001 --external-addr "/ip4/$(host_addr "$i")/tcp/4001"
      --api-addr "$(host_addr "$i"):7000" --api-tokens "$TESTNET_DIR/api-tokens")
  else
    base=$(cat "$TESTNET_DIR/ports_base")
    addrs=(--listen "/ip4/127.0.0.1/tcp/$((base + 2 * i + 1))" --api-addr "127.0.0.1:$((base + 2 * i))")
  fi
  [[ -f $(network_key) ]] && key=(--network-key "$(network_key)")
  rm -f "$data/api.url" "$data/p2p.addrs"
  SHOAL_LOG=${SHOAL_LOG:-info} \
    SHOAL_FAILURE_GRACE_MS=${SHOAL_FAILURE_GRACE_MS:-2000} \
    SHOAL_ANTI_ENTROPY_INTERVAL_MS=${SHOAL_ANTI_ENTROPY_INTERVAL_MS:-1000} \
    SHOAL_GC_GRACE_MS=${SHOAL_GC_GRACE_MS:-10000} SHOAL_GC_INTERVAL_MS=${SHOAL_GC_INTERVAL_MS:-1000} \
    SHOAL_CLOCK_SKEW_MS=$(cat "$dir/clock_skew_ms" 2>/dev/null || echo 0) \
    "${where[@]}" setsid "$BIN_DIR/shoald" --data-dir "$data" --fault-injection "${addrs[@]}" "${key[@]}" \
    --bootstrap "$(bootstrap_for "$i")" >>"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
}

# Polls until peer $1 has published its addresses, or fails with its log.
wait_started() {
  local i=$1 dir data deadline=$((SECONDS + 30))
  dir=$(peer_dir "$i")
  data=$(data_dir "$i")
  until [[ -f $data/api.url && -f $data/p2p.addrs ]]; do
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

# Hosts (testnet/up --hosts N): each peer runs in its own network namespace, as if on its
# own machine. Namespace shoal<K>-<I> holds peer I at 10.77.<K>.<I> on eth0, a veth whose
# other end is on a bridge in namespace shoal<K>-sw. This machine reaches the bridge from
# 10.77.<K>.254 (veth shoal<K>), so the CLI, the tests and the workload talk to every API
# from outside, like clients beside each host; faults cut only traffic between peers. The
# namespaces have no route beyond their /24, so nothing leaves this machine. K is the
# index of the port claim, so testnets started at once never share names or addresses.
# Each data dir is a tmpfs of SHOAL_TESTNET_DISK_MIB (default 1024), for the disk faults.
hosts_mode() { [[ -f $TESTNET_DIR/hosts ]]; }
hosts_index() { cat "$TESTNET_DIR/hosts"; }
host_ns() { echo "shoal$(hosts_index)-$1"; }
host_addr() { echo "10.77.$(hosts_index).$1"; }
require_hosts() { hosts_mode || die "$1 needs a testnet of hosts (testnet/up --hosts N)"; }

# The bridge and this machine's leg to it, for testnet K.
hosts_up() {
  local k=$1 sw="shoal$1-sw"
  hosts_down "$k" # leftovers of a testnet whose teardown never ran
  if ip -4 route show to match "10.77.$k.1" | grep -qv '^default'; then
    die "10.77.$k.0/24 is already routed on this machine; cannot make testnet hosts there"
  fi
  ip netns add "$sw"
  ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
  ip link add "shoal$k" type veth peer name uplink netns "$sw"
  ip -n "$sw" link set uplink master br0 up
  ip addr add "10.77.$k.254/24" dev "shoal$k"
  ip link set "shoal$k" up
}

# Host $1 of the running testnet, made once: its namespace, its leg on the bridge, its disk.
host_up() {
  local i=$1 ns k disk
  ns=$(host_ns "$i")
  k=$(hosts_index)
  disk=$(data_dir "$i")
  if ! ip netns list | grep -qx "$ns\( .*\)\?"; then
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "shoal$k-sw" link add "p$i" type veth peer name eth0 netns "$ns"
    ip -n "shoal$k-sw" link set "p$i" master br0 up
    ip -n "$ns" addr add "$(host_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
  fi
  if ! mountpoint -q "$disk"; then
    mkdir -p "$disk"
    mount -t tmpfs -o "size=${SHOAL_TESTNET_DISK_MIB:-1024}m" "shoal$k-disk" "$disk"
  fi
}

# Removes every namespace, link and disk of testnet K; harmless when there is none.
hosts_down() {
  local k=$1 ns disk
  for ns in $(ip netns list | awk '{ print $1 }' | grep "^shoal$k-"); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$ns"
  done
  ip link del "shoal$k" 2>/dev/null || true
  for disk in $(awk -v src="shoal$k-disk" '$1 == src { print $2 }' /proc/mounts); do
    umount -l "$disk"
  done
}

# Runs iptables in host $1's namespace.
host_iptables() {
  local ns
  ns=$(host_ns "$1")
  shift
  ip netns exec "$ns" iptables -w "$@"
}

# Packets from host $1 to host $2 are lost (dropped where they arrive, so the sender sees
# silence, not an error).
cut_link() {
  host_iptables "$2" -C INPUT -s "$(host_addr "$1")" -j DROP 2>/dev/null ||
    host_iptables "$2" -A INPUT -s "$(host_addr "$1")" -j DROP
}

# Packets from host $1 to host $2 are lost with probability $3 %, marked as a link fault
# of both hosts so that testnet/link can take them back.
lose_packets() {
  local probability
  probability=$(awk -v pct="$3" 'BEGIN { printf "%.4f", pct / 100 }')
  host_iptables "$2" -A INPUT -s "$(host_addr "$1")" -m statistic --mode random \
    --probability "$probability" -m comment --comment "shoal-link-$1-$2" -j DROP
}

# Removes every loss rule touching host $1, in every host.
clear_link_loss() {
  local j rule
  for ((j = 1; j <= $(size); j++)); do
    for rule in $(host_iptables "$j" -S INPUT | grep -E -- "shoal-link-($1-[0-9]+|[0-9]+-$1)\b" |
      sed 's/^-A /-D /; s/ /:/g'); do
      # shellcheck disable=SC2086 # the rule's own words
      host_iptables "$j" ${rule//:/ }
    done
  done
}

# Delays what host $1 sends to the other hosts by $2 ms, give or take $3: with the
# kernel's netem, or where the kernel lacks it, with shoal-netem holding the packets that
# iptables queues to it (in the host's namespace; its pid in peerI/netem.pid).
delay_link() {
  local ns dir
  ns=$(host_ns "$1")
  dir=$(peer_dir "$1")
  ip netns exec "$ns" tc qdisc replace dev eth0 root netem delay "$2ms" "$3ms" 2>/dev/null && return 0
  ip netns exec "$ns" setsid "$BIN_DIR/shoal-netem" --delay-ms "$2" --jitter-ms "$3" --seed "$1" \
    >>"$dir/netem.log" 2>&1 </dev/null &
  echo $! >"$dir/netem.pid"
  # Queued packets wait for it to bind the queue; --queue-bypass lets them through if it died.
  host_iptables "$1" -A OUTPUT -d "10.77.$(hosts_index).254" -j ACCEPT # clients are not delayed
  host_iptables "$1" -A OUTPUT -o eth0 -d "10.77.$(hosts_index).0/24" -j NFQUEUE --queue-num 0 --queue-bypass
}

clear_link_delay() {
  local dir
  dir=$(peer_dir "$1")
  ip netns exec "$(host_ns "$1")" tc qdisc del dev eth0 root 2>/dev/null || true
  host_iptables "$1" -F OUTPUT
  if [[ -f $dir/netem.pid ]]; then
    kill "$(cat "$dir/netem.pid")" 2>/dev/null || true
    rm -f "$dir/netem.pid"
  fi
}

# Every CLI call of these scripts sends the testnet's API token, if it has one.
if [[ -f $(api_token_file) ]]; then
  SHOAL_TOKEN=$(<"$(api_token_file)")
  export SHOAL_TOKEN
fi
