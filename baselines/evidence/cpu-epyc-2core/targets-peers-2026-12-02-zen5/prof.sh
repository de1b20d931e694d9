#!/bin/bash
# usage: prof.sh NAME WORKLOAD... (perf record of harness bench over the workloads, optimized,
# 1 warm-up + 5; the report covers the timed window: from the first BLAS kernel sample on,
# which leaves out the random-weight initialisation)
name=$1; shift
args=(); for m in "$@"; do args+=(-m "$m"); done
perf record -e cpu-clock -F 499 -o /tmp/ev/$name.perf -- /work/main/target/release/harness bench "${args[@]}" --variant optimized -w 1 -i 5 -o /tmp/ev/$name-bench.json > /tmp/ev/$name-bench.txt 2>&1
start=$(perf script -i /tmp/ev/$name.perf -F time,ip,sym 2>/dev/null | grep -m1 -E "sgemm_kernel|sgemm_beta" | awk '{print $1}' | tr -d ':')
end=$(perf script -i /tmp/ev/$name.perf -F time 2>/dev/null | tail -1 | tr -d ': ')
echo "# $name: perf record -e cpu-clock -F 499 over: harness bench ${args[*]} --variant optimized -w 1 -i 5; samples from $start to $end s" > /tmp/ev/$name-top.txt
perf report -i /tmp/ev/$name.perf --time "$start,$end" --sort dso,sym --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -12 >> /tmp/ev/$name-top.txt
