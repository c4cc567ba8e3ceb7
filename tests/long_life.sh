#!/usr/bin/env bash
# A cluster that lives long (issue 13), with real `ringchat server` and `ringchat client --json`
# processes on the loopback of a network namespace this test creates, under random loss.
#
#   bash tests/long_life.sh [path/to/ringchat]   (default target/release/ringchat; run as root)
#
# Knobs (environment): KILLS (kill -9 and restart with --state, default 102: with 3 servers
# that is 105 server lives), LOSS (percent of UDP datagrams dropped, default 10), USERS (JSON
# clients, default 4), SEED (which server each kill picks; printed), REJOIN_SECS (bound for a
# restarted server to be back in a whole view, default 20), DELIVER_SECS (bound for every stored
# message to be shown, default 30), NOSTATE_SECS (bound for the restart-without-state case,
# default 30), KEEP=1 (keep the logs and client outputs), POWER_CUT=0 (skip phase 2) and
# NO_STATE=0 (skip phase 5): CI runs the phases issue 13 has fixed so far (see docs/CHANGELOG.md).
#
# Phases and the properties checked (each failure names the property, the message, the users):
#   1. churn: 3 servers with --state, one kill -9 and restart at a time (KILLS times), while
#      every user keeps up to 2 private messages outstanding to the next user.
#      [rejoin]  after every restart the 3 servers are one whole view with one leader again
#                within REJOIN_SECS.
#      [chat-progress]  some message is stored at least every STALL_SECS (default 15).
#      The victim is the server a randomly chosen user is attached to, so every life carries chat.
#   2. power cut: every user queues a burst, half of it to user "later" (who logged in once and
#      quit, so only the servers' disks keep those); as soon as each user has one burst message
#      acknowledged `stored`, every server is killed at once (one kill -9), all restart from
#      their state, and "later" logs in again.
#      [power-cut-rejoin]  the 3 servers form a whole view with one leader again.
#   3. [stored-shown-once]  every message acknowledged `stored` (churn and power cut) is shown
#      exactly once to its recipient (polled up to DELIVER_SECS);
#      [no-duplicate]  no message, stored or not, is shown twice to a user;
#      [no-invention]  nothing is shown that no client sent, and text and sender match.
#   4. [chat-after]  every old client's fresh message is stored and shown to its recipient, and
#      two new client processes (new users) can chat: stored and shown once.
#   5. [no-state-merge]  three servers run as the README shows (no --state), kill -9 two, start
#      them again (new identities): within NOSTATE_SECS all three are in one cluster, one
#      view of exactly the three, with one leader.
# Prints resident memory and state file size of each server after phase 4.
# Exit 0 only if every check passes; 1 otherwise (with "long_life: FAIL [property] ..." lines).
# Skips (exit 0) only when network namespaces cannot be created (not root). Needs iproute2,
# nftables and jq. Removes everything it creates (namespaces, processes, files) on exit.
set -uo pipefail

BIN=${1:-target/release/ringchat}
KILLS=${KILLS:-102}
LOSS=${LOSS:-10}
USERS=${USERS:-4}
SEED=${SEED:-$(( $(date +%s) % 100000 ))}
REJOIN_SECS=${REJOIN_SECS:-20}
DELIVER_SECS=${DELIVER_SECS:-30}
NOSTATE_SECS=${NOSTATE_SECS:-30}
POWER_CUT=${POWER_CUT:-1}
NO_STATE=${NO_STATE:-1}
STALL_SECS=${STALL_SECS:-15}
KEEP=${KEEP:-0}
MAX_OUT=2                   # messages a user keeps outstanding (queued or waiting for stored)
BURST=4                     # messages per user in the power-cut burst
NSRV=3
P="ll$$"                    # prefix of every name this run creates
NS="${P}a"                  # the churn namespace (with loss)
NS2="${P}b"                 # the restart-without-state namespace (no loss)
TMP=""
declare -A PID=()           # server index or client name -> pid
declare -A FD=()            # client name -> fd of its stdin FIFO
declare -A SENT=()          # client name -> messages written to it
FAILS=()

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
T_BEGIN=$(now_ms)
log() { printf '[long_life %6.1fs] %s\n' "$(( $(now_ms) - T_BEGIN ))e-3" "$*"; }
fatal() { echo "long_life: ERROR $*" >&2; exit 1; }
# check_fail PROPERTY DETAIL: a property failed (printed now and in the summary).
check_fail() {
  FAILS+=("[$1] $2")
  echo "long_life: FAIL [$1] $2"
}

RANDOM=$SEED

# ---- skip / preconditions ---------------------------------------------------------------

if ! ip netns add "${P}probe" 2>/dev/null; then
  echo "SKIP: cannot create network namespaces (not root, or no 'ip'); long-life test not run"
  exit 0
fi
ip netns del "${P}probe"
[ -x "$BIN" ] || fatal "no ringchat binary at $BIN (build it first: cargo build --release -p ringchat-net)"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
command -v nft >/dev/null 2>&1 || fatal "nft (nftables) is not installed"
command -v jq >/dev/null 2>&1 || fatal "jq is not installed"
[ "$KILLS" -ge 1 ] && [ "$USERS" -ge 2 ] || fatal "need KILLS >= 1 and USERS >= 2"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringchat-long-life.XXXXXX")

cleanup() {
  local rc=$? k
  for k in "${!PID[@]}"; do kill -9 "${PID[$k]}" 2>/dev/null; done
  for k in "${!PID[@]}"; do wait "${PID[$k]}" 2>/dev/null; done
  ip netns del "$NS" 2>/dev/null
  ip netns del "$NS2" 2>/dev/null
  if [ -n "$TMP" ] && [ -d "$TMP" ]; then
    if [ "$KEEP" = 1 ]; then
      echo "long_life: logs and client outputs kept in $TMP"
    else
      if [ "$rc" -ne 0 ]; then
        for f in "$TMP"/s*.log "$TMP"/n*.log; do
          [ -f "$f" ] || continue
          echo "--- last lines of $(basename "$f")" >&2
          tail -n 8 "$f" >&2
        done
      fi
      rm -rf "$TMP"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in "$NS" "$NS2"; do
  ip netns add "$ns" || fatal "cannot create namespace $ns"
  ip -n "$ns" link set lo up || fatal "cannot bring up lo in $ns"
done
if [ "$LOSS" -gt 0 ]; then
  # Every UDP datagram on the namespace's loopback (server to server, client to server and back,
  # status queries) is dropped with probability LOSS%. (tc netem is not available everywhere.)
  ip netns exec "$NS" nft -f - <<EOF || fatal "cannot add the nftables loss rule"
table inet ringchat_loss {
  chain out {
    type filter hook output priority 0;
    meta l4proto udp numgen random mod 100 < $LOSS drop
  }
}
EOF
fi
log "namespace $NS (loopback, ${LOSS}% UDP loss) and $NS2 (no loss); seed $SEED, $KILLS kills, $USERS users"

# ---- servers and status -------------------------------------------------------------------

port_of() { echo $(( 7000 + $1 )); }

# start_server NS I [--state]: the README's three-servers-on-one-machine command line.
start_server() {
  local ns=$1 i=$2 state=${3:-} k args=()
  [ -f "$TMP/cluster.key" ] || "$BIN" keygen "$TMP/cluster.key" >/dev/null
  args=(server --bind "127.0.0.1:$(port_of "$i")" --discovery off --key-file "$TMP/cluster.key")
  for ((k = 1; k <= NSRV; k++)); do [ "$k" = "$i" ] || args+=(--join "127.0.0.1:$(port_of "$k")"); done
  local tag=s
  if [ "$ns" = "$NS2" ]; then tag=n; fi
  [ -n "$state" ] && args+=(--state "$TMP/s$i.state")
  RUST_LOG=info ip netns exec "$ns" "$BIN" "${args[@]}" >>"$TMP/$tag$i.log" 2>&1 &
  PID[$tag$i]=$!
}

kill_server() { # kill_server TAG I
  kill -9 "${PID[$1$2]}" 2>/dev/null
  wait "${PID[$1$2]}" 2>/dev/null
  unset "PID[$1$2]"
}

# status_row NS I: one TSV line about server I: id cluster leader view is_leader members(sorted,
# comma-joined) dead-members incarnation; nothing if it does not answer.
status_row() {
  ip netns exec "$1" "$BIN" status --only --key-file "$TMP/cluster.key" --server "127.0.0.1:$(port_of "$2")" --json --timeout-ms 300 2>/dev/null |
    jq -r '[.id, .cluster, (.leader // "-"), (.view_id // "-" | tostring), (.is_leader | tostring),
            ([.members[].id] | sort | join(",")), ([.members[] | select(.alive | not)] | length | tostring),
            (.incarnation | tostring)] | @tsv' 2>/dev/null
}

# whole NS: every server answers, all are in one cluster and one view whose members are exactly
# the three of them, all alive, and all name one leader that is one of them and says it leads.
# Sets LEADER_I (index of the leader) and INCS (incarnations).
whole() {
  local ns=$1 i row ids=() rows=() leaders=0 li=""
  for ((i = 1; i <= NSRV; i++)); do
    row=$(status_row "$ns" "$i")
    [ -n "$row" ] || return 1
    rows+=("$row")
    ids+=("$(cut -f1 <<<"$row")")
  done
  local want
  want=$(printf '%s\n' "${ids[@]}" | sort | paste -sd, -)
  local c0 l0 v0 id cl le vi il mem dead inc incs=""
  IFS=$'\t' read -r _ c0 l0 v0 _ _ _ _ <<<"${rows[0]}"
  [ "$l0" != "-" ] && [ "$v0" != "-" ] || return 1
  for ((i = 0; i < NSRV; i++)); do
    IFS=$'\t' read -r id cl le vi il mem dead inc <<<"${rows[$i]}"
    [ "$cl" = "$c0" ] && [ "$le" = "$l0" ] && [ "$vi" = "$v0" ] && [ "$mem" = "$want" ] && [ "$dead" = 0 ] || return 1
    if [ "$il" = true ]; then
      leaders=$((leaders + 1))
      [ "$id" = "$l0" ] || return 1
      li=$((i + 1))
    fi
    incs+="$inc "
  done
  [ "$leaders" -eq 1 ] || return 1
  LEADER_I=$li INCS=$incs
}

# describe NS: what each server says, for a failure message.
describe() {
  local ns=$1 i row id cl le vi il mem dead inc
  for ((i = 1; i <= NSRV; i++)); do
    row=$(status_row "$ns" "$i")
    if [ -z "$row" ]; then
      printf '    server %d (127.0.0.1:%d): no status answer\n' "$i" "$(port_of "$i")"
      continue
    fi
    IFS=$'\t' read -r id cl le vi il mem dead inc <<<"$row"
    printf '    server %d: id %s life %s cluster %s view %s leader %s%s, members %s (%s not alive)\n' \
      "$i" "${id:0:8}" "$inc" "${cl:0:8}" "$vi" "${le:0:8}" "$([ "$il" = true ] && echo ' (itself)')" \
      "$(tr ',' '\n' <<<"$mem" | cut -c1-8 | paste -sd' ' -)" "$dead"
  done
}

# wait_until SECS CMD...: polls CMD (and keeps the chat going) until it succeeds; 1 on timeout.
wait_until() {
  local deadline=$(( $(now_ms) + $1 * 1000 ))
  shift
  while ! "$@"; do
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    pump
    sleep 0.02
  done
}

# ---- clients ---------------------------------------------------------------------------------

USER_NAMES=()
for ((u = 1; u <= USERS; u++)); do USER_NAMES+=("u$u"); done
PUMPING=0       # 1 while the users chat
PHASE=churn
LIFE=$NSRV      # server lives so far

# identity: the cluster's identity public key, which clients are given to trust it.
identity() { "$BIN" keys list --key-file "$TMP/cluster.key" | awk '$1 == "identity" { print $2 }'; }
# start_client NS NAME: a `ringchat client --json` process for NAME (a later process of the same
# user appends to the same output: a user's events span its processes).
start_client() {
  local fifo="$TMP/$2.in" fd k args=(client --json --name "$2" --cluster-key "$(identity)")
  rm -f "$fifo"
  mkfifo "$fifo" || fatal "cannot create a FIFO"
  exec {fd}<>"$fifo"
  FD[$2]=$fd
  SENT[$2]=${SENT[$2]:-0}
  for ((k = 1; k <= NSRV; k++)); do args+=(--server "127.0.0.1:$(port_of "$k")"); done
  ip netns exec "$1" env RINGCHAT_HOME="$TMP/home" "$BIN" "${args[@]}" <"$fifo" >>"$TMP/$2.out" 2>>"$TMP/$2.err" &
  PID[$2]=$!
}
# send FROM TO TEXT
send() {
  printf '{"cmd":"send","to":"%s","text":"%s"}\n' "$2" "$3" >&"${FD[$1]}"
  SENT[$1]=$(( SENT[$1] + 1 ))
}
next_user() { local i=${1#u}; echo "u$(( i % USERS + 1 ))"; }
resolved() { grep -cE '"event":"(stored|failed|rejected)"' "$TMP/$1.out" 2>/dev/null; }
# pump: every user with fewer than MAX_OUT messages outstanding sends the next one.
pump() {
  [ "$PUMPING" = 1 ] || return 0
  local u
  for u in "${USER_NAMES[@]}"; do
    if (( SENT[$u] - $(resolved "$u") < MAX_OUT )); then
      send "$u" "$(next_user "$u")" "$u #$(( SENT[$u] + 1 )) $PHASE life $LIFE"
    fi
  done
}
attached() { grep -qF '"event":"attached"' "$TMP/$1.out" 2>/dev/null; }
# stored_and_shown FROM TEXT TO: FROM's message TEXT was stored and shown to TO.
stored_and_shown() {
  local id
  id=$(jq -r --arg t "$2" 'select(.event == "pending" and .text == $t) | .id' "$TMP/$1.out" 2>/dev/null | head -n 1)
  [ -n "$id" ] || return 1
  grep -F '"event":"stored"' "$TMP/$1.out" | grep -qF "\"id\":\"$id\"" || return 1
  grep -F '"event":"shown"' "$TMP/$3.out" | grep -qF "\"id\":\"$id\""
}

# events: every client's events as TSV rows: KIND USER ID OTHER TEXT, where KIND is
# P (submitted: OTHER = recipient), S (stored), F (failed or rejected), H (shown: OTHER = sender).
events() {
  local f u
  for f in "$TMP"/*.out; do
    u=$(basename "$f" .out)
    jq -r --arg u "$u" '
      if .event == "pending" then ["P", $u, .id, (.to // .room // "-"), .text]
      elif .event == "stored" then ["S", $u, .id, "-", "-"]
      elif .event == "failed" or .event == "rejected" then ["F", $u, .id, "-", (.reason // "-")]
      elif .event == "shown" then ["H", $u, .id, .from, .text]
      else empty end | @tsv' "$f" 2>/dev/null
  done
}

# not_yet_shown: how many stored messages are not yet shown to their recipient (0 = all shown).
not_yet_shown() {
  events | awk -F'\t' '
    $1 == "P" { to[$3] = $4 } $1 == "S" { st[$3] = 1 } $1 == "H" { sh[$2 SUBSEP $3] = 1 }
    END { n = 0; for (id in st) if (!((to[id], id) in sh)) n++; print n }'
}

# ---- 1. churn --------------------------------------------------------------------------------

for ((i = 1; i <= NSRV; i++)); do start_server "$NS" "$i" --state; done
wait_until 30 whole "$NS" || { describe "$NS"; fatal "the 3 servers with --state did not form one view with a leader within 30 s"; }
log "3 servers with --state agree on one leader (server $LEADER_I) and one view"

for u in "${USER_NAMES[@]}" later; do start_client "$NS" "$u"; done
for u in "${USER_NAMES[@]}" later; do
  wait_until 30 attached "$u" || fatal "client $u did not attach within 30 s: $(tail -n 3 "$TMP/$u.out" | tr '\n' ' ')"
done
# User "later" exists (logged in once) and quits: the power cut's burst waits in its inbox.
printf '{"cmd":"quit"}\n' >&"${FD[later]}"
deadline=$(( $(now_ms) + 10000 ))
while kill -0 "${PID[later]}" 2>/dev/null && [ "$(now_ms)" -lt "$deadline" ]; do sleep 0.02; done
kill -9 "${PID[later]}" 2>/dev/null
wait "${PID[later]}" 2>/dev/null
unset "PID[later]"
log "$USERS JSON clients attached; each keeps up to $MAX_OUT private messages outstanding to the next user; user later logged in once and quit"
PUMPING=1

# server_of USER: the index of the server USER's client is attached to now (empty while moving).
server_of() {
  local p
  p=$(grep -E '"event":"(attached|moving)"' "$TMP/$1.out" | tail -n 1 | sed -n 's/.*"event":"attached","server":"127\.0\.0\.1:\([0-9]*\)".*/\1/p')
  [ -n "$p" ] && echo $(( p - 7000 ))
}
stored_total() { cat "$TMP"/u*.out | grep -cF '"event":"stored"'; }
HOSTED=0
t_churn=$(now_ms)
last_stored=0 last_progress=$t_churn
churn_ok=1
rejoin_ms=()
for ((k = 1; k <= KILLS; k++)); do
  # The victim is the server a random user is attached to (so the lives that die carried chat,
  # and every life's messages are in the durable vectors); a random one if that user is moving.
  v=$(server_of "${USER_NAMES[$(( RANDOM % USERS ))]}")
  if [ -n "$v" ]; then HOSTED=$(( HOSTED + 1 )); else v=$(( RANDOM % NSRV + 1 )); fi
  what="server $v$([ "$v" = "$LEADER_I" ] && echo ' (the leader)')"
  kill_server s "$v"
  # Down for 0 to 300 ms of chat before its restart (a fault's length, not a synchronisation).
  down_until=$(( $(now_ms) + RANDOM % 300 ))
  while [ "$(now_ms)" -lt "$down_until" ]; do pump; sleep 0.02; done
  t=$(now_ms)
  start_server "$NS" "$v" --state
  LIFE=$(( LIFE + 1 ))
  if ! wait_until "$REJOIN_SECS" whole "$NS"; then
    check_fail rejoin "kill $k of $KILLS ($what, restarted from its state as server life $LIFE overall): the 3 servers were not one whole view with one leader within ${REJOIN_SECS}s; they say:"
    describe "$NS"
    churn_ok=0
    break
  fi
  rejoin_ms+=($(( $(now_ms) - t )))
  n_st=$(stored_total)
  if [ "$n_st" != "$last_stored" ]; then
    last_stored=$n_st last_progress=$(now_ms)
  elif (( $(now_ms) - last_progress > STALL_SECS * 1000 )); then
    check_fail chat-progress "no message was stored for ${STALL_SECS}s by kill $k of $KILLS (server life $LIFE overall; lives now: $INCS) although the 3 servers are one whole view; $n_st stored before; users' last events:"
    for u in "${USER_NAMES[@]}"; do echo "    $u: $(tail -n 1 "$TMP/$u.out")"; done
    churn_ok=0
    break
  fi
  if (( k % 10 == 0 || k == KILLS )); then
    log "kill $k/$KILLS: $what killed and restarted, whole again after ${rejoin_ms[-1]} ms; $LIFE server lives so far (lives now: $INCS); $n_st messages stored"
  fi
done
if [ "$churn_ok" = 1 ]; then
  sorted=$(printf '%s\n' "${rejoin_ms[@]}" | sort -n)
  n=${#rejoin_ms[@]}
  log "churn: $KILLS kills with --state under ${LOSS}% loss in $(( ($(now_ms) - t_churn) / 1000 )) s ($HOSTED of them hit a server a client was attached to); rejoin p50 $(sed -n "$(( (n + 1) / 2 ))p" <<<"$sorted") ms, max $(tail -n 1 <<<"$sorted") ms"
fi

# ---- 2. power cut ----------------------------------------------------------------------------

PUMPING=0
PHASE=powercut
if [ "$POWER_CUT" = 1 ]; then
# Let what is outstanding settle (bounded), so the burst's first acknowledgements are the burst's.
all_resolved() { local u; for u in "${USER_NAMES[@]}"; do (( SENT[$u] == $(resolved "$u") )) || return 1; done; }
wait_until 15 all_resolved || log "note: some messages were still outstanding before the power cut"
declare -A BASE=()
for u in "${USER_NAMES[@]}"; do
  BASE[$u]=$(grep -cF '"event":"stored"' "$TMP/$u.out")
  # Odd burst messages go to user later (offline: only the servers' disks keep them), even ones to the next user.
  for ((b = 1; b <= BURST; b++)); do
    if (( b % 2 )); then r=later; else r=$(next_user "$u"); fi
    send "$u" "$r" "$u #$(( SENT[$u] + 1 )) powercut burst $b to $r"
  done
done
# Poll every 5 ms: the cut falls right after each user's first burst message is acknowledged.
every_user_stored_one() {
  local u
  for u in "${USER_NAMES[@]}"; do (( $(grep -cF '"event":"stored"' "$TMP/$u.out") > BASE[$u] )) || return 1; done
}
deadline=$(( $(now_ms) + 15000 ))
while ! every_user_stored_one && [ "$(now_ms)" -lt "$deadline" ]; do sleep 0.005; done
every_user_stored_one || check_fail power-cut "not every user had a burst message stored within 15 s before the cut (the cut happens anyway)"
pids=()
for ((i = 1; i <= NSRV; i++)); do pids+=("${PID[s$i]}"); done
kill -9 "${pids[@]}"
for ((i = 1; i <= NSRV; i++)); do wait "${PID[s$i]}" 2>/dev/null; unset "PID[s$i]"; done
cut_stored=0
for u in "${USER_NAMES[@]}"; do cut_stored=$(( cut_stored + $(grep -cF '"event":"stored"' "$TMP/$u.out") - BASE[$u] )); done
log "power cut: every server killed at once (kill -9) with $cut_stored of $(( USERS * BURST )) burst messages acknowledged stored"
t=$(now_ms)
for ((i = 1; i <= NSRV; i++)); do start_server "$NS" "$i" --state; done
LIFE=$(( LIFE + NSRV ))
if wait_until 30 whole "$NS"; then
  log "after the power cut the 3 servers are one whole view again after $(( $(now_ms) - t )) ms (lives: $INCS)"
else
  check_fail power-cut-rejoin "after the power cut and a restart of every server from its state, no whole view with one leader within 30 s; they say:"
  describe "$NS"
fi
else
  log "power cut skipped (POWER_CUT=0)"
fi

# ---- 3. every stored message shown exactly once ----------------------------------------------

# User later logs in again (a new process): it must be shown the burst messages stored for it.
start_client "$NS" later

t=$(now_ms)
deadline=$(( t + DELIVER_SECS * 1000 ))
while [ "$(not_yet_shown)" != 0 ] && [ "$(now_ms)" -lt "$deadline" ]; do sleep 0.25; done
events >"$TMP/events.tsv"
awk -F'\t' -v max=12 '
  function say(prop, line) { if (++n[prop] <= max) print "long_life: FAIL [" prop "] " line; else if (n[prop] == max + 1) print "long_life: FAIL [" prop "] ... (more below the count)" }
  $1 == "P" { from[$3] = $2; to[$3] = $4; text[$3] = $5; sent++ }
  $1 == "S" { st[$3] = 1; stored++ }
  $1 == "F" { failed++ }
  $1 == "H" { k = $2 SUBSEP $3; shown[k]++; shown_from[k] = $4; shown_text[k] = $5; nshown++ }
  END {
    for (id in st) {
      k = to[id] SUBSEP id
      if (!(id in from)) { say("stored-shown-once", "stored id " id " has no submission"); continue }
      if (!(k in shown)) say("stored-shown-once", "message " id " from " from[id] " to " to[id] " (\"" text[id] "\") was acknowledged stored but never shown to " to[id])
      else if (shown[k] > 1) say("stored-shown-once", "message " id " from " from[id] " to " to[id] " (\"" text[id] "\") was shown " shown[k] " times to " to[id])
    }
    for (k in shown) {
      split(k, p, SUBSEP); user = p[1]; id = p[2]
      if (!(id in from)) { say("no-invention", user " was shown " id " (\"" shown_text[k] "\" from " shown_from[k] ") that no client submitted"); continue }
      if (shown[k] > 1 && !(id in st)) say("no-duplicate", "message " id " from " from[id] " (\"" text[id] "\", not acknowledged stored) was shown " shown[k] " times to " user)
      if (shown_from[k] != from[id] || shown_text[k] != text[id]) say("no-invention", user " was shown " id " as from " shown_from[k] " \"" shown_text[k] "\" but " from[id] " sent \"" text[id] "\"")
      if (user != to[id]) say("no-invention", user " was shown " id " addressed to " to[id])
    }
    miss = 0; dup = 0
    for (id in st) { k = to[id] SUBSEP id; if (!(k in shown)) miss++; else if (shown[k] > 1) dup++ }
    pc = 0; pcm = 0
    for (id in st) if (text[id] ~ / powercut /) { pc++; if (!((to[id], id) in shown)) pcm++ }
    printf "summary\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", sent, stored, failed, nshown, miss, dup, pc, pcm
    for (prop in n) printf "count\t%s\t%d\n", prop, n[prop]
  }' "$TMP/events.tsv" >"$TMP/verdict.txt"
grep '^long_life: FAIL' "$TMP/verdict.txt"
IFS=$'\t' read -r _ n_sent n_stored n_failed n_shown n_miss n_dup n_pc n_pcm < <(grep '^summary' "$TMP/verdict.txt")
while IFS=$'\t' read -r _ prop cnt; do
  FAILS+=("[$prop] $cnt violation(s), listed above")
done < <(grep '^count' "$TMP/verdict.txt")
log "messages: $n_sent submitted, $n_stored stored, $n_failed failed or rejected, $n_shown shown; of the stored: $n_miss never shown, $n_dup shown more than once; power-cut burst: $n_pc stored, $n_pcm of them never shown (waited $(( ($(now_ms) - t) / 1000 )) s)"

# ---- 4. chat still works ---------------------------------------------------------------------

PHASE=after
for u in "${USER_NAMES[@]}"; do send "$u" "$(next_user "$u")" "$u after the long life"; done
all_after() { local u; for u in "${USER_NAMES[@]}"; do stored_and_shown "$u" "$u after the long life" "$(next_user "$u")" || return 1; done; }
if wait_until 20 all_after; then
  log "chat after the long life: every user's fresh message stored and shown to the next user"
else
  for u in "${USER_NAMES[@]}"; do
    r=$(next_user "$u")
    stored_and_shown "$u" "$u after the long life" "$r" && continue
    id=$(jq -r --arg t "$u after the long life" 'select(.event == "pending" and .text == $t) | .id' "$TMP/$u.out" | head -n 1)
    if [ -z "$id" ]; then st="never submitted by $u's client (still queued: not attached)"
    elif grep -F '"event":"stored"' "$TMP/$u.out" | grep -qF "\"id\":\"$id\""; then st="stored (id $id) but not shown to $r"
    else st="submitted as $id, not stored"; fi
    check_fail chat-after "$u's fresh message \"$u after the long life\" to $r: $st within 20 s; $u's last event: $(tail -n 1 "$TMP/$u.out"); $r's last event: $(tail -n 1 "$TMP/$r.out")"
  done
fi
start_client "$NS" fresh1
start_client "$NS" fresh2
for u in fresh1 fresh2; do
  wait_until 30 attached "$u" || check_fail chat-after "a new client process $u did not attach within 30 s; its last events: $(tail -n 3 "$TMP/$u.out" | tr "\n" " ")$([ -s "$TMP/$u.out" ] || echo "(none at all: no assignment came)")"
done
send fresh1 fresh2 "fresh1 to fresh2 after the long life"
if wait_until 20 stored_and_shown fresh1 "fresh1 to fresh2 after the long life" fresh2; then
  log "chat after the long life: new clients fresh1 -> fresh2 stored and shown"
else
  check_fail chat-after "new client fresh1's message to fresh2 was not stored and shown within 20 s; fresh1's last events: $(tail -n 3 "$TMP/fresh1.out" | tr '\n' ' ')"
fi
shown_fresh=$(grep -F '"event":"shown"' "$TMP/fresh2.out" | grep -cF '"text":"fresh1 to fresh2 after the long life"')
[ "$shown_fresh" -le 1 ] || check_fail chat-after "fresh2 was shown fresh1's message $shown_fresh times"

for ((i = 1; i <= NSRV; i++)); do
  pid=${PID[s$i]:-}
  [ -n "$pid" ] || continue
  rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
  chatlog=$(cat "$TMP"/.s$i.state.log.* 2>/dev/null | wc -c)
  segments=$(ls "$TMP"/.s$i.state.log.* 2>/dev/null | wc -l)
  log "resources: server $i resident ${rss:-?} kB, state file $(stat -c %s "$TMP/s$i.state" 2>/dev/null || echo '?') bytes, chat log $chatlog bytes in $segments segment(s), after $LIFE server lives"
done

# ---- 5. restart without state: one cluster with a leader ------------------------------------

for ((i = 1; i <= NSRV; i++)); do kill_server s "$i"; done
if [ "$NO_STATE" != 1 ]; then
  log "restart without state skipped (NO_STATE=0)"
else
for ((i = 1; i <= NSRV; i++)); do start_server "$NS2" "$i"; done
if ! wait_until 30 whole "$NS2"; then
  check_fail no-state-merge "3 servers without --state did not form one view with one leader within 30 s after a cold start; they say:"
  describe "$NS2"
else
  # Kill the leader and one other server; the survivor is a follower of the old cluster.
  survivor=$(( LEADER_I % NSRV + 1 ))
  victims=()
  for ((i = 1; i <= NSRV; i++)); do [ "$i" = "$survivor" ] || victims+=("$i"); done
  for i in "${victims[@]}"; do kill_server n "$i"; done
  t=$(now_ms)
  for i in "${victims[@]}"; do start_server "$NS2" "$i"; done
  if wait_until "$NOSTATE_SECS" whole "$NS2"; then
    log "restart without state: servers ${victims[*]} killed and started again (new identities): all 3 in one view with one leader after $(( $(now_ms) - t )) ms"
  else
    check_fail no-state-merge "servers ${victims[*]} (the leader and one other, no --state) were killed and started again; within ${NOSTATE_SECS}s the 3 were not one cluster with one view of the 3 and one leader; survivor is server $survivor; they say:"
    describe "$NS2"
  fi
fi
fi

# ---- summary ---------------------------------------------------------------------------------

for u in "${USER_NAMES[@]}" later fresh1 fresh2; do printf '{"cmd":"quit"}\n' >&"${FD[$u]}" 2>/dev/null; done
if [ ${#FAILS[@]} -eq 0 ]; then
  echo "long_life: all checks passed ($LIFE server lives, $KILLS kills under ${LOSS}% loss$([ "$POWER_CUT" = 1 ] && echo ", a power cut")$([ "$NO_STATE" = 1 ] && echo ", restart without state"); seed $SEED)"
  exit 0
fi
echo "long_life: ${#FAILS[@]} check(s) failed (seed $SEED; rerun with SEED=$SEED KILLS=$KILLS):"
for f in "${FAILS[@]}"; do echo "  $f"; done
exit 1
