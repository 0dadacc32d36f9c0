#!/usr/bin/env bash
# Measure kdreal in the Soft-RoCE testbed: its host costs (-> kdsim/profiles/kdreal-rxe-tcg.yaml),
# then the measured sweeps (default: every experiments/testbed/*.yaml; engine real -> results/testbed-*/).
# Needs root and QEMU (kdlab testbed setup). About 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
specs="${*:-experiments/testbed/*.yaml}"
.venv/bin/kdlab testbed setup
.venv/bin/kdlab testbed run -- bash -c "set -e
  .venv/bin/python -m kdreal.host_costs --profile-out kdsim/profiles/kdreal-rxe-tcg.yaml
  .venv/bin/kdlab run $specs"
