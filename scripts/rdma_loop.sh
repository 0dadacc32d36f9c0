#!/usr/bin/env bash
# Run the RDMA suite (pytest -m rdma tests/real) N times in a row to catch flakes; stop at the first failure.
#
#   bash scripts/rdma_loop.sh [N] [PYTEST_ARGS...]     # N defaults to 10
#
# Where the host has a verbs device the suite runs here; otherwise each run boots the Soft-RoCE testbed
# (`kdlab testbed setup` must have been run once). Each run's output goes to $RDMA_LOOP_LOGS/run-K.log
# (default /tmp/kdlab-rdma-loop); a failing run's tail is printed. Ends with "K of N passed"; exit 0 only if
# all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-10}
shift $(($# > 0 ? 1 : 0))
PY=.venv/bin/python
LOGS=${RDMA_LOOP_LOGS:-/tmp/kdlab-rdma-loop}
mkdir -p "$LOGS"
PYTEST=("$PY" -m pytest -q -m rdma -p no:cacheprovider -p no:hypothesispytest tests/real "$@")
if "$PY" -m kdreal.testbed has-rdma >/dev/null 2>&1; then
  RUN=("${PYTEST[@]}")
else
  RUN=("$PY" -m kdreal.testbed run "${PYTEST[@]}")
fi
passed=0
for ((k = 1; k <= N; k++)); do
  log="$LOGS/run-$k.log"
  start=$SECONDS
  if "${RUN[@]}" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "run $k: passed ($((SECONDS - start)) s): $(tail -n 1 "$log")"
  else
    echo "run $k: FAILED ($((SECONDS - start)) s), log $log:"
    tail -n 40 "$log"
    break
  fi
done
echo "$passed of $N passed"
[ "$passed" -eq "$N" ]
