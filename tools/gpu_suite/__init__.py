"""The GPU suite: on a machine with an NVIDIA GPU, build memops with its CUDA kernels, run the GPU
tests, time the ops, and write one results file (benchmarks/results/gpu/). `python tools/gpu_suite`;
options and results: benchmarks/README.md ("The GPU suite").

Parts: suite.py (options, the stages in order, the time budget), proc.py (running one command),
probe_build.py (the machine, the build), pytest_run.py with progress_plugin.py (the tests),
bench.py (bench_ops), report.py (the results file). The suite itself imports neither torch nor
memops: each stage is a subprocess, so a crash or a hung kernel ends one stage, not the suite.
"""
