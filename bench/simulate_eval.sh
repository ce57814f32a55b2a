#!/usr/bin/env bash
# Detection quality on the simulator's labeled streams: simulate (NAB layout, seeded) -> replay -> evaluate --truth,
# printing event precision and recall per anomaly kind (spike, level_shift, flatline, gap, drift).
#   bash bench/simulate_eval.sh [CONFIG.toml] [SEEDS...]          e.g. bash bench/simulate_eval.sh configs/default.toml 0 1 2
#   SIM_STREAMS=50 SIM_LENGTH=4000 STREAMRNN_VENV=/path/to/venv PYTHONPATH=$PWD bash bench/simulate_eval.sh ...
# Results go to out/sim/<seed>/ (data, truth, replay output, eval.json).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${STREAMRNN_VENV:-$(bash "$root/scripts/bootstrap")}"
config="${1:-$root/configs/default.toml}"
shift || true
seeds=("${@:-0}")
streams="${SIM_STREAMS:-50}"
length="${SIM_LENGTH:-4000}"
export STREAMRNN_LOG__LEVEL=WARNING
mkdir -p "$root/out/sim"
for seed in "${seeds[@]}"; do
    base="$root/out/sim/$seed"
    rm -rf "$base"
    "$venv/bin/python" -m streamrnn simulate -o "$base/truth" --streams "$streams" --length "$length" --seed "$seed" \
        --format nab > /dev/null
    "$venv/bin/python" -m streamrnn replay "$base/truth/data" -o "$base/results" -c "$config" --seed "$seed" \
        > "$base/replay.txt"
    "$venv/bin/python" -m streamrnn evaluate "$base/results" --windows "$base/truth/windows.json" \
        --truth "$base/truth/anomalies.json" --json > "$base/eval.json"
    tail -1 "$base/replay.txt"
done
"$venv/bin/python" - "$root/out/sim" "${seeds[@]}" <<'PY'
import json, sys
base, seeds = sys.argv[1], sys.argv[2:]
reports = [json.load(open(f"{base}/{s}/eval.json")) for s in seeds]
kinds = list(dict.fromkeys(k for r in reports for k in (r.get("kinds") or {})))
def ratio(a, b):
    return f"{a / b:.3f}" if b else "  -  "
print(f"{'kind':<12} {'labels':>6} {'recall':>7} {'same kind':>9} {'events':>6} {'precision':>9}   per seed recall / precision")
for k in kinds:
    rows = [r["kinds"].get(k, {}) for r in reports]
    lab = sum(x.get("labels", 0) for x in rows); det = sum(x.get("detected", 0) for x in rows)
    mat = sum(x.get("matched", 0) for x in rows)
    ev = sum(x.get("events", 0) for x in rows); tru = sum(x.get("true_events", 0) for x in rows)
    per = "  ".join(f"{ratio(x.get('detected', 0), x.get('labels', 0))}/{ratio(x.get('true_events', 0), x.get('events', 0))}"
                    for x in rows)
    print(f"{k:<12} {lab:>6} {ratio(det, lab):>7} {ratio(mat, lab):>9} {ev:>6} {ratio(tru, ev):>9}   {per}")
ew = [r.get("event_windows") or {} for r in reports]
print("all events: recall " + ", ".join(f"{e.get('recall') or 0:.3f}" for e in ew)
      + "; precision " + ", ".join(f"{e.get('precision') or 0:.3f}" for e in ew))
print("NAB standard on the simulated streams: " + ", ".join(f"{r['profiles']['standard']['normalized']:.2f}" for r in reports))
PY
