#!/usr/bin/env bash
# Times a learner's first and second `make lab` on a fresh clone of this checkout's HEAD: the install step (create
# .venv, pip install -e ".[lab]", register the kernel), then `make lab` until JupyterLab answers, twice. Writes
# benchmarks/first_install.json, which `make lab` quotes while it installs. Not part of `make bench` (it installs
# several GB). Usage: bash benchmarks/first_install.sh   (pip's cache is used as it is; its size is recorded)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill -- "-$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
git clone --quiet . "$work/course"
cache_dir=$(python3 -m pip cache dir 2>/dev/null || echo none)
cache_mb=$(du -sm "$cache_dir" 2>/dev/null | cut -f1 || true)
cache_mb=${cache_mb:-0}
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# `make lab` in the background until its server answers on $port; sets $took to the seconds that took
time_lab() {
    local start=$(date +%s) code
    setsid make -C "$work/course" lab PORT="$port" > "$work/lab.log" 2>&1 < /dev/null &
    server=$!
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/status" || true)
        if [ "$code" != 000 ]; then break; fi
        if ! kill -0 "$server" 2>/dev/null; then cat "$work/lab.log" >&2; exit 1; fi
        sleep 0.5
    done
    took=$(( $(date +%s) - start ))
    kill -- "-$server"
    wait "$server" 2>/dev/null || true
    server=""
}

start=$(date +%s)
make -C "$work/course" .venv/.installed-lab 2>&1 | tee "$work/install.log"
install=$(( $(date +%s) - start ))
time_lab
first_start=$took
time_lab
second=$took
size=$(du -sm "$work/course/.venv" | cut -f1)
cores=$(nproc)
# wheels pip read from a local folder or mirror (Processing /...) and those it downloaded
local_wheels=$(grep -c '^Processing /' "$work/install.log" || true)
downloaded=$(grep -c 'Downloading ' "$work/install.log" || true)
cat > benchmarks/first_install.json <<JSON
{
  "seconds": $install,
  "first_make_lab_seconds": $((install + first_start)),
  "second_make_lab_seconds": $second,
  "venv_mb": $size,
  "cores": $cores,
  "pip_cache_mb_before": $cache_mb,
  "local_wheels": ${local_wheels:-0},
  "downloaded_wheels": ${downloaded:-0},
  "python": "$(python3 --version 2>&1 | cut -d' ' -f2)",
  "measured": "$(date -u +%Y-%m-%d)"
}
JSON
echo "install ${install} s; first make lab answered after $((install + first_start)) s, the second after ${second} s;" \
     ".venv ${size} MB, ${cores} cores, pip cache ${cache_mb} MB before;" \
     "${local_wheels:-0} wheels from local disk, ${downloaded:-0} downloaded"
