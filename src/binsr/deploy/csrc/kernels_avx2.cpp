// AVX2 kernels (built with -mavx2 -mpopcnt -mfma): popcounts by vpshufb nibble lookups, 8-bit
// lanes widened with vpsadbw, or with vpmaddubsw in segment mode (groups of 16 / 32 input channels).
#if defined(__x86_64__)
#if !defined(__AVX2__) || !defined(__FMA__)
#error "kernels_avx2.cpp needs -mavx2 -mpopcnt -mfma (setup.py passes them)"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine.h"

namespace binsr::avx2 {
constexpr int PX = 2, QB = 2;
constexpr size_t kWeightCopies = 2;  // nibble-split lo and hi

template <int P, int NQ>
__attribute__((always_inline)) static inline void block(
    const Job& j, const uint64_t* a, size_t woff, int32_t* dots, int C, int nvalid) {
  constexpr int NY = NQ * 2;  // 4 output channels per ymm
  const Layer& L = *j.L;
  const size_t qs = (size_t)L.taps * L.wd * 8;
  const uint64_t* wl = L.wlo.data() + woff;
  const uint64_t* wh = L.whi.data() + woff;
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc[P][NY], sum[P][NY];
  for (int p = 0; p < P; ++p)
    for (int q = 0; q < NY; ++q) acc[p][q] = sum[p][q] = zero;
  int cnt = 0;  // words in the 8-bit accumulators (<= 31: 31 * 8 < 256)
  for (int t = 0; t < L.taps; ++t) {
    const uint64_t* at = a + j.tapoff[t];
    const size_t tw = (size_t)t * L.wd * 8;
    for (int i = 0; i < L.wd; ++i) {
      __m256i lo[P], hi[P];
      for (int p = 0; p < P; ++p) {
        const __m256i av = _mm256_set1_epi64x((long long)at[(size_t)p * L.ps + i]);
        lo[p] = _mm256_and_si256(av, m4);
        hi[p] = _mm256_and_si256(_mm256_srli_epi16(av, 4), m4);
      }
      for (int q = 0; q < NY; ++q) {
        const size_t o = (q >> 1) * qs + tw + i * 8 + (q & 1) * 4;
        const __m256i vl = _mm256_loadu_si256((const __m256i*)(wl + o));
        const __m256i vh = _mm256_loadu_si256((const __m256i*)(wh + o));
        for (int p = 0; p < P; ++p) {
          const __m256i cl = _mm256_shuffle_epi8(lut, _mm256_xor_si256(lo[p], vl));
          const __m256i ch = _mm256_shuffle_epi8(lut, _mm256_xor_si256(hi[p], vh));
          acc[p][q] = _mm256_add_epi8(acc[p][q], _mm256_add_epi8(cl, ch));
        }
      }
      if (++cnt == 31) {
        for (int p = 0; p < P; ++p)
          for (int q = 0; q < NY; ++q) {
            sum[p][q] = _mm256_add_epi64(sum[p][q], _mm256_sad_epu8(acc[p][q], zero));
            acc[p][q] = zero;
          }
        cnt = 0;
      }
    }
  }
  const int K = L.cpg_in * L.taps, n = std::min(nvalid, NQ * 8);
  const __m256i kv = _mm256_set1_epi32(K), order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  for (int p = 0; p < P; ++p) {
    alignas(32) int32_t d[NQ * 8];
    for (int q = 0; q < NQ; ++q) {  // two ymm of 4 int64 counts -> 8 int32 dots
      const __m256i lo = _mm256_add_epi64(sum[p][2 * q], _mm256_sad_epu8(acc[p][2 * q], zero));
      const __m256i hi = _mm256_add_epi64(sum[p][2 * q + 1], _mm256_sad_epu8(acc[p][2 * q + 1], zero));
      const __m256i pc = _mm256_permutevar8x32_epi32(_mm256_blend_epi32(lo, _mm256_slli_epi64(hi, 32), 0xAA), order);
      _mm256_store_si256((__m256i*)(d + q * 8), _mm256_sub_epi32(kv, _mm256_slli_epi32(pc, 1)));
    }
    std::memcpy(dots + (size_t)p * C, d, sizeof(int32_t) * n);
  }
}

static inline uint64_t pack_word(const float* v, const float* thr, int n) {
  if (n == 64) {
    uint64_t w = 0;
    for (int i = 0; i < 8; ++i) {
      const __m256 t = thr ? _mm256_loadu_ps(thr + 8 * i) : _mm256_setzero_ps();
      const __m256 m = _mm256_cmp_ps(_mm256_loadu_ps(v + 8 * i), t, _CMP_GE_OQ);
      w |= (uint64_t)(unsigned)_mm256_movemask_ps(m) << (8 * i);
    }
    return w;
  }
  return pack_word_scalar(v, thr, n);
}

// Float output of one pixel, streamed (no read for ownership) when asked and it is whole aligned vectors.
static inline void store_floats(float* dst, const float* v, int C, bool stream) {
  if (!stream || C % 8 || ((uintptr_t)dst & 31)) { std::memcpy(dst, v, sizeof(float) * C); return; }
  for (int o = 0; o < C; o += 8) _mm256_stream_ps(dst + o, _mm256_loadu_ps(v + o));
}
static inline void stream_fence() { _mm_sfence(); }

#include "epilogue.inc"
#include "rows.inc"

// Segment-mode block: per 16-bit lane popcounts (bytes widened with vpmaddubsw) of P pixels x NQ
// blocks of 8 virtual channels on one input word; writes the dots of every group in the word.
template <int P, int NQ>
__attribute__((always_inline)) static inline void block_seg(
    const Job& j, const uint64_t* a, int word, int vb, int32_t* dots, int C) {
  constexpr int NY = NQ * 2;
  const Layer& L = *j.L;
  const size_t qs = (size_t)L.taps * 8;
  const size_t woff = ((size_t)word * L.nvb + vb) * qs;
  const uint64_t* wl = L.slo.data() + woff;
  const uint64_t* wh = L.shi.data() + woff;
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi8(1), zero = _mm256_setzero_si256();
  __m256i acc[P][NY], sum[P][NY];
  for (int p = 0; p < P; ++p)
    for (int q = 0; q < NY; ++q) acc[p][q] = sum[p][q] = zero;
  int cnt = 0;
  for (int t = 0; t < L.taps; ++t) {
    const uint64_t* at = a + j.tapoff[t];
    __m256i lo[P], hi[P];
    for (int p = 0; p < P; ++p) {
      const __m256i av = _mm256_set1_epi64x((long long)at[(size_t)p * L.ps]);
      lo[p] = _mm256_and_si256(av, m4);
      hi[p] = _mm256_and_si256(_mm256_srli_epi16(av, 4), m4);
    }
    for (int q = 0; q < NY; ++q) {
      const size_t o = (q >> 1) * qs + (size_t)t * 8 + (q & 1) * 4;
      const __m256i vl = _mm256_loadu_si256((const __m256i*)(wl + o));
      const __m256i vh = _mm256_loadu_si256((const __m256i*)(wh + o));
      for (int p = 0; p < P; ++p) {
        const __m256i cl = _mm256_shuffle_epi8(lut, _mm256_xor_si256(lo[p], vl));
        const __m256i ch = _mm256_shuffle_epi8(lut, _mm256_xor_si256(hi[p], vh));
        acc[p][q] = _mm256_add_epi8(acc[p][q], _mm256_add_epi8(cl, ch));
      }
    }
    if (++cnt == 31 || t == L.taps - 1) {
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < NY; ++q) {
          sum[p][q] = _mm256_add_epi16(sum[p][q], _mm256_maddubs_epi16(acc[p][q], ones));
          acc[p][q] = zero;
        }
      cnt = 0;
    }
  }
  const int K = L.cpg_in * L.taps, m = 64 / L.seg;
  const int nc = std::min(NQ * 8, L.cpg_out - vb * 8), ng = std::min(m, L.groups - word * m);
  const __m256i kv = _mm256_set1_epi32(K);
  // Register q holds virtual channels 4q..4q+3: lane 2v + r (32-bit segments) or 4v + r (16-bit,
  // widened in two halves), segment r being group word * m + r. Permutes put each segment's 4
  // channels in one 128-bit half, stored at that group's dots.
  const __m256i pair = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7), quad = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int p = 0; p < P; ++p) {
    int32_t* out = dots + (size_t)p * C + (size_t)word * m * L.cpg_out + vb * 8;
    for (int q = 0; q < NY && q * 4 < nc; ++q) {
      const int n = std::min(4, nc - q * 4);
      __m256i seg[2];  // segments (r, r + 1) in its (low, high) half, r = 0 then (16-bit) 2
      if (L.seg == 16) {  // [r0v0 r0v1 r1v0 r1v1 r2v0 ...] of channels 0-1 and of 2-3, then joined
        const __m256i a = _mm256_permutevar8x32_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(sum[p][q])), quad);
        const __m256i b = _mm256_permutevar8x32_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(sum[p][q], 1)),
                                                      quad);
        const __m256i even = _mm256_unpacklo_epi64(a, b), odd = _mm256_unpackhi_epi64(a, b);  // (r0, r2), (r1, r3)
        seg[0] = _mm256_permute2x128_si256(even, odd, 0x20);
        seg[1] = _mm256_permute2x128_si256(even, odd, 0x31);
      } else {  // 32-bit segments: add the two 16-bit halves
        seg[0] = _mm256_permutevar8x32_epi32(_mm256_madd_epi16(sum[p][q], _mm256_set1_epi16(1)), pair);
      }
      for (int r = 0; r < ng; ++r) {
        const __m256i dv = _mm256_sub_epi32(kv, _mm256_slli_epi32(seg[r / 2], 1));
        const __m128i half = r % 2 ? _mm256_extracti128_si256(dv, 1) : _mm256_castsi256_si128(dv);
        int32_t* dst = out + (size_t)r * L.cpg_out + q * 4;
        if (n == 4) _mm_storeu_si128((__m128i*)dst, half);
        else _mm_maskstore_epi32(dst, _mm_cmpgt_epi32(_mm_set1_epi32(n), _mm_setr_epi32(0, 1, 2, 3)), half);
      }
    }
  }
}

void rows_seg(const Job& j, int y0, int y1) {
  const Layer& L = *j.L;
  const int C = L.cout;
  int32_t* dots = (int32_t*)scratch(0, sizeof(int32_t) * (size_t)PX * C);
  float* v = (float*)scratch(1, sizeof(float) * 2 * C);  // the epilogue's values and its scratch
  for (int y = y0; y < y1; ++y)
    for (int x0 = 0; x0 < j.Wo; x0 += PX) {
      const int np = std::min(PX, j.Wo - x0);
      for (int w = 0; w < L.ps; ++w) {
        const uint64_t* a = j.xp + ((size_t)y * j.Wp + x0) * L.ps + w;
        for (int p = 0; p < np; p += (np == PX ? PX : 1)) {
          int vb = 0;
          for (; vb + QB <= L.nvb; vb += QB) {
            if (np == PX) block_seg<PX, QB>(j, a, w, vb, dots, C);
            else block_seg<1, QB>(j, a + (size_t)p * L.ps, w, vb, dots + (size_t)p * C, C);
          }
          for (; vb < L.nvb; ++vb) {
            if (np == PX) block_seg<PX, 1>(j, a, w, vb, dots, C);
            else block_seg<1, 1>(j, a + (size_t)p * L.ps, w, vb, dots + (size_t)p * C, C);
          }
        }
      }
      epilogue(j, y, x0, np, dots, v);
    }
  stream_fence();
}
}  // namespace binsr::avx2
#endif
