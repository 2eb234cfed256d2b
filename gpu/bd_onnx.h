/* bd_onnx: ONNX ModelProto -> bd_graph, through protobuf-c code generated at build
 * time from the system onnx.proto.
 *
 * Checks everything read from the file against limits before use (file size, counts,
 * ranks, dims, raw_data length vs dims). Unsupported ops or attributes fail with an
 * error naming the node and the op ("node 'Conv_12' (Conv): attribute auto_pad=SAME_UPPER
 * is not supported"); truncated or garbage files fail with BD_E_INVALID, never a crash.
 * Constant nodes become constant values; Shape/Slice/Concat chains are left for the
 * compiler's constant folding. Thread safety: reentrant. */
#ifndef BD_ONNX_H
#define BD_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "bd_graph.h"

#define BD_ONNX_MAX_FILE_BYTES ((size_t)1 << 30) /* 1 GiB */
#define BD_ONNX_MAX_NODES 100000

/* On success *out owns a new graph (free with bd_graph_destroy). */
bd_status bd_onnx_load_file(const char *path, bd_graph **out, bd_err *err);
bd_status bd_onnx_load_buffer(const uint8_t *buf, size_t len, bd_graph **out, bd_err *err);

#endif
