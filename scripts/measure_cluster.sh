#!/usr/bin/env bash
# Measure kdreal on a real RDMA cluster and calibrate kdsim to it: scripts/measure_testbed.sh's steps, per cluster.
#
#   bash scripts/measure_cluster.sh HOSTS NAME [BASE]     # HOSTS: a hosts YAML file, or `testbed`
#
# 1. kdlab cluster check HOSTS: every device, port, GID, MTU, clock offset, and perftest between every pair.
# 2. kdreal's host costs on every host, and TCP between two of them -> kdsim/profiles/NAME.yaml (network and NIC
#    from BASE, default cx4-edr-100g) and results/measured/NAME-host-costs.csv.
# 3. The testbed sweeps (default experiments/testbed/*.yaml; set SPECS to choose) copied to experiments/clusters/NAME/
#    as NAME-* with profile NAME, and measured on the cluster (engine real) -> results/NAME-*/.
# 4. kdlab calibrate-kafka on those rows: fits FIT (default host.op_ns nic.tx_wqe_ns nic.pu_ns_per_byte) on the ends
#    of each series, prints every held-out point's error, writes kdsim/profiles/NAME-fit.yaml.
# Needs one Dask worker per host, named after it (docs/real-cluster.md).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bash scripts/measure_cluster.sh HOSTS NAME [BASE]" >&2; exit 2; }
HOSTS=$1 NAME=$2 BASE=${3:-cx4-edr-100g}
SPECS=${SPECS:-experiments/testbed/*.yaml}
FIT=${FIT:-host.op_ns nic.tx_wqe_ns nic.pu_ns_per_byte}
PY=.venv/bin/python
.venv/bin/kdlab cluster check "$HOSTS"
"$PY" -m kdreal.cluster_costs "$HOSTS" --csv "results/measured/$NAME-host-costs.csv" \
  --profile-out "kdsim/profiles/$NAME.yaml" --base "$BASE"
OUT=experiments/clusters/$NAME
mkdir -p "$OUT"
# shellcheck disable=SC2086
"$PY" - "$NAME" "$OUT" $SPECS <<'PYEOF'
import sys
from pathlib import Path

import yaml

name, out, specs = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
for path in specs:
    spec = yaml.safe_load(Path(path).read_text())
    spec["name"] = f"{name}-{spec['name'].removeprefix('testbed-')}"
    spec.update(engine="real", profile=name, main=False)
    spec["description"] = f"Measured on cluster {name}: {spec.get('description', '')}"
    (out / Path(path).name).write_text(yaml.safe_dump(spec, sort_keys=False))
    print(f"{out / Path(path).name}: {spec['name']}")
PYEOF
.venv/bin/kdlab run --hosts "$HOSTS" "$OUT"/*.yaml
# shellcheck disable=SC2046
.venv/bin/kdlab calibrate-kafka "$OUT"/*.yaml --base "$NAME" $(printf -- '--fit %s ' $FIT) --name "$NAME-fit" \
  --out "kdsim/profiles/$NAME-fit.yaml" --table "results/measured/$NAME-calibration.csv"
