// Portable kernels: scalar popcounts (__builtin_popcountll), no ISA extension. The path every CPU
// runs, and the one the fast paths are checked against in the C++ test driver (tests/deploy/arm).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine.h"

namespace binsr::portable {
constexpr int PX = 2, QB = 2;
constexpr size_t kWeightCopies = 1;

template <int P, int NQ>
static inline void block(const Job& j, const uint64_t* a, size_t woff, int32_t* dots, int C, int nvalid) {
  const Layer& L = *j.L;
  const size_t qs = (size_t)L.taps * L.wd * 8;
  const uint64_t* w = L.w.data() + woff;
  uint64_t pc[P][NQ * 8] = {};
  for (int t = 0; t < L.taps; ++t) {
    const uint64_t* at = a + j.tapoff[t];
    const uint64_t* wt = w + (size_t)t * L.wd * 8;
    for (int i = 0; i < L.wd; ++i)
      for (int p = 0; p < P; ++p) {
        const uint64_t av = at[(size_t)p * L.ps + i];
        for (int q = 0; q < NQ; ++q)
          for (int c = 0; c < 8; ++c) pc[p][q * 8 + c] += __builtin_popcountll(av ^ wt[q * qs + i * 8 + c]);
      }
  }
  const int K = L.cpg_in * L.taps, n = std::min(nvalid, NQ * 8);
  for (int p = 0; p < P; ++p)
    for (int c = 0; c < n; ++c) dots[(size_t)p * C + c] = K - 2 * (int32_t)pc[p][c];
}

static inline uint64_t pack_word(const float* v, const float* thr, int n) { return pack_word_scalar(v, thr, n); }

// Float output of one pixel (see epilogue.inc).
static inline void store_floats(float* dst, const float* v, int C, bool) { std::memcpy(dst, v, sizeof(float) * C); }
static inline void stream_fence() {}

#include "epilogue.inc"
#include "rows.inc"
}  // namespace binsr::portable
