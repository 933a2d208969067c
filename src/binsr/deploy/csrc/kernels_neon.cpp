// NEON kernels (aarch64, where Advanced SIMD is baseline): a q register holds the weights of 2
// output channels (2 x 64 bits); popcounts per byte by vcntq_u8 after the XOR, added pairwise into
// 16-bit lanes by vpadalq_u8 (UADALP), as daBNN's and LCE's ARM kernels do. 2 pixels x 2 blocks of 8
// channels per pass: 16 accumulators, 8 weight and 2 input registers of the 32.
#if defined(__aarch64__)
#include <arm_neon.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine.h"

namespace binsr::neon {
constexpr int PX = 2, QB = 2;
constexpr size_t kWeightCopies = 1;
// A 16-bit lane gains at most 16 per word: widen into 32 bits before 65535 / 16 words.
constexpr int kWordsPer16 = 4095;

template <int P, int NQ>
static inline void block(const Job& j, const uint64_t* a, size_t woff, int32_t* dots, int C, int nvalid) {
  constexpr int NR = NQ * 4;  // q registers of 2 output channels
  const Layer& L = *j.L;
  const size_t qs = (size_t)L.taps * L.wd * 8;
  const uint64_t* w = L.w.data() + woff;
  uint16x8_t acc[P][NR];
  uint32x4_t sum[P][NR];
  for (int p = 0; p < P; ++p)
    for (int r = 0; r < NR; ++r) {
      acc[p][r] = vdupq_n_u16(0);
      sum[p][r] = vdupq_n_u32(0);
    }
  int cnt = 0;
  for (int t = 0; t < L.taps; ++t) {
    const uint64_t* at = a + j.tapoff[t];
    const uint64_t* wt = w + (size_t)t * L.wd * 8;
    for (int i = 0; i < L.wd; ++i) {
      uint8x16_t wv[NR];
      for (int r = 0; r < NR; ++r) wv[r] = vreinterpretq_u8_u64(vld1q_u64(wt + (r / 4) * qs + i * 8 + (r % 4) * 2));
      for (int p = 0; p < P; ++p) {
        const uint8x16_t av = vreinterpretq_u8_u64(vdupq_n_u64(at[(size_t)p * L.ps + i]));
        for (int r = 0; r < NR; ++r) acc[p][r] = vpadalq_u8(acc[p][r], vcntq_u8(veorq_u8(av, wv[r])));
      }
      if (++cnt == kWordsPer16) {
        for (int p = 0; p < P; ++p)
          for (int r = 0; r < NR; ++r) {
            sum[p][r] = vpadalq_u16(sum[p][r], acc[p][r]);
            acc[p][r] = vdupq_n_u16(0);
          }
        cnt = 0;
      }
    }
  }
  const int K = L.cpg_in * L.taps, n = std::min(nvalid, NQ * 8);
  const int32x4_t kv = vdupq_n_s32(K);
  for (int p = 0; p < P; ++p) {
    int32_t d[NQ * 8];
    for (int r = 0; r < NR; r += 2) {  // lanes of channel 2r, 2r + 1 | 2r + 2, 2r + 3 -> 4 counts
      const uint64x2_t c0 = vpaddlq_u32(vpadalq_u16(sum[p][r], acc[p][r]));
      const uint64x2_t c1 = vpaddlq_u32(vpadalq_u16(sum[p][r + 1], acc[p][r + 1]));
      const int32x4_t pc = vreinterpretq_s32_u32(vcombine_u32(vmovn_u64(c0), vmovn_u64(c1)));
      vst1q_s32(d + r * 2, vsubq_s32(kv, vshlq_n_s32(pc, 1)));
    }
    std::memcpy(dots + (size_t)p * C, d, sizeof(int32_t) * n);
  }
}

static inline uint64_t pack_word(const float* v, const float* thr, int n) { return pack_word_scalar(v, thr, n); }

static inline void store_floats(float* dst, const float* v, int C, bool) { std::memcpy(dst, v, sizeof(float) * C); }
static inline void stream_fence() {}

#include "epilogue.inc"
#include "rows.inc"
}  // namespace binsr::neon
#endif
