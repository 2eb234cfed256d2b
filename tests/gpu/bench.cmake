# Issue 7 benchmark tooling, checked on the CPU (label bench; each skips with 77 without
# Debian's python3-torch). The GPU run itself is tests/gpu/device_bench.sh.
# gpu_peers.py --cpu-smoke: BN folding vs the unfolded reference, one eager FP32 cell, one
# `batchdet bench --device cpu` cell parsed from --json, saved cells read back into the
# table, and the target arithmetic on made-up cells.
bd_add_script_test(bench_gpu_peers_smoke
                   COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/bench/gpu_peers.py
                           --cpu-smoke --batchdet $<TARGET_FILE:batchdet>
                   TIMEOUT 180 LABELS bench)
# `batchdet bench --count` (gpu/bd_cost.c) vs PyTorch forward hooks and YOLOX's published
# GFLOPs.
bd_add_script_test(bench_cost_count
                   COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/bench/test_cost.py
                   TIMEOUT 180 LABELS bench)
set_tests_properties(bench_gpu_peers_smoke bench_cost_count PROPERTIES SKIP_RETURN_CODE 77)
# The device scripts' plumbing (device_step.sh's statuses and log packing, device_tuned.sh's
# choice of the setting for the batchdet-tuned row) on made-up step logs.
bd_add_script_test(test_device_tuned
                   COMMAND bash ${CMAKE_SOURCE_DIR}/tests/gpu/test_device_tuned.sh
                   TIMEOUT 60 LABELS bench)
