#!/usr/bin/env bash
# Run the bundled example (examples/cortex) under catalytic in a temporary copy: a clean build that
# must pass validation, then a leaky build that must exit 4 and fail validation.
#
#   PYTHON=.venv/bin/python bash scripts/demo.sh     # PYTHON: an interpreter with catalytic installed
#   KEEP=1 bash scripts/demo.sh                      # keep the temporary copy to look at the ledgers
#
# Exits 0 only when every expectation held; otherwise 1, naming each expectation that failed.
# Nothing is written inside the repository.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
example="$repo/examples/cortex"

# Resolve the interpreter before leaving the current directory: a relative PYTHON means "from here".
PYTHON=${PYTHON:-$repo/.venv/bin/python}
if [[ $PYTHON == */* ]]; then
    [[ -x $PYTHON ]] || { echo "demo: PYTHON=$PYTHON is not an executable file (try: make setup)" >&2; exit 2; }
    PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")
else
    PYTHON=$(command -v "$PYTHON") || { echo "demo: PYTHON=${PYTHON} not found on PATH" >&2; exit 2; }
fi
"$PYTHON" -c 'import catalytic' 2>/dev/null \
    || { echo "demo: $PYTHON cannot import catalytic (try: make setup)" >&2; exit 2; }

# Importing catalytic from an editable install would otherwise write __pycache__ into the repository.
export PYTHONDONTWRITEBYTECODE=1

work=$(mktemp -d "${TMPDIR:-/tmp}/catalytic-demo.XXXXXX")
cleanup() {
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "demo: kept the example copy in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

failures=()
expect() {
    # expect DESCRIPTION COMMAND...: run COMMAND; record DESCRIPTION as a failed expectation if it fails.
    local what=$1
    shift
    if "$@"; then
        echo "ok: $what"
    else
        echo "NOT OK: $what" >&2
        failures+=("$what")
    fi
}

show_json() {
    # A ledger file, indented for reading (the ledger itself is canonical one-line JSON).
    echo "-- $1"
    if [[ -f $1 ]]; then
        "$PYTHON" -m json.tool "$1"
    else
        echo "(missing)"
    fi
}

catalytic_run() {
    # catalytic_run RUN_ID INTENT SCRIPT: the example's catalytic command; prints nothing extra.
    "$PYTHON" -m catalytic run --run-id "$1" --catalytic-domains CORTEX/_generated/_tmp \
        --durable-outputs CORTEX/_generated/cortex.json CORTEX/_generated/cortex.db \
        --intent "$2" -- "$PYTHON" "$3"
}

echo "== Copying examples/cortex to $work =="
# The example without anything a previous in-place run generated (what its .gitignore excludes).
tar -C "$example" \
    --exclude=./CONTRACTS \
    --exclude=./CORTEX/_generated/cortex.json \
    --exclude=./CORTEX/_generated/cortex.db \
    --exclude='./CORTEX/_generated/_tmp/index_temp_*' \
    --exclude=__pycache__ \
    -cf - . | tar -C "$work" -xf -
cd "$work"
find . -type f | LC_ALL=C sort

echo
echo "== Clean build: catalytic run --run-id cortex-build-demo =="
clean_rc=0
catalytic_run cortex-build-demo "Build cortex index" CORTEX/cortex.build.py || clean_rc=$?
echo "exit code: $clean_rc"
expect "clean build exits 0" test "$clean_rc" -eq 0

echo
echo "== Ledger of cortex-build-demo =="
ls -l CONTRACTS/_runs/cortex-build-demo || true
show_json CONTRACTS/_runs/cortex-build-demo/STATUS.json
show_json CONTRACTS/_runs/cortex-build-demo/RESTORE_DIFF.json
expect "the scratch domain holds only .keep after the clean build" \
    test "$(ls -A CORTEX/_generated/_tmp)" = ".keep"

echo
echo "== Validating cortex-build-demo (expect PASS) =="
clean_validate_rc=0
clean_report=$("$PYTHON" -m catalytic validate --run-dir CONTRACTS/_runs/cortex-build-demo) \
    || clean_validate_rc=$?
echo "$clean_report"
expect "validation of cortex-build-demo exits 0" test "$clean_validate_rc" -eq 0
expect "validation of cortex-build-demo prints PASS" \
    grep -q '^\[catalytic-validator\] PASS: cortex-build-demo$' <<<"$clean_report"

echo
echo "== Leaky build: catalytic run --run-id cortex-build-leaky (expect exit 4) =="
leaky_rc=0
catalytic_run cortex-build-leaky "Build cortex index (leaky)" CORTEX/cortex_leaky.build.py || leaky_rc=$?
echo "exit code: $leaky_rc"
expect "leaky build exits 4 (domain not restored)" test "$leaky_rc" -eq 4

echo
echo "== RESTORE_DIFF.json of cortex-build-leaky =="
show_json CONTRACTS/_runs/cortex-build-leaky/RESTORE_DIFF.json
show_json CONTRACTS/_runs/cortex-build-leaky/STATUS.json
expect "RESTORE_DIFF.json of cortex-build-leaky names the leftover file" \
    grep -q '"index_temp_001.json"' CONTRACTS/_runs/cortex-build-leaky/RESTORE_DIFF.json

echo
echo "== Validating cortex-build-leaky (expect FAIL) =="
leaky_validate_rc=0
leaky_report=$("$PYTHON" -m catalytic validate --run-dir CONTRACTS/_runs/cortex-build-leaky) \
    || leaky_validate_rc=$?
echo "$leaky_report"
expect "validation of cortex-build-leaky exits 1" test "$leaky_validate_rc" -eq 1
expect "validation of cortex-build-leaky prints FAIL" \
    grep -q '^\[catalytic-validator\] FAIL: cortex-build-leaky$' <<<"$leaky_report"

echo
if ((${#failures[@]})); then
    echo "== Demo FAILED: ${#failures[@]} expectation(s) did not hold ==" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "== Demo OK: clean build PASS, leaky build exit 4 and FAIL =="
