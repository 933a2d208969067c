// Shared types of the bit-packed binary convolution engine (binsr.deploy._engine).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
#include <string>
#include <vector>

namespace binsr {

// Cache-line aligned storage: a tile row (64 bytes) then never straddles two lines.
template <class T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <class U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(std::size_t n) {
    void* p = ::operator new(n * sizeof(T), std::align_val_t(64));
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const Aligned64<U>&) const { return true; }
  template <class U>
  bool operator!=(const Aligned64<U>&) const { return false; }
};

// One binary conv layer: packed, re-laid-out weights plus its geometry.
struct Layer {
  int cout, cin, k, dil, pad, groups;
  int cpg_in, cpg_out;  // channels per group
  int ps;               // 64-bit words per input pixel: ceil(cin / 64), channels packed densely
  int wd;               // words spanned by one group (the same for every group)
  int nob;              // 8-output-channel blocks per group (last one padded with all-ones weights)
  int taps;             // k * k
  bool corr;            // some group does not cover whole words: subtract popcount(x & ~mask)
  std::vector<int> w0;             // first word of each group
  std::vector<uint64_t> mask;      // [group][word]: the group's channel bits
  std::vector<uint64_t, Aligned64<uint64_t>> w;  // [group][block][tap][word][8 out channels], 0 outside the group
  std::vector<uint64_t, Aligned64<uint64_t>> wlo, whi;  // w & 0x0f.., (w >> 4) & 0x0f.. (AVX2 nibble popcount)
  // Segment mode (AVX2, groups of 16 or 32 input channels): the 64 / seg groups that share a word
  // are computed together, one output channel of each group per seg-bit segment of a weight word.
  int seg = 0;                     // 16 or 32, else 0
  int nvb = 0;                     // blocks of 8 "virtual" channels (index within a group)
  std::vector<uint64_t, Aligned64<uint64_t>> slo, shi;  // nibble-split [word][vblock][tap][8]
  std::vector<uint64_t, Aligned64<uint64_t>> sraw;  // the same words whole (AVX-512 segment mode: vpopcntw / vpopcntd)
  // AMX-INT8 mode (AVX-512 path on CPUs with AMX): dot = 2 * sum(a * s) - sum(s) with a in {0, 1}
  // (input bits as bytes) and s in {-1, 0, +1} (signed weights, 0 outside the group / past cout).
  int nb16 = 0;                    // blocks of 16 output channels
  std::vector<int8_t, Aligned64<int8_t>> bt;  // [block][tap][word]: one 16 x 64-byte B tile (VNNI layout)
  std::vector<int32_t> bsum;       // [nb16 * 16]: sum of s over taps and channels
};

// Fused epilogue: v = ((dot * scale[o]) * pix[p]) * chan[o] + bias[o]; then the residuals res[0..2] are added
// and an optional RPReLU ((v - shift) -> PReLU(slope) -> + abias) applied, the RPReLU before the
// residuals when act_first (then v / div); then float out and/or sign bits (v >= thr).
struct Epilogue {
  const float* scale = nullptr;
  const float* bias = nullptr;
  const float* pix = nullptr;
  const float* chan = nullptr;  // SCALES' channel gate: v *= chan[o] after pix, before the bias
  const float* act_shift = nullptr;
  const float* act_slope = nullptr;
  const float* act_bias = nullptr;
  const float* res[3] = {nullptr, nullptr, nullptr};
  const float* gate_bias = nullptr;  // + pix[p] * gate_bias[o] (product rounded) after the bias
  float div = 1.f;         // divides v after the RPReLU-first and before the residuals (BBCU's / k)
  float post_scale = 1.f;  // multiplies the sum once the first post_after residuals are in
  int post_after = 0;
  bool act_first = false;
  const float* thr = nullptr;
  float* out = nullptr;
  bool stream = false;  // write `out` with non-temporal stores (engine.cpp stream_min_bytes)
  int32_t* out_int = nullptr;
  uint64_t* bits = nullptr;
  int pwd = 0;  // words per output pixel when packing
};

// One image's work: padded packed input (all-ones border) and where results go.
struct Job {
  const Layer* L;
  const uint64_t* xp;   // null for the AMX kernel, which pads as it expands rows from x
  const int32_t* corr;  // [padded pixel][group] popcount(x & ~mask) or null
  int Wp, Ho, Wo;       // padded width, output size
  std::vector<std::ptrdiff_t> tapoff, tappix;  // tap offsets in words and in pixels
  Epilogue e;
  const uint64_t* x = nullptr;  // the unpadded input (H, W) of this image
  int H = 0, W = 0;
};

// Sign bits of n <= 64 values (v >= thr, or >= 0), packed; bits past n stay 1. The scalar form
// (portable and NEON kernels, the AVX2 tail).
static inline uint64_t pack_word_scalar(const float* v, const float* thr, int n) {
  uint64_t w = ~0ull;
  for (int c = 0; c < n; ++c)
    if (!(v[c] >= (thr ? thr[c] : 0.f))) w &= ~(1ull << c);
  return w;
}

// Per-thread scratch (conv.cpp): slot `slot`'s 64-byte-aligned buffer of at least `bytes`, zeroed
// (as the std::vectors it replaces), reused from call to call. The kernel files, each compiled with its
// own -m flags, use it instead of std containers: a container's out-of-line (weak) template code
// compiled for AVX-512 there could be the copy the linker keeps for every file.
// zero = false: the caller writes every byte it reads (the dots and epilogue values of a row:
// zeroing them cost as much traffic again, 80 KiB per 320-pixel row of 64 channels).
void* scratch(int slot, size_t bytes, bool zero = true);

using RowsFn = void (*)(const Job&, int, int);
using PackFn = void (*)(const float*, const float*, uint64_t*, int, size_t, size_t);

// The kernels, one file per ISA (kernels_<isa>.cpp): output rows [y0, y1) of a job, and the sign
// packing of pack_signs (channel-last floats -> bits, tokens [m0, m1)).
namespace portable {
void rows(const Job& j, int y0, int y1);
void pack_range(const float* x, const float* thr, uint64_t* out, int C, size_t m0, size_t m1);
}
#if defined(__x86_64__)
namespace avx2 {
void rows(const Job& j, int y0, int y1);
void rows_seg(const Job& j, int y0, int y1);
void pack_range(const float* x, const float* thr, uint64_t* out, int C, size_t m0, size_t m1);
}
namespace avx512 {
void rows(const Job& j, int y0, int y1);
void rows_seg(const Job& j, int y0, int y1);
void pack_range(const float* x, const float* thr, uint64_t* out, int C, size_t m0, size_t m1);
void gate3x3_rows(const float* x, const double* w, const float* b, float* y, int H, int W, int C, int y0, int y1,
                  double* sums);
}
namespace amx { void rows(const Job& j, int y0, int y1); }
#endif
#if defined(__aarch64__)
namespace neon {
void rows(const Job& j, int y0, int y1);
void pack_range(const float* x, const float* thr, uint64_t* out, int C, size_t m0, size_t m1);
}
#endif

// ---- the pybind-free core (conv.cpp), shared by the Python binding and the C++ test driver
bool cpu_avx2();
bool cpu_avx512();  // AVX-512 F, BW and VPOPCNTDQ
bool cpu_bitalg();
bool cpu_amx();     // AMX-TILE, AMX-INT8 and the kernel's permission to use the tile state

// A path's kernel for one layer: "portable", "avx2", "avx512" (AMX where the CPU has it and
// BINSR_AMX is not "0"), "avx512-vpopcnt" (never AMX) or "neon"; throws std::runtime_error for a
// path this CPU or build lacks, std::invalid_argument for an unknown name.
struct Kernel {
  RowsFn rows;
  bool pads_itself;  // reads the unpadded input (AMX): no padded copy
  bool masks_groups;  // computes grouped dots itself (AMX, AVX-512 segments): no popcount correction
};
Kernel select_kernel(const std::string& path, const Layer& L);
PackFn select_pack();  // the fastest pack_range here

// Packs weights w (cout, k, k, ceil(cin / groups / 64)) words into a Layer; throws std::invalid_argument.
Layer make_layer(const uint64_t* w, int cout, int cin, int k, int dil, int pad, int groups);

// Runs the layer on N images x (N, H, W, ps): e0's per-image pointers (pix, res, out, out_int,
// bits) point at image 0's maps. Output size: conv_out_size.
void conv_run(const Layer& L, const Kernel& kern, const uint64_t* x, int N, int H, int W, const Epilogue& e0,
              int threads);
void conv_out_size(const Layer& L, int H, int W, int& Ho, int& Wo);

// One conv of a depth-first chain (chain.cpp): its layer, kernel and epilogue (out, bits, res,
// pix: whole maps of the chain's size, or null), and where its inputs come from: an earlier step
// of the chain (src, res_src; -1: the whole map x / e.res). An output that only later steps read
// (ring_out, ring_bits) is kept in a ring of rows that chain_run allocates.
struct ChainStep {
  const Layer* L = nullptr;
  Kernel kern{};
  Epilogue e;
  const uint64_t* x = nullptr;
  int src = -1;
  int res_src[3] = {-1, -1, -1};
  bool ring_out = false, ring_bits = false;
};
// Whether chain_run can run this step (a same-size conv whose kernel reads a padded window).
bool chain_supported(const ChainStep& s);
// Runs the steps (graph order, one image of H x W) in skewed row sweeps, each thread one row of
// every step per sweep; bit-identical to running them one after the other with conv_run.
// Throws std::invalid_argument for an unsupported step.
void chain_run(std::vector<ChainStep>& steps, int H, int W, int threads);

// A spin-wait's pause.
static inline void cpu_relax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Splits [0, n) over up to `threads` threads (at least `grain` items each) on persistent workers.
void parallel_range(size_t n, int threads, size_t grain, const std::function<void(size_t, size_t)>& fn);

}  // namespace binsr
