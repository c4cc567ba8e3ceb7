#!/usr/bin/env bash
# ringchat against NATS JetStream and etcd, same machine, same run, same shapes (issue 13):
#   - 30 and 200 clients, each keeping one write outstanding: writes acknowledged per second and
#     the p99 write-to-acknowledgement latency (ringchat: a chat message to `stored`);
#   - kill -9 of the leader until the first write is acknowledged through a survivor (a probe
#     every 5 ms; ringchat: the failover bench's "first probe stored").
# 3 nodes each on 127.0.0.1: ringchat without and with --state (the throughput bench), NATS
# JetStream with a 3-replica file-store stream, etcd 3.4 with its default fsync.
#
#   bash net/benches/peers.sh            (from the repository; SECS=5 PROCS=2 TRIALS=3)
#
# A peer whose Debian package is not installed (nats-server; etcd-server) is skipped with a note,
# and so is NATS when the Python client nats-py is missing (pip install nats-py). The peers'
# load client is net/benches/peers_load.py (asyncio, PROCS processes); ringchat's is its Rust
# bench client (2 threads). Prints a table with the ratios ringchat / peer.
set -uo pipefail
cd "$(dirname "$0")/../.."

SECS=${SECS:-5}
PROCS=${PROCS:-2}
TRIALS=${TRIALS:-3}
LOAD=net/benches/peers_load.py
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringchat-peers.XXXXXX")
declare -A PID=()
declare -A R=()   # results: SYSTEM.KEY -> value

cleanup() {
  local k
  for k in "${!PID[@]}"; do kill -9 "${PID[$k]}" 2>/dev/null; done
  for k in "${!PID[@]}"; do wait "${PID[$k]}" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { echo "peers: $*"; }
jget() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# retry SECS CMD...: until CMD prints something (its output is echoed).
retry() {
  local deadline=$(( $(now_ms) + $1 * 1000 )) out
  shift
  while [ "$(now_ms)" -lt "$deadline" ]; do
    out=$("$@" 2>/dev/null) && [ -n "$out" ] && { echo "$out"; return 0; }
    sleep 0.1
  done
  return 1
}

# until_ok SECS CMD...: until CMD succeeds.
until_ok() {
  local deadline=$(( $(now_ms) + $1 * 1000 ))
  shift
  until "$@"; do [ "$(now_ms)" -lt "$deadline" ] || return 1; sleep 0.05; done
}

# ---- ringchat --------------------------------------------------------------------------------

cargo bench -q -p ringchat-net --bench throughput --bench failover --no-run >/dev/null 2>&1 || { echo "peers: cannot build the benches"; exit 1; }
for n in 30 200; do
  out=$(cargo bench -q -p ringchat-net --bench throughput -- --clients "$n" --secs "$SECS" --state --rounds 1 2>/dev/null)
  echo "$out" | grep '^throughput'
  plain=$(grep '^throughput' <<<"$out" | grep -v 'with --state' | head -n 1)
  state=$(grep '^throughput' <<<"$out" | grep 'servers with --state' | head -n 1)
  R[ringchat.$n]=$(sed -n 's/.*: \([0-9]*\) msgs\/s stored.*/\1/p' <<<"$plain")
  R[ringchat.p99.$n]=$(sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' <<<"$plain")
  R[ringchat-state.$n]=$(sed -n 's/.*: \([0-9]*\) msgs\/s stored.*/\1/p' <<<"$state")
  R[ringchat-state.p99.$n]=$(sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' <<<"$state")
done
fo=$(cargo bench -q -p ringchat-net --bench failover -- --trials "$TRIALS" 2>/dev/null | grep '^{')
R[ringchat-state.failover]=$(jget "$fo" first_stored_p50_ms)
R[ringchat-state.agree]=$(jget "$fo" p50_ms)
echo "ringchat failover (with --state, $TRIALS trials): first stored p50 ${R[ringchat-state.failover]} ms, agreement p50 ${R[ringchat-state.agree]} ms"

# ---- NATS JetStream --------------------------------------------------------------------------

nats_start() { # nats_start I
  local i=$1 routes="" k
  for k in 1 2 3; do [ "$k" = "$i" ] || routes+="${routes:+,}nats://127.0.0.1:$((16220 + k))"; done
  nats-server -a 127.0.0.1 -p $((14220 + i)) -js -sd "$TMP/nats$i" --server_name "n$i" --cluster_name peers \
    --cluster "nats://127.0.0.1:$((16220 + i))" --routes "$routes" >"$TMP/nats$i.log" 2>&1 &
  PID[n$i]=$!
}
if ! command -v nats-server >/dev/null 2>&1; then
  note "SKIP NATS JetStream: nats-server is not installed (apt-get install nats-server)"
elif ! python3 -c 'import nats' 2>/dev/null; then
  note "SKIP NATS JetStream: the Python client is missing (pip install nats-py)"
else
  URLS="nats://127.0.0.1:14221,nats://127.0.0.1:14222,nats://127.0.0.1:14223"
  for i in 1 2 3; do nats_start "$i"; done
  if leader=$(retry 30 python3 "$LOAD" nats-leader "$URLS"); then
    echo "NATS $(nats-server --version): 3 servers, stream $leader leads (3 replicas, file store)"
    for n in 30 200; do
      out=$(python3 "$LOAD" nats-load "$URLS" "$n" "$SECS" "$PROCS")
      echo "nats load: $out"
      R[nats.$n]=$(jget "$out" msgs_s) R[nats.p99.$n]=$(jget "$out" p99_ms)
    done
    leader=$(python3 "$LOAD" nats-leader "$URLS")
    li=${leader#n}
    surv=""; for k in 1 2 3; do [ "$k" = "$li" ] || surv+="${surv:+,}nats://127.0.0.1:$((14220 + k))"; done
    mkfifo "$TMP/go"
    python3 "$LOAD" nats-probe "$surv" <"$TMP/go" >"$TMP/nprobe.out" 2>"$TMP/nprobe.err" &
    ppid=$!
    exec {gofd}>"$TMP/go"
    until_ok 10 grep -q ready "$TMP/nprobe.out"   # connected; it times from "go"
    kill -9 "${PID[n$li]}"; echo go >&"$gofd"; exec {gofd}>&-
    wait "$ppid"
    out=$(tail -n 1 "$TMP/nprobe.out")
    echo "nats failover (kill -9 of stream leader $leader): $out"
    R[nats.failover]=$(jget "$out" first_ack_ms)
    rm -f "$TMP/go"
  else
    note "NATS cluster did not come up within 30 s (logs: $(tail -n 2 "$TMP/nats1.log" | tr '\n' ' '))"
  fi
  for i in 1 2 3; do kill -9 "${PID[n$i]}" 2>/dev/null; wait "${PID[n$i]}" 2>/dev/null; unset "PID[n$i]"; done
fi

# ---- etcd --------------------------------------------------------------------------------------

if ! command -v etcd >/dev/null 2>&1; then
  note "SKIP etcd: etcd-server is not installed (apt-get install etcd-server)"
else
  cluster="e1=http://127.0.0.1:12381,e2=http://127.0.0.1:12382,e3=http://127.0.0.1:12383"
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$TMP/etcd$i" --listen-client-urls "http://127.0.0.1:$((12370 + i))" \
      --advertise-client-urls "http://127.0.0.1:$((12370 + i))" --listen-peer-urls "http://127.0.0.1:$((12380 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((12380 + i))" --initial-cluster "$cluster" \
      --initial-cluster-state new --initial-cluster-token peers-bench >"$TMP/etcd$i.log" 2>&1 &
    PID[e$i]=$!
  done
  URLS="http://127.0.0.1:12371,http://127.0.0.1:12372,http://127.0.0.1:12373"
  if leader=$(retry 30 python3 "$LOAD" etcd-leader "$URLS"); then
    echo "etcd $(etcd --version 2>/dev/null | head -n 1 | awk '{print $3}'): 3 members (fsync on), leader $leader"
    for n in 30 200; do
      out=$(python3 "$LOAD" etcd-load "$URLS" "$n" "$SECS" "$PROCS")
      echo "etcd load: $out"
      R[etcd.$n]=$(jget "$out" msgs_s) R[etcd.p99.$n]=$(jget "$out" p99_ms)
    done
    leader=$(python3 "$LOAD" etcd-leader "$URLS")
    li=$(( ${leader##*:} - 12370 ))
    surv=""; for k in 1 2 3; do [ "$k" = "$li" ] || surv+="${surv:+,}http://127.0.0.1:$((12370 + k))"; done
    mkfifo "$TMP/go"
    python3 "$LOAD" etcd-probe "$surv" <"$TMP/go" >"$TMP/eprobe.out" 2>"$TMP/eprobe.err" &
    ppid=$!
    exec {gofd}>"$TMP/go"
    until_ok 10 grep -q ready "$TMP/eprobe.out"
    kill -9 "${PID[e$li]}"; echo go >&"$gofd"; exec {gofd}>&-
    wait "$ppid"
    out=$(tail -n 1 "$TMP/eprobe.out")
    echo "etcd failover (kill -9 of leader $leader): $out"
    R[etcd.failover]=$(jget "$out" first_ack_ms)
  else
    note "etcd cluster did not come up within 30 s (logs: $(tail -n 2 "$TMP/etcd1.log" | tr '\n' ' '))"
  fi
fi

# ---- table ---------------------------------------------------------------------------------------

ratio() { [ -n "${1:-}" ] && [ -n "${2:-}" ] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }' || echo "-"; }
echo
echo "| | 30 clients msgs/s (p99 ms) | 200 clients msgs/s (p99 ms) | kill -9 of the leader to the first acknowledged write (ms) |"
echo "|---|---|---|---|"
for s in ringchat ringchat-state nats etcd; do
  fo=${R[$s.failover]:-}
  [ "$s" = ringchat ] && fo="(not measured: no --state)"
  echo "| $s | ${R[$s.30]:--} (${R[$s.p99.30]:--}) | ${R[$s.200]:--} (${R[$s.p99.200]:--}) | ${fo:--} |"
done
echo
for p in nats etcd; do
  echo "ratio ringchat-with-state / $p: 30 clients $(ratio "${R[ringchat-state.30]:-}" "${R[$p.30]:-}"), 200 clients $(ratio "${R[ringchat-state.200]:-}" "${R[$p.200]:-}")"
done
