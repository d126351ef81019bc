#!/usr/bin/env bash
# One device call's worth of GPU work, step by step: bash benchmarks/gpu_pass.sh STEP [STEP ...]
# Every step writes its log (and CSV / ledger) under $OUT and is bounded by `timeout`, so a step that
# fails or runs long costs only itself. Steps: state kernel_tests warm_all wait_warm guardrail_full bench_a16w4
# bench_mx legality noise sweep executors multi_gpu baseline campaign campaign_finish splitk grid_a grid_b paths
# prefill_levers preload_levers open_levers first_call e4m3_error decode_pattern pack (WARM=0:
# the benches skip their own warm-up). Reads GPU state (NVML / nvidia-smi); never changes clocks or limits. Before each device call, here: commit, then
#   rm -rf .gitc && cp -r .git .gitc     and carry [".gitc", ".whl-ray"] (both in .git/info/exclude),
# and delete .gitc again once the call is back. Since session 25 the tree (37 MB tracked at 41094bc) and a .gitc
# (33 MB; 25 MB as a depth-1 clone's .git) pass the device tool's 64 MiB carry limit together: the steps that only
# name the commit (vs_peer's CSV, the logs) take MXMOE_COMMIT=<commit> instead, and .gitc is for the ledger steps.
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# Provenance: the device tool cannot carry .git (the machine keeps a stale one of its own), so a copy travels
# as .gitc and the device command, not this script, swaps it in and resets the tree to that commit:
#   rm -rf .git && cp -r .gitc .git && git checkout -q -- . && git clean -fdq
# (never here: in the developer's checkout that swap would replace .git with the older copy).
# Wheels the image lacks travel in .whl-ray (Ray without its Java jars, and jsonschema's family); the image's
# own typer / rich / hypothesis / ml-dtypes are used as they are (a newer carried typer needs pydantic).
export PYTHONPATH=src
if [ -d .whl-ray ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl-ray/*.whl >/dev/null 2>&1 && export PYTHONPATH=src:/tmp/site || echo "ray wheel install failed"
fi
MX="python3 -m mxmoe.cli"
LEDGER=$OUT/mxmoe.sqlite
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }

step_state() {
  stamp state
  git --version; git rev-parse HEAD; git status --porcelain | head
  nvidia-smi --query-gpu=name,uuid,driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.applications.graphics,power.draw,power.limit,temperature.gpu,utilization.gpu --format=csv
  $MX doctor
}

step_kernel_tests() {
  # 4 xdist workers: their compiles overlap. Each worker keeps one full-size Problem alive (test_moe_gpu's
  # `problems`, up to kimi-k2's weights); at 8 workers the H100 run at 0d72a8a failed 108 of 247 tests, all names
  # the log kept in decode split-K tests whose configs had not changed (out of GPU memory suspected, the log's
  # error text was cut); at 4 the same suite ran 88% in 170 s without a failure (14d8168).
  stamp "kernel tests (pytest -m gpu, 4 xdist workers)"
  timeout "${TESTS_S:-300}" python3 -m pytest -m gpu -v -n 4 -p no:cacheprovider -rfE --durations=20 tests \
    --ignore=tests/tuning/test_measure_gpu.py 2>&1 | tee "$OUT/pytest_gpu.log" | tail -25
  stamp "timing tests alone on the GPU (they skip themselves beside other work)"
  timeout 120 python3 -m pytest -m gpu -v -p no:cacheprovider -rA tests/tuning/test_measure_gpu.py 2>&1 \
    | tee "$OUT/pytest_gpu_timing.log" | tail -15
}

step_warm_all() {
  stamp "warm the Triton cache for both benches in the background"
  (timeout 200 python3 benchmarks/warm_cache.py --model gpt-oss-20b,gpt-oss-120b,deepseek-v3,kimi-k2 --path a16w4 \
     --tokens grid --jobs 4; timeout 120 python3 benchmarks/warm_cache.py --model gpt-oss-120b,deepseek-v3 \
     --path a8w4,a4w4 --tokens "${MX_TOKENS:-grid}" --jobs 4) > "$OUT/warm.log" 2>&1 &
  WARM_PID=$!
}

step_wait_warm() {
  stamp "wait for the warm-up"
  wait "${WARM_PID:-}" 2>/dev/null
  cat "$OUT/warm.log"
}

step_guardrail_full() {
  stamp "guardrail, real model sizes (full attention and vocab), every path"
  for m in gpt-oss deepseek-v3; do
    for p in a16w4 a8w4 a4w4; do
      echo "== $m $p full" >> "$OUT/guardrail.log"
      timeout "${GUARD_S:-60}" $MX guardrail --model $m --path $p --layers 2 --full --json >> "$OUT/guardrail.log" 2>&1
    done
  done
  grep -E '"(model|path|outcome|logits_diff|agreement)"' "$OUT/guardrail.log" | head -40
}

step_bench_a16w4() {
  stamp "bench a16w4, four models, full grid"
  [ "${WARM:-1}" = 0 ] || timeout "${WARM_S:-120}" python3 benchmarks/warm_cache.py --model gpt-oss-20b,gpt-oss-120b,deepseek-v3,kimi-k2 --path a16w4 \
    --tokens grid --jobs 4
  stamp "warm done"
  timeout "${BENCH_A16_S:-330}" python3 benchmarks/bench_moe.py --model gpt-oss-20b,gpt-oss-120b,deepseek-v3,kimi-k2 \
    --path a16w4 --tokens grid --max-time-s 0.5 --min-iters 10 --deadline-s "${BENCH_A16_DEADLINE_S:-300}" \
    --csv "$OUT/bench_a16w4.csv" 2>&1 | tee "$OUT/bench_a16w4.log"
}

step_bench_mx() {
  stamp "bench a8w4 a4w4, gpt-oss-120b and deepseek-v3, ${MX_TOKENS:-grid}"
  [ "${WARM:-1}" = 0 ] || timeout "${WARM_S:-90}" python3 benchmarks/warm_cache.py --model gpt-oss-120b,deepseek-v3 --path a8w4,a4w4 --tokens grid --jobs 4
  stamp "warm done"
  timeout "${BENCH_S:-240}" python3 benchmarks/bench_moe.py --model gpt-oss-120b,deepseek-v3 --path a8w4,a4w4 \
    --tokens "${MX_TOKENS:-grid}" --max-time-s 0.5 --min-iters 10 --deadline-s "${BENCH_DEADLINE_S:-220}" \
    --csv "$OUT/bench_mx.csv" 2>&1 | tee "$OUT/bench_mx.log"
}

step_legality() {
  stamp "legality: sampled wide space, compile + load + launch on the H100"
  timeout "${LEGALITY_S:-230}" python3 benchmarks/validate_legality.py --per-combo "${PER_COMBO:-24}" \
    --deadline-s "$(( ${LEGALITY_S:-230} - 40 ))" --out "$OUT/h100_wide.csv" 2>&1 | tail -40 | tee "$OUT/legality.log"
}

step_noise() {
  stamp "noise A/A (the do_bench cross-check is a GPU test: kernel_tests)"
  timeout 120 $MX noise --model deepseek-v3 --path a16w4 --tokens 1,128,4096 --rounds 5 2>&1 | tee "$OUT/noise.log"
}

step_sweep() {
  stamp "sweep deepseek-v3 a16w4 T=1,128,4096: baseline, tune, claim, scan, export"
  local args=(--model deepseek-v3 --path a16w4 --tokens 1,128,4096 --ledger "$LEDGER")
  timeout 120 $MX sweep "${args[@]}" --campaign dsv3-base --baseline-only 2>&1 | tail -25 | tee "$OUT/sweep.log"
  timeout "${SWEEP_S:-240}" $MX sweep "${args[@]}" --campaign dsv3-tune --baseline dsv3-base --limit "${LIMIT:-8}" \
    2>&1 | tail -30 | tee -a "$OUT/sweep.log"
  $MX claim dsv3-tune --baseline dsv3-base --ledger "$LEDGER" 2>&1 | tee -a "$OUT/sweep.log"
  $MX ledger scan --ledger "$LEDGER" 2>&1 | tail -15 | tee -a "$OUT/sweep.log"
  $MX export dsv3-tune --ledger "$LEDGER" --out-dir "$OUT/tuned" --ledger-export "$OUT/dsv3-tune.ledger.csv" \
    --allow-nonclaimable 2>&1 | tail -15 | tee -a "$OUT/sweep.log"
}

step_executors() {
  stamp "executors on one H100: the same small sweep through local, host and ray, each claimed against one baseline"
  local args=(--model gpt-oss-20b --path a16w4 --tokens 1,128 --ledger "$LEDGER")
  timeout 90 $MX sweep "${args[@]}" --campaign ex-base --baseline-only 2>&1 | tail -3 | tee "$OUT/executors.log"
  for ex in local host ray; do
    timeout 150 $MX sweep "${args[@]}" --campaign "ex-$ex" --baseline ex-base --limit 3 --executor $ex 2>&1 \
      | tail -12 | tee -a "$OUT/executors.log"
    $MX claim "ex-$ex" --baseline ex-base --ledger "$LEDGER" 2>&1 | tail -4 | tee -a "$OUT/executors.log"
  done
}

step_multi_gpu() {
  stamp "issue 11: one small sweep on one GPU (local), then on every GPU (host, ray); ledgers merged, each claimed"
  # Each run compiles into its own empty Triton cache, so rows/s compares like with like (a run after another
  # would reuse the first one's compiles).
  local args=(--model deepseek-v3 --path a16w4 --tokens 1,128,4096 --limit "${MG_LIMIT:-12}")
  local first=${CUDA_VISIBLE_DEVICES:-0}; first=${first%%,*}
  CUDA_VISIBLE_DEVICES=$first TRITON_CACHE_DIR=/tmp/tc-mg-base timeout 90 $MX sweep "${args[@]}" --campaign mg-base --baseline-only \
    --ledger "$OUT/mg-local.sqlite" 2>&1 | tail -3 | tee "$OUT/multi_gpu.log"
  cp "$OUT/mg-local.sqlite" "$OUT/mg-host.sqlite"; cp "$OUT/mg-local.sqlite" "$OUT/mg-ray.sqlite"
  for ex in local host ray; do
    stamp "multi_gpu $ex"
    local pin=(env TRITON_CACHE_DIR="/tmp/tc-mg-$ex"); [ $ex = local ] && pin+=(CUDA_VISIBLE_DEVICES="$first")
    timeout "${MG_S:-150}" "${pin[@]}" $MX sweep "${args[@]}" --campaign "mg-$ex" --baseline mg-base --executor $ex \
      --ledger "$OUT/mg-$ex.sqlite" 2>&1 | tail -16 | tee -a "$OUT/multi_gpu.log"
  done
  cp "$OUT/mg-local.sqlite" "$OUT/mg.sqlite"
  for ex in host ray; do $MX ledger merge "$OUT/mg-$ex.sqlite" --ledger "$OUT/mg.sqlite" 2>&1 | tail -3 | tee -a "$OUT/multi_gpu.log"; done
  for ex in local host ray; do
    timeout 120 $MX guardrail --campaign "mg-$ex" --model deepseek-v3 --path a16w4 --ledger "$OUT/mg.sqlite" 2>&1 \
      | tail -8 | tee -a "$OUT/multi_gpu.log"
    $MX claim "mg-$ex" --baseline mg-base --ledger "$OUT/mg.sqlite" 2>&1 | tail -6 | tee -a "$OUT/multi_gpu.log"
  done
  $MX ledger scan --ledger "$OUT/mg.sqlite" 2>&1 | tail -8 | tee -a "$OUT/multi_gpu.log"
  $MX ledger export "$OUT/mg.ledger.csv" --ledger "$OUT/mg.sqlite" | tail -2
  rm -f "$OUT"/mg-*.sqlite
}

step_baseline() {
  # The validated baseline (issues 9 and 13): the heuristic's config per (model, path, T), measured by the sweep
  # (compile, correctness under three routings, graph-replay timing with provenance). COMBOS="model:path ..."
  stamp "baseline $CAMPAIGN: $COMBOS, tokens ${BASE_TOKENS:-grid}"
  local c
  for c in $COMBOS; do
    timeout "${BASE_S:-200}" $MX sweep --model "${c%%:*}" --path "${c##*:}" --tokens "${BASE_TOKENS:-grid}" \
      --campaign "$CAMPAIGN" --baseline-only --ledger "$OUT/$CAMPAIGN.sqlite" 2>&1 | tail -12 | tee -a "$OUT/$CAMPAIGN.log"
    stamp "baseline $c done"
  done
  $MX ledger scan --ledger "$OUT/$CAMPAIGN.sqlite" 2>&1 | tail -8 | tee -a "$OUT/$CAMPAIGN.log"
}

left() {  # seconds to the call's DEADLINE (epoch s; unset: the given default), capped at $1
  local cap=$1
  [ -z "${DEADLINE:-}" ] && { echo "$cap"; return; }
  local l=$(( DEADLINE - $(date +%s) ))
  [ "$l" -lt "$cap" ] && cap=$l
  [ "$cap" -lt 1 ] && cap=1
  echo "$cap"
}

step_campaign() {
  # A tuning campaign (issues 9 and 13) over COMBOS="model:path ...", in phases that each resume: every combo's
  # heuristic baseline first (cheap, and the gate's coverage), then every combo's sweep (LIMIT candidates per T,
  # regime neighbours first), each bounded by DEADLINE so the call ends in time; RESUME=ledger.sqlite continues an
  # earlier call's ledger, SKIP_BASE=1 skips the baseline phase. ROUTING (default uniform) is the measured routing.
  # `campaign_finish` judges it.
  local c m p led="${LEDGER_FILE:-$OUT/$CAMPAIGN.sqlite}" log="$OUT/$CAMPAIGN.log"
  local sweep=(--tokens "${TOKENS:-grid}" --executor "${EXECUTOR:-host}" --ledger "$led" --routing "${ROUTING:-uniform}"
               ${SWEEP_FLAGS:-})  # e.g. SWEEP_FLAGS=--retry-nonclaimable
  [ -n "${RESUME:-}" ] && [ ! -f "$led" ] && cp "$RESUME" "$led"
  for c in $COMBOS; do
    [ "${SKIP_BASE:-0}" = 1 ] && break  # a resumed call whose baselines are all in
    m=${c%%:*}; p=${c##*:}
    stamp "baseline $CAMPAIGN-base: $m $p"
    timeout "$(left "${BASE_S:-200}")" $MX sweep --model "$m" --path "$p" "${sweep[@]}" --campaign "$CAMPAIGN-base" \
      --baseline-only 2>&1 | tail -3 | tee -a "$log"
  done
  for c in $COMBOS; do
    m=${c%%:*}; p=${c##*:}
    stamp "campaign $CAMPAIGN: $m $p"
    timeout "$(left "${TUNE_S:-300}")" $MX sweep --model "$m" --path "$p" "${sweep[@]}" --campaign "$CAMPAIGN" \
      --baseline "$CAMPAIGN-base" --limit "${LIMIT:-4}" 2>&1 | tail -6 | tee -a "$log"
  done
  $MX ledger scan --ledger "$led" 2>&1 | tail -6 | tee -a "$log"
}

step_campaign_finish() {
  # Guard each (family, path)'s winners once (those that are not the baseline's own config; GUARD_FLAGS=--small
  # keeps the real MoE dims with tiny attention and vocab), then both claim profiles, the scan, the export and the report.
  local c fam p led="${LEDGER_FILE:-$OUT/$CAMPAIGN.sqlite}" log="$OUT/$CAMPAIGN.log"
  [ -n "${RESUME:-}" ] && [ ! -f "$led" ] && cp "$RESUME" "$led"
  for c in $(for c in $COMBOS; do m=${c%%:*}; case $m in gpt-oss*) echo "gpt-oss:${c##*:}" ;; *) echo "deepseek-v3:${c##*:}" ;; esac; done | sort -u); do
    fam=${c%%:*}; p=${c##*:}
    stamp "guardrail $CAMPAIGN: $fam $p"
    timeout "$(left "${GUARD_S:-240}")" $MX guardrail --campaign "$CAMPAIGN" --baseline "$CAMPAIGN-base" --model "$fam" \
      --path "$p" --ledger "$led" ${GUARD_FLAGS:-} 2>&1 | tail -12 | tee -a "$log"
  done
  for prof in mxmoe seed708; do
    $MX claim "$CAMPAIGN" --baseline "$CAMPAIGN-base" --profile "$prof" --ledger "$led" 2>&1 | tail -30 | tee -a "$log"
  done
  $MX ledger scan --ledger "$led" 2>&1 | tail -6 | tee -a "$log"
  $MX export "$CAMPAIGN" --baseline "$CAMPAIGN-base" --ledger "$led" --out-dir "$OUT/tuned" \
    --ledger-export "$OUT/$CAMPAIGN.ledger.csv" 2>&1 \
    | tail -8 | tee -a "$log"
  $MX report "$CAMPAIGN" --baseline "$CAMPAIGN-base" --ledger "$led" -o "$OUT/report" 2>&1 | tail -12 | tee -a "$log"
}

step_splitk() {
  # Split-K at decode: correctness of both stages' splits on the GPU, then the scan that decides the heuristic.
  local models=${SCAN_MODELS:-gpt-oss-20b,deepseek-v3,deepseek-v3-tp8} m pids=()
  stamp "split-K GPU tests, and the scan's compiles warmed in parallel (one process per model, untimed)"
  for m in ${models//,/ }; do
    timeout 240 python3 benchmarks/scan_splitk.py --model "$m" --path "${SCAN_PATHS:-a16w4}" \
      --tokens "${SCAN_TOKENS:-1,4,16}" --warm-only > "$OUT/warm_$m.log" 2>&1 &
    pids+=($!)
  done
  timeout 240 python3 -m pytest -m gpu -v -n 6 -p no:cacheprovider -rfE tests/kernels/test_moe_gpu.py -k split_k \
    2>&1 | tee "$OUT/pytest_splitk.log" | tail -6
  wait "${pids[@]}"
  stamp "split-K decode scan: $models"
  timeout "${SCAN_S:-240}" python3 benchmarks/scan_splitk.py --model "$models" --path "${SCAN_PATHS:-a16w4}" \
    --tokens "${SCAN_TOKENS:-1,4,16}" --max-time-s 0.3 --csv "$OUT/splitk.csv" 2>&1 | tee "$OUT/splitk.log"
}

step_grid() {
  # Issue 21's side-by-side grid (benchmarks/vs_peer.py; the peer carried as .peers) over GRID_T on GRID_PATH.
  # One call holds about half the grid: run grid_a and grid_b in two calls, then here merge their CSVs with
  # `python benchmarks/vs_peer_merge.py A.csv B.csv -o results/<device>/<date>_vs_peer_<commit>.csv`.
  # MXMOE_COMMIT names the tree in the CSV (the device's own git is stale unless .gitc was swapped in).
  stamp "vs_peer grid: T=$GRID_T ${GRID_PATH:-a16w4} commit ${MXMOE_COMMIT:-(git)}"
  PYTHONPATH=src:.peers:${PYTHONPATH:-} timeout "$(( ${GRID_DEADLINE_S:-420} + 60 ))" python3 benchmarks/vs_peer.py \
    --model all --tokens "$GRID_T" --path "${GRID_PATH:-a16w4}" --scope experts --max-time-s 0.5 \
    --deadline-s "${GRID_DEADLINE_S:-420}" --out-dir "$OUT" 2>&1 | tee "$OUT/vs_peer.log" | grep -v "^ *$" | tail -16
}

step_grid_a() { GRID_T=16,256,4096,32768 step_grid; }
step_grid_b() { GRID_T=1,2,4,8,32,64,128,512,1024,2048,8192,16384 step_grid; }
# The MX-path bar (a8w4 / a4w4 within 5% of a16w4 at the same point) needs the three paths in one run: 87 points
# in about 240 s on the H100 (session 18, results/h100/2026-12-07_vs_peer_paths_9b7d258.csv).
step_paths() { GRID_T=${PATHS_T:-1,2,16,4096} GRID_PATH=a16w4,a8w4,a4w4 GRID_DEADLINE_S=${GRID_DEADLINE_S:-280} step_grid; }

step_prefill_levers() {
  # Issue 21's prefill bar, 3 rounds: padding at kimi-k2 T=4096 (85 rows an expert: BLOCK_M 64 with 32-row tails,
  # heuristic.BM64_MAX_ROWS=96) and the tail by rows per expert (heuristic.TAIL_BY_ROWS). Both compile unserialized
  # for sm_90 (results/cpu/2026-12-08_open_levers_sm90_*.txt).
  stamp "prefill levers: padding"
  (cd benchmarks && timeout "${LEVERS_S:-200}" python3 rule_ab.py kimi-k2:4096 deepseek-v3:4096 gpt-oss-120b:4096 \
     deepseek-v3:8192 kimi-k2:8192 deepseek-v3:2048 --variant now: --variant bm96:heuristic.BM64_MAX_ROWS=96 \
     --variant tailrule:heuristic.TAIL_BY_ROWS=1 --rounds 3 \
     --csv "$OUT/prefill_levers.csv" 2>&1 | tee "$OUT/prefill_levers.log" | cut -c1-140)
}

step_preload_levers() {
  # The direct decode's stage-2 footprint beside stage 1 (fewer preloaded K steps, fewer registers), 3 rounds.
  stamp "direct preload levers"
  (cd benchmarks && timeout "${LEVERS_S:-200}" python3 rule_ab.py deepseek-v4-tp8:1 deepseek-v4-tp8:1:a8w4 \
     deepseek-v3-tp8:1 kimi-k2-tp8:1 --variant now: --variant pre2:DIRECT_PRELOAD_STEPS=2 \
     --variant pre1:DIRECT_PRELOAD_STEPS=1 --rounds 3 --csv "$OUT/preload_ab.csv" 2>&1 | tee "$OUT/preload_ab.log" \
     | cut -c1-140)
}

step_open_levers() { step_prefill_levers; step_preload_levers; }

step_first_call() {
  # What session 25 meant to run first and could not (no device lent): the GPU suite at HEAD's defaults (the
  # timing tests apart), the prefill levers and the e4m3 error study, in one call of about 9.5 minutes.
  TESTS_S=${TESTS_S:-265}
  stamp "kernel tests (pytest -m gpu, 4 xdist workers, no timing tests)"
  timeout "$TESTS_S" python3 -m pytest -m gpu -q -n 4 -p no:cacheprovider -rfE tests \
    --ignore=tests/tuning/test_measure_gpu.py > "$OUT/pytest_gpu.log" 2>&1
  tail -8 "$OUT/pytest_gpu.log"
  LEVERS_S=${LEVERS_S:-190} step_prefill_levers
  E4M3_S=${E4M3_S:-110} step_e4m3_error
}

step_e4m3_error() {
  # Issue 23: where the e4m3 stage-1 error comes from (decode against prefill tiles, the partial last K step).
  stamp "e4m3 error study"
  timeout "${E4M3_S:-150}" python3 benchmarks/e4m3_error.py gpt-oss-20b:32 gpt-oss-20b:32:2816 gpt-oss-20b:1024 \
    deepseek-v3:32 2>&1 | tee "$OUT/e4m3_error.log" | tail -30
}

step_decode_pattern() {
  # Issue 21's decode bar: is the direct stage 1 bound by its DRAM access pattern (benchmarks/decode_pattern.py
  # says how to read it), then ncu's memory view of the real stages beside the pattern reads.
  stamp "decode pattern: stage 1's bytes read four ways, beside both real stages (on each layout)"
  timeout "${PATTERN_S:-150}" python3 benchmarks/decode_pattern.py deepseek-v4-tp8:1 deepseek-v4-tp8:1:a16w4:nmajor \
    deepseek-v3-tp8:1 kimi-k2-tp8:1 --csv "$OUT/decode_pattern.csv" 2>&1 | tee "$OUT/decode_pattern.log" | tail -28
  stamp "ncu: both stages and the pattern reads at deepseek-v4-tp8 T=1"
  timeout "${NCU_S:-150}" /usr/local/cuda/bin/ncu --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section Occupancy --section WarpStateStats -k regex:"_direct1_kernel|_direct2_kernel|_read_kernel" --launch-count 14 \
    python3 benchmarks/decode_pattern.py deepseek-v4-tp8:1 --plain 2 > "$OUT/decode_pattern_ncu.txt" 2>&1
  grep -E "^  [_a-z]|Duration|DRAM Throughput|Memory Throughput|L2 Hit|Achieved Occupancy|Registers Per" \
    "$OUT/decode_pattern_ncu.txt" | head -60
  stamp "the direct stages on the N-major copies (rules.DIRECT1_N_MAJOR / DIRECT2_N_MAJOR), whole layer, 3 rounds"
  (cd benchmarks && timeout "${NMAJOR_S:-150}" python3 rule_ab.py deepseek-v4-tp8:1:a16w4:nmajor \
     deepseek-v4-tp8:1:a8w4:nmajor deepseek-v3-tp8:1:a16w4:nmajor kimi-k2-tp8:1:a16w4:nmajor \
     deepseek-v4-tp8:2:a16w4:nmajor --variant nmajor: --variant s1only:DIRECT2_N_MAJOR=0 \
     --variant kmajor:DIRECT1_N_MAJOR=0,DIRECT2_N_MAJOR=0 --rounds 3 \
     --csv "$OUT/nmajor_ab.csv" 2>&1 | tee "$OUT/nmajor_ab.log" | cut -c1-140)
}

step_pack() {
  # At most 8 files come back from the device: each per-GPU folder travels as one archive.
  local d
  for d in "$OUT"/*/; do [ -d "$d" ] && tar czf "${d%/}.tgz" -C "$OUT" "$(basename "$d")" && rm -rf "$d"; done
  ls -la "$OUT"
}

for s in "$@"; do "step_$s"; done
stamp "all done"
