/* Host emulation of the CUDA runtime calls the backend and the GPU tests make (see
 * cuda_rt_emu.h): memory, copies, streams, events, and stream capture into graphs that
 * a launch replays. Device work runs when submitted on a stream that is not capturing;
 * work submitted on a capturing stream is recorded, not run, as on a GPU, so that a
 * captured plan that only works because its capture also ran is caught. A captured node
 * depends on the stream's capture dependencies (the node before it, or the set
 * cudaStreamUpdateCaptureDependencies gave), and a launch runs a graph's nodes in the
 * order furthest from the capture's that those edges allow (emu_graph_order).
 *
 * $BD_EMU_ASYNC=1 (the real kernels' emulation only: the twins run when called): device
 * work is queued per stream instead, and runs when the host synchronises (an event, a
 * stream, the device, a blocking copy or free), in an adversarial order that respects
 * only what CUDA guarantees - each stream in order, cudaStreamWaitEvent - and otherwise
 * runs the work submitted last first. Work on one stream that relies on another
 * stream's work without an event between them then sees it too late or too early (a
 * copy stream overwriting staging that a kernel has not read yet, say): the wrong
 * results show what a GPU would do some of the time. */
#include "cuda_rt_emu.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An object compiled by nvcc registers its kernels at start-up through this call: linked
 * next to the emulation, a real kernel would stand in for an emulated one (and do
 * nothing without a GPU), so the test stops here instead. */
void **__cudaRegisterFatBinary(void *fat_cubin);
void **__cudaRegisterFatBinary(void *fat_cubin) {
  (void)fat_cubin;
  fprintf(stderr, "cuda emulation: an nvcc-compiled object is linked in; the emulated "
                  "kernels must be the only ones\n");
  abort();
}

/* ---- memory ---- */
/* Every allocation is [n bytes as the backend sees them][2n bytes of shadow]: a 16-bit
 * element at byte a of the first part is emulated as the float at byte A + n + 2(a - A)
 * of the shadow (A: the allocation's start), holding the value rounded as the storage
 * policy says (cuda_emu.c's twins; the real kernels' emulation uses the first part only).
 * Byte offsets the backend computes (slices, concat pieces, arena offsets) map linearly,
 * so one translation of a view's base per launch suffices. */
typedef struct emu_alloc {
  char *p;
  size_t n;
  int host; /* cudaMallocHost */
} emu_alloc;
static emu_alloc *emu_allocs;
static int emu_n_allocs, emu_cap_allocs;
/* The allocation table is shared by every thread (pool instances run engines on threads
 * of their own). */
static pthread_mutex_t emu_mu = PTHREAD_MUTEX_INITIALIZER;
/* Held while device work runs: one kernel or copy at a time, process-wide (the block
 * emulation's threads and barriers are process-wide state). */
static pthread_mutex_t emu_dev_mu = PTHREAD_MUTEX_INITIALIZER;

int bd_cuda_emu_graphs;
int bd_cuda_emu_shadows = 1;

/* Device bytes allocated now and at most so far (cudaMalloc, as the backend asked). */
size_t bd_cuda_emu_device_bytes, bd_cuda_emu_device_peak;

/* ---- streams and capture ---- */
/* A captured node and the nodes it depends on (indices of earlier nodes). */
typedef struct emu_node {
  void (*run)(void *);
  void *ctx;
  void (*drop)(void *);
  int *dep, n_dep;
} emu_node;
/* A captured graph; its instantiations share it (refs: the graph and each exec). order:
 * the order a launch runs its nodes in (emu_graph_order), made at its instantiation. */
typedef struct emu_graph {
  emu_node *node;
  int n, cap, refs;
  int *order;
} emu_graph;
/* Async mode: a queued piece of device work, or a wait for another stream's record. */
struct emu_stream;
typedef struct emu_item {
  void (*run)(void *); /* NULL: a wait */
  void *ctx;
  void (*drop)(void *);
  long long seq;          /* process-wide submission order */
  struct emu_stream *ws;  /* a wait: the stream of the awaited record ... */
  long long widx;         /* ... and that record's index among its items */
} emu_item;
typedef struct emu_stream {
  emu_graph *capture; /* the graph being captured, NULL when not capturing */
  int invalid;        /* the capture saw an illegal call: EndCapture fails */
  /* capturing: what the next node will depend on (node indices), and the last answer of
   * cudaStreamGetCaptureInfo (node handles: index + 1) */
  int *cdep, n_cdep, cap_cdep;
  cudaGraphNode_t *cinfo;
  int cap_cinfo;
  /* async mode: items q[head..n) pending; items submitted and run, ever */
  emu_item *q;
  int head, n, cap;
  long long n_sub, n_done;
  struct emu_stream *next; /* every stream, for the scheduler (destroyed ones too) */
} emu_stream;
/* The stream this thread is capturing (the mode is relaxed: only the capturing thread's
 * own calls are checked). */
static _Thread_local emu_stream *emu_capturing;

/* `what` is illegal in the capture of es: EndCapture will fail, as on a GPU. */
static void emu_invalidate(emu_stream *es, const char *what) {
  es->invalid = 1;
  fprintf(stderr, "cuda emulation: %s while capturing a stream\n", what);
}
/* 1 (and the capture invalidated) when the calling thread is capturing: `what` is
 * illegal there. */
static int emu_refused(const char *what) {
  if (!emu_capturing) return 0;
  emu_invalidate(emu_capturing, what);
  return 1;
}

static void emu_sync_all(void);
static void graph_unref(emu_graph *g) {
  if (!g || --g->refs > 0) return;
  emu_sync_all(); /* queued launches of it run its nodes */
  for (int i = 0; i < g->n; ++i) {
    if (g->node[i].drop) g->node[i].drop(g->node[i].ctx);
    free(g->node[i].dep);
  }
  free(g->node);
  free(g->order);
  free(g);
}

/* The order a launch of g runs its nodes in: each node after the nodes it depends on,
 * and otherwise as far from the capture order as that allows - of the nodes whose
 * dependencies have run, the one captured last runs first. A graph captured as a chain
 * runs as captured; in one with parallel branches, a node that reads what a node beside
 * it (no edge between them) writes sees the wrong bytes, as a GPU would some of the
 * time. 0 on an allocation failure. */
static int emu_graph_order(emu_graph *g) {
  if (g->order || g->n == 0) return 1;
  int *left = calloc((size_t)g->n, sizeof(int)), *order = malloc(sizeof(int) * (size_t)g->n);
  char *done = calloc((size_t)g->n, 1);
  if (!left || !order || !done) {
    free(left), free(order), free(done);
    return 0;
  }
  for (int i = 0; i < g->n; ++i) left[i] = g->node[i].n_dep;
  for (int k = 0; k < g->n; ++k) {
    int pick = -1;
    for (int i = g->n - 1; i >= 0 && pick < 0; --i)
      if (!done[i] && left[i] == 0) pick = i;
    if (pick < 0) abort(); /* a cycle: cannot be captured */
    done[pick] = 1;
    order[k] = pick;
    for (int i = pick + 1; i < g->n; ++i)
      for (int d = 0; d < g->node[i].n_dep; ++d)
        if (g->node[i].dep[d] == pick) left[i]--;
  }
  free(left);
  free(done);
  g->order = order;
  return 1;
}

/* ---- async mode ---- */
static int emu_async = -1;
static pthread_mutex_t emu_q_mu = PTHREAD_MUTEX_INITIALIZER; /* queues and the scheduler */
static emu_stream *emu_streams;                              /* every stream ever made */
static long long emu_seq;
static int emu_async_on(void) {
  if (emu_async < 0) {
    const char *e = getenv("BD_EMU_ASYNC");
    /* Only where every piece of device work is submitted (the real kernels' emulation,
     * which captures graphs): the twins run when called. */
    emu_async = e && atoi(e) != 0 && bd_cuda_emu_graphs;
  }
  return emu_async;
}
/* Appends an item to es's queue (a wait when run is NULL); its index among es's items
 * in *idx when idx is given. */
static cudaError_t emu_enqueue(emu_stream *es, void (*run)(void *), void *ctx,
                               void (*drop)(void *), emu_stream *ws, long long widx,
                               long long *idx) {
  pthread_mutex_lock(&emu_q_mu);
  if (es->n == es->cap) {
    if (es->head > 0) { /* reuse the run part */
      memmove(es->q, es->q + es->head, sizeof(*es->q) * (size_t)(es->n - es->head));
      es->n -= es->head;
      es->head = 0;
    }
    if (es->n == es->cap) {
      int cap = es->cap ? es->cap * 2 : 256;
      emu_item *nq = realloc(es->q, sizeof(*nq) * (size_t)cap);
      if (!nq) {
        pthread_mutex_unlock(&emu_q_mu);
        if (drop) drop(ctx);
        return cudaErrorMemoryAllocation;
      }
      es->q = nq;
      es->cap = cap;
    }
  }
  es->q[es->n++] = (emu_item){run, ctx, drop, ++emu_seq, ws, widx};
  if (idx) *idx = es->n_sub;
  es->n_sub++;
  pthread_mutex_unlock(&emu_q_mu);
  return cudaSuccess;
}
/* Runs queued items (emu_q_mu held) until item tidx of ts has run; ts NULL: until every
 * queue is empty. Each step runs, of the streams whose next item may run (not a wait for
 * a record still queued), the one whose next item was submitted last. */
static void emu_pump(emu_stream *ts, long long tidx) {
  for (;;) { /* each turn runs one queued item, or returns, or aborts */
    if (ts ? ts->n_done > tidx : 0) return;
    emu_stream *pick = NULL;
    int pending = 0;
    for (emu_stream *s = emu_streams; s; s = s->next) {
      if (s->head == s->n) continue;
      pending = 1;
      const emu_item *h = &s->q[s->head];
      if (h->ws && h->ws->n_done <= h->widx) continue;
      if (!pick || h->seq > pick->q[pick->head].seq) pick = s;
    }
    if (!pending && !ts) return;
    if (!pick) {
      fprintf(stderr, "cuda emulation: queued work can never run (a wait for a record "
                      "that never comes)\n");
      abort();
    }
    emu_item it = pick->q[pick->head++];
    if (it.run) {
      pthread_mutex_lock(&emu_dev_mu);
      it.run(it.ctx);
      pthread_mutex_unlock(&emu_dev_mu);
    }
    if (it.drop) it.drop(it.ctx);
    pick->n_done++;
  }
}
/* Synchronisation points: until item idx of es has run / all work has. */
static void emu_sync_item(emu_stream *es, long long idx) {
  if (!emu_async_on() || !es || idx < 0) return;
  pthread_mutex_lock(&emu_q_mu);
  emu_pump(es, idx);
  pthread_mutex_unlock(&emu_q_mu);
}
static void emu_sync_all(void) {
  if (!emu_async_on()) return;
  pthread_mutex_lock(&emu_q_mu);
  emu_pump(NULL, 0);
  pthread_mutex_unlock(&emu_q_mu);
}
/* Streams stay allocated once made (a record or wait may name a destroyed one): freed at
 * exit. */
__attribute__((destructor)) static void emu_streams_free(void) {
  while (emu_streams) {
    emu_stream *s = emu_streams;
    emu_streams = s->next;
    free(s->q);
    free(s->cdep);
    free(s->cinfo);
    free(s);
  }
}

cudaError_t bd_emu_submit(cudaStream_t s, void (*run)(void *), void *ctx, void (*drop)(void *)) {
  emu_stream *es = (emu_stream *)s;
  if (es && es->capture) {
    emu_graph *g = es->capture;
    if (g->n == g->cap) {
      int cap = g->cap ? g->cap * 2 : 64;
      emu_node *nn = realloc(g->node, sizeof(*nn) * (size_t)cap);
      if (!nn) {
        if (drop) drop(ctx);
        es->invalid = 1;
        return cudaErrorMemoryAllocation;
      }
      g->node = nn;
      g->cap = cap;
    }
    /* it depends on the stream's capture dependencies, and becomes them */
    int *dep = es->n_cdep ? malloc(sizeof(int) * (size_t)es->n_cdep) : NULL;
    if (es->n_cdep && !dep) {
      if (drop) drop(ctx);
      es->invalid = 1;
      return cudaErrorMemoryAllocation;
    }
    if (es->n_cdep) memcpy(dep, es->cdep, sizeof(int) * (size_t)es->n_cdep);
    g->node[g->n] = (emu_node){run, ctx, drop, dep, es->n_cdep};
    if (es->cap_cdep < 1) {
      int *c = realloc(es->cdep, sizeof(int) * 16);
      if (!c) {
        es->invalid = 1;
        return cudaErrorMemoryAllocation;
      }
      es->cdep = c;
      es->cap_cdep = 16;
    }
    es->cdep[0] = g->n++;
    es->n_cdep = 1;
    return cudaSuccess;
  }
  if (emu_async_on() && es) return emu_enqueue(es, run, ctx, drop, NULL, 0, NULL);
  pthread_mutex_lock(&emu_dev_mu);
  run(ctx);
  pthread_mutex_unlock(&emu_dev_mu);
  if (drop) drop(ctx);
  return cudaSuccess;
}

static cudaError_t emu_malloc(void **p, size_t n, int host) {
  if (emu_refused(host ? "cudaMallocHost" : "cudaMalloc")) return cudaErrorStreamCaptureUnsupported;
  /* Without shadows the allocation is exactly n bytes, so that AddressSanitizer sees a
   * kernel reading or writing past it. */
  size_t sz = (n ? n : 1) * (bd_cuda_emu_shadows ? 3 : 1);
  if (posix_memalign(p, 256, sz) != 0) *p = NULL;
  if (!*p) return cudaErrorMemoryAllocation;
  pthread_mutex_lock(&emu_mu);
  if (emu_n_allocs == emu_cap_allocs) {
    int cap = emu_cap_allocs ? emu_cap_allocs * 2 : 256;
    emu_alloc *na = realloc(emu_allocs, sizeof(*na) * (size_t)cap);
    if (!na) {
      pthread_mutex_unlock(&emu_mu);
      free(*p);
      return cudaErrorMemoryAllocation;
    }
    emu_allocs = na;
    emu_cap_allocs = cap;
  }
  emu_allocs[emu_n_allocs].p = *p;
  emu_allocs[emu_n_allocs].host = host;
  emu_allocs[emu_n_allocs++].n = n ? n : 1;
  if (!host) {
    bd_cuda_emu_device_bytes += n ? n : 1;
    if (bd_cuda_emu_device_bytes > bd_cuda_emu_device_peak)
      bd_cuda_emu_device_peak = bd_cuda_emu_device_bytes;
  }
  pthread_mutex_unlock(&emu_mu);
  return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) { return emu_malloc(p, n, 0); }
cudaError_t cudaFree(void *p) {
  if (emu_refused("cudaFree")) return cudaErrorStreamCaptureUnsupported;
  emu_sync_all(); /* cudaFree synchronises the device */
  pthread_mutex_lock(&emu_mu);
  for (int i = 0; i < emu_n_allocs; ++i)
    if (emu_allocs[i].p == p) {
      if (!emu_allocs[i].host) bd_cuda_emu_device_bytes -= emu_allocs[i].n;
      emu_allocs[i] = emu_allocs[--emu_n_allocs];
      break;
    }
  if (!emu_n_allocs) {
    free(emu_allocs);
    emu_allocs = NULL;
    emu_cap_allocs = 0;
  }
  pthread_mutex_unlock(&emu_mu);
  free(p);
  return cudaSuccess;
}
/* The allocation holding byte c, NULL when none (emu_mu held by the caller). */
static const emu_alloc *find_alloc(const char *c) {
  for (int i = 0; i < emu_n_allocs; ++i)
    if (c >= emu_allocs[i].p && c < emu_allocs[i].p + emu_allocs[i].n) return &emu_allocs[i];
  return NULL;
}
/* 1 when [p, p + n) lies in one allocation of ours (device or pinned host). */
static int emu_owned(const void *p, size_t n) {
  pthread_mutex_lock(&emu_mu);
  const emu_alloc *a = find_alloc(p);
  int r = a && (size_t)((const char *)p - a->p) + n <= a->n;
  pthread_mutex_unlock(&emu_mu);
  return r;
}
float *bd_emu_shadow(const void *p) {
  if (!p) return NULL;
  if (!bd_cuda_emu_shadows) abort(); /* the real kernels' emulation keeps none */
  const char *c = p;
  pthread_mutex_lock(&emu_mu);
  const emu_alloc *a = find_alloc(c);
  float *r = a ? (float *)(a->p + a->n + 2 * (size_t)(c - a->p)) : NULL;
  pthread_mutex_unlock(&emu_mu);
  if (!r) abort(); /* a 16-bit view outside every device allocation: a backend bug */
  return r;
}
/* How many live allocations of exactly n bytes there are, pinned host (host 1) or
 * device (0): lets a test see which buffers a backend holds once or per slot. */
int bd_cuda_emu_live_allocs(size_t n, int host) {
  int k = 0;
  pthread_mutex_lock(&emu_mu);
  for (int i = 0; i < emu_n_allocs; ++i) k += emu_allocs[i].n == n && emu_allocs[i].host == host;
  pthread_mutex_unlock(&emu_mu);
  return k;
}
cudaError_t cudaMallocHost(void **p, size_t n) { return emu_malloc(p, n, 1); }
cudaError_t cudaFreeHost(void *p) { return cudaFree(p); }
/* A device fault ($BD_EMU_DEVICE_FAULT=N): the Nth cudaEventSynchronize (a detection
 * batch's wait) fails with cudaErrorIllegalAddress, and so does every synchronisation,
 * copy and graph launch after it, as after a kernel fault on a GPU (the error is sticky:
 * the context is lost). */
static atomic_int emu_event_syncs, emu_faulted;
static int emu_fault_at(void) {
  const char *e = getenv("BD_EMU_DEVICE_FAULT");
  return e ? atoi(e) : 0;
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind k) {
  (void)k;
  if (atomic_load(&emu_faulted)) return cudaErrorIllegalAddress;
  if (emu_refused("cudaMemcpy")) return cudaErrorStreamCaptureUnsupported;
  emu_sync_all();
  memmove(d, s, n);
  return cudaSuccess;
}
_Thread_local int bd_cuda_emu_layer; /* launches since the run's first input upload (this thread) */
int bd_cuda_emu_io_copies; /* host<->device cudaMemcpyAsync calls so far */
/* The emulated device clock: kernel launches and device-to-device copies so far (all
 * threads); an event records it and an interval is 1 us per launch in between. */
atomic_llong bd_cuda_emu_launches;
void bd_emu_tick(void) { atomic_fetch_add(&bd_cuda_emu_launches, 1); }

typedef struct emu_copy {
  void *d;
  const void *s;
  size_t n;
  enum cudaMemcpyKind k;
} emu_copy;
static void run_copy(void *ctx) {
  const emu_copy *c = ctx;
  if (c->k == cudaMemcpyHostToDevice) bd_cuda_emu_layer = 0;
  if (c->k == cudaMemcpyDeviceToDevice) bd_emu_tick();
  memmove(c->d, c->s, c->n);
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind k,
                            cudaStream_t st) {
  emu_stream *es = (emu_stream *)st;
  if (atomic_load(&emu_faulted)) return cudaErrorIllegalAddress;
  /* A graph's copy node needs device or pinned memory at both ends. */
  if (es && es->capture && n && (!emu_owned(d, n) || !emu_owned(s, n))) {
    emu_invalidate(es, "a copy with pageable host memory");
    return cudaErrorStreamCaptureUnsupported;
  }
  if (k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToHost) bd_cuda_emu_io_copies++;
  emu_copy *c = malloc(sizeof(*c));
  if (!c) return cudaErrorMemoryAllocation;
  *c = (emu_copy){d, s, n, k};
  return bd_emu_submit(st, run_copy, c, free);
}
/* memset of the bytes and of their shadow slots. */
static void emu_memset(void *d, int v, size_t n) {
  memset(d, v, n);
  if (!bd_cuda_emu_shadows) return;
  pthread_mutex_lock(&emu_mu);
  const emu_alloc *a = find_alloc(d); /* the shadow slots of the same bytes */
  if (a) memset(a->p + a->n + 2 * (size_t)((char *)d - a->p), v, 2 * n);
  pthread_mutex_unlock(&emu_mu);
}
cudaError_t cudaMemset(void *d, int v, size_t n) {
  if (emu_refused("cudaMemset")) return cudaErrorStreamCaptureUnsupported;
  emu_sync_all();
  emu_memset(d, v, n);
  return cudaSuccess;
}
typedef struct emu_fill {
  void *d;
  int v;
  size_t n;
} emu_fill;
static void run_fill(void *ctx) {
  const emu_fill *f = ctx;
  bd_emu_tick(); /* device work, like a launch */
  emu_memset(f->d, f->v, f->n);
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t s) {
  emu_fill *f = malloc(sizeof(*f));
  if (!f) return cudaErrorMemoryAllocation;
  *f = (emu_fill){d, v, n};
  return bd_emu_submit(s, run_fill, f, free);
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned f) {
  (void)f;
  emu_stream *es = calloc(1, sizeof(*es));
  *s = (cudaStream_t)es;
  if (!es) return cudaErrorMemoryAllocation;
  if (emu_async_on()) {
    pthread_mutex_lock(&emu_q_mu);
    es->next = emu_streams;
    emu_streams = es;
    pthread_mutex_unlock(&emu_q_mu);
  }
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  emu_stream *es = (emu_stream *)s;
  if (es && es->capture) return cudaErrorStreamCaptureUnsupported;
  if (es && emu_async_on()) { /* its work completes; records of it stay answerable */
    emu_sync_item(es, es->n_sub - 1);
    return cudaSuccess;
  }
  if (es) {
    free(es->cdep);
    free(es->cinfo);
  }
  free(es);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  emu_stream *es = (emu_stream *)s;
  if (atomic_load(&emu_faulted)) return cudaErrorIllegalAddress;
  if (emu_refused("cudaStreamSynchronize")) return cudaErrorStreamCaptureUnsupported;
  if (es) emu_sync_item(es, es->n_sub - 1);
  else emu_sync_all(); /* the legacy default stream waits for the others */
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
  if (atomic_load(&emu_faulted)) return cudaErrorIllegalAddress;
  if (emu_refused("cudaDeviceSynchronize")) return cudaErrorStreamCaptureUnsupported;
  emu_sync_all();
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { (void)d; return cudaSuccess; }
cudaError_t cudaGetDevice(int *d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
/* The emulated device answers as an sm_80 (no programmatic dependent launch), or as
 * $BD_EMU_SM (90: a Hopper, for the backend's launch policy; nothing else changes). */
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int device) {
  (void)device;
  const char *sm = getenv("BD_EMU_SM");
  *v = a == cudaDevAttrComputeCapabilityMajor ? (sm && atoi(sm) > 0 ? atoi(sm) / 10 : 8) : 0;
  return cudaSuccess;
}
/* Kernel launches made with bd_cuda_pdl on (cuda_block_emu.h). */
long bd_emu_pdl_launches;
/* bd_cuda_probe's count, which bd_pool asks: the one emulated GPU. */
int bd_cuda_device_count(void) { return 1; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) {
  return e == cudaErrorIllegalAddress ? "an illegal memory access was encountered (emulated)"
         : e                          ? "emulated error"
                                      : "no error";
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode m) {
  emu_stream *es = (emu_stream *)s;
  (void)m;
  if (!bd_cuda_emu_graphs) return cudaErrorNotSupported; /* the twins run when called */
  if (!es || es->capture || emu_capturing) return cudaErrorIllegalState;
  es->capture = calloc(1, sizeof(*es->capture));
  if (!es->capture) return cudaErrorMemoryAllocation;
  es->capture->refs = 1;
  es->invalid = 0;
  es->n_cdep = 0;
  emu_capturing = es;
  return cudaSuccess;
}
/* The capture's status and its current dependencies (the handle of node i is i + 1). */
cudaError_t cudaStreamGetCaptureInfo(cudaStream_t s, enum cudaStreamCaptureStatus *st,
                                     unsigned long long *id, cudaGraph_t *graph,
                                     const cudaGraphNode_t **deps,
                                     const cudaGraphEdgeData **edges, size_t *n_deps) {
  emu_stream *es = (emu_stream *)s;
  if (!es || !st) return cudaErrorInvalidValue;
  *st = es->capture ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  if (id) *id = 0;
  if (graph) *graph = es->capture ? (cudaGraph_t)es->capture : NULL;
  if (edges) *edges = NULL; /* every edge a plain one */
  if (es->capture && es->cap_cinfo < es->n_cdep) {
    cudaGraphNode_t *c = realloc(es->cinfo, sizeof(*c) * (size_t)es->n_cdep);
    if (!c) return cudaErrorMemoryAllocation;
    es->cinfo = c;
    es->cap_cinfo = es->n_cdep;
  }
  for (int i = 0; es->capture && i < es->n_cdep; ++i)
    es->cinfo[i] = (cudaGraphNode_t)(uintptr_t)(es->cdep[i] + 1);
  if (deps) *deps = es->capture ? es->cinfo : NULL;
  if (n_deps) *n_deps = es->capture ? (size_t)es->n_cdep : 0;
  return cudaSuccess;
}
/* Sets (or adds to) the nodes the capture's next node depends on: nodes of this capture,
 * no edge data (plain edges only), no node twice. */
cudaError_t cudaStreamUpdateCaptureDependencies(cudaStream_t s, cudaGraphNode_t *deps,
                                                const cudaGraphEdgeData *data, size_t n,
                                                unsigned int flags) {
  emu_stream *es = (emu_stream *)s;
  if (!es || !es->capture || (n && !deps) || data ||
      (flags != cudaStreamSetCaptureDependencies && flags != cudaStreamAddCaptureDependencies))
    return cudaErrorInvalidValue;
  const int keep = flags == cudaStreamAddCaptureDependencies ? es->n_cdep : 0;
  if ((size_t)es->cap_cdep < keep + n) {
    int *c = realloc(es->cdep, sizeof(int) * (keep + n));
    if (!c) return cudaErrorMemoryAllocation;
    es->cdep = c;
    es->cap_cdep = (int)(keep + n);
  }
  es->n_cdep = keep;
  for (size_t i = 0; i < n; ++i) {
    const uintptr_t h = (uintptr_t)deps[i];
    if (h < 1 || h > (uintptr_t)es->capture->n) return cudaErrorInvalidValue;
    for (int k = 0; k < es->n_cdep; ++k)
      if (es->cdep[k] == (int)(h - 1)) return cudaErrorInvalidValue;
    es->cdep[es->n_cdep++] = (int)(h - 1);
  }
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) {
  emu_stream *es = (emu_stream *)s;
  *g = NULL;
  if (!bd_cuda_emu_graphs) return cudaErrorNotSupported;
  if (!es || !es->capture || emu_capturing != es) return cudaErrorIllegalState;
  emu_graph *cg = es->capture;
  es->capture = NULL;
  emu_capturing = NULL;
  if (es->invalid) {
    graph_unref(cg);
    return cudaErrorStreamCaptureInvalidated;
  }
  *g = (cudaGraph_t)cg;
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *st) {
  emu_stream *es = (emu_stream *)s;
  *st = es && es->capture ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long f) {
  (void)f;
  *e = NULL;
  if (!g) return cudaErrorInvalidValue;
  if (!emu_graph_order((emu_graph *)g)) return cudaErrorMemoryAllocation;
  ((emu_graph *)g)->refs++;
  *e = (cudaGraphExec_t)g;
  return cudaSuccess;
}
static void run_record(void *ctx);
static void emu_event_queued(void *ev, emu_stream *es, long long idx);
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) {
  emu_stream *es = (emu_stream *)s;
  if (!e) return cudaErrorInvalidValue;
  if (atomic_load(&emu_faulted)) return cudaErrorIllegalAddress;
  if (es && es->capture) return cudaErrorStreamCaptureUnsupported; /* not a child graph here */
  emu_graph *g = (emu_graph *)e;
  if (!emu_graph_order(g)) return cudaErrorMemoryAllocation;
  if (emu_async_on() && es) { /* its nodes join the stream's queue (the graph owns them) */
    for (int k = 0; k < g->n; ++k) {
      const int i = g->order[k];
      long long idx;
      cudaError_t r = emu_enqueue(es, g->node[i].run, g->node[i].ctx, NULL, NULL, 0, &idx);
      if (r != cudaSuccess) return r;
      if (g->node[i].run == run_record) emu_event_queued(g->node[i].ctx, es, idx);
    }
    return cudaSuccess;
  }
  pthread_mutex_lock(&emu_dev_mu);
  for (int k = 0; k < g->n; ++k) g->node[g->order[k]].run(g->node[g->order[k]].ctx);
  pthread_mutex_unlock(&emu_dev_mu);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  graph_unref((emu_graph *)g);
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  graph_unref((emu_graph *)e);
  return cudaSuccess;
}

/* ---- events ---- */
/* Work runs when it is submitted (or replayed), so every event is complete when
 * recorded; each records the emulated clock (bd_cuda_emu_launches), so that an interval
 * is deterministic: 1 us per launch between its two events (the profile test checks each
 * action's share). An event recorded in a capture has no time (cudaEventElapsedTime
 * refuses it, as on a GPU). The emulation counts records and waits so that a test can
 * see the launch protocol was followed. Memory info: 1 GiB with nothing used
 * (bd_cuda_bench.c). */
typedef struct emu_event {
  long long t;
  int captured;
  /* async mode: the record last made of it, its stream and index there (none: NULL) */
  emu_stream *rs;
  long long ridx;
} emu_event;
/* Async mode: the event's last record is item idx of es. */
static void emu_event_queued(void *ev, emu_stream *es, long long idx) {
  emu_event *e = ev;
  e->rs = es;
  e->ridx = idx;
}
atomic_int bd_cuda_emu_event_records, bd_cuda_emu_event_waits;
/* Replays of external event record nodes (cudaEventRecordExternal in a capture). */
atomic_int bd_cuda_emu_external_records;
cudaError_t cudaEventCreate(cudaEvent_t *e) {
  emu_event *ev = calloc(1, sizeof(*ev));
  *e = (cudaEvent_t)ev;
  return ev ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned f) {
  (void)f;
  return cudaEventCreate(e);
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  emu_sync_all(); /* async mode: queued records of it run first */
  free(e);
  return cudaSuccess;
}
static void run_stamp(void *ctx) {
  emu_event *ev = ctx;
  ev->t = atomic_load(&bd_cuda_emu_launches);
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  emu_stream *es = (emu_stream *)s;
  emu_event *ev = (emu_event *)e;
  ev->captured = es && es->capture;
  bd_cuda_emu_event_records++;
  if (emu_async_on() && es && !es->capture) { /* stamped when the stream gets there */
    long long idx;
    cudaError_t r = emu_enqueue(es, run_stamp, ev, NULL, NULL, 0, &idx);
    if (r == cudaSuccess) emu_event_queued(ev, es, idx);
    return r;
  }
  ev->t = atomic_load(&bd_cuda_emu_launches);
  return cudaSuccess;
}
/* An external record node: each replay of its graph records the event, with the time
 * of that replay, as cudaEventRecord would there. */
static void run_record(void *ctx) {
  emu_event *ev = ctx;
  ev->captured = 0;
  /* (async mode: the launch that queued this node marked it as the event's record) */
  ev->t = atomic_load(&bd_cuda_emu_launches);
  bd_cuda_emu_external_records++;
}
cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t s, unsigned flags) {
  emu_stream *es = (emu_stream *)s;
  if (flags & ~(unsigned)cudaEventRecordExternal) return cudaErrorInvalidValue;
  if (!(flags & cudaEventRecordExternal)) return cudaEventRecord(e, s);
  /* The flag is only valid while capturing. */
  if (!es || !es->capture) return cudaErrorInvalidValue;
  bd_cuda_emu_event_records++;
  return bd_emu_submit(s, run_record, e, NULL);
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (emu_refused("cudaEventSynchronize")) return cudaErrorStreamCaptureUnsupported;
  const int at = emu_fault_at();
  if (at > 0 && atomic_fetch_add(&emu_event_syncs, 1) + 1 >= at) atomic_store(&emu_faulted, 1);
  if (atomic_load(&emu_faulted)) return cudaErrorIllegalAddress;
  const emu_event *ev = (const emu_event *)e;
  emu_sync_item(ev->rs, ev->ridx);
  bd_cuda_emu_event_waits++;
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned f) {
  emu_stream *es = (emu_stream *)s;
  const emu_event *ev = (const emu_event *)e;
  (void)f;
  /* Async mode: later work of s waits for the event's last record (none: nothing). */
  if (emu_async_on() && es && !es->capture && ev->rs)
    return emu_enqueue(es, NULL, NULL, NULL, ev->rs, ev->ridx, NULL);
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
  const emu_event *ea = (const emu_event *)a, *eb = (const emu_event *)b;
  emu_sync_item(ea->rs, ea->ridx);
  emu_sync_item(eb->rs, eb->ridx);
  if (ea->captured || eb->captured) return cudaErrorInvalidResourceHandle;
  *ms = (float)(eb->t - ea->t) * 1e-3f;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total) {
  *free_b = *total = (size_t)1 << 30;
  return cudaSuccess;
}
