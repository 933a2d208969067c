// AVX-512 VPOPCNTDQ kernels (built with -mavx512f -mavx512bw -mavx512vpopcntdq -mavx512bitalg):
// vpopcntq on 8 output channels per zmm, 4 pixels x 4 blocks per pass; segment mode per 16-bit
// (BITALG vpopcntw) or 32-bit (vpopcntd) lane.
#if defined(__x86_64__)
#if !defined(__AVX512VPOPCNTDQ__) || !defined(__AVX512BITALG__) || !defined(__AVX512BW__)
#error "kernels_avx512.cpp needs -mavx512f -mavx512bw -mavx512vpopcntdq -mavx512bitalg (setup.py passes them)"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine.h"

namespace binsr::avx512 {
constexpr int PX = 4, QB = 4;
constexpr size_t kWeightCopies = 1;

// Popcounts of P pixels x NQ blocks of 8 output channels (8 int64 lanes per zmm), written as dots.
template <int P, int NQ>
__attribute__((always_inline)) static inline void block(
    const Job& j, const uint64_t* a, size_t woff, int32_t* dots, int C, int nvalid) {
  const Layer& L = *j.L;
  const int taps = L.taps, wd = L.wd;
  const size_t qs = (size_t)taps * wd * 8;
  const uint64_t* w = L.w.data() + woff;
  __m512i acc[P][NQ];
  for (int p = 0; p < P; ++p)
    for (int q = 0; q < NQ; ++q) acc[p][q] = _mm512_setzero_si512();
  for (int t = 0; t < taps; ++t) {
    const uint64_t* at = a + j.tapoff[t];
    const uint64_t* wt = w + (size_t)t * wd * 8;
    for (int i = 0; i < wd; ++i) {
      __m512i wv[NQ];
      for (int q = 0; q < NQ; ++q) wv[q] = _mm512_loadu_si512((const void*)(wt + q * qs + i * 8));
      for (int p = 0; p < P; ++p) {
        const __m512i av = _mm512_set1_epi64((long long)at[(size_t)p * L.ps + i]);
        for (int q = 0; q < NQ; ++q)
          acc[p][q] = _mm512_add_epi64(acc[p][q], _mm512_popcnt_epi64(_mm512_xor_si512(av, wv[q])));
      }
    }
  }
  // dots = K - 2 * popcount: two blocks' int64 counts -> 16 int32 lanes by one vpermt2d
  const int K = L.cpg_in * taps, n = std::min(nvalid, NQ * 8);
  const __m512i kv = _mm512_set1_epi32(K);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int p = 0; p < P; ++p) {
    alignas(64) int32_t d[(NQ + 1) / 2 * 16];
    int32_t* dst = n == NQ * 8 ? dots + (size_t)p * C : d;  // whole blocks: straight into dots
    for (int q = 0; q < NQ; q += 2) {
      const __m512i pc = q + 1 < NQ ? _mm512_permutex2var_epi32(acc[p][q], even, acc[p][q + 1])
                                    : _mm512_zextsi256_si512(_mm512_cvtepi64_epi32(acc[p][q]));
      const __m512i dv = _mm512_sub_epi32(kv, _mm512_slli_epi32(pc, 1));
      if (q + 1 < NQ) _mm512_storeu_si512((void*)(dst + q * 8), dv);
      else _mm256_storeu_si256((__m256i*)(dst + q * 8), _mm512_castsi512_si256(dv));
    }
    if (dst == d) std::memcpy(dots + (size_t)p * C, d, sizeof(int32_t) * n);
  }
}

static inline uint64_t pack_word(
    const float* v, const float* thr, int n) {
  uint64_t w = n < 64 ? ~0ull << n : 0;  // bits past the last channel: 1
  for (int i = 0; i < 4 && 16 * i < n; ++i) {
    const int k = n - 16 * i;
    const __mmask16 m = k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << k) - 1);
    const __m512 t = thr ? _mm512_maskz_loadu_ps(m, thr + 16 * i) : _mm512_setzero_ps();
    w |= (uint64_t)_mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, v + 16 * i), t, _CMP_GE_OQ) << (16 * i);
  }
  return w;
}

// Float output of one pixel, streamed (no read for ownership) when asked and it is whole cache lines.
// Whole vectors are copied inline (a memcpy call per pixel cost 5% of a 64-channel layer).
static inline void store_floats(float* dst, const float* v, int C, bool stream) {
  if (C % 16) { std::memcpy(dst, v, sizeof(float) * C); return; }
  if (stream && ((uintptr_t)dst & 63) == 0)
    for (int o = 0; o < C; o += 16) _mm512_stream_ps(dst + o, _mm512_loadu_ps(v + o));
  else
    for (int o = 0; o < C; o += 16) _mm512_storeu_ps(dst + o, _mm512_loadu_ps(v + o));
}
static inline void stream_fence() { _mm_sfence(); }

// epilogue.inc's fused epilogue in registers, for the usual case (no int32 output; the last C % 16
// channels in masked vectors): the same float operations in the same order as its scalar loops
// (fma for scale and bias, or with SCALES' gates scale, pixel gate, channel gate and bias one at a
// time, then the gated bias's rounded product added; then RPReLU, / div, post_scale and residuals, RPReLU), so the same bits, without the passes
// through the values buffer. A tile is NV x 16 channels of P pixels, each step of the epilogue over
// all its vectors at once, so each option is tested once per tile and a channel's parameters are
// loaded once per P pixels. Layers with float output go a pixel's 64 channels at a time (its word
// of bits the four compare masks joined in mask registers, stored once); layers with bits alone 16
// channels of 8 pixels at a time, as the AMX kernel's epi16, each mask stored as a 16-bit piece of
// its word (3x3 layer, bits out: 2.47 -> 2.26 ms on Zen 4; with float output the 8-pixel tiles
// were slower, 3.2 -> 3.5-3.8 ms, and the zoo networks no faster: benchmarks/README.md)
// (fast_epilogue; false: not handled).

// The epilogue's operands for one call, everything in locals (the stores could otherwise alias the
// Epilogue's fields).
struct FastEpi {
  const float *scale, *bias, *gate_bias, *thr, *sh, *sl, *ab, *pix, *chan;
  const float* res[3];
  float* out;
  uint16_t* bits;  // 16-bit pieces of the packed words
  int nres, post_after, pw4;
  bool fma, act_first, act_last, div, post, stream;
  __m512 divv, postv;
};

// Channels [o, o + 16 NV) of P pixels from pixel index pi on (their dots at d, C apart). TAIL (NV
// 1): the last C % 16 channels only, lanes `tm`: masked loads and stores, the same operations on the
// lanes kept (the others are never stored; bits past C stay 1).
template <int P, int NV, bool TAIL = false>
__attribute__((always_inline)) static inline void epi_tile(const FastEpi& k, const int32_t* __restrict d, int o,
                                                           size_t pi, int C, __mmask16 tm = 0xffff) {
  static_assert(!TAIL || NV == 1, "a tail is one vector");
  __m512 v[P][NV], a[NV], b[NV];
  auto ld = [&](const float* src) { return TAIL ? _mm512_maskz_loadu_ps(tm, src) : _mm512_loadu_ps(src); };
  auto load = [&](__m512* r, const float* src) {
    for (int i = 0; i < NV; ++i) r[i] = ld(src + o + 16 * i);
  };
  auto mul = [&](const __m512* r) {
    for (int p = 0; p < P; ++p)
      for (int i = 0; i < NV; ++i) v[p][i] = _mm512_mul_ps(v[p][i], r[i]);
  };
  // RPReLU: u > 0 ? u : slope * u (one masked multiply; !(u > 0) takes NaN too), + bias
  auto rprelu = [&]() {
    __m512 sl[NV];
    load(a, k.sh), load(sl, k.sl), load(b, k.ab);
    for (int p = 0; p < P; ++p)
      for (int i = 0; i < NV; ++i) {
        const __m512 u = _mm512_sub_ps(v[p][i], a[i]);
        const __mmask16 le = _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_NGT_UQ);
        v[p][i] = _mm512_add_ps(_mm512_mask_mul_ps(u, le, u, sl[i]), b[i]);
      }
  };
  for (int p = 0; p < P; ++p)
    for (int i = 0; i < NV; ++i)
      v[p][i] = _mm512_cvtepi32_ps(TAIL ? _mm512_maskz_loadu_epi32(tm, d + (size_t)p * C + o)
                                        : _mm512_loadu_si512((const void*)(d + (size_t)p * C + o + 16 * i)));
  if (k.fma) {
    load(a, k.scale), load(b, k.bias);
    for (int p = 0; p < P; ++p)
      for (int i = 0; i < NV; ++i) v[p][i] = _mm512_fmadd_ps(v[p][i], a[i], b[i]);
  } else {
    if (k.scale) load(a, k.scale), mul(a);
    if (k.pix)
      for (int p = 0; p < P; ++p)
        for (int i = 0; i < NV; ++i) v[p][i] = _mm512_mul_ps(v[p][i], _mm512_set1_ps(k.pix[pi + p]));
    if (k.chan) load(a, k.chan), mul(a);
    if (k.bias) {
      load(b, k.bias);
      for (int p = 0; p < P; ++p)
        for (int i = 0; i < NV; ++i) v[p][i] = _mm512_add_ps(v[p][i], b[i]);
    }
    if (k.gate_bias) {  // + pix * gate_bias, the product rounded first (no FMA: -ffp-contract=off)
      load(b, k.gate_bias);
      for (int p = 0; p < P; ++p)
        for (int i = 0; i < NV; ++i) v[p][i] = _mm512_add_ps(v[p][i], _mm512_mul_ps(_mm512_set1_ps(k.pix[pi + p]), b[i]));
    }
  }
  if (k.act_first) rprelu();
  if (k.div)
    for (int p = 0; p < P; ++p)
      for (int i = 0; i < NV; ++i) v[p][i] = _mm512_div_ps(v[p][i], k.divv);
  for (int r = 0; r <= k.nres; ++r) {
    if (k.post && r == std::min(k.post_after, k.nres))
      for (int p = 0; p < P; ++p)
        for (int i = 0; i < NV; ++i) v[p][i] = _mm512_mul_ps(v[p][i], k.postv);
    if (r < k.nres)
      for (int p = 0; p < P; ++p)
        for (int i = 0; i < NV; ++i) v[p][i] = _mm512_add_ps(v[p][i], ld(k.res[r] + (pi + p) * C + o + 16 * i));
  }
  if (k.act_last) rprelu();
  if (k.out) {
    float* dst = k.out + pi * C + o;
    for (int p = 0; p < P; ++p)
      for (int i = 0; i < NV; ++i)
        if (TAIL) _mm512_mask_storeu_ps(dst + (size_t)p * C, tm, v[p][i]);
        else if (k.stream) _mm512_stream_ps(dst + (size_t)p * C + 16 * i, v[p][i]);
        else _mm512_storeu_ps(dst + (size_t)p * C + 16 * i, v[p][i]);
  }
  if (k.bits) {
    if (k.thr) load(a, k.thr);
    else for (int i = 0; i < NV; ++i) a[i] = _mm512_setzero_ps();
    uint16_t* w = k.bits + pi * k.pw4 + o / 16;
    for (int p = 0; p < P; ++p)
      if (NV == 4) {  // a whole word: the four masks joined in mask registers, stored once
        __mmask16 m[4];
        for (int i = 0; i < 4; ++i) m[i] = _mm512_cmp_ps_mask(v[p][i], a[i], _CMP_GE_OQ);
        _store_mask64((__mmask64*)(w + (size_t)p * k.pw4),
                      _mm512_kunpackd((__mmask64)_mm512_kunpackw(m[3], m[2]), (__mmask64)_mm512_kunpackw(m[1], m[0])));
      } else {
        for (int i = 0; i < NV; ++i)
          _store_mask16((__mmask16*)(w + (size_t)p * k.pw4 + i),
                        (__mmask16)(_mm512_cmp_ps_mask(v[p][i], a[i], _CMP_GE_OQ) | (__mmask16)~tm));
      }
  }
}

static bool fast_epilogue(const Job& j, int y, int x0, int np, const int32_t* dots) {
  const Epilogue& e = j.e;
  const int C = j.L->cout;
  // a few pixels a call (segment mode): the scalar loops were as fast or faster
  if (e.out_int || np < 16) return false;
  FastEpi k;
  k.scale = e.scale, k.bias = e.bias, k.gate_bias = e.gate_bias, k.thr = e.thr, k.pix = e.pix, k.chan = e.chan;
  k.sh = e.act_shift, k.sl = e.act_slope, k.ab = e.act_bias;
  k.fma = k.scale && k.bias && !k.pix && !k.chan;
  k.act_first = k.sl && e.act_first, k.act_last = k.sl && !e.act_first;
  k.div = e.div != 1.f, k.post = e.post_scale != 1.f;
  k.divv = _mm512_set1_ps(e.div), k.postv = _mm512_set1_ps(e.post_scale);
  k.post_after = e.post_after;
  k.nres = 0;
  for (int r = 0; r < 3; ++r)
    if (e.res[r]) k.res[k.nres++] = e.res[r];  // added in this order, post_scale after the first post_after
  k.out = e.out;
  k.stream = e.out && e.stream && C % 16 == 0 && ((uintptr_t)e.out & 63) == 0;  // every pixel's lines whole
  k.bits = (uint16_t*)e.bits, k.pw4 = 4 * e.pwd;
  const size_t pi0 = (size_t)y * j.Wo + x0;
  const int pieces = (C + 15) / 16;  // 16-bit pieces the tiles store (the tail's own lanes past C as 1)
  if (e.bits && pieces < k.pw4)  // the last word's pieces past them: all ones, as pack_word leaves them
                                 // (stored as pieces too: the tiles' 16-bit stores and a 64-bit one may not alias)
    for (int p = 0; p < np; ++p)
      for (int q = pieces; q < k.pw4; ++q) k.bits[(pi0 + p) * k.pw4 + q] = 0xffff;
  const int C64 = C / 64 * 64, C16 = C / 16 * 16;
  const __mmask16 tm = (__mmask16)((1u << (C % 16)) - 1);  // the tail's channels
  for (int p = 0; p < np;) {
    const int32_t* d = dots + (size_t)p * C;
    if (!k.out && p + 8 <= np) {  // bits alone
      for (int o = 0; o < C16; o += 16) epi_tile<8, 1>(k, d, o, pi0 + p, C);
      if (C16 < C) epi_tile<8, 1, true>(k, d, C16, pi0 + p, C, tm);
      p += 8;
    } else {
      for (int o = 0; o < C64; o += 64) epi_tile<1, 4>(k, d, o, pi0 + p, C);
      for (int o = C64; o < C16; o += 16) epi_tile<1, 1>(k, d, o, pi0 + p, C);
      if (C16 < C) epi_tile<1, 1, true>(k, d, C16, pi0 + p, C, tm);
      p += 1;
    }
  }
  return true;
}
#define BINSR_FAST_EPILOGUE 1

#include "epilogue.inc"
#include "rows.inc"

// Segment mode (groups of 16 or 32 input channels, as AVX2's rows_seg): the 64 / seg groups that
// share an input word are computed together, one output channel of each group per seg-bit segment
// of a weight word; popcounts per 16-bit (BITALG vpopcntw) or 32-bit (vpopcntd) lane.
template <int P, int NQ, int SEG>
__attribute__((always_inline)) static inline void block_seg(
    const Job& j, const uint64_t* a, int word, int vb, int32_t* dots, int C) {
  const Layer& L = *j.L;
  const size_t qs = (size_t)L.taps * 8;
  const uint64_t* w = L.sraw.data() + ((size_t)word * L.nvb + vb) * qs;
  __m512i acc[P][NQ];
  for (int p = 0; p < P; ++p)
    for (int q = 0; q < NQ; ++q) acc[p][q] = _mm512_setzero_si512();
  for (int t = 0; t < L.taps; ++t) {
    const uint64_t* at = a + j.tapoff[t];
    __m512i wv[NQ];
    for (int q = 0; q < NQ; ++q) wv[q] = _mm512_loadu_si512((const void*)(w + q * qs + (size_t)t * 8));
    for (int p = 0; p < P; ++p) {
      const __m512i av = _mm512_set1_epi64((long long)at[(size_t)p * L.ps]);
      for (int q = 0; q < NQ; ++q) {
        const __m512i x = _mm512_xor_si512(av, wv[q]);
        if (SEG == 16) acc[p][q] = _mm512_add_epi16(acc[p][q], _mm512_popcnt_epi16(x));  // <= 16 * taps
        else acc[p][q] = _mm512_add_epi32(acc[p][q], _mm512_popcnt_epi32(x));
      }
    }
  }
  constexpr int m = 64 / SEG;
  const int K = L.cpg_in * L.taps;
  const int nc = std::min(NQ * 8, L.cpg_out - vb * 8), ng = std::min(m, L.groups - word * m);
  const __m512i kv = _mm512_set1_epi32(K);
  // A register holds lane (SEG == 32) 2v + r or (SEG == 16) 4v + r: virtual channel v of segment
  // r, segment r being group word * m + r. Permutes put each segment's 8 channels in one half
  // (SEG == 16: the two halves widened to 32-bit first), stored at that group's dots.
  const __m512i lo2 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  const __m512i lo4 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
  const __m512i hi4 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
  for (int p = 0; p < P; ++p) {
    int32_t* out = dots + (size_t)p * C + (size_t)word * m * L.cpg_out + vb * 8;
    for (int q = 0; q < NQ && q * 8 < nc; ++q) {
      const int n = std::min(8, nc - q * 8);
      __m512i seg[2];  // segments (r, r + 1) in its (low, high) half, r = 0 then (SEG == 16) 2
      if (SEG == 16) {
        const __m512i a = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(acc[p][q]));
        const __m512i b = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(acc[p][q], 1));
        seg[0] = _mm512_permutex2var_epi32(a, lo4, b);
        seg[1] = _mm512_permutex2var_epi32(a, hi4, b);
      } else {
        seg[0] = _mm512_permutexvar_epi32(lo2, acc[p][q]);
      }
      for (int r = 0; r < ng; ++r) {
        const __m512i dv = _mm512_sub_epi32(kv, _mm512_slli_epi32(seg[r / 2], 1));
        const __m256i half = r % 2 ? _mm512_extracti64x4_epi64(dv, 1) : _mm512_castsi512_si256(dv);
        int32_t* dst = out + (size_t)r * L.cpg_out + q * 8;
        if (n == 8) _mm256_storeu_si256((__m256i*)dst, half);
        else _mm512_mask_storeu_epi32(dst, (__mmask16)((1u << n) - 1), _mm512_zextsi256_si512(half));
      }
    }
  }
}

template <int SEG>
static void rows_seg_t(const Job& j, int y0, int y1) {
  constexpr int SP = 4, SQ = 2;
  const Layer& L = *j.L;
  const int C = L.cout;
  int32_t* dots = (int32_t*)scratch(0, sizeof(int32_t) * (size_t)SP * C);
  float* v = (float*)scratch(1, sizeof(float) * 2 * C);  // the epilogue's values and its scratch
  for (int y = y0; y < y1; ++y)
    for (int x0 = 0; x0 < j.Wo; x0 += SP) {
      const int np = std::min(SP, j.Wo - x0);
      for (int w = 0; w < L.ps; ++w) {
        const uint64_t* a = j.xp + ((size_t)y * j.Wp + x0) * L.ps + w;
        for (int p = 0; p < np; p += (np == SP ? SP : 1)) {
          int vb = 0;
          for (; vb + SQ <= L.nvb; vb += SQ) {
            if (np == SP) block_seg<SP, SQ, SEG>(j, a, w, vb, dots, C);
            else block_seg<1, SQ, SEG>(j, a + (size_t)p * L.ps, w, vb, dots + (size_t)p * C, C);
          }
          for (; vb < L.nvb; ++vb) {
            if (np == SP) block_seg<SP, 1, SEG>(j, a, w, vb, dots, C);
            else block_seg<1, 1, SEG>(j, a + (size_t)p * L.ps, w, vb, dots + (size_t)p * C, C);
          }
        }
      }
      epilogue(j, y, x0, np, dots, v);
    }
}

void rows_seg(const Job& j, int y0, int y1) {
  if (j.L->seg == 16) rows_seg_t<16>(j, y0, y1);
  else rows_seg_t<32>(j, y0, y1);
  stream_fence();
}

// SCALES' spatial gate sigmoid(conv3x3(x) + b), one output channel, zero padding 1, in double
// (engine.cpp spatial_gate3x3; binsr.nn.SpatialGate). P output pixels of a row at a time: each of
// the P + 2 input pixels of a tap row is widened to double in registers once per 8 channels
// (vcvtps2pd, exact) and multiplied by the 3 taps' weights it meets, one running sum of 8 doubles
// per output pixel. Edge: P = 1 with the taps outside the map skipped (the portable loops widen
// strips of rows in memory first, which cost more than the products). Sum: the block's own pixels
// (the middle tap row's j = 1..P) are added to the per-channel sums cs as they are read.
template <int P, bool Edge, bool Sum>
__attribute__((always_inline)) static inline void gate_pixels(const float* __restrict x, const double* __restrict w,
                                                              double bias, float* __restrict y, int H, int W, int C,
                                                              int yy, int xx, double* __restrict cs) {
  __m512d a[P];
  double rem[P];
  for (int p = 0; p < P; ++p) {
    a[p] = _mm512_setzero_pd();
    rem[p] = 0.0;
  }
  const int C8 = C / 8 * 8;
  for (int ky = 0; ky < 3; ++ky) {
    const int iy = yy + ky - 1;
    if (iy < 0 || iy >= H) continue;
    const float* xr = x + ((size_t)iy * W + xx - 1) * C;  // input pixel j of the block: xr + j * C
    const double* wr = w + (size_t)ky * 3 * C;            // tap (ky, kx): wr + kx * C
    const bool sum = Sum && ky == 1;
    for (int c = 0; c < C8; c += 8) {
      const __m512d w0 = _mm512_loadu_pd(wr + c), w1 = _mm512_loadu_pd(wr + C + c), w2 = _mm512_loadu_pd(wr + 2 * C + c);
      __m512d own = _mm512_setzero_pd();  // the block's own pixels, summed in order
#pragma GCC unroll 16
      for (int j = 0; j < P + 2; ++j) {
        if (Edge && (xx - 1 + j < 0 || xx - 1 + j >= W)) continue;
        const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(xr + (size_t)j * C + c));
        if (j < P) a[j] = _mm512_fmadd_pd(v, w0, a[j]);
        if (j >= 1 && j - 1 < P) a[j - 1] = _mm512_fmadd_pd(v, w1, a[j - 1]);
        if (j >= 2) a[j - 2] = _mm512_fmadd_pd(v, w2, a[j - 2]);
        if (Sum && j >= 1 && j <= P) own = _mm512_add_pd(own, v);
      }
      if (sum) _mm512_storeu_pd(cs + c, _mm512_add_pd(_mm512_loadu_pd(cs + c), own));
    }
    for (int c = C8; c < C; ++c)
      for (int j = 0; j < P + 2; ++j) {
        if (Edge && (xx - 1 + j < 0 || xx - 1 + j >= W)) continue;
        const double v = xr[(size_t)j * C + c];
        for (int kx = 0; kx < 3; ++kx)
          if (j - kx >= 0 && j - kx < P) rem[j - kx] += v * wr[(size_t)kx * C + c];
        if (sum && j >= 1 && j <= P) cs[c] += v;
      }
  }
  for (int p = 0; p < P; ++p) {
    const double r = bias + _mm512_reduce_add_pd(a[p]) + rem[p];
    y[(size_t)yy * W + xx + p] = (float)(1.0 / (1.0 + std::exp(-r)));
  }
}

template <bool Sum>
static void gate3x3_rows_t(const float* x, const double* w, double bias, float* y, int H, int W, int C, int y0, int y1,
                           double* sums) {
  constexpr int P = 8;
  for (int yy = y0; yy < y1; ++yy) {
    int xx = 0;
    for (; xx < W && (xx < 1 || xx + P > W - 1); ++xx) gate_pixels<1, true, Sum>(x, w, bias, y, H, W, C, yy, xx, sums);
    for (; xx + P <= W - 1; xx += P) {
      if (yy + 3 < H) {  // the next row's new input row, whose lines the hardware prefetcher fetches too late
        const char* nx = (const char*)(x + ((size_t)(yy + 3) * W + xx) * C);
        for (size_t o = 0; o < (size_t)P * C * sizeof(float); o += 64) _mm_prefetch(nx + o, _MM_HINT_T1);
      }
      gate_pixels<P, false, Sum>(x, w, bias, y, H, W, C, yy, xx, sums);
    }
    for (; xx < W; ++xx) gate_pixels<1, true, Sum>(x, w, bias, y, H, W, C, yy, xx, sums);
  }
}

void gate3x3_rows(const float* x, const double* w, const float* b, float* y, int H, int W, int C, int y0, int y1,
                  double* sums) {
  const double bias = b ? b[0] : 0.0;
  if (sums) gate3x3_rows_t<true>(x, w, bias, y, H, W, C, y0, y1, sums);
  else gate3x3_rows_t<false>(x, w, bias, y, H, W, C, y0, y1, nullptr);
}
}  // namespace binsr::avx512
#endif
