#!/usr/bin/env bash
# Detection quality on the labeled NAB subset: replay + evaluate with one configuration, for one or more seeds.
#   bash bench/nab.sh [CONFIG.toml] [SEEDS...]      e.g. bash bench/nab.sh configs/default.toml 0 1 2
#   STREAMRNN_VENV=/path/to/venv PYTHONPATH=$PWD bash bench/nab.sh ...   (skip scripts/bootstrap)
# NAB_DIR defaults to ../shared/nab-dev next to the repository. Results go to out/nab/<seed>/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# STREAMRNN_VENV: use this existing virtual environment (with PYTHONPATH set to the checkout) instead of bootstrap.
venv="${STREAMRNN_VENV:-$(bash "$root/scripts/bootstrap")}"
config="${1:-$root/configs/default.toml}"
shift || true
seeds=("${@:-0}")
nab="${NAB_DIR:-$root/../shared/nab-dev}"
export STREAMRNN_LOG__LEVEL=WARNING
mkdir -p "$root/out/nab"
for seed in "${seeds[@]}"; do
    out="$root/out/nab/$seed"
    rm -rf "$out"
    "$venv/bin/python" -m streamrnn replay "$nab/data" -o "$out" -c "$config" --seed "$seed" \
        --windows "$nab/labels/combined_windows.json" > "$out.replay.txt"
    "$venv/bin/python" -m streamrnn evaluate "$out" --windows "$nab/labels/combined_windows.json" --json > "$out.eval.json"
    tail -1 "$out.replay.txt"
done
"$venv/bin/python" - "$root/out/nab" "${seeds[@]}" <<'PY'
import json, statistics, sys
base, seeds = sys.argv[1], sys.argv[2:]
reports = [json.load(open(f"{base}/{s}.eval.json")) for s in seeds]
print(f"{'profile':<22} " + " ".join(f"seed {s:>4}" for s in seeds) + "     mean   spread")
for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
    scores = [r["profiles"][profile]["normalized"] for r in reports]
    spread = max(scores) - min(scores)
    print(f"{profile:<22} " + " ".join(f"{v:>9.2f}" for v in scores) + f" {statistics.mean(scores):>8.2f} {spread:>8.2f}")
ev = [r.get("event_windows") or {} for r in reports]
if ev and ev[0]:
    print("events: recall " + ", ".join(f"{e.get('recall', float('nan')):.3f}" for e in ev)
          + "; precision " + ", ".join(f"{e.get('precision', float('nan')):.3f}" for e in ev))
PY
