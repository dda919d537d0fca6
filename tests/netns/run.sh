#!/usr/bin/env bash
# Multi-host fault harness: N hosts (default 4), each in its own network namespace, joined to
# one switch that lives in a namespace of its own, with impaired links that can be cut and
# restored. The machine's own network is never touched: every device, address and qdisc is
# made inside namespaces this script creates (names carry its pid) and removes on exit.
#
#   run.sh session [--hosts N] [--backend auto|netem|userspace|bridge] [--delay-ms D] [--loss P]
#                  [--rate-mbit R]
#
# prints one line, then serves commands on stdin, one per line, answering each with one line:
#   skip <why>            cannot run here (not root, no `ip netns`, no way to impair links);
#                         the script exits 0 after it
#   ready backend=B delay_ms=D loss_pct=P rate_mbit=R hosts=NS1,..,NSn addrs=IP1,..,IPn
#                         (D and P are 0 for the `bridge` backend, which only caps; R is 0
#                         when links are not capped)
#   partition I  -> ok partition I     host I's link goes down (I counts from 1)
#   heal I       -> ok heal I          host I's link comes up again, with its route
#   links        -> ok links up,down,..  each host's link state as the kernel reports it
#   block I J    -> ok block I J       hosts I and J exchange no more packets with each other
#                                      (a blackhole route to the other's address in each one's
#                                      namespace: sending fails there, before any link), while
#                                      both still reach every other host; independent of the
#                                      links, so `partition` and `heal` leave it as it is
#   unblock I J  -> ok unblock I J     hosts I and J reach each other again
#   quit (or end of input, or a signal): everything is torn down, processes left running in
#                         the namespaces are stopped, and the script exits.
# A command that fails answers `err <why>`.
#
# Backends: `netem` is veth pairs on a Linux bridge with `tc netem delay D loss P` on each host's
# egress, so every frame between two hosts is delayed D and lost with probability P once.
# `userspace` does the same with TAP devices and tests/netns/switch.py, for kernels built
# without sch_netem. `bridge` is the veth/bridge topology with no delay or loss (to check the
# topology itself, or to cap links with nothing else). `auto` (the default) takes netem when
# the kernel has it (and sch_tbf, with --rate-mbit); else, for capped links with no delay and no
# loss asked, bridge (the kernel's tbf does all there is to do); else userspace.
# `block` works the same on every backend: it changes routes in the hosts' namespaces only.
# Its routes go with the namespaces on exit.
#
# --rate-mbit R (default 0: no cap) caps each host's link at R Mbit/s in both directions: the
# host's egress and the traffic toward it. On the veth backends (netem, bridge) that is
# `tc tbf rate R burst B latency 50ms` on both ends of the host's veth (B: 1 ms of R, at least
# 72 KiB), under netem on the host's end; the kernel must have sch_tbf (else `skip`, and
# `auto` takes userspace). The userspace switch shapes both directions itself, the same way.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
hosts=4
backend=auto
delay_ms=20
loss_pct=2
rate_mbit=0
subnet=10.77.0

usage() { echo "usage: $0 session [--hosts N] [--backend auto|netem|userspace|bridge] [--delay-ms D] [--loss PERCENT] [--rate-mbit R]" >&2; exit 2; }
[ "${1:-}" = session ] || usage
shift
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) hosts="${2:-}"; shift 2 ;;
    --backend) backend="${2:-}"; shift 2 ;;
    --delay-ms) delay_ms="${2:-}"; shift 2 ;;
    --loss) loss_pct="${2:-}"; shift 2 ;;
    --rate-mbit) rate_mbit="${2:-}"; shift 2 ;;
    *) usage ;;
  esac
done
[[ "$hosts" =~ ^[0-9]+$ ]] && [ "$hosts" -ge 2 ] && [ "$hosts" -le 16 ] || usage
[[ "$delay_ms" =~ ^[0-9]+$ ]] && [ "$delay_ms" -le 10000 ] || usage
[[ "$loss_pct" =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage
[[ "$rate_mbit" =~ ^[0-9]+$ ]] && [ "$rate_mbit" -le 100000 ] || usage
# tbf's burst for a capped link (switch.py's is the same): 1 ms at its rate, at least 72 KiB, so
# that a 64 KiB TSO packet with the headers of its segments passes whole rather than being cut
# into MTU-sized packets in tbf (which costs the emulation about half again as much CPU).
burst_bytes=$(( rate_mbit * 125 > 73728 ? rate_mbit * 125 : 73728 ))
case "$backend" in auto|netem|userspace|bridge) ;; *) usage ;; esac

skip() { echo "skip $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "not root (network namespaces need CAP_SYS_ADMIN)"
command -v ip >/dev/null 2>&1 || skip "no \`ip\` command (iproute2)"

prefix="bpnet$$"
sw="$prefix-sw"
made=()         # namespaces made, torn down on exit
switch_pid=""

teardown() {
  trap - EXIT INT TERM HUP
  # Processes the harness's user started inside our namespaces (nodes) go first, so none
  # outlives the run; then the userspace switch; then the namespaces.
  local ns pids
  for ns in "${made[@]}"; do
    pids="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
    [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
  done
  for _ in $(seq 1 20); do
    pids=""
    for ns in "${made[@]}"; do pids+="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"; done
    [ -z "${pids// /}" ] && break
    sleep 0.1
  done
  [ -n "${pids// /}" ] && kill -KILL $pids 2>/dev/null
  if [ -n "$switch_pid" ]; then
    kill -TERM "$switch_pid" 2>/dev/null
    wait "$switch_pid" 2>/dev/null
  fi
  for ns in "${made[@]}"; do ip netns del "$ns" 2>/dev/null; done
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

newns() {
  ip netns add "$1" || return 1
  made+=("$1")
  ip -n "$1" link set lo up
}

newns "$sw" 2>/dev/null || skip "\`ip netns add\` failed: network namespaces unusable here"

netem_works() {
  ip -n "$sw" link add probe0 type dummy 2>/dev/null || ip -n "$sw" link add probe0 type veth peer name probe1 2>/dev/null || return 1
  local ok=1
  tc -n "$sw" qdisc add dev probe0 root netem delay 1ms loss 1% 2>/dev/null && ok=0
  ip -n "$sw" link del probe0 2>/dev/null
  return $ok
}
tbf_works() { # a rate cap on the veth backends needs sch_tbf (none asked: nothing to check)
  [ "$rate_mbit" = 0 ] && return 0
  command -v tc >/dev/null 2>&1 || return 1
  ip -n "$sw" link add probe0 type dummy 2>/dev/null || ip -n "$sw" link add probe0 type veth peer name probe1 2>/dev/null || return 1
  local ok=1
  tc -n "$sw" qdisc add dev probe0 root tbf rate "${rate_mbit}mbit" burst "$burst_bytes" latency 50ms 2>/dev/null && ok=0
  ip -n "$sw" link del probe0 2>/dev/null
  return $ok
}
userspace_works() { command -v python3 >/dev/null 2>&1 && [ -c /dev/net/tun ]; }

if [ "$backend" = auto ]; then
  if command -v tc >/dev/null 2>&1 && netem_works && tbf_works; then backend=netem
  elif [ "$rate_mbit" != 0 ] && [ "$delay_ms" = 0 ] && awk -v p="$loss_pct" 'BEGIN { exit !(p == 0) }' \
    && tbf_works; then backend=bridge
  elif userspace_works; then backend=userspace
  else skip "the kernel has no tc netem (sch_netem), or no tc tbf (sch_tbf) for --rate-mbit, and python3 or /dev/net/tun for the userspace emulator is missing"
  fi
elif [ "$backend" = netem ]; then
  command -v tc >/dev/null 2>&1 && netem_works || skip "tc netem unusable: the kernel lacks sch_netem"
  tbf_works || skip "tc tbf unusable for --rate-mbit: the kernel lacks sch_tbf"
elif [ "$backend" = bridge ]; then
  tbf_works || skip "tc tbf unusable for --rate-mbit: the kernel lacks sch_tbf"
elif [ "$backend" = userspace ]; then
  userspace_works || skip "python3 or /dev/net/tun missing"
fi

fail() { echo "err setup: $*"; exit 1; }
host_ns=()
host_ip=()
for i in $(seq 1 "$hosts"); do
  newns "$prefix-h$i" || fail "cannot make namespace $prefix-h$i"
  host_ns+=("$prefix-h$i")
  host_ip+=("$subnet.$i")
done

if [ "$backend" = userspace ]; then
  loss_frac="$(awk -v p="$loss_pct" 'BEGIN { printf "%.6f", p / 100 }')"
  ports=()
  for i in $(seq 1 "$hosts"); do ports+=("p$i"); done
  coproc SWITCH { exec ip netns exec "$sw" python3 -u "$here/switch.py" --rate-mbit "$rate_mbit" "$delay_ms" "$loss_frac" "${ports[@]}" 2>&1; }
  switch_pid="$SWITCH_PID"
  read -r -t 10 line <&"${SWITCH[0]}" || fail "userspace switch did not start"
  [ "$line" = ready ] || fail "userspace switch: $line"
  for i in $(seq 1 "$hosts"); do
    ip -n "$sw" link set "p$i" netns "${host_ns[$((i-1))]}" || fail "cannot move p$i"
    ip -n "${host_ns[$((i-1))]}" link set "p$i" name eth0 || fail "cannot rename p$i"
  done
else
  ip -n "$sw" link add br0 type bridge forward_delay 0 stp_state 0 || fail "cannot make the bridge"
  ip -n "$sw" link set br0 up || fail "cannot raise the bridge"
  for i in $(seq 1 "$hosts"); do
    ns="${host_ns[$((i-1))]}"
    ip -n "$sw" link add "p$i" type veth peer name eth0 netns "$ns" || fail "cannot make veth p$i"
    ip -n "$sw" link set "p$i" master br0 || fail "cannot attach p$i"
    ip -n "$sw" link set "p$i" up || fail "cannot raise p$i"
    if [ "$backend" = netem ]; then
      tc -n "$ns" qdisc add dev eth0 root handle 1: netem delay "${delay_ms}ms" loss "${loss_pct}%" \
        || fail "tc netem on $ns"
    fi
    if [ "$rate_mbit" != 0 ]; then
      # The host's egress (under netem, which hands frames on once their delay has passed),
      # and the bridge's egress toward the host.
      parent=(root)
      [ "$backend" = netem ] && parent=(parent 1:1)
      tbf=(tbf rate "${rate_mbit}mbit" burst "$burst_bytes" latency 50ms)
      tc -n "$ns" qdisc add dev eth0 "${parent[@]}" handle 10: "${tbf[@]}" || fail "tc tbf on $ns"
      tc -n "$sw" qdisc add dev "p$i" root "${tbf[@]}" || fail "tc tbf on p$i"
    fi
  done
fi

route_up() { [ -n "$(ip -n "$1" route show "$subnet.0/24" 2>/dev/null)" ]; }
link_state() { # up or down, as the host's eth0 flags say
  case "$(ip -n "$1" -o link show eth0 2>/dev/null)" in
    *"<"*UP*">"*) echo up ;;
    *) echo down ;;
  esac
}
wait_route() { # the kernel re-adds the prefix route when the link comes up
  for _ in $(seq 1 50); do route_up "$1" && return 0; sleep 0.1; done
  return 1
}

for i in $(seq 1 "$hosts"); do
  ns="${host_ns[$((i-1))]}"
  ip -n "$ns" addr add "${host_ip[$((i-1))]}/24" dev eth0 || fail "address on $ns"
  ip -n "$ns" link set eth0 up || fail "link up on $ns"
  wait_route "$ns" || fail "no route on $ns"
  if [ "$backend" = netem ]; then
    tc -n "$ns" qdisc show dev eth0 | grep -q netem || fail "no netem qdisc on $ns"
  fi
  if [ "$backend" != userspace ] && [ "$rate_mbit" != 0 ]; then
    tc -n "$ns" qdisc show dev eth0 | grep -q tbf || fail "no tbf qdisc on $ns"
    tc -n "$sw" qdisc show dev "p$i" | grep -q tbf || fail "no tbf qdisc on p$i"
  fi
done

[ "$backend" = bridge ] && { delay_ms=0; loss_pct=0; }
join() { local IFS=,; echo "$*"; }
echo "ready backend=$backend delay_ms=$delay_ms loss_pct=$loss_pct rate_mbit=$rate_mbit hosts=$(join "${host_ns[@]}") addrs=$(join "${host_ip[@]}")"

host_arg() { # validates I, sets ns
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$hosts" ] || return 1
  ns="${host_ns[$(($1-1))]}"
}
blocked() { # whether host namespace $1 has the blackhole route to address $2
  [ -n "$(ip -n "$1" route show exact "$2/32" type blackhole 2>/dev/null)" ]
}
unroutable() { # whether the kernel in host namespace $1 refuses to route to address $2
  ! ip -n "$1" route get "$2" >/dev/null 2>&1
}
set_block() { # block|unblock I J: both directions, then checks the state both ways
  local verb="$1" i="$2" j="$3" ns_i ns_j ip_i ip_j
  if ! host_arg "$i" || ! host_arg "$j" || [ "$i" -eq "$j" ]; then
    echo "err $verb: two different hosts 1..$hosts expected"; return
  fi
  ns_i="${host_ns[$((i-1))]}" ns_j="${host_ns[$((j-1))]}"
  ip_i="${host_ip[$((i-1))]}" ip_j="${host_ip[$((j-1))]}"
  if [ "$verb" = block ]; then
    # `replace`, so blocking a blocked pair again is no error.
    ip -n "$ns_i" route replace blackhole "$ip_j/32" 2>/dev/null
    ip -n "$ns_j" route replace blackhole "$ip_i/32" 2>/dev/null
    if blocked "$ns_i" "$ip_j" && blocked "$ns_j" "$ip_i" \
      && unroutable "$ns_i" "$ip_j" && unroutable "$ns_j" "$ip_i"; then
      echo "ok block $i $j"
    else
      echo "err block $i $j: the blackhole routes are not both in place"
    fi
  else
    # Deleting a route that is not there fails; only the state afterwards counts.
    ip -n "$ns_i" route del blackhole "$ip_j/32" 2>/dev/null
    ip -n "$ns_j" route del blackhole "$ip_i/32" 2>/dev/null
    if ! blocked "$ns_i" "$ip_j" && ! blocked "$ns_j" "$ip_i"; then
      echo "ok unblock $i $j"
    else
      echo "err unblock $i $j: a blackhole route is still there"
    fi
  fi
}

while read -r -a cmd; do
  case "${cmd[0]:-}" in
    partition)
      if ! host_arg "${cmd[1]:-}"; then echo "err partition: host 1..$hosts expected"; continue; fi
      ip -n "$ns" link set eth0 down && [ "$(link_state "$ns")" = down ] \
        && echo "ok partition ${cmd[1]}" || echo "err partition ${cmd[1]}: link still up"
      ;;
    heal)
      if ! host_arg "${cmd[1]:-}"; then echo "err heal: host 1..$hosts expected"; continue; fi
      if ip -n "$ns" link set eth0 up && [ "$(link_state "$ns")" = up ] && wait_route "$ns"; then
        echo "ok heal ${cmd[1]}"
      else
        echo "err heal ${cmd[1]}: link or route not back"
      fi
      ;;
    links)
      states=()
      for ns in "${host_ns[@]}"; do states+=("$(link_state "$ns")"); done
      echo "ok links $(join "${states[@]}")"
      ;;
    block|unblock) set_block "${cmd[0]}" "${cmd[1]:-}" "${cmd[2]:-}" ;;
    quit) break ;;
    "") ;;
    *) echo "err unknown command \`${cmd[0]}\` (partition I, heal I, links, block I J, unblock I J, quit)" ;;
  esac
done
exit 0
