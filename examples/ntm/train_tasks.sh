#!/usr/bin/env bash
# Train the NTM on the paper's five tasks, one after another, one CPU thread each:
#     bash examples/ntm/train_tasks.sh RUNS [TASK ...]      (default: all five, in RUNS/<task>/)
# Rerunning the same line resumes an unfinished run (--resume) and leaves a finished one as it is.
# examples/checkpoints/ntm/RESULTS.md gives what each shipped checkpoint reached with these settings.
set -euo pipefail
runs=${1:?usage: train_tasks.sh RUNS [TASK ...]}
shift
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(copy associative-recall repeat-copy priority-sort ngrams)
# The paper's settings (memops train's defaults) but for: batch 16 sequences a step; the step budget;
# a stopping cost; RMSProp lr 1e-4 instead of 3e-5 for priority sort and n-grams (the paper's 3e-5 is
# for one sequence a step and a million steps; this budget is tens of thousands).
declare -A options=(
    [copy]="--steps 15000"
    [associative-recall]="--steps 15000 --stop-at 0.001"
    [repeat-copy]="--steps 40000 --stop-at 0.01"
    [priority-sort]="--steps 100000 --lr 1e-4"
    [ngrams]="--steps 20000 --lr 1e-4"
)
for task in "${tasks[@]}"; do
    out="$runs/$task"
    resume=""
    [ -f "$out/checkpoint.pt" ] && resume="--resume"
    # shellcheck disable=SC2086
    memops train "$task" --out "$out" --seed 0 --threads 1 --eval-every 500 --no-progress ${options[$task]} $resume
done
