#!/bin/bash
# usage: ab.sh OUTDIR NAME1=SRC1 NAME2=SRC2 ... ; runs bench_append in alternation, 3 rounds
out=$1; shift; mkdir -p $out
cd /work/wt/lean
for r in 1 2; do
  for pair in "$@"; do
    name=${pair%%=*}; src=${pair#*=}
    PYTHONPATH=$src:bench /work/main/.venv/bin/python bench/bench_append.py --quick --duration 1.5 --reps 2 > $out/$name-$r.txt 2>&1
  done
done
