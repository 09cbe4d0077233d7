#!/bin/bash
# usage: pycg.sh SRC MODE ; prints instructions per append (N=2000 minus N=0)
cd /work/wt/lean
src=$1; mode=$2
run() { PYTHONPATH=$src:bench valgrind --tool=callgrind --callgrind-out-file=/tmp/lean/cg/py.$$.$1 /work/main/.venv/bin/python /tmp/lean/pycg.py $1 $mode >/dev/null 2>&1; grep -E "^(summary|totals):" /tmp/lean/cg/py.$$.$1 | head -1 | awk '{print $2}'; }
a=$(run 0); b=$(run 2000)
echo "$src $mode: $(( (b - a) / 2000 )) instructions per event"
