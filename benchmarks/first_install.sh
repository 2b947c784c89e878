#!/usr/bin/env bash
# Times what a learner's first `make lab` does before JupyterLab starts: a fresh clone, then the Makefile's install
# step (create .venv, pip install -e ".[lab]", register the kernel). Writes the seconds to
# benchmarks/first_install.json, which `make lab` quotes on a first run. Not part of `make bench` (it
# installs several GB). Usage: bash benchmarks/first_install.sh   (pip's cache is used as it is; its size is recorded)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet . "$work/course"
cache_dir=$(python3 -m pip cache dir 2>/dev/null || echo none)
cache_mb=$(du -sm "$cache_dir" 2>/dev/null | cut -f1 || true)
cache_mb=${cache_mb:-0}
start=$(date +%s)
make -C "$work/course" .venv/.installed-lab
end=$(date +%s)
seconds=$((end - start))
size=$(du -sm "$work/course/.venv" | cut -f1)
cores=$(nproc)

cat > benchmarks/first_install.json <<JSON
{
  "seconds": $seconds,
  "venv_mb": $size,
  "cores": $cores,
  "pip_cache_mb_before": $cache_mb,
  "python": "$(python3 --version 2>&1 | cut -d' ' -f2)",
  "measured": "$(date -u +%Y-%m-%d)"
}
JSON
echo "first install: ${seconds} s, .venv ${size} MB, ${cores} cores, pip cache ${cache_mb} MB before"
