#!/usr/bin/env bash
# The test suite: the host suite, then the RDMA tests (-m rdma) on real verbs.
#
# RDMA tests need a verbs device. Where the host has one they run here. Otherwise they run in
# the Soft-RoCE testbed (QEMU VM with rdma_rxe; needs root) when CI is set or KDLAB_TESTBED=1,
# and then a testbed that cannot boot fails the run; there the multi-host tests (-m multihost)
# run too, in a second boot with 7 hosts. Elsewhere they are skipped, and this says
# how to run them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
"$PY" -m pytest "$@"
if "$PY" -m kdreal.testbed has-rdma >/dev/null 2>&1; then
  "$PY" -m pytest -m rdma -p no:cacheprovider tests/real
elif [ -n "${CI:-}" ] || [ "${KDLAB_TESTBED:-0}" = 1 ]; then
  "$PY" -m kdreal.testbed setup
  "$PY" -m kdreal.testbed run "$PY" -m pytest -q -m rdma -p no:cacheprovider -p no:hypothesispytest tests/real
  # kdreal across hosts: 7 hosts (3 brokers, 2 producers, 2 consumers), each with its own device and Dask worker
  "$PY" -m kdreal.testbed run --hosts 7 "$PY" -m pytest -q -m multihost -p no:cacheprovider -p no:hypothesispytest tests/real
else
  echo "RDMA tests skipped: no verbs device here. Run them in the Soft-RoCE testbed (root, QEMU):"
  echo "  KDLAB_TESTBED=1 bash scripts/test.sh"
fi
