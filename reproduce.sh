#!/usr/bin/env bash
# flatness: set up the environment if needed, then run one mode.
#   ./reproduce.sh            the protocols' final runs (committed learning rates), verdicts, audit,
#                             the correlation study (conf/study/jiang.yaml), report
#   ./reproduce.sh test [...] lint, format check and the test suite (extra args go to pytest)
#   ./reproduce.sh full       the same at each protocol's full scale, search included (sized for one GPU)
#   ./reproduce.sh tune       the learning-rate search of every protocol in conf/protocol (on validation)
#   ./reproduce.sh report     REPORT.md and every figure (with its CSV) from the committed tables alone
#   ./reproduce.sh robust     the robustness runs the committed records (results/records) lack, then
#                             the robustness tables from those records, then the report
#   ./reproduce.sh intervention  SAM at the large batch (conf/protocol/intervention.yaml): its search,
#                             runs and a family of its own -> results/tables/alone/intervention/
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\033[1m[reproduce]\033[0m %s\n' "$*"; }
die() { printf '[reproduce] error: %s\n' "$*" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
# Sweeps run through Hydra's joblib launcher, JOBS runs at a time (default: every core), each on
# one thread, so a sweep's result files are the same whatever JOBS is.
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
VENV=.venv
STAMP=$VENV/.installed-pyproject.sha256

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python >= 3.10 or set PYTHON="
        say "creating $VENV with $($PYTHON --version 2>&1)"
        "$PYTHON" -m venv "$VENV" || die "could not create $VENV"
    fi
    local want have
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    have=$(cat "$STAMP" 2>/dev/null || true)
    if [ "$want" != "$have" ]; then
        say "installing the project and its dependencies into $VENV (first time: a few minutes)"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip || die "pip upgrade failed"
        "$VENV/bin/python" -m pip install --quiet -e ".[dev]" || die "pip install failed"
        echo "$want" > "$STAMP"
    else
        say "environment up to date ($VENV)"
    fi
}

# The claims, then the deck's explanations (averaged_sharpness measures the runs of batch_size and
# batch_norm, adam_escape continues those of optimizer, so they come after them)
PROTOCOLS="batch_size optimizer visualisation batch_norm adam_escape averaged_sharpness"
# The protocols whose verdicts are re-read under other rates and endpoints (their robustness block)
ROBUST_PROTOCOLS="batch_size optimizer"

reproduce() {  # $1: quick | full. Final runs at the committed learning rates, verdicts, audit, report
    local scale=$1 start=$SECONDS py="$VENV/bin/python" results=results
    [ "$scale" = full ] && results=results/full
    local common=(--scale "$scale" --tables "$results/tables" --jobs "$JOBS")
    for protocol in $PROTOCOLS; do
        say "[$((SECONDS - start))s] protocol $protocol: final runs ($JOBS at a time)"
        $py -m experiments.protocol run "$protocol" "${common[@]}" \
            || die "the final runs of $protocol failed (a missing table? run ./reproduce.sh tune)"
    done
    say "[$((SECONDS - start))s] verdicts (one Holm family over every protocol)"
    $py -m experiments.protocol verdicts $PROTOCOLS "${common[@]}" | tail -n 1
    local suffix="" metrics=audit subset=(--subset 4000) alphas=(--alphas 0.01 1 100)
    [ "$scale" = full ] && suffix=_full metrics=full subset=() alphas=()
    say "[$((SECONDS - start))s] scale-invariance audit of two final runs (batch 64 and 1600, seed 0)"
    $py -m experiments.analyse.audit --metrics "$metrics" "${subset[@]}" "${alphas[@]}" --out "$results" --protocol-run \
        "batch_size$suffix/momentum_small/0" "batch_size$suffix/momentum_large/0" | tail -n 1
    say "[$((SECONDS - start))s] Wilson et al.'s counter-example"
    $py -m experiments.analyse.wilson --out "$results/tables" > /dev/null
    local studies=jiang
    [ "$scale" = full ] && studies="jiang_full jiang_cnn_full"
    for study in $studies; do
        say "[$((SECONDS - start))s] correlation study $study: train and measure the grid ($JOBS at a time)"
        $py -m experiments.study run "$study" --jobs "$JOBS" || die "the runs of study $study failed"
        $py -m experiments.study rank "$study" --out "$results/tables" | tail -n 2
    done
    say "[$((SECONDS - start))s] report"
    $py -m experiments.report --results "$results"
    say "done in $((SECONDS - start))s: $results/REPORT.md"
}

mode=${1:-quick}
[ $# -gt 0 ] && shift
case "$mode" in
    quick)
        setup
        say "quick reproduction: the protocols' final runs at the committed learning rates, verdicts, audit, correlation study, report"
        reproduce quick
        ;;
    test)
        setup
        say "ruff check"
        "$VENV/bin/ruff" check .
        say "ruff format --check"
        "$VENV/bin/ruff" format --check .
        say "pytest"
        "$VENV/bin/python" -m pytest "$@"
        ;;
    full)
        setup
        say "full reproduction: each protocol's full scale (more data, wider model), sized for one GPU"
        for protocol in $PROTOCOLS; do
            "$VENV/bin/python" -m experiments.protocol tune "$protocol" --scale full \
                --tables results/full/tables --jobs "$JOBS" || die "the search of ${protocol}_full failed"
        done
        reproduce full
        ;;
    tune)
        setup
        say "learning-rate search of every protocol on validation ($JOBS runs at a time; about 1.5 h on 2 cores)"
        start=$SECONDS
        for protocol in $PROTOCOLS; do
            "$VENV/bin/python" -m experiments.protocol tune "$protocol" --jobs "$JOBS" "$@" \
                || die "the search of $protocol failed"
            say "[$((SECONDS - start))s] searched $protocol"
        done
        say "done: results/tables/lr_<protocol>.csv|md (commit them; final runs read them)"
        ;;
    report)
        setup
        say "the report from the committed tables alone (results/tables -> results/REPORT.md, results/figures)"
        start=$SECONDS
        "$VENV/bin/python" -m experiments.report --results results || die "the report failed"
        say "done in $((SECONDS - start))s: results/REPORT.md"
        ;;
    robust)
        setup
        say "robustness (issue 26): the runs results/records lacks ($JOBS at a time), its tables, the report"
        start=$SECONDS
        for protocol in $ROBUST_PROTOCOLS; do
            "$VENV/bin/python" -m experiments.protocol robust "$protocol" --jobs "$JOBS" "$@" \
                || die "the robustness runs of $protocol failed (rerun: recorded runs are kept)"
            say "[$((SECONDS - start))s] $protocol: robustness records and tables"
        done
        "$VENV/bin/python" -m experiments.report --results results || die "the report failed"
        say "done in $((SECONDS - start))s: results/REPORT.md (commit results/records as batches finish)"
        ;;
    intervention)
        setup
        say "the intervention (issue 27): SAM at the large batch beside batch_size's runs, its own family"
        start=$SECONDS
        "$VENV/bin/python" -m experiments.protocol all intervention --jobs "$JOBS" "$@" \
            || die "the intervention's runs failed (rerun: finished runs are kept)"
        say "done in $((SECONDS - start))s: results/tables/alone/intervention/REPORT.md"
        ;;
    -h|--help|help)
        sed -n '2,12p' "$0"
        ;;
    *)
        die "unknown mode '$mode'; use one of: quick (default), test, full, tune, report, robust, intervention"
        ;;
esac
