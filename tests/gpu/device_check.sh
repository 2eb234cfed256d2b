#!/usr/bin/env bash
# Runs ON the GPU machine (Ubuntu 24.04-like: nvcc 13, CMake, Python 3.12 with torch;
# cuDNN and NCCL only as Python wheels; no protobuf-c/cmocka/OpenBLAS dev packages):
# configures an engine-only CUDA build against .devdeps/ (made by prepare_devdeps.sh
# on the build machine), builds, runs the cuda tests, compute-sanitizer memcheck on the
# kernel test, and `batchdet bench` cuda vs cpu on yolox_nano. Prebuilt mode
# (BD_PREBUILT=.devdeps/bin-pre, made by tests/gpu/build_prebuilt.sh) skips the build
# and also exports DAMO-YOLO T and S here (python3 + torch) for the whole-model test and
# a T bench (~2 minutes in all) and per-action device profiles of yolox_nano and DAMO-T
# at batch 32 (`bench --profile`, ~1 minute); BD_PROFILE=1 adds a per-kernel profile
# (nsys or ncu). Every step is time-bounded; a failing step is reported
# and the script goes on. Logs go to $OUT (default ./device-out); a summary table is
# printed last. Budget: under ~6 minutes (build mode), ~5 minutes (prebuilt: adds device
# detection on every photo and DAMO-T, the pool, post-processing, NCCL, a memcheck of a
# whole detection batch, a racecheck of our tensor-core conv, end-to-end benches, and the
# conv choices: auto against cuDNN only and ours only).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/device-out}
mkdir -p "$OUT"
B=${BD_DEVCHECK_BUILD:-$ROOT/build-devcheck}
DD=$ROOT/.devdeps
T0=$(date +%s)
SUMMARY=()

# One deadline for the whole script (BD_CHECK_BUDGET s, default 600): a device session
# has 15 minutes in all, machine start included, and device_bench.sh wants its share.
# Steps run in priority order; one that would start with under 10 s left is skipped.
BUDGET=${BD_CHECK_BUDGET:-600}
DEADLINE=$((T0 + BUDGET))

. "$ROOT/tests/gpu/device_step.sh"
. "$ROOT/tests/gpu/device_tuned.sh"
trap "pack_logs device-check-logs" EXIT

# ---- cuDNN and NCCL from the Python wheels, LD_LIBRARY_PATH, NVCC, SAN, CMAKE_DNN, PKG ----
. "$ROOT/tests/gpu/device_env.sh"

{
  echo "cudnn: ${CUDNN_DIR:-none}"; echo "nccl: ${NCCL_DIR:-none}"; echo "nvcc: $NVCC"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} >"$OUT/env.txt"

step nvidia-smi 20 nvidia-smi
step nvcc-version 10 "$NVCC" --version
TARGETS=(batchdet test_cuda_kernels test_cuda_conv test_cuda_model test_cuda_prep test_cuda_detect
  test_cuda_post test_cuda_nccl test_pool)
if [ -n "${BD_PREBUILT:-}" ]; then
  # Binaries built on the development machine (tests/gpu/prepare_devdeps.sh --build):
  # saves the device minutes a build costs. CUDA runtime from this machine's toolkit.
  B=$ROOT/$BD_PREBUILT
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$(dirname "$NVCC")/../lib64:/usr/local/cuda/lib64
  export BD_TEST_DATA=$DD/data BD_TEST_PPM_DIR=$DD/data/images BD_TEST_PPM=$DD/data/images/dog.ppm
  for t in test_cuda_kernels test_cuda_conv test_cuda_model test_cuda_prep; do
    step "$t" 120 "$B/$t"
  done
  step memcheck 90 "$SAN" --tool memcheck --error-exitcode 3 "$B/test_cuda_kernels"
  # Issue 6: the whole batch on the device vs the cpu engine on every photo; the
  # post-processing kernels; the NCCL broadcast; the pool with cuda instances (under gdb
  # when it is there: a crash leaves its backtrace in the log).
  step test_cuda_detect 180 "$B/test_cuda_detect"
  step test_cuda_post 120 "$B/test_cuda_post"
  step test_cuda_nccl 60 "$B/test_cuda_nccl"
  if command -v gdb >/dev/null; then
    step test_pool 240 gdb -q -batch -ex run -ex bt -ex 'thread apply all bt 8' --args "$B/test_pool"
  else
    step test_pool 240 "$B/test_pool"
  fi
  step detect-memcheck 240 "$SAN" --tool memcheck --error-exitcode 3 \
    env BD_DETECT_QUICK=1 "$B/test_cuda_detect"
  MODEL=$DD/data/models/yolox_nano.onnx
  BD=$B/batchdet
  # DAMO-YOLO T and S (seeded weights, tests/reference/damoyolo.py) exported here, where
  # torch is; each compared GPU vs cpu backend on its own input, scores and boxes <= 2e-2.
  DAMO=${TMPDIR:-/tmp}/bd-damo
  for m in T S; do
    step "damo-export-$m" 60 python3 "$ROOT/tests/reference/damoyolo.py" export --model $m \
      --form deploy --size 640 --batch 1 --seed 0 --out "$DAMO/$m"
    BD_CUDA_MODEL=$DAMO/$m/model.onnx BD_CUDA_INPUT=$DAMO/$m/input.f32 \
      step "test_cuda_model-damo$m" 90 "$B/test_cuda_model"
  done
  # A YOLOX-tiny with LeakyReLU (tests/reference/yolox.py): the importer lowers it to
  # Relu/Sub/Mul/Add on scalar constants, which only the kernel emulation has run so far.
  step yolox-export-tiny-lrelu 60 python3 "$ROOT/tests/reference/yolox.py" export --model tiny \
    --act lrelu --size 320 --out "$DAMO/yx_lrelu"
  BD_CUDA_MODEL=$DAMO/yx_lrelu/model.onnx BD_CUDA_INPUT=$DAMO/yx_lrelu/input.f32 \
    step test_cuda_model-yolox-lrelu 90 "$B/test_cuda_model"
  # Detections need a sparse model: at class bias 0 the seeded T scores ~10^5 (anchor,
  # class) pairs per image above 0.05, near-tied, so which 300 boxes survive is decided
  # by rounding (first H100 run: host pre/post 64.8% of the cpu boxes, any backend).
  # --cls-bias -9: a few to a few hundred candidates per photo, like a trained detector.
  step damo-export-T-sparse 60 python3 "$ROOT/tests/reference/damoyolo.py" export --model T \
    --form deploy --size 640 --batch 1 --seed 0 --cls-bias -9 --out "$DAMO/Tsparse"
  BD_DETECT_MODEL=$DAMO/Tsparse/model.onnx step test_cuda_detect-damoT 240 "$B/test_cuda_detect"
  # cuDNN's graph API (bd_cuda_dnn_graph.c, written without a device; in the choice by
  # default): forced on every layer cuDNN runs (BATCHDET_CUDA_CONV=cudnn-graph) against the
  # cpu backend and timed so, then b32 and b1 in the choice (the log's "cuDNN graph" times
  # per layer) beside the choice without it (BATCHDET_CUDA_DNN_GRAPH=0).
  # (BATCHDET_CUDA_DNN_GRAPH_LOG=1: every refusal with cuDNN's own message, each
  # configuration's time.)
  BATCHDET_CUDA_CONV=cudnn-graph BATCHDET_CUDA_DNN_GRAPH_LOG=1 BD_EXPECT_GRAPH=40 \
    BATCHDET_CUDA_DNN_GRAPH_SHAPES=$OUT/graph_shapes_damoT640.txt \
    BD_CUDA_MODEL=$DAMO/T/model.onnx BD_CUDA_INPUT=$DAMO/T/input.f32 \
    step test_cuda_model-damoT-graph 90 "$B/test_cuda_model"
  # This GPU's properties as cuDNN writes them (cudnn_devprop.json: what the deviceless
  # survey tests read, tests/gpu/devprop/), and the survey on this cuDNN of the graphs the
  # step above asked for, at b32: what its heuristics list for each, engines compiled at run
  # time included (this machine has the driver they need).
  if [ -x "$B/test_cuda_dnn_survey" ]; then
    step cudnn-devprop 20 "$B/test_cuda_dnn_survey" --dump-devprop "$OUT/cudnn_devprop.json"
    step cudnn-survey-damoT-b32 60 "$B/test_cuda_dnn_survey" --devprop "$OUT/cudnn_devprop.json" \
      --shapes "$OUT/graph_shapes_damoT640.txt" --batch 32 --require-graphs --require-model
  fi
  BATCHDET_CUDA_CONV=cudnn-graph step bench-damoT-b32-graph-all 60 "$BD" bench \
    --model "$DAMO/T/model.onnx" --device cuda --batch 32 --iters 20 --warmup 3
  for bb in 32 1; do
    BATCHDET_CUDA_CONV_LOG=1 BATCHDET_CUDA_DNN_GRAPH_LOG=1 step bench-damoT-b$bb-graph 60 "$BD" bench \
      --model "$DAMO/T/model.onnx" --device cuda --batch $bb --iters 20 --warmup 3
    BATCHDET_CUDA_DNN_GRAPH=0 step bench-damoT-b$bb-nograph 60 "$BD" bench \
      --model "$DAMO/T/model.onnx" --device cuda --batch $bb --iters 20 --warmup 3
  done
  # Conv tiles 18-23 (Hopper wgmma, written without a device: off by default,
  # BATCHDET_CUDA_WGMMA=1 lets them run): every conv case on them against the double
  # reference (outputs poisoned around), DAMO-T b32 and b1 with them in the choice (the
  # choice lines give their time per layer beside cuDNN's and the other tiles', WRONG
  # where their output disagrees with cuDNN's), the whole model with them chosen.
  BATCHDET_CUDA_WGMMA=1 step test_cuda_conv-wgmma 120 "$B/test_cuda_conv"
  for bb in 32 1; do
    BATCHDET_CUDA_WGMMA=1 BATCHDET_CUDA_CONV_LOG=1 step bench-damoT-b$bb-wgmma 60 "$BD" bench \
      --model "$DAMO/T/model.onnx" --device cuda --batch $bb --iters 20 --warmup 3
  done
  BATCHDET_CUDA_WGMMA=1 BD_CUDA_MODEL=$DAMO/T/model.onnx BD_CUDA_INPUT=$DAMO/T/input.f32 \
    step test_cuda_model-damoT-wgmma 90 "$B/test_cuda_model"
  # and forced on every conv of ours (BATCHDET_CUDA_CONV=wgmma: twins, Concat pieces,
  # residuals read upsampled, split-K at batch 1), whether or not they would win: the
  # whole model against the cpu backend, then b32 timed that way (the tiles' own speed).
  BATCHDET_CUDA_WGMMA=1 BATCHDET_CUDA_CONV=wgmma BD_EXPECT_WGMMA=20,23 \
    BD_CUDA_MODEL=$DAMO/T/model.onnx BD_CUDA_INPUT=$DAMO/T/input.f32 \
    step test_cuda_model-damoT-wgmma-all 90 "$B/test_cuda_model"
  BATCHDET_CUDA_WGMMA=1 BATCHDET_CUDA_CONV=wgmma step bench-damoT-b32-wgmma-all 60 "$BD" bench \
    --model "$DAMO/T/model.onnx" --device cuda --batch 32 --iters 20 --warmup 3
  # Issue 7: our tensor-core convolution on every layer it takes (BATCHDET_CUDA_CONV=mma;
  # the default, auto, picks it per layer where it is faster and agrees with cuDNN), on the
  # same layers and models; timed against cuDNN below.
  # Programmatic dependent launch (BATCHDET_CUDA_PDL: auto by default, on for plans up to
  # batch 4): the whole model and detection tests with it on for every plan, then b1 /
  # b32 timed with it on beside off (=0; the default's choice is the auto rows elsewhere).
  BATCHDET_CUDA_PDL=1 step test_cuda_kernels-pdl 60 "$B/test_cuda_kernels"
  BATCHDET_CUDA_PDL=1 BD_CUDA_MODEL=$DAMO/T/model.onnx BD_CUDA_INPUT=$DAMO/T/input.f32 \
    step test_cuda_model-damoT-pdl 90 "$B/test_cuda_model"
  BATCHDET_CUDA_PDL=1 step test_cuda_detect-pdl 120 "$B/test_cuda_detect"
  BATCHDET_CUDA_PDL=1 BD_DETECT_MODEL=$DAMO/Tsparse/model.onnx step test_cuda_detect-damoT-pdl 120 \
    "$B/test_cuda_detect"
  BATCHDET_CUDA_PDL=1 step test_pool-pdl 120 "$B/test_pool"
  for bb in 1 32; do
    BATCHDET_CUDA_PDL=1 step bench-damoT-b$bb-pdl 60 "$BD" bench --model "$DAMO/T/model.onnx" \
      --device cuda --batch $bb --iters 20 --warmup 3
    BATCHDET_CUDA_PDL=0 step bench-damoT-b$bb-nopdl 60 "$BD" bench --model "$DAMO/T/model.onnx" \
      --device cuda --batch $bb --iters 20 --warmup 3
  done
  BATCHDET_CUDA_PDL=1 step bench-cuda-b1-pdl 45 "$BD" bench --model "$MODEL" --device cuda \
    --batch 1 --iters 30 --warmup 5
  # Parallel branches in the graphs (bd_cuda_dag.c; the model tests above compare their
  # replays with the uncaptured run bit for bit): on by default up to batch 4, so b1 as
  # chains (=0) and b32 with branches (=1) beside the defaults; then the model test with
  # branches in every plan (its batch 8 too).
  BATCHDET_CUDA_BRANCHES=0 step bench-damoT-b1-chain 60 "$BD" bench \
    --model "$DAMO/T/model.onnx" --device cuda --batch 1 --iters 20 --warmup 3
  BATCHDET_CUDA_BRANCHES=1 step bench-damoT-b32-branches 60 "$BD" bench \
    --model "$DAMO/T/model.onnx" --device cuda --batch 32 --iters 20 --warmup 3
  BATCHDET_CUDA_BRANCHES=1 BD_CUDA_MODEL=$DAMO/T/model.onnx BD_CUDA_INPUT=$DAMO/T/input.f32 \
    BD_EXPECT_BRANCHES=1 step test_cuda_model-damoT-branches 90 "$B/test_cuda_model"
  BATCHDET_CUDA_BRANCHES=1 step test_cuda_model-branches 120 "$B/test_cuda_model"
  step prof-damoT-b1 60 "$BD" bench --model "$DAMO/T/model.onnx" --device cuda --batch 1 \
    --iters 20 --warmup 3 --profile --profile-top 0
  BATCHDET_CUDA_CONV=mma step test_cuda_conv-mma 120 "$B/test_cuda_conv"
  BATCHDET_CUDA_CONV=mma step test_cuda_model-mma 120 "$B/test_cuda_model"
  BATCHDET_CUDA_CONV=mma BD_CUDA_MODEL=$DAMO/T/model.onnx BD_CUDA_INPUT=$DAMO/T/input.f32 \
    BD_EXPECT_TWINS=10 BD_EXPECT_UPRES=4 BD_EXPECT_PIECES=16 step test_cuda_model-damoT-mma 90 "$B/test_cuda_model"
  # Conv tile 17 (patch: whole input patches in shared memory) on every DAMO-T layer it
  # takes (the stem, the first stages), through the whole model; its times per layer are
  # in bench-damoT-b32.log's choice lines.
  BATCHDET_CUDA_CONV=patch BD_CUDA_MODEL=$DAMO/T/model.onnx BD_CUDA_INPUT=$DAMO/T/input.f32 \
    BD_EXPECT_PATCH=1 step test_cuda_model-damoT-patch 90 "$B/test_cuda_model"
  # The stem reading the FP32 input through the layout (default where the stem is on the
  # patch tile) against the separate layout kernel.
  BATCHDET_CUDA_FUSE_LAYOUT=0 step bench-damoT-b32-nofuse 60 "$BD" bench \
    --model "$DAMO/T/model.onnx" --device cuda --batch 32 --iters 20 --warmup 3
  # The conv choice timed as before (uncaptured: cuDNN's host side counted) against the
  # default (each side as a replayed graph); its choice lines say what each layer got.
  BATCHDET_CUDA_CHOICE_TIMING=host BATCHDET_CUDA_CONV_LOG=1 step bench-damoT-b32-hosttimed 60 \
    "$BD" bench --model "$DAMO/T/model.onnx" --device cuda --batch 32 --iters 20 --warmup 3
  # Twin convs (bd_cuda_conv_twins: a CSP stage's conv1 and conv2 in one launch; on by
  # default where the stacked shape runs on our kernel) against one launch each.
  BATCHDET_CUDA_TWINS=0 step bench-damoT-b32-notwins 60 "$BD" bench \
    --model "$DAMO/T/model.onnx" --device cuda --batch 32 --iters 20 --warmup 3
  # Ragged twins (the head's box and class 3x3 convs of each level in one launch) against
  # twins of one activation and whole 8-channel groups only, as before them.
  BATCHDET_CUDA_TWINS=even step bench-damoT-b32-eventwins 60 "$BD" bench \
    --model "$DAMO/T/model.onnx" --device cuda --batch 32 --iters 20 --warmup 3
  BATCHDET_CUDA_TWINS=0 step bench-cuda-b32-notwins 45 "$BD" bench --model "$MODEL" \
    --device cuda --batch 32 --iters 30 --warmup 5
  # Issue 7, in priority order (the deadline may cut the tail): the batches the targets
  # name, where the time goes (bench --profile: every action alone between CUDA events),
  # A/B rows (our tensor-core conv, Concat pieces in place), end to end, the rest.
  # The default convs (auto: ours or cuDNN per layer, each decision with both times in
  # the log, BATCHDET_CUDA_CONV_LOG=1) against cuDNN only and ours only.
  for bb in 1 32; do
    step bench-cuda-b$bb 45 "$BD" bench --model "$MODEL" --device cuda --batch $bb --iters 30 --warmup 5
    BATCHDET_CUDA_CONV_LOG=1 step bench-damoT-b$bb 60 "$BD" bench --model "$DAMO/T/model.onnx" \
      --device cuda --batch $bb --iters 20 --warmup 3
  done
  # The FPN's upsampled Concat pieces: 1x1 convs split at the low resolution (bd_compile)
  # with their Resize read upsampled by the next conv's epilogue, against the split alone
  # (BATCHDET_CUDA_UPRES=0: Resizes run) and neither (BATCHDET_SPLIT_UPSAMPLED=0).
  BATCHDET_CUDA_UPRES=0 step bench-damoT-b32-noupres 60 "$BD" bench \
    --model "$DAMO/T/model.onnx" --device cuda --batch 32 --iters 20 --warmup 3
  BATCHDET_SPLIT_UPSAMPLED=0 step bench-damoT-b32-nosplit 60 "$BD" bench \
    --model "$DAMO/T/model.onnx" --device cuda --batch 32 --iters 20 --warmup 3
  BATCHDET_SPLIT_UPSAMPLED=0 step bench-damoT-b1-nosplit 60 "$BD" bench \
    --model "$DAMO/T/model.onnx" --device cuda --batch 1 --iters 20 --warmup 3
  for m in damoT nano; do
    pm=$MODEL
    [ $m = damoT ] && pm=$DAMO/T/model.onnx
    step prof-$m-b32 60 "$BD" bench --model "$pm" --device cuda --batch 32 --iters 10 --warmup 2 \
      --profile --profile-top 0
    BATCHDET_CUDA_CONV=cudnn step prof-$m-b32-cudnn 60 "$BD" bench --model "$pm" --device cuda \
      --batch 32 --iters 10 --warmup 2 --profile --profile-top 0
  done
  for bb in 1 32; do
    BATCHDET_CUDA_CONV=cudnn step bench-damoT-b$bb-cudnn 60 "$BD" bench \
      --model "$DAMO/T/model.onnx" --device cuda --batch $bb --iters 20 --warmup 3
  done
  BATCHDET_CUDA_CONV=mma step bench-damoT-b32-mma 60 "$BD" bench --model "$DAMO/T/model.onnx" \
    --device cuda --batch 32 --iters 20 --warmup 3
  BATCHDET_CUDA_CONV=cudnn step bench-cuda-b32-cudnn 45 "$BD" bench --model "$MODEL" \
    --device cuda --batch 32 --iters 30 --warmup 5
  # Shared-memory hazards of our tensor-core kernel (double-buffered tiles, accumulators
  # overlaying them) on the real hardware, on the conv test's layers.
  BATCHDET_CUDA_CONV=mma step racecheck-mma 60 "$SAN" --tool racecheck --error-exitcode 3 \
    "$B/test_cuda_conv"
  BATCHDET_CUDA_ALIAS=0 step bench-damoT-b32-noalias 60 "$BD" bench \
    --model "$DAMO/T/model.onnx" --device cuda --batch 32 --iters 20 --warmup 3
  BATCHDET_CUDA_ALIAS=0 step bench-cuda-b32-noalias 45 "$BD" bench --model "$MODEL" \
    --device cuda --batch 32 --iters 30 --warmup 5
  step count-nano-b32 20 "$BD" bench --model "$MODEL" --count --batch 32
  step count-damoT-b32 20 "$BD" bench --model "$DAMO/T/model.onnx" --count --batch 32
  # End to end (decoded images in, boxes out: device pre/post-processing).
  # The sparse T (a realistic NMS load); the dense one shows the cost of NMS rounds when
  # every image has ~10^5 candidates (the device takes them 1024 at a time until 300 are
  # kept).
  step bench-e2e-damoT-b32 60 "$BD" bench --model "$DAMO/Tsparse/model.onnx" --device cuda \
    --batch 32 --iters 10 --warmup 3 --end-to-end
  step bench-e2e-damoT-b32-dense 60 "$BD" bench --model "$DAMO/T/model.onnx" --device cuda \
    --batch 32 --iters 10 --warmup 3 --end-to-end
  # The same with pre-processing into the FP32 input and the plan's Focus slices (before
  # pre-processing wrote the stem's 16-bit Concat itself).
  BATCHDET_CUDA_PREP16=0 step bench-e2e-damoT-b32-prep32 60 "$BD" bench \
    --model "$DAMO/Tsparse/model.onnx" --device cuda --batch 32 --iters 10 --warmup 3 --end-to-end
  for bb in 1 32; do
    step bench-e2e-b$bb 60 "$BD" bench --model "$MODEL" --device cuda --batch $bb --iters 20 \
      --warmup 3 --end-to-end
  done
  for bb in 8 64; do
    step bench-cuda-b$bb 45 "$BD" bench --model "$MODEL" --device cuda --batch $bb --iters 30 --warmup 5
  done
  step bench-cpu-b1 30 "$BD" bench --model "$MODEL" --device cpu --threads 16 --batch 1 --iters 10 --warmup 2
  # cuDNN's graph API with its runtime-compiled engines let in (NVRTC at load, per shape:
  # the load may take minutes; last, so that it cuts nothing else).
  BATCHDET_CUDA_DNN_RTC=1 BATCHDET_CUDA_CONV_LOG=1 step bench-damoT-b32-graph-rtc 150 "$BD" \
    bench --model "$DAMO/T/model.onnx" --device cuda --batch 32 --iters 20 --warmup 3
  if [ -n "${BD_PROFILE:-}" ]; then
    # Optional (BD_PROFILE=1, ~30-90 s more): per-kernel GPU time of yolox_nano at batch 32,
    # graph kernels traced one by one; only the text summary goes to $OUT.
    NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys 2>/dev/null | head -n 1)
    NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
    if [ -n "$NSYS" ]; then
      step profile-nsys 120 "$NSYS" profile --cuda-graph-trace=node --force-overwrite true \
        -o "${TMPDIR:-/tmp}/bd-prof" "$BD" bench --model "$MODEL" --device cuda --batch 32 --iters 5 --warmup 2
      step profile-kernels 60 "$NSYS" stats --report cuda_gpu_kern_sum --format csv \
        "${TMPDIR:-/tmp}/bd-prof.nsys-rep"
      # Issue 7's model: DAMO-YOLO T at batch 32, network only.
      step profile-nsys-damoT 120 "$NSYS" profile --cuda-graph-trace=node --force-overwrite true \
        -o "${TMPDIR:-/tmp}/bd-prof-damoT" "$BD" bench --model "$DAMO/T/model.onnx" --device cuda \
        --batch 32 --iters 5 --warmup 2
      step profile-kernels-damoT 60 "$NSYS" stats --report cuda_gpu_kern_sum --format csv \
        "${TMPDIR:-/tmp}/bd-prof-damoT.nsys-rep"
    elif [ -n "$NCU" ]; then
      step profile-ncu 150 "$NCU" --print-summary per-kernel --launch-count 400 \
        "$BD" bench --model "$MODEL" --device cuda --batch 32 --iters 1 --warmup 0
    fi
  fi
  echo
  echo "==== device check summary, prebuilt ($(($(date +%s) - T0))s total; logs in $OUT) ===="
  grep -m1 -E "NVIDIA (H|A)[0-9]+" "$OUT/nvidia-smi.log" 2>/dev/null | sed 's/|//g;s/  */ /g' || true
  for f in bench-cuda-b1 bench-cuda-b8 bench-cuda-b32 bench-cuda-b64 bench-damoT-b1 bench-damoT-b32 \
    bench-damoT-b32-graph bench-damoT-b32-nograph bench-damoT-b1-graph bench-damoT-b1-nograph \
    bench-damoT-b32-graph-all bench-damoT-b32-graph-rtc bench-damoT-b32-wgmma bench-damoT-b1-wgmma bench-damoT-b32-wgmma-all \
    bench-damoT-b1-pdl bench-damoT-b1-nopdl bench-damoT-b32-pdl bench-damoT-b32-nopdl bench-cuda-b1-pdl \
    bench-damoT-b1-chain bench-damoT-b32-branches bench-damoT-b32-nofuse bench-damoT-b32-hosttimed \
    bench-damoT-b32-notwins bench-cuda-b32-notwins bench-damoT-b32-noupres bench-damoT-b32-nosplit \
    bench-damoT-b1-nosplit bench-cuda-b32-cudnn bench-damoT-b1-cudnn bench-damoT-b32-cudnn bench-damoT-b32-mma \
    bench-cuda-b32-noalias \
    bench-damoT-b32-noalias bench-e2e-b1 bench-e2e-b32 bench-e2e-damoT-b32 \
    bench-e2e-damoT-b32-dense bench-e2e-damoT-b32-prep32 bench-cpu-b1; do
    printf '%-16s %s\n' "$f" "$(grep -E '^(img/s|batch p50|ms/img|gpu|graph|branches|pipelined)' "$OUT/$f.log" 2>/dev/null | tr -s ' ' | paste -sd ';')"
  done
  grep -h "^cuda mem" "$OUT/count-nano-b32.log" "$OUT/count-damoT-b32.log" 2>/dev/null || true
  for f in bench-damoT-b1 bench-damoT-b32 bench-damoT-b32-graph bench-damoT-b1-graph \
    bench-damoT-b32-hosttimed bench-damoT-b32-wgmma bench-damoT-b1-wgmma; do
    printf 'conv choices %s: ours %s, cuDNN %s, cuDNN graph %s, disagreeing %s\n' "$f" \
      "$(grep -c -- '-> ours' "$OUT/$f.log" 2>/dev/null)" \
      "$(grep -c -- '-> cuDNN$' "$OUT/$f.log" 2>/dev/null)" \
      "$(grep -c -- '-> cuDNN graph' "$OUT/$f.log" 2>/dev/null)" \
      "$(grep -c 'WARNING (our tensor-core' "$OUT"/*.log 2>/dev/null | awk -F: '{s+=$2} END {print s+0}')"
    # Which of our block tiles won how many layers (the ones never kept can go).
    printf 'tiles kept %s: %s\n' "$f" "$(grep -ho -- '-> ours .*$' "$OUT/$f.log" 2>/dev/null |
      sed 's/^-> ours //' | sort | uniq -c | sort -rn |
      awk '{c = $1; $1 = ""; printf "%s%s x%d", (NR > 1 ? ", " : ""), substr($0, 2), c}')"
  done
  for f in prof-nano-b32 prof-nano-b32-cudnn prof-damoT-b32 prof-damoT-b32-cudnn prof-damoT-b1; do
    [ -f "$OUT/$f.log" ] || continue
    printf -- '-- %s: %s\n' "$f" "$(grep -E '^(sum of medians|sum of replays|graph replay|graph - sum)' \
      "$OUT/$f.log" | cut -d: -f1 | tr -s ' ' | paste -sd ';')"
    sed -n "/^rank /,+4p" "$OUT/$f.log"
    grep -E '^kind ' "$OUT/$f.log" | head -n 6
  done
  grep -HE "boxes matched|tag .* on cuda|rel L2|batch 1 vs|capture failed|conv layers|twin conv|probes on|, probe [0-9]: [0-9]+ of|PASSED|FAILED" \
    "$OUT"/test_cuda_*.log "$OUT"/test_pool.log 2>/dev/null |
    sed "s|$OUT/||" | head -n 60
  grep -HE "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/memcheck.log" "$OUT/detect-memcheck.log" \
    "$OUT/racecheck-mma.log" 2>/dev/null | sed "s|$OUT/||"
  grep -hE "^#[0-9]+ .* in " "$OUT/test_pool.log" 2>/dev/null | head -n 12
  # Every switch's DAMO-T b32 time against the default; the fastest one with its outputs
  # checked goes to tuned_env.txt, which device_bench.sh (same call) times as a second
  # batchdet row beside the default one.
  pick_tuned | tee "$OUT/tuned.log"
  printf '%s\n' "${SUMMARY[@]}"
  exit 0
fi
step configure 90 cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DBATCHDET_ENGINE_ONLY=ON -DBATCHDET_BLAS=OFF -DBATCHDET_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DBATCHDET_DEVDEPS="$DD" -DBD_ONNX_PREGEN="$DD/onnxgen" \
  -DBD_TEST_DATA="$DD/data" "${CMAKE_DNN[@]}" "${PKG[@]}"
grep -E "BD_HAVE_CUDNN|CUDNN_(LIB|INC)|NCCL_(LIB|INC)" "$B/CMakeCache.txt" >>"$OUT/env.txt" 2>/dev/null
if ! step build 240 cmake --build "$B" -j"${BD_JOBS:-16}" --target "${TARGETS[@]}"; then
  # Host warnings are errors, and this machine's newer gcc may warn where the build
  # machine's does not: retry once with host warnings off (-w) so the GPU checks still
  # run; the failed first build stays in build.log.
  step configure-w 60 cmake "$B" -DCMAKE_C_FLAGS=-w -DCMAKE_CXX_FLAGS=-w
  step build-w 240 cmake --build "$B" -j"${BD_JOBS:-16}" --target "${TARGETS[@]}"
fi
step ctest-cuda 150 ctest --test-dir "$B" -L cuda --output-on-failure --timeout 140
step memcheck 90 "$SAN" --tool memcheck --error-exitcode 3 "$B/tests/gpu/test_cuda_kernels"
MODEL=$DD/data/models/yolox_nano.onnx
BD=$B/cli/batchdet
step bench-cuda-b1 45 "$BD" bench --model "$MODEL" --device cuda --batch 1 --iters 50 --warmup 5
step bench-cuda-b32 45 "$BD" bench --model "$MODEL" --device cuda --batch 32 --iters 20 --warmup 3
step bench-cpu-b1 30 "$BD" bench --model "$MODEL" --device cpu --batch 1 --iters 5 --warmup 1
step bench-cpu-b32 45 "$BD" bench --model "$MODEL" --device cpu --batch 32 --iters 2 --warmup 1

echo
echo "==== device check summary ($(($(date +%s) - T0))s total; logs in $OUT) ===="
grep -m1 -E "NVIDIA (H|A)[0-9]+" "$OUT/nvidia-smi.log" 2>/dev/null | sed 's/|//g;s/  */ /g' || true
for f in bench-cuda-b1 bench-cuda-b32 bench-cpu-b1 bench-cpu-b32; do
  printf '%-16s %s\n' "$f" "$(grep -E '^(img/s|batch p50)' "$OUT/$f.log" 2>/dev/null | tr -s ' ' | paste -sd ';')"
done
cp "$B/Testing/Temporary/LastTest.log" "$OUT/ctest-cuda-full.log" 2>/dev/null
grep -hE "rel L2|batch 1 vs|capture failed|conv c" "$OUT/ctest-cuda-full.log" 2>/dev/null | head -n 14
grep -hE "tests passed|tests failed|Skipped|\*\*\*Failed" "$OUT/ctest-cuda.log" 2>/dev/null | head -n 6
grep -hE "ERROR SUMMARY" "$OUT/memcheck.log" 2>/dev/null | head -n 1
printf '%s\n' "${SUMMARY[@]}"
