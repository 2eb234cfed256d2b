/* Device detection for the cuda backend (issue 6): the whole batch - pre-processing,
 * network, box decode, NMS - as one captured CUDA graph per plan and staging slot.
 *
 * Buffers (dd_setup, sized for max_batch rows and shared by every plan):
 *  - per slot: pinned host staging of the RGB8 pixels, the prep and post descriptor
 *    tables (pinned + device), pinned detections and counts, and two events (copied:
 *    staging on the device; done: results on the host);
 *  - shared: the device staging (one for both slots) and its `prepped` event, device
 *    detections and counts, the yolox decode workspace, a copy stream.
 * Per plan and slot, dd_prepare captures: bd_cuda_preprocess_u8 (device staging ->
 * the plan's FP32 input; or _h16 -> the 16-bit tensor the network's first layers make of
 * the input, when bd_cuda_prep_direct finds one: the input's 16-bit copy, or a Focus
 * stem's Concat as in YOLOX and DAMO-YOLO; the actions making it are left out) -> an
 * external record of `prepped` -> the network (the plan's actions, no host copies) ->
 * bd_cuda_post_yolox / _damo (-> shared device detections). The graph always covers the
 * plan's whole batch: rows past n get an empty descriptor (all padding in, nothing out).
 *
 * A launch: the copy stream waits for the slot's previous batch (its descriptors are
 * free again) and for `prepped` as last recorded (the previous batch's pixels are read:
 * the device staging is free again), copies the used staging bytes and the descriptors,
 * records `copied`; the compute stream waits for `copied`, replays the slot's graph,
 * copies n rows of results into the slot's pinned buffers and records `done`. Two slots
 * make two batches in flight: slot k+1's host staging, and its upload once slot k's
 * pre-processing is done, overlap slot k's network. One device staging instead of one
 * per slot saves max_batch x 2 network inputs of device memory (157 MB for a 640x640
 * model at max_batch 64) for the cost of ordering each upload after the previous
 * pre-processing, a small kernel. Shared device buffers (plan input, arena, detections)
 * are safe because every use of them is on the one compute stream, in launch order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_cuda_internal.h"

#define STAGE_LIMIT ((size_t)1 << 34) /* 16 GiB: a sanity bound on cfg.stage_bytes */

static bd_cuda_be *be_of(bd_backend *be) {
  return (bd_cuda_be *)be;
}

void bd_cuda_dd_free(bd_cuda_be *b) {
  bd_cuda_dd *d = b->dd;
  if (!d) return;
  if (d->copy) cudaStreamSynchronize(d->copy);
  for (int s = 0; s < BD_DD_SLOTS; ++s) {
    bd_cuda_dd_slot *sl = &d->slot[s];
    if (sl->h_src) cudaFreeHost(sl->h_src);
    if (sl->h_prep) cudaFreeHost(sl->h_prep);
    if (sl->d_prep) cudaFree(sl->d_prep);
    if (sl->h_post) cudaFreeHost(sl->h_post);
    if (sl->d_post) cudaFree(sl->d_post);
    if (sl->h_dets) cudaFreeHost(sl->h_dets);
    if (sl->h_counts) cudaFreeHost(sl->h_counts);
    if (sl->copied) cudaEventDestroy(sl->copied);
    if (sl->done) cudaEventDestroy(sl->done);
  }
  if (d->d_src) cudaFree(d->d_src);
  if (d->prepped) cudaEventDestroy(d->prepped);
  if (d->d_dets) cudaFree(d->d_dets);
  if (d->d_counts) cudaFree(d->d_counts);
  if (d->ws) cudaFree(d->ws);
  if (d->copy) cudaStreamDestroy(d->copy);
  free(d);
  b->dd = NULL;
}

/* Rows [from, to) of a slot's tables as padding: all 114 in, no candidate out (scores
 * are at most 1, the threshold is 2). */
static void pad_rows(bd_cuda_dd_slot *sl, int from, int to) {
  for (int r = from; r < to; ++r) {
    sl->h_prep[r] = (bd_cuda_prep_desc){0, 1, 1, 0, 0, 1.0, 1.0};
    sl->h_post[r] = (bd_cuda_post_desc){2.f, 0.5f, 1, 1, 1, 1.f, 1.f, 1.f};
  }
}

static bd_status check_cfg(const bd_graph *g, const bd_dd_config *c, int max_batch, bd_err *err) {
  int outs_ok = c->yolox ? (c->out_main >= 0 && c->out_main < g->n_outputs)
                         : (c->out_scores >= 0 && c->out_scores < g->n_outputs &&
                            c->out_boxes >= 0 && c->out_boxes < g->n_outputs &&
                            c->out_scores != c->out_boxes);
  if (!outs_ok || c->in_w < 32 || c->in_h < 32 || c->in_w > 4096 || c->in_h > 4096 ||
      c->num_classes < 1 || c->num_classes > BD_CUDA_POST_MAX_CLASSES || c->num_anchors < 1 ||
      c->num_anchors > BD_CUDA_POST_MAX_ANCHORS ||
      (int64_t)c->num_anchors * c->num_classes > BD_CUDA_POST_MAX_SCORES || c->topk < 1 ||
      c->topk > BD_CUDA_POST_MAX_TOPK || c->out_cap < 1 || c->out_cap > BD_CUDA_POST_MAX_DET ||
      c->stage_bytes < (size_t)c->in_w * c->in_h * 3 || c->stage_bytes > STAGE_LIMIT ||
      max_batch < 1 || max_batch > 65535)
    return bd_err_set(err, BD_E_INVALID,
                      "cuda detect: bad configuration (input %dx%d, %d classes, %d anchors, "
                      "topk %d, out_cap %d, staging %zu bytes, max_batch %d)",
                      c->in_w, c->in_h, c->num_classes, c->num_anchors, c->topk, c->out_cap,
                      c->stage_bytes, max_batch);
  return BD_OK;
}

bd_status bd_cuda_dd_setup(bd_backend *be, const bd_dd_config *cfg, int max_batch, bd_err *err) {
  bd_cuda_be *b = be_of(be);
  bd_status st = BD_OK;
  if (b->dd) return bd_err_set(err, BD_E_INVALID, "cuda detect: set up twice");
  if ((st = check_cfg(be->graph, cfg, max_batch, err)) != BD_OK) return st;
  bd_cuda_dd *d = calloc(1, sizeof(*d));
  if (!d) return bd_err_set(err, BD_E_NOMEM, "cuda detect: out of memory");
  b->dd = d;
  d->cfg = *cfg;
  d->max_batch = max_batch;
  const size_t rows = (size_t)max_batch, det_bytes = rows * (size_t)cfg->out_cap * 6 * sizeof(float);
  BD_CU(cudaSetDevice(b->device));
  BD_CU(cudaStreamCreateWithFlags(&d->copy, cudaStreamNonBlocking));
  for (int s = 0; s < BD_DD_SLOTS; ++s) {
    bd_cuda_dd_slot *sl = &d->slot[s];
    BD_CU(cudaMallocHost((void **)&sl->h_src, cfg->stage_bytes));
    BD_CU(cudaMallocHost((void **)&sl->h_prep, rows * sizeof(*sl->h_prep)));
    BD_CU(cudaMalloc((void **)&sl->d_prep, rows * sizeof(*sl->d_prep)));
    BD_CU(cudaMallocHost((void **)&sl->h_post, rows * sizeof(*sl->h_post)));
    BD_CU(cudaMalloc((void **)&sl->d_post, rows * sizeof(*sl->d_post)));
    BD_CU(cudaMallocHost((void **)&sl->h_dets, det_bytes));
    BD_CU(cudaMallocHost((void **)&sl->h_counts, rows * sizeof(int)));
    BD_CU(cudaEventCreateWithFlags(&sl->copied, cudaEventDisableTiming));
    BD_CU(cudaEventCreateWithFlags(&sl->done, cudaEventDisableTiming));
    pad_rows(sl, 0, max_batch);
  }
  BD_CU(cudaMalloc(&d->d_src, cfg->stage_bytes));
  BD_CU(cudaEventCreateWithFlags(&d->prepped, cudaEventDisableTiming));
  BD_CU(cudaMalloc((void **)&d->d_dets, det_bytes));
  BD_CU(cudaMalloc((void **)&d->d_counts, rows * sizeof(int)));
  if (cfg->yolox) {
    size_t ws = bd_cuda_post_workspace_bytes(1, max_batch, cfg->num_anchors);
    BD_CU(cudaMalloc(&d->ws, ws ? ws : 16));
  }
out:
  if (st != BD_OK) {
    bd_err_prefix(err, "cuda:%d detect setup", b->device);
    bd_cuda_dd_free(b);
  }
  return st;
}

/* Pre-processing -> network -> post-processing of cp's whole batch from slot s, on
 * b->stream (directly, or under capture). */
static bd_status enqueue_dd(bd_cuda_be *b, bd_cuda_cplan *cp, int s, bd_err *err) {
  const bd_cuda_dd *d = b->dd;
  const bd_dd_config *c = &d->cfg;
  const bd_cuda_dd_slot *sl = &d->slot[s];
  bd_status st = BD_OK;
  enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  if (cp->dd_direct)
    BD_CU(bd_cuda_preprocess_u8_h16(d->d_src, sl->d_prep, cp->batch, c->yolox, 114.f,
                                    &cp->dd_lo, cp->dd_dst, b->stream));
  else
    BD_CU(bd_cuda_preprocess_u8(d->d_src, sl->d_prep, cp->batch, c->in_w, c->in_h, c->yolox,
                                114.f, cp->d_in[0], b->stream));
  /* The staged pixels are read: the next upload may overwrite them. In a graph, an
   * external event node, so that each launch records it for the copy stream to wait. */
  BD_CU(cudaStreamIsCapturing(b->stream, &cs));
  BD_CU(cs == cudaStreamCaptureStatusNone
            ? cudaEventRecord(d->prepped, b->stream)
            : cudaEventRecordWithFlags(d->prepped, b->stream, cudaEventRecordExternal));
  /* dd_skip is all 0 unless dd_direct */
  if ((st = bd_cuda_enqueue_actions(b, cp, cp->dd_skip, err)) != BD_OK) goto out;
  if (c->yolox)
    BD_CU(bd_cuda_post_yolox(cp->d_out[c->out_main], cp->batch, c->in_h, c->in_w, c->num_classes,
                             c->yolox_decoded, sl->d_post, c->topk, c->out_cap, d->ws, d->d_dets,
                             d->d_counts, b->stream));
  else
    BD_CU(bd_cuda_post_damo(cp->d_out[c->out_scores], cp->d_out[c->out_boxes], cp->batch,
                            c->num_anchors, c->num_classes, sl->d_post, c->topk, c->out_cap,
                            d->d_dets, d->d_counts, b->stream));
out:
  return st;
}

bd_status bd_cuda_dd_prepare(bd_backend *be, const bd_plan *p, bd_err *err) {
  bd_cuda_be *b = be_of(be);
  bd_status st = BD_OK;
  bd_cuda_cplan *cp = bd_cuda_find_plan(b, p);
  if (!b->dd) return bd_err_set(err, BD_E_INVALID, "cuda detect: prepare before setup");
  if (!cp) return bd_err_set(err, BD_E_INVALID, "cuda detect: plan (batch %d) not prepared", p->batch);
  if (cp->dd_ready) return BD_OK;
  if (cp->batch > b->dd->max_batch || be->graph->n_inputs != 1)
    return bd_err_set(err, BD_E_INVALID, "cuda detect: plan batch %d over the set-up %d rows",
                      cp->batch, b->dd->max_batch);
  free(cp->dd_skip);
  cp->dd_skip = calloc((size_t)cp->n_acts + 1, 1);
  if (!cp->dd_skip) return bd_err_set(err, BD_E_NOMEM, "cuda detect: out of memory");
  if (cp->rd_direct) { /* the raw path's layout action: pre-processing does its work */
    cp->dd_direct = 1;
    cp->dd_lo = cp->rd_lo;
    cp->dd_dst = cp->rd_dst;
    cp->dd_skip[0] = 1;
  } else {
    cp->dd_direct = bd_cuda_prep16_enabled() &&
                    bd_cuda_prep_direct(b, cp, &cp->dd_lo, &cp->dd_dst, cp->dd_skip);
  }
  bd_cuda_capture_lock();
  BD_CU(cudaSetDevice(b->device));
  /* One direct run first (lazy module loading of the pre- and post-processing kernels
   * happens outside the capture), then one graph per slot. The run reads slot 0's
   * tables: padding rows from setup, or the batch slot 0 holds (already done or queued
   * before this on the stream), so always valid; it writes only device buffers that
   * every batch overwrites in stream order. */
  BD_CU(cudaMemcpyAsync(b->dd->slot[0].d_prep, b->dd->slot[0].h_prep,
                        (size_t)cp->batch * sizeof(bd_cuda_prep_desc), cudaMemcpyHostToDevice,
                        b->stream));
  BD_CU(cudaMemcpyAsync(b->dd->slot[0].d_post, b->dd->slot[0].h_post,
                        (size_t)cp->batch * sizeof(bd_cuda_post_desc), cudaMemcpyHostToDevice,
                        b->stream));
  if ((st = enqueue_dd(b, cp, 0, err)) != BD_OK) goto out;
  BD_CU(cudaStreamSynchronize(b->stream));
  for (int s = 0; s < BD_DD_SLOTS; ++s) {
    bd_err cerr = {0};
    if (bd_cuda_capture(b, cp, enqueue_dd, s, &cp->dd_graph[s], &cp->dd_exec[s], &cerr) != BD_OK) {
      /* Runs still go directly on the stream; the reason stays for the tests. */
      (void)cudaGetLastError();
      snprintf(cp->dd_graph_err, sizeof(cp->dd_graph_err), "%s", cerr.msg);
    }
  }
  cp->dd_ready = 1;
out:
  bd_cuda_capture_unlock();
  if (st != BD_OK) bd_err_prefix(err, "cuda:%d detect prepare (batch %d)", b->device, p->batch);
  return st;
}

uint8_t *bd_cuda_dd_stage(bd_backend *be, int slot) {
  bd_cuda_be *b = be_of(be);
  if (!b->dd || slot < 0 || slot >= BD_DD_SLOTS) return NULL;
  return b->dd->slot[slot].h_src;
}

/* Checks one host row against the configuration; the kernels trust their descriptors. */
static int bad_row(const bd_dd_config *c, const bd_dd_image *r) {
  if (r->sw < 1 || r->sh < 1 || r->sw > 65535 || r->sh > 65535 || r->offset < 0) return 1;
  size_t bytes = (size_t)r->sw * (size_t)r->sh * 3;
  if ((size_t)r->offset > c->stage_bytes || bytes > c->stage_bytes - (size_t)r->offset) return 1;
  if (r->rw < 1 || r->rh < 1 || r->rw > c->in_w || r->rh > c->in_h) return 1;
  if (!c->yolox && (r->rw != c->in_w || r->rh != c->in_h)) return 1;
  if (!(r->scale_x > 0) || !(r->scale_y > 0)) return 1;
  if (r->max_det < 1 || r->max_det > c->out_cap || r->orig_w < 1 || r->orig_h < 1) return 1;
  if (!(r->score_thr >= 0) || !(r->iou_thr >= 0) || (c->yolox && !(r->ratio > 0))) return 1;
  return 0;
}

bd_status bd_cuda_dd_launch(bd_backend *be, const bd_plan *p, int slot, int n,
                            const bd_dd_image *rows, bd_err *err) {
  bd_cuda_be *b = be_of(be);
  bd_status st = BD_OK;
  bd_cuda_dd *d = b->dd;
  bd_cuda_cplan *cp = bd_cuda_find_plan(b, p);
  if (!d || !cp || !cp->dd_ready)
    return bd_err_set(err, BD_E_INVALID, "cuda detect: launch on a plan not prepared for it");
  if (slot < 0 || slot >= BD_DD_SLOTS || d->slot[slot].busy)
    return bd_err_set(err, BD_E_INVALID, "cuda detect: slot %d is not idle", slot);
  if (n < 1 || n > cp->batch)
    return bd_err_set(err, BD_E_INVALID, "cuda detect: %d rows on a batch-%d plan", n, cp->batch);
  const bd_dd_config *c = &d->cfg;
  bd_cuda_dd_slot *sl = &d->slot[slot];
  size_t used = 0;
  pad_rows(sl, n, cp->batch);
  for (int r = 0; r < n; ++r) {
    bd_cuda_prep_desc *pd = &sl->h_prep[r];
    bd_cuda_post_desc *po = &sl->h_post[r];
    const bd_dd_image *im = &rows[r];
    if (bad_row(c, im))
      return bd_err_set(err, BD_E_INVALID,
                        "cuda detect: row %d: bad descriptor (staged %dx%d at %lld, resized "
                        "%dx%d, max_det %d)",
                        r, im->sw, im->sh, (long long)im->offset, im->rw, im->rh, im->max_det);
    *pd = (bd_cuda_prep_desc){im->offset, im->sw, im->sh, im->rw, im->rh, im->scale_x,
                              im->scale_y};
    *po = (bd_cuda_post_desc){im->score_thr, im->iou_thr, im->max_det, im->orig_w, im->orig_h,
                              im->ratio, im->box_sx, im->box_sy};
    size_t end = (size_t)im->offset + (size_t)im->sw * im->sh * 3;
    if (end > used) used = end;
  }
  BD_CU(cudaSetDevice(b->device));
  /* The slot's device descriptors are free once its previous batch is done, the device
   * staging once the last batch launched has been pre-processed. */
  BD_CU(cudaStreamWaitEvent(d->copy, sl->done, 0));
  BD_CU(cudaStreamWaitEvent(d->copy, d->prepped, 0));
  if (used) BD_CU(cudaMemcpyAsync(d->d_src, sl->h_src, used, cudaMemcpyHostToDevice, d->copy));
  BD_CU(cudaMemcpyAsync(sl->d_prep, sl->h_prep, (size_t)cp->batch * sizeof(*sl->h_prep),
                        cudaMemcpyHostToDevice, d->copy));
  BD_CU(cudaMemcpyAsync(sl->d_post, sl->h_post, (size_t)cp->batch * sizeof(*sl->h_post),
                        cudaMemcpyHostToDevice, d->copy));
  BD_CU(cudaEventRecord(sl->copied, d->copy));
  BD_CU(cudaStreamWaitEvent(b->stream, sl->copied, 0));
  if (b->use_graphs && cp->dd_exec[slot]) {
    BD_CU(cudaGraphLaunch(cp->dd_exec[slot], b->stream));
  } else if ((st = enqueue_dd(b, cp, slot, err)) != BD_OK) {
    goto out;
  }
  BD_CU(cudaMemcpyAsync(sl->h_dets, d->d_dets, (size_t)n * c->out_cap * 6 * sizeof(float),
                        cudaMemcpyDeviceToHost, b->stream));
  BD_CU(cudaMemcpyAsync(sl->h_counts, d->d_counts, (size_t)n * sizeof(int),
                        cudaMemcpyDeviceToHost, b->stream));
  BD_CU(cudaEventRecord(sl->done, b->stream));
  sl->busy = 1;
  sl->n = n;
out:
  if (st != BD_OK) bd_err_prefix(err, "cuda:%d detect launch", b->device);
  return st;
}

bd_status bd_cuda_dd_wait(bd_backend *be, int slot, const float **dets, const int **counts,
                          bd_err *err) {
  bd_cuda_be *b = be_of(be);
  bd_status st = BD_OK;
  bd_cuda_dd *d = b->dd;
  if (!d || slot < 0 || slot >= BD_DD_SLOTS || !d->slot[slot].busy)
    return bd_err_set(err, BD_E_INVALID, "cuda detect: slot %d has no batch in flight", slot);
  bd_cuda_dd_slot *sl = &d->slot[slot];
  BD_CU(cudaSetDevice(b->device));
  /* The slot is idle again whatever the outcome: a failed batch is not retried. */
  sl->busy = 0;
  BD_CU(cudaEventSynchronize(sl->done));
  for (int r = 0; r < sl->n; ++r)
    if (sl->h_counts[r] < 0 || sl->h_counts[r] > d->cfg.out_cap) {
      st = bd_err_set(err, BD_E_DEVICE, "cuda:%d detect: row %d came back with %d detections",
                      b->device, r, sl->h_counts[r]);
      goto out;
    }
  *dets = sl->h_dets;
  *counts = sl->h_counts;
out:
  return st;
}

const char *bd_cuda_backend_dd_graph_error(bd_backend *be, const bd_plan *p) {
  bd_cuda_cplan *cp = bd_cuda_find_plan(be_of(be), p);
  if (!cp || !cp->dd_ready) return "plan not prepared for device detection";
  for (int s = 0; s < BD_DD_SLOTS; ++s)
    if (!cp->dd_exec[s]) return cp->dd_graph_err[0] ? cp->dd_graph_err : "not captured";
  return NULL;
}
