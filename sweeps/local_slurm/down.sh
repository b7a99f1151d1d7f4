#!/usr/bin/env bash
# Stop what up.sh started, by the PID files it wrote (never by process name).
#   sweeps/local_slurm/down.sh            # same SLURM_DIR as up.sh (default ${TMPDIR:-/tmp}/latentgeo-slurm)
# Cancels the jobs first and waits for them to leave (KillWait=5), so no training process
# outlives the cluster. Logs stay in SLURM_DIR until the next up.sh.
SLURM_DIR=${SLURM_DIR:-${TMPDIR:-/tmp}/latentgeo-slurm}
export SLURM_CONF=$SLURM_DIR/slurm.conf

alive() { [[ -s $SLURM_DIR/$1.pid ]] && kill -0 "$(cat "$SLURM_DIR/$1.pid")" 2>/dev/null; }

if alive slurmctld; then
  timeout 10 scancel --full --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 1 40); do
    [[ -z $(timeout 5 squeue -h -o %i 2>/dev/null) ]] && break
    sleep 0.5
  done
fi
for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
  file=$SLURM_DIR/$daemon.pid
  [[ -s $file ]] || continue
  pid=$(cat "$file")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$file"
done
echo "slurm down ($SLURM_DIR)" >&2
true
