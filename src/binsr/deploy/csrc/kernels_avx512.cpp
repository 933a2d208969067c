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
// TAPS, WD: the layer's taps and words per group when known at compile time (the common 3x3
// layer of <= 64 channels per group: 9, 1), else 0 (read from the layer).
template <int P, int NQ, int TAPS, int WD>
__attribute__((always_inline)) static inline void block(
    const Job& j, const uint64_t* a, size_t woff, int32_t* dots, int C, int nvalid) {
  const Layer& L = *j.L;
  const int taps = TAPS ? TAPS : L.taps, wd = WD ? WD : L.wd;
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

#include "epilogue.inc"
#include "epilogue_avx512.inc"

// One output row in strips of kStrip pixels: the dots of a strip's pixels and all its output
// channels (block<PX, QB> on PX pixels at a time) go to a kStrip x Cp int32 buffer that stays in
// L1, the group correction is added, and the strip's epilogue runs on 16 x 16 tiles in registers
// (epi16), its floats staged in L1 and then written to the map pixel by pixel in order (the 16 x 16
// tiles' own order, 4 lines apart, wrote the map 1.2x slower; writing a strip's floats during the
// next strip's popcounts, 1.1x slower): no map read back between the stages.
constexpr int kStrip = 16;

// The output and residual lines of pixels [x, x + n) of row y, fetched while their dots are computed.
static inline void prefetch_lines(const Job& j, int y, int x, int n) {
  const int C = j.L->cout;
  for (size_t q = ((size_t)y * j.Wo + x) * C, q1 = q + (size_t)n * C; q < q1; q += 16) {
    if (j.e.out) _mm_prefetch((const char*)(j.e.out + q), _MM_HINT_T0);
    for (int r = 0; r < 3 && j.e.res[r]; ++r) _mm_prefetch((const char*)(j.e.res[r] + q), _MM_HINT_T0);
  }
}

template <int TAPS, int WD>
static void rows_t(const Job& j, int y0, int y1) {
  const Layer& L = *j.L;
  const int C = L.cout, Cp = (C + 15) / 16 * 16;
  const size_t qs = (size_t)L.taps * L.wd * 8;  // words per block of 8 output channels
  int32_t* dots = (int32_t*)scratch(0, sizeof(int32_t) * kStrip * Cp);
  float* stage = (float*)scratch(1, sizeof(float) * kStrip * Cp);  // the strip's floats, in L1
  for (int y = y0; y < y1; ++y)
    for (int x0 = 0; x0 < j.Wo; x0 += kStrip) {
      const int np = std::min(kStrip, j.Wo - x0);
      prefetch_lines(j, y, x0, np);
      for (int g = 0; g < L.groups; ++g) {
        const uint64_t* a0 = j.xp + ((size_t)y * j.Wp + x0) * L.ps + L.w0[g];
        for (int p = 0; p < np;) {
          const int pp = np - p >= PX ? PX : 1;
          const uint64_t* a = a0 + (size_t)p * L.ps;
          int32_t* dp = dots + (size_t)p * Cp + g * L.cpg_out;
          int ob = 0;
          for (; ob + QB <= L.nob; ob += QB) {
            const size_t wo = ((size_t)g * L.nob + ob) * qs;
            if (pp == PX) block<PX, QB, TAPS, WD>(j, a, wo, dp + ob * 8, Cp, L.cpg_out - ob * 8);
            else block<1, QB, TAPS, WD>(j, a, wo, dp + ob * 8, Cp, L.cpg_out - ob * 8);
          }
          for (; ob < L.nob; ++ob) {
            const size_t wo = ((size_t)g * L.nob + ob) * qs;
            if (pp == PX) block<PX, 1, TAPS, WD>(j, a, wo, dp + ob * 8, Cp, L.cpg_out - ob * 8);
            else block<1, 1, TAPS, WD>(j, a, wo, dp + ob * 8, Cp, L.cpg_out - ob * 8);
          }
          p += pp;
        }
        if (j.corr) {  // dot = K - 2 * (popcount - popcount outside the group)
          for (int x = 0; x < np; ++x) {
            const int32_t* cp = j.corr + ((size_t)y * j.Wp + x0 + x) * L.groups + g;
            int32_t c2 = 0;
            for (int t = 0; t < L.taps; ++t) c2 += cp[j.tappix[t] * L.groups];
            int32_t* d = dots + (size_t)x * Cp + g * L.cpg_out;
            for (int o = 0; o < L.cpg_out; ++o) d[o] += 2 * c2;
          }
        }
      }
      const size_t pi = (size_t)y * j.Wo + x0;
      for (int o0 = 0; o0 < C; o0 += 16) epi16<false>(j, pi, np, o0, dots + o0, Cp, nullptr, stage + o0, Cp);
      if (j.e.out)  // the strip's floats are one contiguous piece of the map: written in order
        for (int p = 0; p < np; ++p) store_floats(j.e.out + (pi + p) * C, stage + (size_t)p * Cp, C, j.e.stream);
    }
}

void rows(const Job& j, int y0, int y1) {
  if (j.L->taps == 9 && j.L->wd == 1) rows_t<9, 1>(j, y0, y1);
  else rows_t<0, 0>(j, y0, y1);
  stream_fence();
}

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
  for (int p = 0; p < P; ++p) {
    alignas(64) int32_t d[NQ * 32];  // [virtual channel][segment]: K - 2 * popcount
    for (int q = 0; q < NQ; ++q) {
      if (SEG == 16) {
        const __m512i lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(acc[p][q]));
        const __m512i hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(acc[p][q], 1));
        _mm512_store_si512((void*)(d + q * 32), _mm512_sub_epi32(kv, _mm512_slli_epi32(lo, 1)));
        _mm512_store_si512((void*)(d + q * 32 + 16), _mm512_sub_epi32(kv, _mm512_slli_epi32(hi, 1)));
      } else {
        _mm512_store_si512((void*)(d + q * 16), _mm512_sub_epi32(kv, _mm512_slli_epi32(acc[p][q], 1)));
      }
    }
    int32_t* out = dots + (size_t)p * C + (size_t)word * m * L.cpg_out + vb * 8;
    for (int r = 0; r < ng; ++r)
      for (int c = 0; c < nc; ++c) out[(size_t)r * L.cpg_out + c] = d[c * m + r];
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
}  // namespace binsr::avx512
#endif
