#!/usr/bin/env bash
# A real single-node SLURM (partitions cpu and gpu, one /dev/null-backed GPU GRES) for tests.
#   cluster.sh start   install slurmctld/slurmd/munge if missing, start them, wait for the node
#   cluster.sh stop    stop the daemons this script started (pid files in $SCGF_SLURM_DIR)
#   cluster.sh status  exit 0 when our cluster answers
# Needs root. Refuses to touch a SLURM it did not set up (other /etc/slurm/slurm.conf or daemons).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${SCGF_SLURM_DIR:-/run/scgf-slurm}"
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
export PATH="$PATH:/usr/sbin:/sbin"

say() { echo "cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

running() { ps -eo stat=,comm= | awk -v name="$1" '$1 !~ /^Z/ && $2 == name {found = 1} END {exit !found}'; }

ours() { [[ "$(readlink "$CONF" 2>/dev/null)" == "$DIR/slurm.conf" ]]; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    ((${#missing[@]} == 0)) && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

fill() {  # template -> file, with this node's fields
    local node_line
    node_line="$(slurmd -C | head -n1)"
    sed -e "s|@NODE@|$NODE|g" -e "s|@DIR@|$DIR|g" -e "s|@NODE_LINE@|$node_line|" \
        -e "s|@CTLD_PORT@|${SCGF_SLURMCTLD_PORT:-6817}|" -e "s|@SLURMD_PORT@|${SCGF_SLURMD_PORT:-6818}|" \
        "$1" >"$2"
}

wait_for_node() {
    for _ in $(seq 60); do
        state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true)"
        case "$state" in
            idle* | mixed* | allocated*) return 0 ;;
            down* | drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    die "node $NODE not ready (state '${state:-none}'); see $DIR/slurmctld.log and $DIR/slurmd.log"
}

start() {
    [[ "$(id -u)" == 0 ]] || die "needs root"
    if ours && alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
        say "already running ($DIR)"
        echo running
        return
    fi
    install_packages
    if [[ -e "$CONF" ]] && ! ours; then
        die "$CONF exists and is not ours: refusing to replace a SLURM configuration"
    fi
    if [[ -e "$GRES" && "$(readlink "$GRES")" != "$DIR/gres.conf" ]]; then
        die "$GRES exists and is not ours: refusing to replace it"
    fi
    if running slurmctld || running slurmd; then
        die "a slurmctld/slurmd not started by this script is running: refusing to start another"
    fi
    NODE="$(hostname -s)"
    mkdir -p "$DIR/ctld" "$DIR/slurmd" /etc/slurm
    chmod 700 "$DIR"
    [[ -s "$DIR/munge.key" ]] || dd if=/dev/urandom of="$DIR/munge.key" bs=1 count=1024 status=none
    chmod 600 "$DIR/munge.key"
    alive "$DIR/munged.pid" || munged --force --socket="$DIR/munge.socket" --key-file="$DIR/munge.key" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munged.seed"
    fill "$HERE/slurm.conf.in" "$DIR/slurm.conf"
    fill "$HERE/gres.conf.in" "$DIR/gres.conf"
    # The plugin's job step clears SLURM_CONF, so the config must sit at the default path.
    ln -sfn "$DIR/slurm.conf" "$CONF"
    ln -sfn "$DIR/gres.conf" "$GRES"
    slurmctld -c
    slurmd
    wait_for_node
    say "started: node $NODE, partitions $(sinfo -h -o %P | paste -sd,), state in $DIR"
    echo started
}

stop() {
    local name
    for name in slurmd slurmctld munged; do
        if alive "$DIR/$name.pid"; then
            kill "$(cat "$DIR/$name.pid")"
            for _ in $(seq 20); do alive "$DIR/$name.pid" || break; sleep 0.5; done
            say "stopped $name"
        fi
    done
    if ours; then rm -f "$CONF"; fi
    if [[ "$(readlink "$GRES" 2>/dev/null)" == "$DIR/gres.conf" ]]; then rm -f "$GRES"; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) ours && alive "$DIR/slurmctld.pid" && sinfo -h >/dev/null ;;
    *) die "usage: $0 start|stop|status" ;;
esac
