#!/usr/bin/env bash
# flatness: set up the environment if needed, then run one mode.
#   ./reproduce.sh            quick CPU reproduction (for now: one default run)
#   ./reproduce.sh test [...] lint, format check and the test suite (extra args go to pytest)
#   ./reproduce.sh full       GPU-sized reproduction (not yet available)
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\033[1m[reproduce]\033[0m %s\n' "$*"; }
die() { printf '[reproduce] error: %s\n' "$*" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
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

mode=${1:-quick}
[ $# -gt 0 ] && shift
case "$mode" in
    quick)
        setup
        say "quick reproduction: one default run (MLP on MNIST-1D, CPU)"
        "$VENV/bin/python" -m experiments.run "$@"
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
        die "the full (GPU) reproduction is not available yet; run ./reproduce.sh for the quick one"
        ;;
    -h|--help|help)
        sed -n '2,6p' "$0"
        ;;
    *)
        die "unknown mode '$mode'; use one of: quick (default), test, full"
        ;;
esac
