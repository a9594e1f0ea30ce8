#!/usr/bin/env bash
# A throw-away single-node Slurm cluster (munged, slurmctld, slurmd) for probe's Slurm test.
#
#   scripts/slurm-cluster.sh install       # as root: Debian's slurm-wlm and munge (apt-get)
#   scripts/slurm-cluster.sh start DIR     # as root: config, munge key and daemons under DIR
#   scripts/slurm-cluster.sh stop DIR      # stops the daemons started under DIR (by their pid files)
#
# After `start`, point clients at it with `export SLURM_CONF=DIR/slurm.conf`. Ports 16817/16818 and a
# private munge socket keep it clear of any system Slurm or munge.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-}"

die() { echo "slurm-cluster: $*" >&2; exit 2; }

case "$cmd" in
install)
  [ "$(id -u)" = 0 ] || die "install needs root"
  command -v apt-get >/dev/null || die "install needs apt-get"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  ;;
start)
  dir="${2:?usage: $0 start DIR}"
  [ "$(id -u)" = 0 ] || die "start needs root (SlurmUser=root)"
  for b in munged slurmctld slurmd sinfo; do command -v "$b" >/dev/null || die "$b not found (run: $0 install)"; done
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  chmod 700 "$dir/munge"
  host="$(hostname -s)"
  cpus="$(nproc)"
  mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"
  sed -e "s#@HOST@#$host#g" -e "s#@DIR@#$dir#g" -e "s#@CPUS@#$cpus#g" -e "s#@MEM@#$mem#g" \
    "$here/slurm.conf.in" > "$dir/slurm.conf"
  if [ ! -f "$dir/munge/munge.key" ]; then
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
  fi
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  for _ in $(seq 1 60); do
    if sinfo --noheader -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
      echo "SLURM_CONF=$SLURM_CONF"
      exit 0
    fi
    sleep 0.5
  done
  echo "slurm-cluster: the node did not come up; logs in $dir" >&2
  "$0" stop "$dir" || true
  exit 1
  ;;
stop)
  dir="${2:?usage: $0 stop DIR}"
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    if [ -f "$pidfile" ]; then
      pid="$(cat "$pidfile")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
  ;;
*)
  die "usage: $0 install | start DIR | stop DIR"
  ;;
esac
