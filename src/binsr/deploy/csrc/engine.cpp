// Bit-packed binary convolution engine (binsr.deploy._engine).
//
// dot = C_in_per_group * k * k - 2 * popcount(x XOR w) over channel-last packed words, with the
// input padded by all-ones words (+1). Three implementations compiled in this one translation
// unit for different ISAs and picked at run time: AVX-512 VPOPCNTDQ (or, where the CPU has
// AMX-INT8 and BINSR_AMX is not "0", the same dots as an int8 tile GEMM, path "avx512" either
// way; "avx512-vpopcnt" forces the popcount kernel), AVX2 (vpshufb nibble popcount, 8-bit lanes
// widened with vpsadbw, or vpmaddubsw in segment mode for groups of 16/32 channels) and portable
// scalar code. Also the Winograd tile transforms of the FP 3x3 convs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>

#include "engine.h"

namespace py = pybind11;

namespace binsr {

// Persistent worker threads for parallel_range. Starting threads per call cost about 40 us (and,
// on AMX CPUs, a first-use fault per new thread for the tile state), which is 5% of a 64-channel
// layer at 2 threads. Workers spin briefly for the next call (the layers of a network follow each
// other within microseconds), then sleep. One caller at a time; a second concurrent (or nested)
// caller, or a process forked from one with workers, starts its own threads as before.
class Pool {
 public:
  static constexpr int kSpinUs = 50;  // a worker's busy wait for the next call before it sleeps
  static Pool& get() {
    static Pool* p = new Pool;  // never destroyed: detached workers may still wait at exit
    return *p;
  }
  // Runs fn(1) .. fn(nt - 1) on workers and fn(0) here; false (nothing run) if the pool is busy.
  bool run(int nt, const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> busy(call_, std::try_to_lock);
    if (!busy.owns_lock() || pid_ != getpid()) return false;
    while ((int)workers_ + 1 < nt) start_worker();
    fn_ = &fn;
    nt_ = nt;
    left_.store(nt - 1);
    {
      std::lock_guard<std::mutex> g(m_);
      gen_.fetch_add(1);
    }
    cv_.notify_all();
    fn(0);
    while (left_.load() != 0) _mm_pause();
    fn_ = nullptr;
    return true;
  }

 private:
  Pool() : pid_(getpid()) {}
  void start_worker() {
    const int id = (int)++workers_;
    std::thread([this, id, seen = gen_.load()]() mutable {  // the generation before this call's
      for (;;) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinUs);
        while (gen_.load() == seen && std::chrono::steady_clock::now() < until)
          for (int i = 0; i < 16; ++i) _mm_pause();
        if (gen_.load() == seen) {
          std::unique_lock<std::mutex> g(m_);
          cv_.wait(g, [&] { return gen_.load() != seen; });
        }
        seen = gen_.load();
        if (id < nt_) {
          (*fn_)(id);
          left_.fetch_sub(1);
        }
      }
    }).detach();
  }
  std::mutex call_, m_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> left_{0};
  const std::function<void(int)>* fn_ = nullptr;
  int nt_ = 0;
  size_t workers_ = 0;
  const pid_t pid_;
};

// Split [0, n) over up to `threads` threads (at least `grain` items each); fn(i0, i1).
template <class F>
static void parallel_range(size_t n, int threads, size_t grain, F fn) {
  const int nt = (int)std::max<size_t>(1, std::min<size_t>((size_t)std::max(threads, 1), n / std::max<size_t>(grain, 1)));
  if (nt == 1) return fn(0, n);
  const std::function<void(int)> part = [&](int t) { fn(n * t / nt, n * (t + 1) / nt); };
  if (Pool::get().run(nt, part)) return;
  std::vector<std::thread> pool;
  for (int t = 1; t < nt; ++t) pool.emplace_back(part, t);
  part(0);
  for (auto& th : pool) th.join();
}

// ---------------------------------------------------------------- portable (no ISA extension)
namespace portable {
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

static inline uint64_t pack_word(const float* v, const float* thr, int n) {
  uint64_t w = ~0ull;
  for (int c = 0; c < n; ++c)
    if (!(v[c] >= (thr ? thr[c] : 0.f))) w &= ~(1ull << c);
  return w;
}

// Float output of one pixel (see rows.inc).
static inline void store_floats(float* dst, const float* v, int C, bool) { std::memcpy(dst, v, sizeof(float) * C); }
static inline void stream_fence() {}

#include "rows.inc"
}  // namespace portable

// ---------------------------------------------------------------- AVX2
#pragma GCC push_options
#pragma GCC target("avx2,popcnt,fma")
namespace avx2 {
constexpr int PX = 2, QB = 2;
constexpr size_t kWeightCopies = 2;  // nibble-split lo and hi

template <int P, int NQ>
__attribute__((target("avx2,popcnt,fma"), always_inline)) static inline void block(
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

__attribute__((target("avx2,popcnt,fma"))) static inline uint64_t pack_word(const float* v, const float* thr, int n) {
  if (n == 64) {
    uint64_t w = 0;
    for (int i = 0; i < 8; ++i) {
      const __m256 t = thr ? _mm256_loadu_ps(thr + 8 * i) : _mm256_setzero_ps();
      const __m256 m = _mm256_cmp_ps(_mm256_loadu_ps(v + 8 * i), t, _CMP_GE_OQ);
      w |= (uint64_t)(unsigned)_mm256_movemask_ps(m) << (8 * i);
    }
    return w;
  }
  uint64_t w = ~0ull;
  for (int c = 0; c < n; ++c)
    if (!(v[c] >= (thr ? thr[c] : 0.f))) w &= ~(1ull << c);
  return w;
}

// Float output of one pixel, streamed (no read for ownership) when asked and it is whole aligned vectors.
static inline void store_floats(float* dst, const float* v, int C, bool stream) {
  if (!stream || C % 8 || ((uintptr_t)dst & 31)) { std::memcpy(dst, v, sizeof(float) * C); return; }
  for (int o = 0; o < C; o += 8) _mm256_stream_ps(dst + o, _mm256_loadu_ps(v + o));
}
static inline void stream_fence() { _mm_sfence(); }

#include "rows.inc"

// Segment-mode block: per 16-bit lane popcounts (bytes widened with vpmaddubsw) of P pixels x NQ
// blocks of 8 virtual channels on one input word; writes the dots of every group in the word.
template <int P, int NQ>
__attribute__((target("avx2,popcnt,fma"), always_inline)) static inline void block_seg(
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
  for (int p = 0; p < P; ++p) {
    alignas(32) int32_t d[NY * 16];  // [virtual channel][segment]: K - 2 * popcount
    for (int q = 0; q < NY; ++q) {
      if (L.seg == 16) {
        const __m256i lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(sum[p][q]));
        const __m256i hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(sum[p][q], 1));
        _mm256_store_si256((__m256i*)(d + q * 16), _mm256_sub_epi32(kv, _mm256_slli_epi32(lo, 1)));
        _mm256_store_si256((__m256i*)(d + q * 16 + 8), _mm256_sub_epi32(kv, _mm256_slli_epi32(hi, 1)));
      } else {  // 32-bit segments: add the two 16-bit halves
        const __m256i pc = _mm256_madd_epi16(sum[p][q], _mm256_set1_epi16(1));
        _mm256_store_si256((__m256i*)(d + q * 8), _mm256_sub_epi32(kv, _mm256_slli_epi32(pc, 1)));
      }
    }
    int32_t* out = dots + (size_t)p * C + (size_t)word * m * L.cpg_out + vb * 8;
    for (int r = 0; r < ng; ++r)
      for (int c = 0; c < nc; ++c) out[(size_t)r * L.cpg_out + c] = d[c * m + r];
  }
}

void rows_seg(const Job& j, int y0, int y1) {
  const Layer& L = *j.L;
  const int C = L.cout;
  std::vector<int32_t> dots((size_t)PX * C);
  std::vector<float> v(2 * (size_t)C);  // the epilogue's values and its scratch
  for (int y = y0; y < y1; ++y)
    for (int x0 = 0; x0 < j.Wo; x0 += PX) {
      const int np = std::min(PX, j.Wo - x0);
      for (int w = 0; w < L.ps; ++w) {
        const uint64_t* a = j.xp + ((size_t)y * j.Wp + x0) * L.ps + w;
        for (int p = 0; p < np; p += (np == PX ? PX : 1)) {
          int vb = 0;
          for (; vb + QB <= L.nvb; vb += QB) {
            if (np == PX) block_seg<PX, QB>(j, a, w, vb, dots.data(), C);
            else block_seg<1, QB>(j, a + (size_t)p * L.ps, w, vb, dots.data() + (size_t)p * C, C);
          }
          for (; vb < L.nvb; ++vb) {
            if (np == PX) block_seg<PX, 1>(j, a, w, vb, dots.data(), C);
            else block_seg<1, 1>(j, a + (size_t)p * L.ps, w, vb, dots.data() + (size_t)p * C, C);
          }
        }
      }
      epilogue(j, y, x0, np, dots.data(), v.data());
    }
  stream_fence();
}
}  // namespace avx2
#pragma GCC pop_options

// ---------------------------------------------------------------- AVX-512 VPOPCNTDQ
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vpopcntdq,avx512bitalg,avx2,popcnt,fma,amx-tile,amx-int8")
namespace avx512 {
constexpr int PX = 4, QB = 4;
constexpr size_t kWeightCopies = 1;

template <int P, int NQ>
__attribute__((target("avx512f,avx512bw,avx512vpopcntdq"), always_inline)) static inline void block(
    const Job& j, const uint64_t* a, size_t woff, int32_t* dots, int C, int nvalid) {
  const Layer& L = *j.L;
  const size_t qs = (size_t)L.taps * L.wd * 8;
  const uint64_t* w = L.w.data() + woff;
  __m512i acc[P][NQ];
  for (int p = 0; p < P; ++p)
    for (int q = 0; q < NQ; ++q) acc[p][q] = _mm512_setzero_si512();
  for (int t = 0; t < L.taps; ++t) {
    const uint64_t* at = a + j.tapoff[t];
    const uint64_t* wt = w + (size_t)t * L.wd * 8;
    for (int i = 0; i < L.wd; ++i) {
      __m512i wv[NQ];
      for (int q = 0; q < NQ; ++q) wv[q] = _mm512_loadu_si512((const void*)(wt + q * qs + i * 8));
      for (int p = 0; p < P; ++p) {
        const __m512i av = _mm512_set1_epi64((long long)at[(size_t)p * L.ps + i]);
        for (int q = 0; q < NQ; ++q)
          acc[p][q] = _mm512_add_epi64(acc[p][q], _mm512_popcnt_epi64(_mm512_xor_si512(av, wv[q])));
      }
    }
  }
  const int K = L.cpg_in * L.taps, n = std::min(nvalid, NQ * 8);
  const __m256i kv = _mm256_set1_epi32(K);
  for (int p = 0; p < P; ++p) {
    alignas(32) int32_t d[NQ * 8];
    for (int q = 0; q < NQ; ++q) {
      const __m256i pc = _mm512_cvtepi64_epi32(acc[p][q]);
      const __m256i dv = _mm256_sub_epi32(kv, _mm256_slli_epi32(pc, 1));
      if (n == NQ * 8) _mm256_storeu_si256((__m256i*)(dots + (size_t)p * C + q * 8), dv);  // no memcpy call
      else _mm256_store_si256((__m256i*)(d + q * 8), dv);
    }
    if (n < NQ * 8) std::memcpy(dots + (size_t)p * C, d, sizeof(int32_t) * n);
  }
}

__attribute__((target("avx512f,avx512bw,avx512vpopcntdq"))) static inline uint64_t pack_word(
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
__attribute__((target("avx512f"))) static inline void store_floats(float* dst, const float* v, int C, bool stream) {
  if (!stream || C % 16 || ((uintptr_t)dst & 63)) { std::memcpy(dst, v, sizeof(float) * C); return; }
  for (int o = 0; o < C; o += 16) _mm512_stream_ps(dst + o, _mm512_loadu_ps(v + o));
}
static inline void stream_fence() { _mm_sfence(); }

#include "rows.inc"

// Segment mode (groups of 16 or 32 input channels, as AVX2's rows_seg): the 64 / seg groups that
// share an input word are computed together, one output channel of each group per seg-bit segment
// of a weight word; popcounts per 16-bit (BITALG vpopcntw) or 32-bit (vpopcntd) lane.
template <int P, int NQ, int SEG>
__attribute__((target("avx512f,avx512bw,avx512vpopcntdq,avx512bitalg"), always_inline)) static inline void block_seg(
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
__attribute__((target("avx512f,avx512bw,avx512vpopcntdq,avx512bitalg"))) static void rows_seg_t(const Job& j, int y0, int y1) {
  constexpr int SP = 4, SQ = 2;
  const Layer& L = *j.L;
  const int C = L.cout;
  std::vector<int32_t> dots((size_t)SP * C);
  std::vector<float> v(2 * (size_t)C);  // the epilogue's values and its scratch
  for (int y = y0; y < y1; ++y)
    for (int x0 = 0; x0 < j.Wo; x0 += SP) {
      const int np = std::min(SP, j.Wo - x0);
      for (int w = 0; w < L.ps; ++w) {
        const uint64_t* a = j.xp + ((size_t)y * j.Wp + x0) * L.ps + w;
        for (int p = 0; p < np; p += (np == SP ? SP : 1)) {
          int vb = 0;
          for (; vb + SQ <= L.nvb; vb += SQ) {
            if (np == SP) block_seg<SP, SQ, SEG>(j, a, w, vb, dots.data(), C);
            else block_seg<1, SQ, SEG>(j, a + (size_t)p * L.ps, w, vb, dots.data() + (size_t)p * C, C);
          }
          for (; vb < L.nvb; ++vb) {
            if (np == SP) block_seg<SP, 1, SEG>(j, a, w, vb, dots.data(), C);
            else block_seg<1, 1, SEG>(j, a + (size_t)p * L.ps, w, vb, dots.data() + (size_t)p * C, C);
          }
        }
      }
      epilogue(j, y, x0, np, dots.data(), v.data());
    }
}

void rows_seg(const Job& j, int y0, int y1) {
  if (j.L->seg == 16) rows_seg_t<16>(j, y0, y1);
  else rows_seg_t<32>(j, y0, y1);
  stream_fence();
}

// AMX-INT8 kernel: the conv as an int8 GEMM on tiles. Per thread, a ring of the (k-1)*dil+1 padded
// input rows the current output row reads, each bit expanded to a byte (0 / 1, 64 bytes per word);
// for each tap and word one A tile is 16 consecutive pixels x 64 channels of one such row (stride
// = bytes per pixel), one B tile 64 channels x 16 output channels (weights +-1, 0 outside the
// group), and TDPBUSD accumulates 2 x 2 C tiles (32 pixels x 32 output channels) in int32.
struct alignas(64) TileCfg {
  uint8_t palette, start;
  uint8_t rsv[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};


// The fused epilogue (rows.inc's, same operations in the same order, none fused into an FMA
// but the folded-BN one: the _round_ intrinsics keep GCC from contracting) on 16 output channels
// o0 .. o0 + 15 of np consecutive pixels from pi on, straight from a C tile of sum(a * s):
// dot = 2 * acc - bsum; float out / int dots / sign bits (16-bit pieces of the packed words).
#define RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline void epi16(
    const Job& j, size_t pi, int np, int o0, const int32_t* acc, const int32_t* bsum) {
  const Epilogue& e = j.e;
  const int C = j.L->cout, no = std::min(16, C - o0);
  const __mmask16 m = (__mmask16)((1u << no) - 1);
  const __m512i bs = _mm512_loadu_si512((const void*)bsum);
  int32_t* const oi = e.out_int;
  float* const of = e.out;
  const float* const pix = e.pix;
  const float* const res[3] = {e.res[0], e.res[1], e.res[2]};
  const bool fl = of || e.bits, fma = e.scale && e.bias && !pix, act = e.act_slope, af = e.act_first;
  const bool sc_on = e.scale, bi_on = e.bias;
  const __m512 zero = _mm512_setzero_ps();
  __m512 sc = zero, bi = zero, ash = zero, asl = zero, abi = zero, th = zero;
  if (e.scale) sc = _mm512_maskz_loadu_ps(m, e.scale + o0);
  if (e.bias) bi = _mm512_maskz_loadu_ps(m, e.bias + o0);
  if (act) {
    ash = _mm512_maskz_loadu_ps(m, e.act_shift + o0);
    asl = _mm512_maskz_loadu_ps(m, e.act_slope + o0);
    abi = _mm512_maskz_loadu_ps(m, e.act_bias + o0);
  }
  if (e.thr) th = _mm512_maskz_loadu_ps(m, e.thr + o0);
  auto rprelu16 = [&](__m512 v) {
    const __m512 u = _mm512_sub_round_ps(v, ash, RN);
    const __m512 pos = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, zero, _CMP_GT_OQ), u);
    const __m512 neg = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, zero, _CMP_LT_OQ), u);
    return _mm512_add_round_ps(_mm512_add_round_ps(pos, _mm512_mul_round_ps(neg, asl, RN), RN), abi, RN);
  };
  // pieces of the last packed word past the last channel: all ones, as pack_word leaves them
  uint16_t* const bits = (uint16_t*)e.bits;
  const int piece = o0 / 16, pend = (o0 + 16 >= C) ? e.pwd * 4 : piece + 1, pw4 = e.pwd * 4;
  const uint16_t pad = (uint16_t)~m;
  // one stage at a time over the 16 pixels (kept in registers; each flag tested once per piece)
  __m512 v[16];
#pragma GCC unroll 16
  for (int p = 0; p < 16; ++p) {
    const __m512i d = _mm512_sub_epi32(_mm512_slli_epi32(_mm512_load_si512((const void*)(acc + 16 * p)), 1), bs);
    if (oi && p < np) _mm512_mask_storeu_epi32(oi + (pi + p) * C + o0, m, d);
    v[p] = _mm512_cvtepi32_ps(d);
  }
  if (!fl) return;
  if (fma) {
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) v[p] = _mm512_fmadd_ps(v[p], sc, bi);
  } else {
    if (sc_on)
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) v[p] = _mm512_mul_round_ps(v[p], sc, RN);
    if (pix)
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) v[p] = _mm512_mul_round_ps(v[p], _mm512_set1_ps(p < np ? pix[pi + p] : 0.f), RN);
    if (bi_on)
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) v[p] = _mm512_add_round_ps(v[p], bi, RN);
  }
  if (act && af)
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) v[p] = rprelu16(v[p]);
  if (e.div != 1.f) {
    const __m512 dv = _mm512_set1_ps(e.div);
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) v[p] = _mm512_div_round_ps(v[p], dv, RN);
  }
  for (int r = 0; r <= 3; ++r) {
    if (r == e.post_after && e.post_scale != 1.f) {
      const __m512 ps = _mm512_set1_ps(e.post_scale);
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) v[p] = _mm512_mul_round_ps(v[p], ps, RN);
    }
    if (r < 3 && res[r])
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p)
        if (p < np) v[p] = _mm512_add_round_ps(v[p], _mm512_maskz_loadu_ps(m, res[r] + (pi + p) * C + o0), RN);
  }
  if (e.gate_bias) {
    const __m512 gb = _mm512_maskz_loadu_ps(m, e.gate_bias + o0);
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p)
      v[p] = _mm512_add_round_ps(v[p], _mm512_mul_round_ps(_mm512_set1_ps(p < np ? pix[pi + p] : 0.f), gb, RN), RN);
  }
  if (act && !af)
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) v[p] = rprelu16(v[p]);
  if (of) {  // whole aligned cache lines are streamed when the map would not stay in the L3
    float* const dst = of + pi * C + o0;
    const bool stream = e.stream && no == 16 && ((uintptr_t)dst & 63) == 0 && (C & 15) == 0;
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p)
      if (p < np) {
        if (stream) _mm512_stream_ps(dst + p * C, v[p]);
        else _mm512_mask_storeu_ps(dst + p * C, m, v[p]);
      }
  }
  if (bits) {
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p)
      if (p < np) {
        uint16_t* b = bits + (pi + p) * pw4;
        b[piece] = (uint16_t)(_mm512_cmp_ps_mask(v[p], th, _CMP_GE_OQ) | pad);
        for (int k = piece + 1; k < pend; ++k) b[k] = 0xffff;
      }
  }
}
#undef RN

// The (32 pixels, 2 blocks) unit whose C tiles wait in memory for their epilogue: up to four
// 16-pixel x 16-channel pieces, piece i from C tile c[i].
struct Pending {
  int n = 0, np[4], o0[4], c[4];
  size_t pi[4];
};

__attribute__((target("avx512f,avx512bw"))) static inline void epi_piece(const Job& j, const Pending& u, int i,
                                                                          const int32_t (*cb)[256]) {
  epi16(j, u.pi[i], u.np[i], u.o0[i], cb[u.c[i]], j.L->bsum.data() + u.o0[i]);
}

// One tap of a (32 pixels, 2 blocks) unit: C tiles 0..3 (pixels 0-15 / 16-31 x block 0 / 1) +=
// A (tile 4 / 5: the tap's expanded input bytes) . B (tile 6 / 7: the blocks' +-1 weights), over
// the ps 64-byte words of a pixel. ``two``: a second block; ``twop``: a second 16-pixel half.
__attribute__((target("avx512f,avx512bw,amx-tile,amx-int8"), always_inline)) static inline void tap_tiles(
    const uint8_t* a0, const int8_t* b0, int ps, size_t pstride, size_t tile_step, bool two, bool twop) {
  for (int wi = 0; wi < ps; ++wi) {
    const uint8_t* a = a0 + wi * 64;
    const int8_t* b = b0 + (size_t)wi * 1024;
    _tile_loadd(4, a, pstride);
    _tile_loadd(6, b, 64);
    _tile_dpbusd(0, 4, 6);
    if (two) { _tile_loadd(7, b + tile_step, 64); _tile_dpbusd(1, 4, 7); }
    if (twop) {
      _tile_loadd(5, a + 16 * pstride, pstride);
      _tile_dpbusd(2, 5, 6);
      if (two) _tile_dpbusd(3, 5, 7);
    }
  }
}

__attribute__((target("avx512f,avx512bw,amx-tile,amx-int8"))) void rows_amx(const Job& j, int y0, int y1) {
  const Layer& L = *j.L;
  const int ps = L.ps, R = (L.k - 1) * L.dil + 1, nb = L.nb16, T = L.taps;
  const size_t pstride = (size_t)ps * 64;              // bytes per expanded pixel
  const size_t rowbytes = ((size_t)j.Wp + 32) * pstride;  // + slack: whole 32-pixel tiles past the row end
  const size_t tile_step = (size_t)T * ps * 1024;      // bytes of one block's B tiles
  std::vector<uint8_t> ring(R * rowbytes + 64, 0);
  uint8_t* rb = ring.data() + ((64 - (uintptr_t)ring.data() % 64) % 64);
  std::vector<int> slot_row(R, -1);
  std::vector<const uint8_t*> tapsrc(T);
  alignas(64) int32_t cb[4][256];
  Pending pend;
  // all weights of a pixel window past ~L1: the kernel-row-chunked order
  const bool chunked = (size_t)nb * T * ps * 1024 > 40 * 1024 && L.k > 1;
  std::vector<int32_t> cbuf_store(chunked ? (size_t)((j.Wo + 31) / 32) * 1024 + 16 : 0);
  int32_t* cbuf_ptr = cbuf_store.data() + (chunked ? (16 - ((uintptr_t)cbuf_store.data() / 4) % 16) % 16 : 0);
  struct { int32_t* p; int32_t* data() const { return p; } } cbuf{cbuf_ptr};
  TileCfg cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int i = 0; i < 8; ++i) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
  _tile_loadconfig(&cfg);
  const __m512i one = _mm512_set1_epi8(1);
  for (int y = y0; y < y1; ++y) {
    for (int r = 0; r < R; ++r) {  // expand the padded rows y .. y + R - 1 not in the ring yet
      const int pr = y + r, sl = pr % R;
      if (slot_row[sl] == pr) continue;
      slot_row[sl] = pr;
      __m512i* dst = (__m512i*)(rb + sl * rowbytes);
      const int yi = pr - L.pad;  // the input row; the padding is all ones (+1)
      const size_t left = (size_t)L.pad * ps, inner = (size_t)j.W * ps, all = (size_t)j.Wp * ps;
      if (yi < 0 || yi >= j.H) {
        for (size_t q = 0; q < all; ++q) _mm512_store_si512(dst + q, one);
        continue;
      }
      const uint64_t* src = j.x + (size_t)yi * inner;
      for (size_t q = 0; q < left; ++q) _mm512_store_si512(dst + q, one);
      for (size_t q = 0; q < inner; ++q) _mm512_store_si512(dst + left + q, _mm512_maskz_mov_epi8((__mmask64)src[q], one));
      for (size_t q = left + inner; q < all; ++q) _mm512_store_si512(dst + q, one);
    }
    for (int t = 0; t < T; ++t)
      tapsrc[t] = rb + ((y + (t / L.k) * L.dil) % R) * rowbytes + (size_t)(t % L.k) * L.dil * pstride;
    if (chunked) {  // weights past L1: per block pair and kernel row, sweep the row, C tiles kept in cbuf
      for (int ob = 0; ob < nb; ob += 2) {
        const bool two = ob + 1 < nb;
        const int8_t* b0 = L.bt.data() + (size_t)ob * tile_step;
        for (int ty = 0; ty < L.k; ++ty)
          for (int x0 = 0; x0 < j.Wo; x0 += 32) {
            const bool twop = x0 + 16 < j.Wo;
            const size_t xo = (size_t)x0 * pstride;
            int32_t* cs = cbuf.data() + (size_t)(x0 / 32) * 1024;
            if (ty == 0) {
              _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            } else {
              _tile_loadd(0, cs, 64); _tile_loadd(1, cs + 256, 64);
              _tile_loadd(2, cs + 512, 64); _tile_loadd(3, cs + 768, 64);
            }
            for (int t = ty * L.k; t < (ty + 1) * L.k; ++t)
              tap_tiles(tapsrc[t] + xo, b0 + (size_t)t * ps * 1024, ps, pstride, tile_step, two, twop);
            _tile_stored(0, cs, 64); _tile_stored(1, cs + 256, 64);
            _tile_stored(2, cs + 512, 64); _tile_stored(3, cs + 768, 64);
            if (ty == L.k - 1)
              for (int h = 0; h < (twop ? 2 : 1); ++h)
                for (int q = 0; q < (two ? 2 : 1); ++q)
                  epi16(j, (size_t)y * j.Wo + x0 + 16 * h, std::min(16, j.Wo - x0 - 16 * h), (ob + q) * 16,
                        cs + (2 * h + q) * 256, L.bsum.data() + (ob + q) * 16);
          }
      }
      continue;
    }
    // Software-pipelined: while the tiles of one (32 pixels, 2 blocks) unit accumulate, the
    // epilogue of the previous unit (from its stored C tiles) runs on the vector ports, its four
    // 16 x 16 pieces spread over the taps, so the AMX unit and the epilogue overlap.
    for (int ob = 0; ob < nb; ob += 2) {  // a block pair's B tiles stay in L1 over the row
      const bool two = ob + 1 < nb;
      const int8_t* b0 = L.bt.data() + (size_t)ob * tile_step;
      for (int x0 = 0; x0 < j.Wo; x0 += 32) {
        const bool twop = x0 + 16 < j.Wo;
        const size_t xo = (size_t)x0 * pstride;
        int next = 0;
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int t = 0; t < T; ++t) {
          tap_tiles(tapsrc[t] + xo, b0 + (size_t)t * ps * 1024, ps, pstride, tile_step, two, twop);
          for (; next < pend.n && next * T <= t * pend.n; ++next) epi_piece(j, pend, next, cb);
          {  // this unit's output (for writing) and residual lines: its epilogue runs during the next unit
            const int np = std::min(32, j.Wo - x0), lines = two ? 2 : 1;
            for (int i = t * np / T; i < (t + 1) * np / T; ++i) {
              const size_t q = ((size_t)y * j.Wo + x0 + i) * j.L->cout + ob * 16;
              for (int l = 0; l < lines; ++l) {
                if (j.e.out) _m_prefetchw(j.e.out + q + 16 * l);
                for (int r = 0; r < 3 && j.e.res[r]; ++r) _mm_prefetch((const char*)(j.e.res[r] + q + 16 * l), _MM_HINT_T0);
              }
            }
          }
        }
        for (; next < pend.n; ++next) epi_piece(j, pend, next, cb);
        _tile_stored(0, cb[0], 64);
        if (two) _tile_stored(1, cb[1], 64);
        if (twop) { _tile_stored(2, cb[2], 64); if (two) _tile_stored(3, cb[3], 64); }
        pend.n = 0;  // this unit's pieces wait for the next unit's taps
        for (int h = 0; h < (twop ? 2 : 1); ++h)
          for (int q = 0; q < (two ? 2 : 1); ++q, ++pend.n) {
            pend.pi[pend.n] = (size_t)y * j.Wo + x0 + 16 * h;
            pend.np[pend.n] = std::min(16, j.Wo - x0 - 16 * h);
            pend.o0[pend.n] = (ob + q) * 16;
            pend.c[pend.n] = 2 * h + q;
          }
      }
    }
  }
  for (int i = 0; i < pend.n; ++i) epi_piece(j, pend, i, cb);
  _tile_release();
  _mm_sfence();  // the streamed stores are visible before the caller reads the map
}

}  // namespace avx512
#pragma GCC pop_options

// ---------------------------------------------------------------- dispatch and Python binding
static bool cpu_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}
static bool cpu_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vpopcntdq");
}

static bool cpu_bitalg() {
  __builtin_cpu_init();
  return cpu_avx512() && __builtin_cpu_supports("avx512bitalg");
}

// AMX-INT8: CPUID.(7,0):EDX bits 24 (AMX-TILE) and 25 (AMX-INT8), and the kernel's permission to
// use the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, Linux 5.16+), asked once per process.
static bool cpu_amx() {
  static const bool ok = [] {
#if defined(__linux__) && defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 24) & 1) || !((d >> 25) & 1)) return false;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return false;
#endif
  }();
  return ok && cpu_avx512();
}

static Layer make_layer(py::array_t<uint64_t, py::array::c_style | py::array::forcecast> w, int cin, int k,
                        int dil, int pad, int groups) {
  if (w.ndim() != 4) throw std::invalid_argument("weights must be (cout, k, k, words) uint64");
  Layer L;
  L.cout = (int)w.shape(0); L.cin = cin; L.k = k; L.dil = dil; L.pad = pad; L.groups = groups;
  if (k < 1 || dil < 1 || pad < 0 || groups < 1 || cin < 1) throw std::invalid_argument("bad conv geometry");
  if (cin % groups || L.cout % groups) throw std::invalid_argument("channels do not split into groups");
  L.cpg_in = cin / groups; L.cpg_out = L.cout / groups;
  L.ps = (cin + 63) / 64; L.nob = (L.cpg_out + 7) / 8; L.taps = k * k;
  const int wdc = (L.cpg_in + 63) / 64;  // words of one output channel's weights as stored
  if (w.shape(1) != k || w.shape(2) != k || w.shape(3) != wdc)
    throw std::invalid_argument("weights shape does not match (cout, k, k, ceil(cin / groups / 64))");
  L.wd = 0;
  for (int g = 0; g < groups; ++g) {
    const int b0 = g * L.cpg_in;
    L.wd = std::max(L.wd, (b0 + L.cpg_in + 63) / 64 - b0 / 64);
  }
  L.mask.assign((size_t)groups * L.wd, 0);
  L.corr = false;
  for (int g = 0; g < groups; ++g) {
    const int b0 = g * L.cpg_in;
    L.w0.push_back(std::min(b0 / 64, L.ps - L.wd));
    for (int c = 0; c < L.cpg_in; ++c) L.mask[(size_t)g * L.wd + (b0 + c) / 64 - L.w0[g]] |= 1ull << ((b0 + c) % 64);
  }
  for (uint64_t m : L.mask) L.corr |= m != ~0ull;
  const size_t qs = (size_t)L.taps * L.wd * 8;
  L.w.assign((size_t)groups * L.nob * qs, 0);
  auto src = w.unchecked<4>();
  for (int g = 0; g < groups; ++g)
    for (int o = 0; o < L.cpg_out; ++o)
      for (int t = 0; t < L.taps; ++t)
        for (int c = 0; c < L.cpg_in; ++c) {
          const uint64_t bit = (src(g * L.cpg_out + o, t / k, t % k, c / 64) >> (c % 64)) & 1;
          const int b = g * L.cpg_in + c;
          L.w[((size_t)g * L.nob + o / 8) * qs + ((size_t)t * L.wd + b / 64 - L.w0[g]) * 8 + o % 8] |= bit << (b % 64);
        }
  L.wlo.resize(L.w.size());
  L.whi.resize(L.w.size());
  for (size_t i = 0; i < L.w.size(); ++i) {
    L.wlo[i] = L.w[i] & 0x0f0f0f0f0f0f0f0full;
    L.whi[i] = (L.w[i] >> 4) & 0x0f0f0f0f0f0f0f0full;
  }
  L.nb16 = (L.cout + 15) / 16;
  L.bt.assign(cpu_amx() ? (size_t)L.nb16 * L.taps * L.ps * 1024 : 0, 0);  // 1 byte per weight bit
  L.bsum.assign((size_t)L.nb16 * 16, 0);
  for (int o = 0; o < L.cout && !L.bt.empty(); ++o) {
    const int g = o / L.cpg_out;
    for (int t = 0; t < L.taps; ++t)
      for (int c = 0; c < L.cpg_in; ++c) {
        const int ch = g * L.cpg_in + c;  // input channel: word ch / 64, byte ch % 64 of that word's tile
        const int s = ((src(o, t / k, t % k, c / 64) >> (c % 64)) & 1) ? 1 : -1;
        const int kk = ch % 64;
        L.bt[(((size_t)(o / 16) * L.taps + t) * L.ps + ch / 64) * 1024 + (kk / 4) * 64 + (o % 16) * 4 + kk % 4] = (int8_t)s;
        L.bsum[o] += s;
      }
  }
  if (groups > 1 && (L.cpg_in == 16 || L.cpg_in == 32)) {
    L.seg = L.cpg_in;
    L.nvb = (L.cpg_out + 7) / 8;
    const int m = 64 / L.seg;
    const uint64_t smask = (1ull << L.seg) - 1;
    L.slo.assign((size_t)L.ps * L.nvb * L.taps * 8, 0);
    L.sraw.assign(L.slo.size(), 0);
    L.shi.assign(L.slo.size(), 0);
    for (int word = 0; word < L.ps; ++word)
      for (int jv = 0; jv < L.cpg_out; ++jv)
        for (int t = 0; t < L.taps; ++t) {
          uint64_t v = 0;
          for (int r = 0; r < m && word * m + r < groups; ++r)
            v |= (src((word * m + r) * L.cpg_out + jv, t / k, t % k, 0) & smask) << (r * L.seg);
          const size_t i = (((size_t)word * L.nvb + jv / 8) * L.taps + t) * 8 + jv % 8;
          L.sraw[i] = v;
          L.slo[i] = v & 0x0f0f0f0f0f0f0f0full;
          L.shi[i] = (v >> 4) & 0x0f0f0f0f0f0f0f0full;
        }
  }
  return L;
}

using FArr = py::array_t<float, py::array::c_style | py::array::forcecast>;
using OptF = std::optional<FArr>;

static const float* vec_ptr(const OptF& a, size_t n, const char* name) {
  if (!a) return nullptr;
  if ((size_t)a->size() != n) throw std::invalid_argument(std::string(name) + " has the wrong size");
  return a->data();
}

// The last-level cache size (sysconf; 32 MiB where the system does not say). An output map that
// fits in half of it is written with ordinary stores, so that the next layer reads it from the L3.
static size_t l3_bytes() {
  static const size_t n = [] {
    const long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
    return v > 0 ? (size_t)v : (size_t)32 << 20;
  }();
  return n;
}

// Outputs on 64-byte boundaries (NumPy's large allocations are only 16-byte aligned), so that each
// 16-channel vector store of a pixel fills one cache line instead of straddling two.
template <class T>
static py::array_t<T> aligned_array(std::vector<py::ssize_t> shape) {
  size_t n = 1;
  for (auto d : shape) n *= (size_t)d;
  const size_t bytes = std::max<size_t>(64, (n * sizeof(T) + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  py::capsule owner(p, [](void* q) { std::free(q); });
  return py::array_t<T>(shape, (T*)p, owner);
}

// An output: the caller's buffer when given (a runtime reusing its activation memory: it must be
// C-contiguous, writable, of exactly this dtype and shape), else a new 64-byte-aligned array;
// `holder` receives the array to return.
template <class T>
static T* output(const std::optional<py::array>& given, std::vector<py::ssize_t> shape, const char* name,
                 py::object& holder) {
  if (!given) {
    auto a = aligned_array<T>(shape);
    holder = a;
    return a.mutable_data();
  }
  py::array a = *given;
  const bool ok = a.dtype().is(py::dtype::of<T>()) && (a.flags() & py::array::c_style) && a.writeable() &&
                  std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()) == shape;
  if (!ok) throw std::invalid_argument(std::string(name) + " must be a writable C-contiguous array of the output's dtype and shape");
  holder = a;
  return (T*)a.mutable_data();
}

static py::tuple run(const Layer& L, py::array_t<uint64_t, py::array::c_style | py::array::forcecast> x,
                     const std::string& path, int threads, const OptF& scale, const OptF& bias, const OptF& gate_bias,
                     const OptF& pix,
                     const OptF& act_shift, const OptF& act_slope, const OptF& act_bias, bool act_first,
                     const std::vector<FArr>& res, bool out_float, bool out_int, bool pack, const OptF& thr,
                     float div, float post_scale, int post_after, const std::optional<py::array>& out,
                     const std::optional<py::array>& bits_out) {
  if (x.ndim() != 4 || x.shape(3) != (py::ssize_t)L.ps)
    throw std::invalid_argument("input must be (N, H, W, ceil(cin / 64)) uint64 packed activations");
  void (*rows)(const Job&, int, int) = portable::rows;
  if (path == "avx512") {
    if (!cpu_avx512()) throw std::runtime_error("avx512 path requested but this CPU lacks AVX-512 VPOPCNTDQ");
    const char* env = std::getenv("BINSR_AMX");
    rows = (cpu_amx() && !(env && std::string(env) == "0")) ? avx512::rows_amx
           : (L.seg && cpu_bitalg())                        ? avx512::rows_seg
                                                            : avx512::rows;
  } else if (path == "avx512-vpopcnt") {  // the VPOPCNTDQ kernels even where AMX is there (tests)
    if (!cpu_avx512()) throw std::runtime_error("avx512 path requested but this CPU lacks AVX-512 VPOPCNTDQ");
    rows = (L.seg && cpu_bitalg()) ? avx512::rows_seg : avx512::rows;
  } else if (path == "avx2") {
    if (!cpu_avx2()) throw std::runtime_error("avx2 path requested but this CPU lacks AVX2");
    rows = L.seg ? avx2::rows_seg : avx2::rows;
  } else if (path != "portable") {
    throw std::invalid_argument("path must be portable, avx2 or avx512");
  }
  const int N = (int)x.shape(0), H = (int)x.shape(1), W = (int)x.shape(2);
  const int Hp = H + 2 * L.pad, Wp = W + 2 * L.pad;
  const int Ho = Hp - L.dil * (L.k - 1), Wo = Wp - L.dil * (L.k - 1);
  if (Ho < 1 || Wo < 1) throw std::invalid_argument("input smaller than the dilated kernel");
  const size_t npix = (size_t)Ho * Wo, C = L.cout;
  const bool act = act_shift || act_slope || act_bias;
  if (act && !(act_shift && act_slope && act_bias)) throw std::invalid_argument("activation needs shift, slope, bias");

  Epilogue e0;
  e0.scale = vec_ptr(scale, C, "scale");
  e0.bias = vec_ptr(bias, C, "bias");
  e0.gate_bias = vec_ptr(gate_bias, C, "gate_bias");
  e0.act_shift = vec_ptr(act_shift, C, "act_shift");
  e0.act_slope = vec_ptr(act_slope, C, "act_slope");
  e0.act_bias = vec_ptr(act_bias, C, "act_bias");
  e0.thr = vec_ptr(thr, C, "thr");
  const float* pix0 = vec_ptr(pix, N * npix, "pix");
  if (e0.gate_bias && !pix0) throw std::invalid_argument("gate_bias needs pix (the gate it is multiplied by)");
  e0.act_first = act_first;
  if (res.size() > 3) throw std::invalid_argument("at most 3 residuals");
  if (post_after < 0 || post_after > (int)res.size()) throw std::invalid_argument("post_after must be in 0..len(res)");
  e0.div = div;
  e0.post_scale = post_scale;
  e0.post_after = post_after;
  for (const FArr& r : res)
    if ((size_t)r.size() != N * npix * C) throw std::invalid_argument("residual has the wrong size");

  py::object of = py::none(), oi = py::none(), ob = py::none();
  float* fptr = nullptr;
  int32_t* iptr = nullptr;
  uint64_t* bptr = nullptr;
  if (out_float) fptr = output<float>(out, {N, Ho, Wo, (py::ssize_t)C}, "out", of);
  e0.stream = npix * C * sizeof(float) > l3_bytes() / 2;
  if (out_int) iptr = output<int32_t>(std::nullopt, {N, Ho, Wo, (py::ssize_t)C}, "out_int", oi);
  if (pack) {
    e0.pwd = (L.cout + 63) / 64;
    bptr = output<uint64_t>(bits_out, {N, Ho, Wo, e0.pwd}, "bits_out", ob);
  }
  const size_t ps = L.ps;
  const uint64_t* xin = x.data();
  {
    py::gil_scoped_release nogil;
    const bool amx = rows == avx512::rows_amx;  // pads as it expands the rows: no padded copy
    std::vector<uint64_t> xp(amx ? 0 : (size_t)Hp * Wp * ps);
    const bool need_corr = L.corr && !amx && rows != avx512::rows_seg;
    std::vector<int32_t> corr(need_corr ? (size_t)Hp * Wp * L.groups : 0);
    for (int n = 0; n < N; ++n) {
      std::fill(xp.begin(), xp.end(), ~0ull);
      for (int y = 0; y < H && !amx; ++y)
        std::memcpy(xp.data() + (((size_t)(y + L.pad)) * Wp + L.pad) * ps, xin + (((size_t)n * H + y) * W) * ps,
                    sizeof(uint64_t) * W * ps);
      for (size_t q = 0; q < corr.size(); ++q) {  // popcount of the bits outside each group
        const size_t px = q / L.groups;
        const int g = (int)(q % L.groups);
        int32_t c = 0;
        for (int i = 0; i < L.wd; ++i)
          c += __builtin_popcountll(xp[px * ps + L.w0[g] + i] & ~L.mask[(size_t)g * L.wd + i]);
        corr[q] = c;
      }
      Job j{&L, amx ? nullptr : xp.data(), need_corr ? corr.data() : nullptr, Wp, Ho, Wo, {}, {}, e0,
            xin + (size_t)n * H * W * ps, H, W};
      for (int t = 0; t < L.taps; ++t) {
        j.tappix.push_back((std::ptrdiff_t)(t / L.k) * L.dil * Wp + (t % L.k) * L.dil);
        j.tapoff.push_back(j.tappix.back() * (std::ptrdiff_t)ps);
      }
      if (pix0) j.e.pix = pix0 + n * npix;
      for (size_t r = 0; r < res.size(); ++r) j.e.res[r] = res[r].data() + n * npix * C;
      if (fptr) j.e.out = fptr + n * npix * C;
      if (iptr) j.e.out_int = iptr + n * npix * C;
      if (bptr) j.e.bits = bptr + n * npix * e0.pwd;
      parallel_range((size_t)Ho, threads, 1, [&](size_t y0, size_t y1) { rows(j, (int)y0, (int)y1); });
    }
  }
  return py::make_tuple(of, oi, ob);
}

// ---------------------------------------------------------------- Winograd F(4x4, 3x3) transforms (FP convs)
// B^T and A^T of Lavin & Gray (2016), applied to n contiguous floats at a time.
static inline void bt6(const float* __restrict z0, const float* __restrict z1, const float* __restrict z2,
                       const float* __restrict z3, const float* __restrict z4, const float* __restrict z5,
                       float* __restrict o0, float* __restrict o1, float* __restrict o2, float* __restrict o3,
                       float* __restrict o4, float* __restrict o5, size_t n) {
  for (size_t c = 0; c < n; ++c) {
    o0[c] = 4.f * z0[c] - 5.f * z2[c] + z4[c];
    o1[c] = -4.f * (z1[c] + z2[c]) + z3[c] + z4[c];
    o2[c] = 4.f * (z1[c] - z2[c]) - z3[c] + z4[c];
    o3[c] = 2.f * (z3[c] - z1[c]) - z2[c] + z4[c];
    o4[c] = 2.f * (z1[c] - z3[c]) - z2[c] + z4[c];
    o5[c] = 4.f * z1[c] - 5.f * z3[c] + z5[c];
  }
}

static inline void at6(const float* __restrict m0, const float* __restrict m1, const float* __restrict m2,
                       const float* __restrict m3, const float* __restrict m4, const float* __restrict m5,
                       float* __restrict y0, float* __restrict y1, float* __restrict y2, float* __restrict y3,
                       size_t n) {
  for (size_t c = 0; c < n; ++c) {
    const float s12 = m1[c] + m2[c], d12 = m1[c] - m2[c], s34 = m3[c] + m4[c], d34 = m3[c] - m4[c];
    y0[c] = m0[c] + s12 + s34;
    y1[c] = d12 + 2.f * d34;
    y2[c] = s12 + 4.f * s34;
    y3[c] = d12 + 8.f * d34 + m5[c];
  }
}

// Input transform of tile rows [r0, r1) of x (H, W, C), zero padding 1 -> V (36, T, C): B^T along
// the rows on whole image rows, then along the columns per tile.
static py::object wino_in(const FArr& x, int r0, int r1, const std::optional<py::array>& out) {
  if (x.ndim() != 3) throw std::invalid_argument("x must be (H, W, C)");
  const int H = (int)x.shape(0), W = (int)x.shape(1), C = (int)x.shape(2), ntw = (W + 3) / 4;
  if (r0 < 0 || r1 > (H + 3) / 4 || r0 >= r1) throw std::invalid_argument("bad tile rows");
  const size_t T = (size_t)(r1 - r0) * ntw, Wp = 4 * (size_t)ntw + 2;
  py::object v;
  float* vp = output<float>(out, {36, (py::ssize_t)T, C}, "out", v);
  const float* xp = x.data();
  {
    py::gil_scoped_release nogil;
    // per-thread scratch, reused from call to call (fresh multi-MB buffers cost page faults)
    thread_local std::vector<float> zero, e;
    if (zero.size() < (size_t)W * C) zero.assign((size_t)W * C, 0.f);
    e.resize(6 * Wp * C);  // e[a][col][c], col = x + 1; the padding columns are zeroed below
    for (int a = 0; a < 6; ++a) {
      std::fill_n(e.data() + a * Wp * C, C, 0.f);
      std::fill(e.data() + (a * Wp + 1 + W) * C, e.data() + (a + 1) * Wp * C, 0.f);
    }
    for (int tr = r0; tr < r1; ++tr) {
      const float* rw[6];
      for (int i = 0; i < 6; ++i) {
        const int y = 4 * tr - 1 + i;
        rw[i] = (y < 0 || y >= H) ? zero.data() : xp + (size_t)y * W * C;
      }
      float* ea[6];
      for (int a = 0; a < 6; ++a) ea[a] = e.data() + (a * Wp + 1) * C;
      bt6(rw[0], rw[1], rw[2], rw[3], rw[4], rw[5], ea[0], ea[1], ea[2], ea[3], ea[4], ea[5], (size_t)W * C);
      for (int tw = 0; tw < ntw; ++tw) {
        const size_t t = (size_t)(tr - r0) * ntw + tw;
        for (int a = 0; a < 6; ++a) {
          const float* z = e.data() + (a * Wp + 4 * (size_t)tw) * C;
          float* o = vp + ((size_t)a * 6 * T + t) * C;
          const size_t s = T * C;
          bt6(z, z + C, z + 2 * C, z + 3 * C, z + 4 * C, z + 5 * C, o, o + s, o + 2 * s, o + 3 * s, o + 4 * s, o + 5 * s,
              (size_t)C);
        }
      }
    }
  }
  return v;
}

// Output transform of M (36, T, O) for tile rows [r0, r1) into out (H*r, W*r, O/r^2): + bias,
// LeakyReLU(leaky) when leaky >= 0, PixelShuffle(r).
static void wino_out(const FArr& m, py::array_t<float, py::array::c_style>& out, int r0, int r1, int H, int W,
                     const OptF& bias, float leaky, int r) {
  const int O = (int)m.shape(2), ntw = (W + 3) / 4, Cn = O / (r * r);
  const size_t T = (size_t)(r1 - r0) * ntw;
  if (m.ndim() != 3 || m.shape(0) != 36 || (size_t)m.shape(1) != T || O % (r * r))
    throw std::invalid_argument("M must be (36, tiles, O)");
  if (out.ndim() != 3 || out.shape(0) != (py::ssize_t)H * r || out.shape(1) != (py::ssize_t)W * r || out.shape(2) != Cn)
    throw std::invalid_argument("out has the wrong shape");
  const float* b = vec_ptr(bias, O, "bias");
  const float* mp = m.data();
  float* op = out.mutable_data();
  std::vector<size_t> off(O);  // channel c*r*r + i*r + j -> pixel (+i, +j), channel c
  for (int o = 0; o < O; ++o) off[o] = ((size_t)((o / r) % r) * W * r + o % r) * Cn + o / (r * r);
  py::gil_scoped_release nogil;
  std::vector<float> e(24 * (size_t)O), y(16 * (size_t)O);
  for (int tr = r0; tr < r1; ++tr)
    for (int tw = 0; tw < ntw; ++tw) {
      const size_t t = (size_t)(tr - r0) * ntw + tw;
      const size_t s = T * O;
      for (int a = 0; a < 6; ++a) {  // along b: e[a][q] = sum_b AT[q][b] M[a][b]
        const float* z = mp + ((size_t)a * 6 * T + t) * O;
        float* o4 = e.data() + (size_t)a * 4 * O;
        at6(z, z + s, z + 2 * s, z + 3 * s, z + 4 * s, z + 5 * s, o4, o4 + O, o4 + 2 * O, o4 + 3 * O, (size_t)O);
      }
      for (int q = 0; q < 4; ++q) {  // along a: y[p][q] = sum_a AT[p][a] e[a][q]
        const float* z = e.data() + (size_t)q * O;
        float* yq = y.data() + (size_t)q * O;
        const size_t sa = 4 * (size_t)O, sp = 4 * (size_t)O;
        at6(z, z + sa, z + 2 * sa, z + 3 * sa, z + 4 * sa, z + 5 * sa, yq, yq + sp, yq + 2 * sp, yq + 3 * sp, (size_t)O);
      }
      for (int p = 0; p < 4; ++p)
        for (int q = 0; q < 4; ++q) {
          const int Y = 4 * tr + p, X = 4 * tw + q;
          if (Y >= H || X >= W) continue;
          float* yv = y.data() + (size_t)(p * 4 + q) * O;
          if (b) for (int o = 0; o < O; ++o) yv[o] += b[o];
          if (leaky >= 0.f)
            for (int o = 0; o < O; ++o) {
              const float pos = yv[o] > 0.f ? yv[o] : 0.f, neg = yv[o] < 0.f ? yv[o] : 0.f;
              yv[o] = pos + neg * leaky;
            }
          float* base = op + ((size_t)Y * r * W * r + (size_t)X * r) * Cn;
          if (r == 1) std::memcpy(base, yv, sizeof(float) * O);
          else for (int o = 0; o < O; ++o) base[off[o]] = yv[o];
        }
    }
}

// y += bilinear upsampling of x (H, W, C) by s, align_corners=False, in PyTorch's order of operations.
static void bilinear_add(const FArr& x, py::array_t<float, py::array::c_style>& y, int s, int threads) {
  if (x.ndim() != 3 || y.ndim() != 3) throw std::invalid_argument("x and y must be (H, W, C)");
  const int H = (int)x.shape(0), W = (int)x.shape(1), C = (int)x.shape(2);
  if (y.shape(0) != (py::ssize_t)H * s || y.shape(1) != (py::ssize_t)W * s || y.shape(2) != C)
    throw std::invalid_argument("y must be (H * s, W * s, C)");
  const float* xp = x.data();
  float* yp = y.mutable_data();
  py::gil_scoped_release nogil;
  const float scale = 1.f / (float)s;
  auto src = [scale](int d, int n, int& i0, int& i1, float& l1) {
    const float f = std::max(scale * ((float)d + 0.5f) - 0.5f, 0.f);
    i0 = std::min((int)f, n - 1);
    i1 = i0 + (i0 < n - 1 ? 1 : 0);
    l1 = f - (float)i0;
  };
  std::vector<int> w0(W * s), w1(W * s);
  std::vector<float> wl1(W * s);
  for (int ow = 0; ow < W * s; ++ow) src(ow, W, w0[ow], w1[ow], wl1[ow]);
  parallel_range((size_t)H * s, threads, 8, [&](size_t oh0, size_t oh1) {
  for (int oh = (int)oh0; oh < (int)oh1; ++oh) {
    int h0, h1;
    float hl1;
    src(oh, H, h0, h1, hl1);
    const float hl0 = 1.f - hl1;
    const float* r0 = xp + (size_t)h0 * W * C;
    const float* r1 = xp + (size_t)h1 * W * C;
    float* out = yp + (size_t)oh * W * s * C;
    for (int ow = 0; ow < W * s; ++ow) {
      const float l1 = wl1[ow], l0 = 1.f - l1;
      const float* a = r0 + (size_t)w0[ow] * C;
      const float* b = r0 + (size_t)w1[ow] * C;
      const float* c = r1 + (size_t)w0[ow] * C;
      const float* d = r1 + (size_t)w1[ow] * C;
      for (int ch = 0; ch < C; ++ch)
        out[(size_t)ow * C + ch] += hl0 * (l0 * a[ch] + l1 * b[ch]) + hl1 * (l0 * c[ch] + l1 * d[ch]);
    }
  }
  });
}

// Direct 3x3 conv, zero padding 1, for few input channels (the head conv, C = 3, where the Winograd
// GEMMs would have K = 3): per pixel, 64 output channels at a time accumulate the 9 * C input
// values times the weight rows (ky, kx, c) in registers; + bias, LeakyReLU when leaky >= 0.
// w: (9 * C, Op) with Op = O rounded up to 64 (zero columns), so every block is a whole one.
constexpr int kDirectOB = 64;
__attribute__((target_clones("avx512f", "avx2", "default")))
static void conv3x3_direct_rows(const float* __restrict x, const float* __restrict w, const float* __restrict b,
                                float* __restrict y, int H, int W, int C, int O, float leaky, int y0, int y1) {
  constexpr int OB = kDirectOB;
  const int Op = (O + OB - 1) / OB * OB;
  for (int yy = y0; yy < y1; ++yy)
    for (int xx = 0; xx < W; ++xx)
      for (int o0 = 0; o0 < O; o0 += OB) {
        float acc[OB] = {};
        const int n = std::min(OB, O - o0);
        for (int ky = 0; ky < 3; ++ky) {
          const int iy = yy + ky - 1;
          if (iy < 0 || iy >= H) continue;
          for (int kx = 0; kx < 3; ++kx) {
            const int ix = xx + kx - 1;
            if (ix < 0 || ix >= W) continue;
            const float* xi = x + ((size_t)iy * W + ix) * C;
            const float* wr = w + (size_t)((ky * 3 + kx) * C) * Op + o0;
            for (int c = 0; c < C; ++c) {
              const float v = xi[c];
              const float* wc = wr + (size_t)c * Op;
              for (int o = 0; o < OB; ++o) acc[o] += v * wc[o];
            }
          }
        }
        float* out = y + ((size_t)yy * W + xx) * O + o0;
        for (int o = 0; o < n; ++o) {
          float v = acc[o] + (b ? b[o0 + o] : 0.f);
          if (leaky >= 0.f && v < 0.f) v *= leaky;
          out[o] = v;
        }
      }
}

static void conv3x3_direct(const FArr& x, const FArr& w, py::array_t<float, py::array::c_style>& out,
                           const OptF& bias, float leaky, int threads) {
  if (x.ndim() != 3 || w.ndim() != 2) throw std::invalid_argument("x must be (H, W, C), w (9 * C, O)");
  const int H = (int)x.shape(0), W = (int)x.shape(1), C = (int)x.shape(2), O = (int)w.shape(1);
  if (w.shape(0) != 9 * C) throw std::invalid_argument("w must be (9 * C, O) in (ky, kx, c) row order");
  if (out.ndim() != 3 || out.shape(0) != H || out.shape(1) != W || out.shape(2) != O)
    throw std::invalid_argument("out must be (H, W, O)");
  const float* b = vec_ptr(bias, (size_t)O, "bias");
  const float* xp = x.data();
  float* yp = out.mutable_data();
  const int Op = (O + kDirectOB - 1) / kDirectOB * kDirectOB;
  std::vector<float> wpad((size_t)9 * C * Op, 0.f);
  for (int r = 0; r < 9 * C; ++r) std::memcpy(wpad.data() + (size_t)r * Op, w.data() + (size_t)r * O, sizeof(float) * O);
  const float* wp = wpad.data();
  py::gil_scoped_release nogil;
  parallel_range((size_t)H, threads, 4, [=](size_t y0, size_t y1) {
    conv3x3_direct_rows(xp, wp, b, yp, H, W, C, O, leaky, (int)y0, (int)y1);
  });
}

// ---------------------------------------------------------------- SwinIR window attention (FP)
// e^x for x <= 0 (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, degree-5 polynomial, ~1 ulp), written
// without calls so that the loops using it vectorize.
static inline float exp_nonpos(float x) {
  x = std::max(x, -87.f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t e = ((int32_t)n + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &e, sizeof two_n);
  return p * two_n;
}

// Windows [w0, w1) of softmax(q k^T * scale + bias + mask) v per head (see
// binsr/deploy/transformer.py::window_attention). Scores are kept key-major (S[j][i], i the query)
// so every inner loop runs over the N queries of a window. NT: N known at compile time (SwinIR's
// 8 x 8 windows), so that a key's N scores, or an output channel's N values, stay in registers
// over the whole sum (0: N at run time). The sums run in the same order either way.
// AVX-512 forms of attn_core's two sums for 64-token windows, blocked over 4 keys / 4 output
// channels so that each load of q (of S) feeds 16 fused multiply-adds; the same FMAs in the same
// order as attn_core's loops (which GCC contracts), so the results are the same bits.
__attribute__((target("avx512f"))) static void scores64_avx512(int d, const float* kk, const float* qT,
                                                               const float* bT, const float* lab, float* S,
                                                               float* m) {
  __m512 mx[4], lb[4];
  for (int i = 0; i < 4; ++i) {
    mx[i] = _mm512_set1_ps(-INFINITY);
    lb[i] = lab ? _mm512_loadu_ps(lab + 16 * i) : _mm512_setzero_ps();
  }
  const __m512 big = _mm512_set1_ps(-100.f);
  for (int j = 0; j < 64; j += 4) {
    __m512 acc[4][4];
    for (int r = 0; r < 4; ++r)
      for (int i = 0; i < 4; ++i) acc[r][i] = _mm512_loadu_ps(bT + (size_t)(j + r) * 64 + 16 * i);
    for (int c = 0; c < d; ++c) {
      const float* q = qT + (size_t)c * 64;
      const __m512 q0 = _mm512_loadu_ps(q), q1 = _mm512_loadu_ps(q + 16), q2 = _mm512_loadu_ps(q + 32),
                   q3 = _mm512_loadu_ps(q + 48);
      for (int r = 0; r < 4; ++r) {
        const __m512 kv = _mm512_set1_ps(kk[(size_t)(j + r) * d + c]);
        acc[r][0] = _mm512_fmadd_ps(kv, q0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(kv, q1, acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(kv, q2, acc[r][2]);
        acc[r][3] = _mm512_fmadd_ps(kv, q3, acc[r][3]);
      }
    }
    for (int r = 0; r < 4; ++r)
      for (int i = 0; i < 4; ++i) {
        if (lab) {  // + (lab[i] != lab[j] ? -100 : 0)
          const __mmask16 other = _mm512_cmp_ps_mask(lb[i], _mm512_set1_ps(lab[j + r]), _CMP_NEQ_OQ);
          acc[r][i] = _mm512_add_ps(acc[r][i], _mm512_maskz_mov_ps(other, big));
        }
        mx[i] = _mm512_max_ps(mx[i], acc[r][i]);
        _mm512_storeu_ps(S + (size_t)(j + r) * 64 + 16 * i, acc[r][i]);
      }
  }
  for (int i = 0; i < 4; ++i) _mm512_storeu_ps(m + 16 * i, mx[i]);
}

// O[c] = sum_j v[j][c] S[j] / sum for the first channels in blocks of 4, written to out[tok[i] * C + c];
// returns how many channels it did (the rest: attn_core's loop).
__attribute__((target("avx512f"))) static int values64_avx512(int d, const float* vv, const float* S, const float* sum,
                                                              const size_t* tok, float* out, int C) {
  __m512 inv[4];
  for (int i = 0; i < 4; ++i) inv[i] = _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_loadu_ps(sum + 16 * i));
  int c = 0;
  for (; c + 4 <= d; c += 4) {
    __m512 acc[4][4];
    for (int r = 0; r < 4; ++r)
      for (int i = 0; i < 4; ++i) acc[r][i] = _mm512_setzero_ps();
    for (int j = 0; j < 64; ++j) {
      const float* row = S + (size_t)j * 64;
      const __m512 s0 = _mm512_loadu_ps(row), s1 = _mm512_loadu_ps(row + 16), s2 = _mm512_loadu_ps(row + 32),
                   s3 = _mm512_loadu_ps(row + 48);
      for (int r = 0; r < 4; ++r) {
        const __m512 vj = _mm512_set1_ps(vv[(size_t)j * d + c + r]);
        acc[r][0] = _mm512_fmadd_ps(vj, s0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(vj, s1, acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(vj, s2, acc[r][2]);
        acc[r][3] = _mm512_fmadd_ps(vj, s3, acc[r][3]);
      }
    }
    alignas(64) float o[4][64];
    for (int r = 0; r < 4; ++r)
      for (int i = 0; i < 4; ++i) _mm512_store_ps(o[r] + 16 * i, _mm512_mul_ps(acc[r][i], inv[i]));
    for (int i = 0; i < 64; ++i)
      for (int r = 0; r < 4; ++r) out[tok[i] * C + c + r] = o[r][i];
  }
  return c;
}

template <int NT>
__attribute__((always_inline)) static inline void attn_core(const float* __restrict qkv, float* __restrict out, int H,
                                                            int W, int C, int heads, int ws, int shift,
                                                            const float* __restrict biasT, float scale, int w0, int w1,
                                                            bool wide) {
  const int N = NT ? NT : ws * ws, d = C / heads, nwx = W / ws;
  std::vector<float> qT((size_t)d * N), kk((size_t)N * d), vv((size_t)N * d), S((size_t)N * N), m(N), sum(N), lab(N),
      obuf(NT ? 0 : N);
  std::vector<size_t> tok(N);
  auto region = [shift, ws](int v, int n) { return v < n - ws ? 0.f : (v < n - shift ? 1.f : 2.f); };
  for (int wi = w0; wi < w1; ++wi) {
    const int wy = wi / nwx, wx = wi % nwx;
    bool masked = false;
    for (int p = 0; p < N; ++p) {
      const int yr = wy * ws + p / ws, xr = wx * ws + p % ws;  // coordinates after the roll by -shift
      tok[p] = (size_t)((yr + shift) % H) * W + (xr + shift) % W;
      lab[p] = shift ? region(yr, H) * 3.f + region(xr, W) : 0.f;
      masked |= lab[p] != lab[0];
    }
    for (int h = 0; h < heads; ++h) {
      for (int p = 0; p < N; ++p) {
        const float* t = qkv + tok[p] * 3 * C + h * d;
        for (int c = 0; c < d; ++c) {
          qT[(size_t)c * N + p] = t[c] * scale;
          kk[(size_t)p * d + c] = t[C + c];
          vv[(size_t)p * d + c] = t[2 * C + c];
        }
      }
      const float* bT = biasT + (size_t)h * N * N;
      if (NT == 64 && wide) {
        scores64_avx512(d, kk.data(), qT.data(), bT, masked ? lab.data() : nullptr, S.data(), m.data());
      } else {
      for (int i = 0; i < N; ++i) m[i] = -INFINITY;
      for (int j = 0; j < N; ++j) {  // S[j] = bias + sum_c k[j][c] q[c] (+ mask), and the running max
        float acc[NT ? NT : 1];
        float* __restrict row = NT ? acc : S.data() + (size_t)j * N;
        for (int i = 0; i < N; ++i) row[i] = bT[(size_t)j * N + i];
        for (int c = 0; c < d; ++c) {
          const float kv = kk[(size_t)j * d + c];
          const float* __restrict q = qT.data() + (size_t)c * N;
          for (int i = 0; i < N; ++i) row[i] += kv * q[i];
        }
        if (masked) {
          const float lj = lab[j];
          for (int i = 0; i < N; ++i) row[i] += lab[i] != lj ? -100.f : 0.f;
        }
        float* __restrict srow = S.data() + (size_t)j * N;
        for (int i = 0; i < N; ++i) {
          m[i] = std::max(m[i], row[i]);
          srow[i] = row[i];
        }
      }
      }
      std::fill(sum.begin(), sum.end(), 0.f);
      for (int j = 0; j < N; ++j) {
        float* __restrict row = S.data() + (size_t)j * N;
        for (int i = 0; i < N; ++i) {
          row[i] = exp_nonpos(row[i] - m[i]);
          sum[i] += row[i];
        }
      }
      int c = 0;
      if (NT == 64 && wide) c = values64_avx512(d, vv.data(), S.data(), sum.data(), tok.data(), out + h * d, C);
      for (; c < d; ++c) {  // O[c] = sum_j v[j][c] S[j], then / sum, into the token map
        float acc[NT ? NT : 1];
        float* __restrict o = NT ? acc : obuf.data();
        for (int i = 0; i < N; ++i) o[i] = 0.f;
        for (int j = 0; j < N; ++j) {
          const float vj = vv[(size_t)j * d + c];
          const float* __restrict row = S.data() + (size_t)j * N;
          for (int i = 0; i < N; ++i) o[i] += vj * row[i];
        }
        for (int i = 0; i < N; ++i) out[tok[i] * C + h * d + c] = o[i] * (1.f / sum[i]);
      }
    }
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void attn_windows(const float* __restrict qkv, float* __restrict out, int H, int W, int C, int heads, int ws,
                         int shift, const float* __restrict biasT, float scale, int w0, int w1) {
  if (ws == 8) attn_core<64>(qkv, out, H, W, C, heads, ws, shift, biasT, scale, w0, w1, cpu_avx512());
  else attn_core<0>(qkv, out, H, W, C, heads, ws, shift, biasT, scale, w0, w1, false);
}

// nn.GELU() = x / 2 * (1 + erf(x / sqrt 2)); erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
__attribute__((target_clones("avx512f", "avx2", "default")))
static void gelu_range(const float* __restrict x, float* __restrict y, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float z = x[i] * 0.70710678118654752f, a = std::fabs(z);
    const float t = 1.f / (1.f + 0.3275911f * a);
    const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    const float e = 1.f - poly * exp_nonpos(-a * a);
    y[i] = 0.5f * x[i] * (1.f + (z < 0.f ? -e : e));
  }
}

static py::array_t<float> gelu(const FArr& x, int threads) {
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const float* xp = x.data();
  float* yp = y.mutable_data();
  const size_t n = (size_t)x.size();
  py::gil_scoped_release nogil;
  parallel_range(n, threads, 1 << 16, [=](size_t i0, size_t i1) { gelu_range(xp + i0, yp + i0, i1 - i0); });
  return y;
}

// LayerNorm over the last axis of (M, C): biased variance, eps inside the root; sums in double.
// Tokens [m0, m1): each token's mean and variance summed in double, channel by channel, then
// (x - mean) * inv * w + b in float. T tokens at a time: their T independent running sums overlap
// (one token's sum is a chain of dependent adds); each token's sums keep their order.
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
static void layer_norm_range(const float* __restrict x, float* __restrict y, const float* __restrict w,
                             const float* __restrict b, int C, float eps, size_t m0, size_t m1) {
  constexpr size_t T = 8;
  for (size_t m = m0; m < m1; m += T) {
    const size_t n = std::min(T, m1 - m);
    double s[T] = {}, q[T] = {}, mean[T];
    for (int c = 0; c < C; ++c)
      for (size_t k = 0; k < n; ++k) s[k] += x[(m + k) * C + c];
    for (size_t k = 0; k < n; ++k) mean[k] = s[k] / C;
    for (int c = 0; c < C; ++c)
      for (size_t k = 0; k < n; ++k) { const double d = x[(m + k) * C + c] - mean[k]; q[k] += d * d; }
    for (size_t k = 0; k < n; ++k) {
      const float* __restrict r = x + (m + k) * C;
      const float inv = (float)(1.0 / std::sqrt(q[k] / C + (double)eps)), mu = (float)mean[k];
      float* __restrict o = y + (m + k) * C;
      for (int c = 0; c < C; ++c) o[c] = (r[c] - mu) * inv * w[c] + b[c];
    }
  }
}

static py::array_t<float> layer_norm(const FArr& x, const FArr& w, const FArr& b, float eps, int threads) {
  const int C = (int)x.shape(x.ndim() - 1);
  if (w.size() != C || b.size() != C) throw std::invalid_argument("weight and bias must have C values");
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const float *xp = x.data(), *wp = w.data(), *bp = b.data();
  float* yp = y.mutable_data();
  const size_t M = (size_t)x.size() / C;
  py::gil_scoped_release nogil;
  parallel_range(M, threads, 4096, [=](size_t m0, size_t m1) { layer_norm_range(xp, yp, wp, bp, C, eps, m0, m1); });
  return y;
}

// Sign bits of channel-last float x (..., C) against thr (C,) or 0, packed as bitpack.pack_bits.
static py::array_t<uint64_t> pack_signs(const FArr& x, const OptF& thr, int threads) {
  const int C = (int)x.shape(x.ndim() - 1), nw = (C + 63) / 64;
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  shape.back() = nw;
  py::array_t<uint64_t> out(shape);
  const float* xp = x.data();
  const float* tp = vec_ptr(thr, C, "thr");
  uint64_t* op = out.mutable_data();
  const size_t M = (size_t)x.size() / C;
  void (*range)(const float*, const float*, uint64_t*, int, size_t, size_t) =
      cpu_avx512() ? avx512::pack_range : cpu_avx2() ? avx2::pack_range : portable::pack_range;
  py::gil_scoped_release nogil;
  parallel_range(M, threads, 4096, [=](size_t m0, size_t m1) { range(xp, tp, op, C, m0, m1); });
  return out;
}

static py::array_t<float> window_attention(const FArr& qkv, int heads, int ws, int shift, const FArr& biasT,
                                           float scale, int threads) {
  if (qkv.ndim() != 3 || qkv.shape(2) % (3 * heads) != 0) throw std::invalid_argument("qkv must be (H, W, 3 C)");
  const int H = (int)qkv.shape(0), W = (int)qkv.shape(1), C = (int)qkv.shape(2) / 3, N = ws * ws;
  if (H % ws || W % ws || shift < 0 || shift >= ws) throw std::invalid_argument("H, W must be multiples of ws; 0 <= shift < ws");
  if (biasT.ndim() != 3 || biasT.shape(0) != heads || biasT.shape(1) != N || biasT.shape(2) != N)
    throw std::invalid_argument("biasT must be (heads, N, N)");
  py::array_t<float> out({(py::ssize_t)H, (py::ssize_t)W, (py::ssize_t)C});
  const float* q = qkv.data();
  const float* b = biasT.data();
  float* o = out.mutable_data();
  const int nw = (H / ws) * (W / ws);
  py::gil_scoped_release nogil;
  parallel_range((size_t)nw, threads, 1, [=](size_t w0, size_t w1) {
    attn_windows(q, o, H, W, C, heads, ws, shift, b, scale, (int)w0, (int)w1);
  });
  return out;
}

}  // namespace binsr

PYBIND11_MODULE(_engine, m) {
  using namespace binsr;
  m.doc() = "Bit-packed binary convolution kernels (AVX-512 VPOPCNTDQ / AVX2 / portable).";
  m.def("cpu_features", []() {
    py::dict d;
    d["avx2"] = cpu_avx2();
    d["avx512"] = cpu_avx512();
    d["amx"] = cpu_amx();
    return d;
  }, "Which compiled paths this CPU can run.");
  m.def("wino_in", &wino_in, py::arg("x"), py::arg("r0"), py::arg("r1"), py::arg("out") = py::none(),
        "Winograd F(4x4,3x3) input transform of tile rows [r0, r1): (H, W, C) -> (36, tiles, C) (into out if given).");
  m.def("conv3x3_direct", &conv3x3_direct, py::arg("x"), py::arg("w"), py::arg("out").noconvert(),
        py::arg("bias") = py::none(), py::arg("leaky") = -1.f, py::arg("threads") = 1,
        "Direct 3x3 conv (zero padding 1) of (H, W, C) with (9 * C, O) weights into out (H, W, O), + bias, LeakyReLU.");
  m.def("wino_out", &wino_out, py::arg("m"), py::arg("out").noconvert(), py::arg("r0"), py::arg("r1"), py::arg("H"), py::arg("W"),
        py::arg("bias") = py::none(), py::arg("leaky") = -1.f, py::arg("shuffle") = 1,
        "Winograd output transform + bias + LeakyReLU + PixelShuffle into out (H*r, W*r, O/r^2).");
  m.def("bilinear_add", &bilinear_add, py::arg("x"), py::arg("y").noconvert(), py::arg("scale"), py::arg("threads") = 1,
        "y += bilinear upsampling of x (H, W, C) by an integer scale (align_corners=False).");
  m.def("layer_norm", &layer_norm, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        py::arg("threads") = 1, "nn.LayerNorm over the last axis (sums in double).");
  m.def("pack_signs", &pack_signs, py::arg("x"), py::arg("thr") = py::none(), py::arg("threads") = 1,
        "Sign bits (x >= thr) of channel-last float x, packed as binsr.deploy.bitpack.pack_bits.");
  m.def("gelu", &gelu, py::arg("x"), py::arg("threads") = 1, "nn.GELU() (exact erf form, |error| < 1e-6).");
  m.def("window_attention", &window_attention, py::arg("qkv"), py::arg("heads"), py::arg("ws"), py::arg("shift"),
        py::arg("biasT"), py::arg("scale"), py::arg("threads") = 1,
        "SwinIR (S)W-MSA before the projection: qkv (H, W, 3C), key-major bias (heads, N, N) -> (H, W, C).");
  py::class_<Layer>(m, "BinaryConv")
      .def(py::init(&make_layer), py::arg("weights"), py::arg("cin"), py::arg("k"), py::arg("dilation"),
           py::arg("padding"), py::arg("groups"))
      .def_readonly("cout", &Layer::cout)
      .def_readonly("cin", &Layer::cin)
      .def_readonly("k", &Layer::k)
      .def_readonly("dilation", &Layer::dil)
      .def_readonly("padding", &Layer::pad)
      .def_readonly("groups", &Layer::groups)
      .def("run", &run, py::arg("x"), py::arg("path"), py::arg("threads") = 1, py::arg("scale") = py::none(),
           py::arg("bias") = py::none(), py::arg("gate_bias") = py::none(), py::arg("pix") = py::none(), py::arg("act_shift") = py::none(),
           py::arg("act_slope") = py::none(), py::arg("act_bias") = py::none(), py::arg("act_first") = false,
           py::arg("res") = std::vector<FArr>{},
           py::arg("out_float") = true, py::arg("out_int") = false, py::arg("pack") = false,
           py::arg("thr") = py::none(), py::arg("div") = 1.f, py::arg("post_scale") = 1.f, py::arg("post_after") = 0,
           py::arg("out") = py::none(), py::arg("bits_out") = py::none(),
           "Binary conv of packed x (N, H, W, ceil(cin / 64)); returns (float NHWC | None, int32 dots | None, bits | None); out / bits_out: buffers to write them into.");
}
