#!/usr/bin/env bash
# flatness: set up the environment if needed, then run one mode.
#   ./reproduce.sh            quick CPU reproduction: every sweep, the audit, aggregation and the report
#   ./reproduce.sh test [...] lint, format check and the test suite (extra args go to pytest)
#   ./reproduce.sh full       the GPU-sized reproduction (more samples and seeds)
#   ./reproduce.sh tune       the learning-rate search of every protocol in conf/protocol (on validation)
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

SWEEPS="batch_size optimizer weight_decay batchnorm correlation"

run_logged() {  # run a command showing one line per run; stop loudly if it fails
    set +e +o pipefail
    "$@" 2>&1 | grep --line-buffered -E "^(finished|diverged|already done|failed|running elsewhere|error)|Error|Traceback"
    local rc=${PIPESTATUS[0]}
    set -e -o pipefail
    [ "$rc" -eq 0 ] || die "failed with exit status $rc: $*"
}

reproduce() {  # $1: quick | full; $2: extra overrides of the sweeps; the rest: Hydra overrides for every run
    local scale=$1 sweep_extra=$2; shift 2
    local start=$SECONDS py="$VENV/bin/python"
    for sweep in $SWEEPS; do
        say "[$((SECONDS - start))s] sweep: $sweep ($JOBS at a time)"
        run_logged $py -m experiments.run -m "experiment=$sweep" progress=false \
            hydra/launcher=joblib "hydra.launcher.n_jobs=$JOBS" $sweep_extra "$@"
    done
    say "[$((SECONDS - start))s] PCA trajectory run"
    $py -m experiments.run name=pca surface=pca metrics=none progress=false "$@" | tail -n 1
    say "[$((SECONDS - start))s] scale-invariance audit"
    if [ "$scale" = full ]; then
        $py -m experiments.audit --metrics full "$@" | tail -n 2
    else
        $py -m experiments.audit --metrics audit "$@" | tail -n 2
    fi
    say "[$((SECONDS - start))s] Wilson et al.'s counter-example"
    $py -m experiments.wilson > /dev/null
    say "[$((SECONDS - start))s] aggregate"
    local roots=""
    for sweep in $SWEEPS; do roots="$roots runs/$sweep"; done
    $py -m experiments.aggregate $roots
    say "[$((SECONDS - start))s] report"
    $py -m experiments.report
    say "done in $((SECONDS - start))s: results/REPORT.md (figures in results/figures, tables in results/tables)"
}

mode=${1:-quick}
[ $# -gt 0 ] && shift
case "$mode" in
    quick)
        setup
        say "quick reproduction: every experiment at MNIST-1D scale on the CPU (about 11 minutes on 2 cores)"
        reproduce quick "" "$@"
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
        say "full reproduction: more data and seeds, sized for one GPU (device=auto picks it)"
        reproduce full "seed=0,1,2,3,4" dataset.num_samples=20000 "$@"
        say "full reproduction: the CNN on MNIST-1D for the batch-size and optimizer questions"
        for sweep in batch_size optimizer; do
            run_logged "$VENV/bin/python" -m experiments.run -m "experiment=$sweep" "name=${sweep}_cnn1d" \
                hydra/launcher=joblib "hydra.launcher.n_jobs=$JOBS" model=cnn1d dataset.num_samples=20000 progress=false "$@"
        done
        if [ -d data/cifar10/cifar-10-batches-py ]; then
            say "full reproduction: ResNet-20 and VGG-9 on CIFAR-10 (found in data/cifar10)"
            for model in resnet20 vgg9; do
                run_logged "$VENV/bin/python" -m experiments.run -m experiment=batch_size \
                    "name=batch_size_cifar10_$model" dataset=cifar10 "model=$model" train_until_loss=null epochs=60 \
                    progress=false "$@"
            done
        else
            say "CIFAR-10 not found under data/cifar10: skipping the ResNet-20/VGG-9 sweeps (set dataset.download=true when online)"
        fi
        "$VENV/bin/python" -m experiments.aggregate runs/*_cnn1d runs/batch_size_cifar10_* 2>/dev/null || true
        say "full reproduction done: results/REPORT.md; the CNN and CIFAR-10 sweeps are in results/tables/<sweep>_*"
        ;;
    tune)
        setup
        say "learning-rate search of every protocol ($JOBS runs at a time; estimated 1.5 h on 2 cores)"
        for protocol in batch_size optimizer visualisation; do
            "$VENV/bin/python" -m experiments.protocol tune "$protocol" --jobs "$JOBS" "$@" \
                || die "the search of $protocol failed"
        done
        say "done: results/tables/lr_<protocol>.csv|md (commit them; final runs read them)"
        ;;
    -h|--help|help)
        sed -n '2,6p' "$0"
        ;;
    *)
        die "unknown mode '$mode'; use one of: quick (default), test, full, tune"
        ;;
esac
