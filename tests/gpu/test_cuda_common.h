/* Helpers of the cuda tests: skip without a device, BF16 and half on the host, seeded random
 * numbers, device buffers poisoned with NaN. */
#ifndef TEST_CUDA_COMMON_H
#define TEST_CUDA_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime.h>

#include "bd_cuda_probe.h"

#define TC_SKIP_IF_NO_DEVICE()                    \
  do {                                            \
    if (bd_cuda_device_count() == 0) {            \
      printf("SKIP: no CUDA device\n");           \
      return 77;                                  \
    }                                             \
  } while (0)

static uint64_t tc_rng __attribute__((unused)) = 0;

static inline void tc_seed(void) {
  const char *s = getenv("BD_TEST_SEED");
  tc_rng = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
  printf("seed %llu (set BD_TEST_SEED to repeat)\n", (unsigned long long)tc_rng);
}

/* Uniform in [lo, hi). */
static inline float tc_uniform(float lo, float hi) {
  tc_rng = tc_rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return lo + (hi - lo) * (float)((tc_rng >> 40) * (1.0 / 16777216.0));
}

/* Round to nearest even, like __float2bfloat16_rn (inputs here are finite). */
static inline uint16_t tc_f2bf(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7F800000u) != 0x7F800000u) u += 0x7FFFu + ((u >> 16) & 1u); /* Inf/NaN kept */
  return (uint16_t)(u >> 16);
}

static inline float tc_bf2f(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* IEEE half, round to nearest even like __float2half_rn (overflow to Inf, NaN kept). */
static inline uint16_t tc_f2half(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, m = x & 0x7FFFFFu;
  int32_t fe = (int32_t)((x >> 23) & 0xFF), e = fe - 127 + 15;
  if (fe == 0xFF) return (uint16_t)(sign | 0x7C00u | (m ? 0x200u : 0));
  if (e >= 31) return (uint16_t)(sign | 0x7C00u);
  if (e <= 0) { /* subnormal half */
    if (e < -10) return (uint16_t)sign;
    m |= 0x800000u;
    int shift = 14 - e;
    uint32_t hm = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (hm & 1))) hm++;
    return (uint16_t)(sign | hm);
  }
  uint32_t hm = m >> 13, rem = m & 0x1FFFu, h = sign | ((uint32_t)e << 10) | hm;
  if (rem > 0x1000u || (rem == 0x1000u && (hm & 1))) h++;
  return (uint16_t)h;
}

static inline float tc_half2f(uint16_t h) {
  int e = (h >> 10) & 0x1F;
  uint32_t m = h & 0x3FFu;
  float f;
  if (e == 0) {
    f = ldexpf((float)m, -24);
  } else if (e == 31) {
    f = m ? NAN : INFINITY;
  } else {
    uint32_t x = ((uint32_t)(e - 15 + 127) << 23) | (m << 13);
    memcpy(&f, &x, 4);
  }
  return (h & 0x8000u) ? -f : f;
}

/* The backend's 16-bit storage type (BD_CT_H16): half, or BF16 with BD_CUDA_BF16. */
static inline uint16_t tc_f2h16(float f) {
#ifdef BD_CUDA_BF16
  return tc_f2bf(f);
#else
  return tc_f2half(f);
#endif
}

static inline float tc_h162f(uint16_t h) {
#ifdef BD_CUDA_BF16
  return tc_bf2f(h);
#else
  return tc_half2f(h);
#endif
}

/* A device buffer filled with 0xFF bytes: NaN in FP32 and BF16, so any element a kernel
 * forgot to write fails the comparison. */
static inline void *tc_dev_poisoned(size_t bytes) {
  void *p = NULL;
  if (cudaMalloc(&p, bytes) != cudaSuccess) return NULL;
  cudaMemset(p, 0xFF, bytes);
  return p;
}

static inline void *tc_dev_copy(const void *h, size_t bytes) {
  void *p = NULL;
  if (cudaMalloc(&p, bytes) != cudaSuccess) return NULL;
  cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice);
  return p;
}

/* |got-want| <= atol + rtol*|want|, NaN-safe; returns the number of mismatches and
 * prints the first few. */
static inline int tc_compare(const char *what, const float *got, const float *want, size_t n,
                      float atol, float rtol) {
  int bad = 0;
  for (size_t i = 0; i < n; ++i) {
    float d = fabsf(got[i] - want[i]);
    if (!(d <= atol + rtol * fabsf(want[i]))) {
      if (bad < 5) printf("%s[%zu]: got %g want %g\n", what, i, got[i], want[i]);
      ++bad;
    }
  }
  return bad;
}

/* Fills n images [n][3][h][w] with 0..255 values: nearest-resized from the PPM photo at
 * ppm_path when it can be read (BGR planes, image b shifted by 23*b pixels so that the
 * batch is not n copies), else a smooth synthetic pattern. Returns 1 for the photo.
 * Whole-model BF16 comparisons want image statistics: uniform noise is far from what
 * the network was trained on and inflates the relative error. */
static inline int tc_fill_images(float *x, int n, int h, int w, const char *ppm_path) {
  FILE *f = ppm_path ? fopen(ppm_path, "rb") : NULL;
  int pw = 0, ph = 0, maxv = 0;
  unsigned char *px = NULL;
  if (f && fscanf(f, "P6 %d %d %d", &pw, &ph, &maxv) == 3 && pw > 0 && ph > 0 && pw <= 8192 &&
      ph <= 8192 && maxv == 255 && fgetc(f) != EOF) {
    px = malloc((size_t)pw * ph * 3);
    if (px && fread(px, 3, (size_t)pw * ph, f) != (size_t)pw * ph) {
      free(px);
      px = NULL;
    }
  }
  if (f) fclose(f);
  for (int b = 0; b < n; ++b)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < h; ++y)
        for (int xx = 0; xx < w; ++xx) {
          float v;
          if (px) {
            int sy = (int)((int64_t)y * ph / h), sx = ((int)((int64_t)xx * pw / w) + 23 * b) % pw;
            v = px[((size_t)sy * pw + sx) * 3 + (2 - c)]; /* RGB file -> BGR planes */
          } else {
            v = (float)(int)(127.5 + 60 * sin(0.05 * xx + 0.3 * b + c) + 60 * cos(0.037 * y));
          }
          x[(((size_t)b * 3 + c) * h + y) * w + xx] = v;
        }
  int used = px != NULL;
  free(px);
  return used;
}

#endif
