#!/usr/bin/env bash
# LAN test of real `ringchat server` processes on network namespaces joined by
# a Linux bridge: 5 server hosts and 3 client hosts in 10.77.0.0/24.
#
#   bash tests/lan.sh [path/to/ringchat]     (default target/release/ringchat; run as root)
#
# Checks, in order:
#   1. cold start: 5 servers with multicast discovery and no --join list agree on
#      one leader and one 5-member view;
#   2. 10% random loss (nftables) in every server namespace: agreement holds and
#      the leader does not change for a while;
#   3. kill -9 the leader: the 4 others agree on a new leader;
#   4. cut one host's link, wait until the others drop it from the view, restore
#      the link: it is back in the view;
#   5. clients: 3 JSON clients on the client hosts, given no server address,
#      find the cluster by multicast and attach to the server it assigns; they
#      exchange messages, and a message sent after a kill -9 of the leader is
#      stored and shown once.
# Prints timings. Exit 0 only if every check passes. Skips (exit 0) only when
# network namespaces cannot be created (not root). Installs nothing; it needs
# iproute2 and nftables. Everything it creates (namespaces, bridge, processes,
# temporary files) is removed on exit.
set -uo pipefail

BIN=${1:-target/release/ringchat}
P="rc$$"                    # prefix of every name this run creates (unique per run)
NET=10.77.0
SERVERS=(1 2 3 4 5)
CLIENTS=(101 102 103)
BR="${P}br"
TMP=""
declare -A PID=()
FAILED=0

log() { printf '[lan %6.1fs] %s\n' "$(( $(now_ms) - T_BEGIN ))e-3" "$*"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
T_BEGIN=$(now_ms)

# ---- skip / preconditions ---------------------------------------------------

if ! ip netns add "${P}probe" 2>/dev/null; then
  echo "SKIP: cannot create network namespaces (not root, or no 'ip'); LAN test not run"
  exit 0
fi
ip netns del "${P}probe"

fail() {
  echo "FAIL: $*" >&2
  FAILED=1
  exit 1
}

[ -x "$BIN" ] || fail "no ringchat binary at $BIN (build it first: cargo build --release -p ringchat-net)"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
command -v nft >/dev/null 2>&1 || fail "nft (nftables) is not installed"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringchat-lan.XXXXXX")

# ---- clean-up ----------------------------------------------------------------

cleanup() {
  local rc=$?
  for h in "${!PID[@]}"; do
    kill -9 "${PID[$h]}" 2>/dev/null
  done
  for h in "${!PID[@]}"; do
    wait "${PID[$h]}" 2>/dev/null
  done
  for n in "${SERVERS[@]}"; do ip netns del "${P}h$n" 2>/dev/null; done
  for n in "${CLIENTS[@]}"; do ip netns del "${P}c$n" 2>/dev/null; done
  ip link del "$BR" 2>/dev/null
  if [ -n "$TMP" ] && [ -d "$TMP" ]; then
    if [ "$rc" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
      for f in "$TMP"/h*.log; do
        [ -f "$f" ] || continue
        echo "--- last lines of $(basename "$f")" >&2
        tail -n 12 "$f" >&2
      done
    fi
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the LAN -------------------------------------------------------------------

ip link add name "$BR" type bridge || fail "cannot create bridge $BR"
# A plain switch: flood multicast instead of relying on IGMP snooping without a querier.
ip link set "$BR" type bridge mcast_snooping 0 2>/dev/null
ip link set "$BR" up

# host NAME IFNAME ADDR
add_host() {
  local ns=$1 ifc=$2 addr=$3
  ip netns add "$ns" || fail "cannot create namespace $ns"
  ip link add "$ifc" type veth peer name "${ifc}b" || fail "cannot create veth $ifc"
  ip link set "$ifc" netns "$ns"
  ip link set "${ifc}b" master "$BR"
  ip link set "${ifc}b" up
  ip -n "$ns" addr add "$addr/24" dev "$ifc"
  ip -n "$ns" link set "$ifc" up
  ip -n "$ns" link set lo up
  ip -n "$ns" route add 224.0.0.0/4 dev "$ifc" || fail "cannot add the multicast route in $ns"
}

for n in "${SERVERS[@]}"; do add_host "${P}h$n" "${P}v$n" "$NET.$n"; done
for n in "${CLIENTS[@]}"; do add_host "${P}c$n" "${P}c$n" "$NET.$n"; done
# (client veths are named ${P}c101 etc.; the namespace has the same name, which is fine)
log "bridge $BR with ${#SERVERS[@]} server and ${#CLIENTS[@]} client namespaces"

# ---- servers -------------------------------------------------------------------

start_server() {
  local n=$1 args
  # Three servers bind 0.0.0.0 (the advertised address comes from the route to the
  # group), two bind their address and name the multicast interface.
  if [ "$n" -le 3 ]; then
    args=(--bind 0.0.0.0:7000)
  else
    args=(--bind "$NET.$n:7000" --interface "$NET.$n")
  fi
  [ -f "$TMP/cluster.key" ] || "$BIN" keygen "$TMP/cluster.key" >/dev/null
  RUST_LOG=info ip netns exec "${P}h$n" "$BIN" server "${args[@]}" --key-file "$TMP/cluster.key" --discovery multicast >>"$TMP/h$n.log" 2>&1 &
  PID[$n]=$!
}

# status HOST: one JSON line from the server on HOST, asked from inside its namespace.
status() {
  ip netns exec "${P}h$1" "$BIN" status --only --key-file "$TMP/cluster.key" --server "$NET.$1:7000" --json --timeout-ms "${2:-1000}" 2>/dev/null
}

# field JSON KEY: a top-level string or number value.
str_field() { sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p" <<<"$1"; }
first_str_field() { grep -o "\"$2\":\"[^\"]*\"" <<<"$1" | head -n 1 | sed 's/.*:"\(.*\)"/\1/'; }
num_field() { sed -n "s/.*\"$2\":\([0-9][0-9]*\).*/\1/p" <<<"$1"; }
count() { grep -o "$2" <<<"$1" | wc -l; }

# agree HOSTS...: every host answers, all name one leader that is one of them and
# says it leads, all installed one view whose members are exactly these hosts, all alive.
# Sets LEADER (id), LEADER_HOST, EPOCH, VIEW.
agree() {
  local hosts=("$@") n=$# leader="" view="" epoch="" leaders=0 lh="" out l v e h k
  for h in "${hosts[@]}"; do
    out=$(status "$h" 600) || return 1
    l=$(str_field "$out" leader)
    v=$(num_field "$out" view_id)
    e=$(num_field "$out" epoch)
    [ -n "$l" ] && [ -n "$v" ] || return 1
    if [ -z "$leader" ]; then leader=$l; view=$v; epoch=$e; fi
    [ "$l" = "$leader" ] && [ "$v" = "$view" ] && [ "$e" = "$epoch" ] || return 1
    [ "$(count "$out" '"self":')" -eq "$n" ] || return 1
    [ "$(count "$out" '"alive":true')" -eq "$n" ] || return 1
    for k in "${hosts[@]}"; do
      grep -q "\"addr\":\"$NET.$k:7000\"" <<<"$out" || return 1
    done
    if grep -q '"is_leader":true' <<<"$out"; then
      leaders=$((leaders + 1))
      lh=$h
      # Top-level keys are sorted, so the server's own "id" comes before the members' ids.
      [ "$(first_str_field "$out" id)" = "$leader" ] || return 1
    fi
  done
  [ "$leaders" -eq 1 ] || return 1
  LEADER=$leader LEADER_HOST=$lh EPOCH=$epoch VIEW=$view
}

# same_leader HOSTS...: all answer and name one leader that is one of them and says so.
same_leader() {
  local leader="" leaders=0 lh="" out l h
  for h in "$@"; do
    out=$(status "$h" 600) || return 1
    l=$(str_field "$out" leader)
    [ -n "$l" ] || return 1
    [ -z "$leader" ] && leader=$l
    [ "$l" = "$leader" ] || return 1
    if grep -q '"is_leader":true' <<<"$out"; then
      leaders=$((leaders + 1))
      lh=$h
      [ "$(first_str_field "$out" id)" = "$leader" ] || return 1
    fi
  done
  [ "$leaders" -eq 1 ] || return 1
  LEADER=$leader LEADER_HOST=$lh
}

# wait_for SECONDS WHAT CMD...: polls CMD until it succeeds or the deadline passes.
wait_for() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$(( $(now_ms) + secs * 1000 ))
  while ! "$@"; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "timed out after ${secs}s waiting for: $what"
    sleep 0.05
  done
}

# others EXCLUDED HOSTS...: the hosts without EXCLUDED.
others() {
  local x=$1 h
  shift
  for h in "$@"; do [ "$h" = "$x" ] || printf '%s ' "$h"; done
}

# ---- 1. cold start -----------------------------------------------------------

t=$(now_ms)
for n in "${SERVERS[@]}"; do start_server "$n"; done
wait_for 30 "5 servers to agree on one leader and a 5-member view (multicast discovery, no --join)" agree "${SERVERS[@]}"
T_COLD=$(( $(now_ms) - t ))
log "cold start: 5 servers agree on leader ${LEADER:0:8} (host $LEADER_HOST) in view $VIEW, epoch $EPOCH, after $T_COLD ms"

# The servers answer from the client hosts too.
for c in "${CLIENTS[@]}"; do
  ip netns exec "${P}c$c" "$BIN" status --only --key-file "$TMP/cluster.key" --server "$NET.$LEADER_HOST:7000" --json --timeout-ms 2000 >/dev/null \
    || fail "client host $NET.$c cannot reach the leader's status"
done
log "status reachable from the 3 client hosts"

# ---- 2. 10% loss ----------------------------------------------------------------

for n in "${SERVERS[@]}"; do
  ip netns exec "${P}h$n" nft -f - <<'EOF' || fail "cannot add the nftables loss rule"
table inet ringchat_loss {
  chain out {
    type filter hook output priority 0;
    udp dport 7000-7999 numgen random mod 100 < 10 drop
  }
}
EOF
done
log "10% random loss on udp 7000-7999 in every server namespace"

L0=$LEADER E0=$EPOCH
LOSS_SECS=10
deadline=$(( $(now_ms) + LOSS_SECS * 1000 ))
samples=0
while [ "$(now_ms)" -lt "$deadline" ]; do
  wait_for 5 "agreement to hold under 10% loss" agree "${SERVERS[@]}"
  [ "$LEADER" = "$L0" ] || fail "leader changed under 10% loss: ${L0:0:8} -> ${LEADER:0:8}"
  [ "$EPOCH" = "$E0" ] || fail "epoch moved under 10% loss: $E0 -> $EPOCH"
  samples=$((samples + 1))
  sleep 0.2
done
log "under 10% loss: $samples agreement samples over ${LOSS_SECS}s, leader ${L0:0:8} and epoch $E0 unchanged"

# ---- 3. kill -9 the leader ----------------------------------------------------------

DEAD=$LEADER_HOST
read -r -a LIVE <<<"$(others "$DEAD" "${SERVERS[@]}")"
new_leader() { same_leader "${LIVE[@]}" && [ "$LEADER" != "$L0" ]; }
t=$(now_ms)
kill -9 "${PID[$DEAD]}"
wait "${PID[$DEAD]}" 2>/dev/null
unset 'PID[$DEAD]'
wait_for 15 "the 4 survivors to agree on a new leader" new_leader
T_FAILOVER=$(( $(now_ms) - t ))
log "killed leader on host $DEAD: the 4 others agree on leader ${LEADER:0:8} (host $LEADER_HOST) after $T_FAILOVER ms (10% loss on)"
wait_for 30 "a 4-member view without the dead leader" agree "${LIVE[@]}"
T_VIEW4=$(( $(now_ms) - t ))
log "view $VIEW of the 4 survivors installed after $T_VIEW4 ms"

# ---- 4. cut a host off, then restore it -------------------------------------------------

for h in "${LIVE[@]}"; do [ "$h" != "$LEADER_HOST" ] && CUT=$h; done
read -r -a REST <<<"$(others "$CUT" "${LIVE[@]}")"
t=$(now_ms)
ip -n "${P}h$CUT" link set "${P}v$CUT" down
wait_for 30 "the others to drop host $CUT from the view" agree "${REST[@]}"
T_DROP=$(( $(now_ms) - t ))
log "cut host $CUT's link: the 3 others installed view $VIEW without it after $T_DROP ms"
t=$(now_ms)
ip -n "${P}h$CUT" link set "${P}v$CUT" up
# Bringing a link down drops its routes; the connected route comes back by itself, the multicast one does not.
ip -n "${P}h$CUT" route replace 224.0.0.0/4 dev "${P}v$CUT"
wait_for 30 "host $CUT back in the view" agree "${LIVE[@]}"
T_BACK=$(( $(now_ms) - t ))
log "restored host $CUT's link: back in view $VIEW with leader ${LEADER:0:8} after $T_BACK ms"

# ---- 5. clients (hook) ---------------------------------------------------------------

# Clients: alice, bob and carol on the client hosts, given no server address:
# they find the cluster through the multicast group and attach to the server it
# assigns. Alice and carol write to bob, then the leader is killed (10% loss is
# still on) and alice's next message must still be stored and shown to bob.
declare -A CFD=()
# start_client HOST NAME: `ringchat client --json` in ${P}cHOST, stdin a FIFO, stdout a file.
start_client() {
  local c=$1 name=$2 fifo="$TMP/$2.in" fd
  mkfifo "$fifo" || fail "cannot create a FIFO"
  exec {fd}<>"$fifo"
  CFD[$name]=$fd
  local identity
  identity=$("$BIN" keys list --key-file "$TMP/cluster.key" | awk '$1 == "identity" { print $2 }')
  ip netns exec "${P}c$c" env RINGCHAT_HOME="$TMP/home" "$BIN" client --json --name "$name" --discovery multicast --cluster-key "$identity" \
    <"$fifo" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PID[$name]=$!
}
# first_event_field NAME EVENT KEY: KEY's first string value in NAME's first EVENT line.
first_event_field() { grep -F "\"event\":\"$2\"" "$TMP/$1.out" | head -n 1 | grep -o "\"$3\":\[*\"[^\"]*\"" | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/'; }
# assigned_and_attached NAME: the client was assigned servers of the cluster and attached to the first.
assigned_and_attached() {
  local a t h ok=0
  a=$(first_event_field "$1" assigned servers)
  t=$(first_event_field "$1" attached server)
  [ -n "$a" ] || fail "$1 attached without an assignment"
  for h in "${LIVE[@]}"; do [ "$a" = "$NET.$h:7000" ] && ok=1; done
  [ "$ok" -eq 1 ] || fail "$1 was assigned $a, not a live server"
  [ "$t" = "$a" ] || fail "$1 attached to $t, not to its assigned server $a"
}
say() { printf '%s\n' "$2" >&"${CFD[$1]}"; }
# seen NAME PATTERN: the client's output has a line matching PATTERN (fixed string).
seen() { grep -qF -- "$2" "$TMP/$1.out" 2>/dev/null; }
# shown_once NAME TEXT: exactly one "shown" event with this text.
shown_once() { [ "$(grep -F '"event":"shown"' "$TMP/$1.out" | grep -cF "\"text\":\"$2\"")" -eq 1 ]; }
stored_text() { # stored_text NAME TEXT: the submission with this text got "stored"
  local id
  id=$(grep -F '"event":"pending"' "$TMP/$1.out" | grep -F "\"text\":\"$2\"" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -n 1)
  [ -n "$id" ] && grep -F '"event":"stored"' "$TMP/$1.out" | grep -qF "\"id\":\"$id\""
}

client_checks() {
  local t
  start_client 101 alice
  start_client 102 bob
  start_client 103 carol
  for n in alice bob carol; do wait_for 20 "$n to find the cluster by multicast and attach to a server" seen "$n" '"event":"attached"'; done
  for n in alice bob carol; do assigned_and_attached "$n"; done
  log "3 clients found the cluster by multicast and attached to their assigned servers: $(for n in alice bob carol; do printf '%s@%s ' "$n" "$(first_event_field "$n" attached server)"; done)"
  say alice '{"cmd":"send","to":"bob","text":"lan hello from alice"}'
  say carol '{"cmd":"send","to":"bob","text":"lan hello from carol"}'
  wait_for 20 "alice's message stored" stored_text alice "lan hello from alice"
  wait_for 20 "bob to be shown alice's message" shown_once bob "lan hello from alice"
  wait_for 20 "bob to be shown carol's message" shown_once bob "lan hello from carol"
  log "bob was shown the messages of alice and carol (10% loss on)"

  wait_for 15 "the live servers to agree on a leader" same_leader "${LIVE[@]}"
  local dead=$LEADER_HOST
  t=$(now_ms)
  kill -9 "${PID[$dead]}"
  wait "${PID[$dead]}" 2>/dev/null
  unset 'PID[$dead]'
  say alice '{"cmd":"send","to":"bob","text":"lan after the leader kill"}'
  wait_for 30 "alice's message after the leader kill to be stored" stored_text alice "lan after the leader kill"
  wait_for 30 "bob to be shown alice's message after the leader kill" shown_once bob "lan after the leader kill"
  log "killed leader on host $dead: alice's next message stored and shown to bob once after $(( $(now_ms) - t )) ms"
  grep -qF '"event":"failed"' "$TMP/alice.out" "$TMP/carol.out" && fail "a client reported a failed message"
  shown_once bob "lan hello from alice" || fail "bob was shown alice's first message more than once"
  say alice '{"cmd":"quit"}'
  say bob '{"cmd":"quit"}'
  say carol '{"cmd":"quit"}'
  log "client checks passed"
}
client_checks

# ---- summary -----------------------------------------------------------------------

echo "lan: all checks passed"
echo "lan timings: cold_start_ms=$T_COLD failover_ms=$T_FAILOVER view_without_dead_ms=$T_VIEW4 cut_dropped_ms=$T_DROP cut_back_ms=$T_BACK (loss 10%)"
exit 0
