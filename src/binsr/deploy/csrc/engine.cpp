// Python binding of the bit-packed binary convolution engine (binsr.deploy._engine), and the FP
// helpers of the runtime (Winograd tile transforms, direct head conv, bilinear add, window
// attention, GELU, LayerNorm, sign packing).
//
// dot = C_in_per_group * k * k - 2 * popcount(x XOR w) over channel-last packed words, with the
// input padded by all-ones words (+1). The kernels are one file per ISA, picked at run time
// (conv.cpp's select_kernel): kernels_avx512.cpp (VPOPCNTDQ), kernels_amx.cpp (the same dots as an
// int8 tile GEMM, path "avx512" on CPUs with AMX-INT8 unless BINSR_AMX is "0"; "avx512-vpopcnt"
// forces the popcount kernel), kernels_avx2.cpp (vpshufb nibble popcount), kernels_neon.cpp
// (aarch64: vcnt byte popcounts) and kernels_portable.cpp (scalar); rows.inc holds their shared
// row driver and fused epilogue.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
// FP loops compiled for AVX-512, AVX2 and baseline, picked at load time
#define BINSR_CLONES() __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BINSR_CLONES()
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "engine.h"

namespace py = pybind11;

namespace binsr {

static Layer make_layer_py(py::array_t<uint64_t, py::array::c_style | py::array::forcecast> w, int cin, int k,
                           int dil, int pad, int groups) {
  if (w.ndim() != 4) throw std::invalid_argument("weights must be (cout, k, k, words) uint64");
  Layer L = make_layer(w.data(), (int)w.shape(0), cin, k, dil, pad, groups);
  if (w.shape(1) != k || w.shape(2) != k || w.shape(3) != (L.cpg_in + 63) / 64)
    throw std::invalid_argument("weights shape does not match (cout, k, k, ceil(cin / groups / 64))");
  return L;
}

using FArr = py::array_t<float, py::array::c_style | py::array::forcecast>;
using OptF = std::optional<FArr>;

static const float* vec_ptr(const OptF& a, size_t n, const char* name) {
  if (!a) return nullptr;
  if ((size_t)a->size() != n) throw std::invalid_argument(std::string(name) + " has the wrong size");
  return a->data();
}

// The L3 this CPU's core shares (Linux's cache/index3/size, as lscpu; sysconf's, where that is
// missing, is the whole socket's on AMD: 320 MiB where the core's CCD has 32; 32 MiB where
// neither says).
static size_t l3_bytes() {
  static const size_t n = [] {
    if (FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r")) {
      unsigned long long v = 0;
      char unit = 0;
      const int got = std::fscanf(f, "%llu%c", &v, &unit);
      std::fclose(f);
      if (got >= 1 && v > 0) return (size_t)v << (unit == 'K' ? 10 : unit == 'M' ? 20 : 0);
    }
    const long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
    return v > 0 ? (size_t)v : (size_t)32 << 20;
  }();
  return n;
}

// Output maps larger than this are written with non-temporal stores: a quarter of the L3, or
// BINSR_STREAM_MIN_BYTES. Smaller maps stay in the L3 for the next layer, which reads them beside
// its own input and output; larger ones cost more in the ordinary stores' reads for ownership than
// the next layer gains (Zen 4, 32 MiB L3, three chained 3x3 layers with residuals:
// benchmarks/stream_threshold.py). The limit had been half of sysconf's L3, 160 MiB there, so
// nothing was streamed.
static size_t stream_min_bytes() {
  static const size_t n = [] {
    if (const char* s = std::getenv("BINSR_STREAM_MIN_BYTES")) {
      char* end = nullptr;
      const unsigned long long v = std::strtoull(s, &end, 10);
      if (!*s || *end || *s == '-')
        throw std::invalid_argument("BINSR_STREAM_MIN_BYTES is not a byte count: '" + std::string(s) + "'");
      return (size_t)v;
    }
    return l3_bytes() / 4;
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

using UArr = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>;

// The fused epilogue's parameters of a conv over npix output pixels of nimg images, checked (pix:
// npix values, chan: nimg * cout); the output and residual pointers are left to the caller.
static Epilogue make_epilogue(const Layer& L, size_t nimg, size_t npix, const OptF& scale, const OptF& bias,
                              const OptF& gate_bias, const OptF& pix, const OptF& chan, const OptF& act_shift,
                              const OptF& act_slope, const OptF& act_bias, bool act_first, size_t nres, const OptF& thr, float div, float post_scale,
                              int post_after) {
  const size_t C = L.cout;
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
  e0.pix = vec_ptr(pix, npix, "pix");
  e0.chan = vec_ptr(chan, nimg * C, "chan");
  if (e0.gate_bias && !e0.pix) throw std::invalid_argument("gate_bias needs pix (the gate it is multiplied by)");
  e0.act_first = act_first;
  if (nres > 3) throw std::invalid_argument("at most 3 residuals");
  if (post_after < 0 || post_after > (int)nres) throw std::invalid_argument("post_after must be in 0..len(res)");
  e0.div = div;
  e0.post_scale = post_scale;
  e0.post_after = post_after;
  e0.pwd = (L.cout + 63) / 64;
  return e0;
}

static py::tuple run(const Layer& L, UArr x, const std::string& path, int threads, const OptF& scale,
                     const OptF& bias, const OptF& gate_bias, const OptF& pix, const OptF& chan,
                     const OptF& act_shift, const OptF& act_slope, const OptF& act_bias, bool act_first,
                     const std::vector<FArr>& res, bool out_float, bool out_int, bool pack, const OptF& thr,
                     float div, float post_scale, int post_after, const std::optional<py::array>& out,
                     const std::optional<py::array>& bits_out) {
  if (x.ndim() != 4 || x.shape(3) != (py::ssize_t)L.ps)
    throw std::invalid_argument("input must be (N, H, W, ceil(cin / 64)) uint64 packed activations");
  const Kernel kern = select_kernel(path, L);
  const int N = (int)x.shape(0), H = (int)x.shape(1), W = (int)x.shape(2);
  int Ho, Wo;
  conv_out_size(L, H, W, Ho, Wo);
  if (Ho < 1 || Wo < 1) throw std::invalid_argument("input smaller than the dilated kernel");
  const size_t npix = (size_t)Ho * Wo, C = L.cout;
  Epilogue e0 = make_epilogue(L, N, N * npix, scale, bias, gate_bias, pix, chan, act_shift, act_slope, act_bias,
                              act_first, res.size(), thr, div, post_scale, post_after);
  for (const FArr& r : res)
    if ((size_t)r.size() != N * npix * C) throw std::invalid_argument("residual has the wrong size");

  py::object of = py::none(), oi = py::none(), ob = py::none();
  if (out_float) e0.out = output<float>(out, {N, Ho, Wo, (py::ssize_t)C}, "out", of);
  e0.stream = npix * C * sizeof(float) > stream_min_bytes();
  if (out_int) e0.out_int = output<int32_t>(std::nullopt, {N, Ho, Wo, (py::ssize_t)C}, "out_int", oi);
  if (pack) e0.bits = output<uint64_t>(bits_out, {N, Ho, Wo, e0.pwd}, "bits_out", ob);
  for (size_t r = 0; r < res.size(); ++r) e0.res[r] = res[r].data();
  {
    py::gil_scoped_release nogil;
    conv_run(L, kern, x.data(), N, H, W, e0, threads);
  }
  return py::make_tuple(of, oi, ob);
}

// A chain of same-size binary convs on one H x W image, depth first (chain.cpp). Each step is a
// dict: "layer", its epilogue's arguments as for run(), "src" (the step whose bits it reads, or
// -1 with "x" the whole input map), "res" / "res_src" (per residual: a whole map, or None with the
// step that makes it), "out" / "bits_out" (whole maps the caller keeps, or None) and "ring_out" /
// "ring_bits" (outputs only later steps read: kept in rings). False when some step cannot run so.
static bool run_chain(const py::list& spec, int H, int W, const std::string& path, int threads) {
  std::vector<ChainStep> steps;
  std::vector<py::object> keep;  // the arrays the pointers point into, alive until the end
  const size_t npix = (size_t)H * W;
  auto farr = [&](py::handle h) -> OptF {
    if (h.is_none()) return std::nullopt;
    FArr a = py::cast<FArr>(h);
    keep.push_back(a);
    return a;
  };
  for (py::handle item : spec) {
    const py::dict d = py::reinterpret_borrow<py::dict>(item);
    ChainStep s;
    s.L = &py::cast<const Layer&>(d["layer"]);
    const Layer& L = *s.L;
    s.kern = select_kernel(path, L);
    if (!chain_supported(s)) return false;
    const py::list res = d["res"], res_src = d["res_src"];
    s.e = make_epilogue(L, 1, npix, farr(d["scale"]), farr(d["bias"]), farr(d["gate_bias"]), farr(d["pix"]),
                        farr(d["chan"]), farr(d["act_shift"]), farr(d["act_slope"]), farr(d["act_bias"]), d["act_first"].cast<bool>(),
                        res.size(), farr(d["thr"]), d["div"].cast<float>(), d["post_scale"].cast<float>(),
                        d["post_after"].cast<int>());
    s.src = d["src"].cast<int>();
    if (s.src >= (int)steps.size()) throw std::invalid_argument("a step reads a later step");
    if (s.src < 0) {
      UArr x = py::cast<UArr>(d["x"]);
      if (x.size() != (py::ssize_t)(npix * L.ps)) throw std::invalid_argument("input bits have the wrong size");
      keep.push_back(x);
      s.x = x.data();
    } else if (steps[s.src].L->cout != L.cin || !(steps[s.src].ring_bits || steps[s.src].e.bits)) {
      throw std::invalid_argument("a step reads bits its source does not make");
    }
    for (size_t r = 0; r < res.size(); ++r) {
      s.res_src[r] = res_src[r].cast<int>();
      if (s.res_src[r] >= (int)steps.size()) throw std::invalid_argument("a step reads a later step");
      if (s.res_src[r] < 0) {
        const OptF a = farr(res[r]);
        if (!a || (size_t)a->size() != npix * L.cout) throw std::invalid_argument("residual has the wrong size");
        s.e.res[r] = a->data();
      } else if (steps[s.res_src[r]].L->cout != L.cout || !(steps[s.res_src[r]].ring_out || steps[s.res_src[r]].e.out)) {
        throw std::invalid_argument("a residual its source step does not make");
      } else {
        s.e.res[r] = steps[s.res_src[r]].e.out;  // null for a ring: chain_run points it there
      }
    }
    s.ring_out = d["ring_out"].cast<bool>();
    s.ring_bits = d["ring_bits"].cast<bool>();
    py::object holder;
    if (!d["out"].is_none()) {
      s.e.out = output<float>(py::cast<py::array>(d["out"]), {H, W, (py::ssize_t)L.cout}, "out", holder);
      keep.push_back(holder);
      s.e.stream = npix * L.cout * sizeof(float) > stream_min_bytes();
    }
    if (!d["bits_out"].is_none()) {
      s.e.bits = output<uint64_t>(py::cast<py::array>(d["bits_out"]), {H, W, s.e.pwd}, "bits_out", holder);
      keep.push_back(holder);
    }
    if ((s.ring_out && s.e.out) || (s.ring_bits && s.e.bits))
      throw std::invalid_argument("an output is both a ring and a whole map");
    steps.push_back(s);
  }
  py::gil_scoped_release nogil;
  chain_run(steps, H, W, threads);
  return true;
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
  const int Wo = W * s;
  std::vector<int> w0(Wo), w1(Wo);
  std::vector<float> wl1(Wo);
  for (int ow = 0; ow < Wo; ++ow) src(ow, W, w0[ow], w1[ow], wl1[ow]);
  // Each input row interpolated along x once (into one of two row buffers, by the row's parity),
  // then every output row is a blend of two of them: the same products and sums as
  // hl0 * (l0 * a + l1 * b) + hl1 * (l0 * c + l1 * d) per value, the blend in whole vectors.
  parallel_range((size_t)H * s, threads, 8, [&](size_t oh0, size_t oh1) {
    std::vector<float> rows(2 * (size_t)Wo * C);
    int held[2] = {-1, -1};
    auto row = [&](int h) {
      float* r = rows.data() + (size_t)(h & 1) * Wo * C;
      if (held[h & 1] != h) {
        const float* in = xp + (size_t)h * W * C;
        for (int ow = 0; ow < Wo; ++ow) {
          const float l1 = wl1[ow], l0 = 1.f - l1;
          const float* a = in + (size_t)w0[ow] * C;
          const float* b = in + (size_t)w1[ow] * C;
          for (int ch = 0; ch < C; ++ch) r[(size_t)ow * C + ch] = l0 * a[ch] + l1 * b[ch];
        }
        held[h & 1] = h;
      }
      return (const float*)r;
    };
    for (int oh = (int)oh0; oh < (int)oh1; ++oh) {
      int h0, h1;
      float hl1;
      src(oh, H, h0, h1, hl1);
      const float hl0 = 1.f - hl1;
      const float* __restrict r0 = row(h0);
      const float* __restrict r1 = row(h1);
      float* __restrict out = yp + (size_t)oh * Wo * C;
      for (size_t i = 0; i < (size_t)Wo * C; ++i) out[i] += hl0 * r0[i] + hl1 * r1[i];
    }
  });
}

// Direct 3x3 conv, zero padding 1, for few input channels (the head conv, C = 3, where the Winograd
// GEMMs would have K = 3): per pixel, OB output channels at a time (64 floats, or 32 doubles: 16
// zmm of sums either way) accumulate the 9 * C input values times the weight rows (ky, kx, c) in
// registers of T; + bias in T, rounded to float, then LeakyReLU when leaky >= 0. T = double: the
// head conv that the binary body binarizes, the same float in any sum order (binsr.nn.exact); 4
// pixels x 32 instead of 2 x 64: 11.7 -> 7.4-9.1 ms at 320x180, Zen 4. P pixels side by side share
// each weight load (P > 1 only where all their taps are inside the map in x; each pixel's sums are
// the same for any P and OB).
// w: (9 * C, Op) with Op = O rounded up to 64 (zero columns), so every block is a whole one.
constexpr int kDirectOB = 64;
template <typename T, int P, int OB>
__attribute__((always_inline)) static inline void direct_pixels(const float* __restrict x, const T* __restrict w,
                                                                const float* __restrict b, float* __restrict y, int H,
                                                                int W, int C, int O, float leaky, int yy, int xx) {
  const int Op = (O + kDirectOB - 1) / kDirectOB * kDirectOB;
  for (int o0 = 0; o0 < O; o0 += OB) {
    T acc[P][OB] = {};
    const int n = std::min(OB, O - o0);
    for (int ky = 0; ky < 3; ++ky) {
      const int iy = yy + ky - 1;
      if (iy < 0 || iy >= H) continue;
      for (int kx = 0; kx < 3; ++kx) {
        const int ix = xx + kx - 1;
        if (P == 1 && (ix < 0 || ix >= W)) continue;
        const float* xi = x + ((size_t)iy * W + ix) * C;
        const T* wr = w + (size_t)((ky * 3 + kx) * C) * Op + o0;
        for (int c = 0; c < C; ++c) {
          T v[P];
          for (int p = 0; p < P; ++p) v[p] = xi[(size_t)p * C + c];
          const T* wc = wr + (size_t)c * Op;
          for (int o = 0; o < OB; ++o) {
            const T wo = wc[o];
#pragma GCC unroll 4
            for (int p = 0; p < P; ++p) acc[p][o] += v[p] * wo;
          }
        }
      }
    }
    for (int p = 0; p < P; ++p) {
      float* out = y + ((size_t)yy * W + xx + p) * O + o0;
      for (int o = 0; o < n; ++o) {
        float v = (float)(acc[p][o] + (T)(b ? b[o0 + o] : 0.f));
        if (leaky >= 0.f && v < 0.f) v *= leaky;
        out[o] = v;
      }
    }
  }
}

template <typename T, int P, int OB>
__attribute__((always_inline)) static inline void direct_rows(const float* __restrict x, const T* __restrict w,
                                                              const float* __restrict b, float* __restrict y, int H,
                                                              int W, int C, int O, float leaky, int y0, int y1) {
  for (int yy = y0; yy < y1; ++yy) {
    int xx = 0;
    for (; xx < W && (xx < 1 || xx + P > W - 1); ++xx) direct_pixels<T, 1, OB>(x, w, b, y, H, W, C, O, leaky, yy, xx);
    for (; xx + P <= W - 1; xx += P) direct_pixels<T, P, OB>(x, w, b, y, H, W, C, O, leaky, yy, xx);
    for (; xx < W; ++xx) direct_pixels<T, 1, OB>(x, w, b, y, H, W, C, O, leaky, yy, xx);
  }
}

BINSR_CLONES()
static void conv3x3_direct_rows(const float* __restrict x, const float* __restrict w, const float* __restrict b,
                                float* __restrict y, int H, int W, int C, int O, float leaky, int y0, int y1) {
  direct_rows<float, 4, kDirectOB>(x, w, b, y, H, W, C, O, leaky, y0, y1);
}

BINSR_CLONES()
static void conv3x3_direct_rows_fp64(const float* __restrict x, const double* __restrict w, const float* __restrict b,
                                     float* __restrict y, int H, int W, int C, int O, float leaky, int y0, int y1) {
  direct_rows<double, 4, 32>(x, w, b, y, H, W, C, O, leaky, y0, y1);
}

// Direct 3x3 conv, zero padding 1, for few output channels on many input channels (the tail's
// 64 -> 3 conv, where the 64-wide blocks above would compute 61 zero columns and Winograd's input
// transform would cost more than the products), and SCALES' spatial gates (64 -> 1, in double):
// per pixel and output channel, the 9 * C products accumulate in 4 vectors of L running sums of T
// (GCC vector extensions, 64 bytes: one zmm, two ymm or scalars per clone; L = 16 floats or 8
// doubles), channels 4L at a time, then L at a time into the first, the last C % L in one scalar;
// the 4 vectors added pairwise, their lanes in a tree (lane l + half onto lane l), then bias and
// the scalar. P pixels at a time share the weight loads: 4P independent chains. x and wt are of T
// (the gate widens strips of x to double first); wt: (O, 9 * C), rows in (ky, kx, c) order.
constexpr int kDotLanes = 16;  // float lanes
template <typename T> struct Dot;
template <> struct Dot<float> {
  static constexpr int L = kDotLanes;
  typedef float V __attribute__((vector_size(64)));
  __attribute__((always_inline)) static inline float sum(V v) {
    v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return v[0];
  }
};
template <> struct Dot<double> {
  static constexpr int L = 8;
  typedef double V __attribute__((vector_size(64)));
  __attribute__((always_inline)) static inline double sum(V v) {
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
    return v[0];
  }
};
template <typename T>
__attribute__((always_inline)) static inline typename Dot<T>::V dot_load(const T* p) {
  typename Dot<T>::V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// P pixels from (yy, xx) on, output channel o; P > 1 only where every tap of the P pixels is inside
// the map in x (the taps, chunks and sums of a pixel are the same for every P: the same values).
// Gate: y = (float)sigmoid(sum) computed in T (rounded once), else LeakyReLU when leaky >= 0.
template <typename T, int P, bool Gate>
__attribute__((always_inline)) static inline void dot_pixels(const T* __restrict x, const T* __restrict wo, float bias,
                              float* __restrict y, int H, int W, int C, int O, int o, float leaky, int yy, int xx) {
  constexpr int L = Dot<T>::L;
  typedef typename Dot<T>::V V;
  V a[P][4] = {};
  T rem[P] = {};
  for (int ky = 0; ky < 3; ++ky) {
    const int iy = yy + ky - 1;
    if (iy < 0 || iy >= H) continue;
    for (int kx = 0; kx < 3; ++kx) {
      if (P == 1 && (xx + kx - 1 < 0 || xx + kx - 1 >= W)) continue;
      const T* xi = x + ((size_t)iy * W + xx + kx - 1) * C;
      const T* wr = wo + (size_t)(ky * 3 + kx) * C;
      int c = 0;
      for (; c + 4 * L <= C; c += 4 * L) {
        const V w0 = dot_load<T>(wr + c), w1 = dot_load<T>(wr + c + L);
        const V w2 = dot_load<T>(wr + c + 2 * L), w3 = dot_load<T>(wr + c + 3 * L);
#pragma GCC unroll 4
        for (int p = 0; p < P; ++p) {
          const T* xp = xi + (size_t)p * C + c;
          a[p][0] += dot_load<T>(xp) * w0;
          a[p][1] += dot_load<T>(xp + L) * w1;
          a[p][2] += dot_load<T>(xp + 2 * L) * w2;
          a[p][3] += dot_load<T>(xp + 3 * L) * w3;
        }
      }
      for (; c + L <= C; c += L) {
        const V w0 = dot_load<T>(wr + c);
#pragma GCC unroll 4
        for (int p = 0; p < P; ++p) a[p][0] += dot_load<T>(xi + (size_t)p * C + c) * w0;
      }
      for (; c < C; ++c)
        for (int p = 0; p < P; ++p) rem[p] += xi[(size_t)p * C + c] * wr[c];
    }
  }
  for (int p = 0; p < P; ++p) {
    T r = (T)bias + Dot<T>::sum((a[p][0] + a[p][1]) + (a[p][2] + a[p][3])) + rem[p];
    if (Gate) r = (T)1 / ((T)1 + std::exp(-r));
    else if (leaky >= 0.f && r < 0) r *= (T)leaky;
    y[((size_t)yy * W + xx + p) * O + o] = (float)r;
  }
}

template <typename T, int P, bool Gate>
__attribute__((always_inline)) static inline void dot_rows(const T* __restrict x, const T* __restrict wt,
                                                           const float* __restrict b, float* __restrict y, int H, int W,
                                                           int C, int O, float leaky, int y0, int y1) {
  for (int yy = y0; yy < y1; ++yy)
    for (int o = 0; o < O; ++o) {
      const T* wo = wt + (size_t)o * 9 * C;
      const float bias = b ? b[o] : 0.f;
      int xx = 0;
      for (; xx < W && (xx < 1 || xx + P > W - 1); ++xx)  // left border (and maps too narrow for P)
        dot_pixels<T, 1, Gate>(x, wo, bias, y, H, W, C, O, o, leaky, yy, xx);
      for (; xx + P <= W - 1; xx += P) dot_pixels<T, P, Gate>(x, wo, bias, y, H, W, C, O, o, leaky, yy, xx);
      for (; xx < W; ++xx) dot_pixels<T, 1, Gate>(x, wo, bias, y, H, W, C, O, o, leaky, yy, xx);
    }
}

BINSR_CLONES()  // float sums, 4 pixels sharing each weight load: 4 x 4 running vectors
static void conv3x3_dot_rows(const float* __restrict x, const float* __restrict wt, const float* __restrict b,
                             float* __restrict y, int H, int W, int C, int O, float leaky, int y0, int y1) {
  dot_rows<float, 4, false>(x, wt, b, y, H, W, C, O, leaky, y0, y1);
}

// The gate's rows y0..y1 in strips of R output rows: the strip's R + 2 input rows widened to double
// once (each input value serves 9 taps), sized to stay in the L2, then the double dot products
// (this thread's strip buffer is kept from call to call).
BINSR_CLONES()
static void gate3x3_dot_rows(const float* __restrict x, const double* __restrict w, const float* __restrict b,
                             float* __restrict y, int H, int W, int C, int y0, int y1) {
  const size_t row = (size_t)W * C;
  const int R = std::max(1, (int)((size_t)(512 << 10) / (row * sizeof(double))) - 2);
  thread_local std::vector<double, Aligned64<double>> strip;  // reused: no page faults per call
  if (strip.size() < (size_t)(R + 2) * row) strip.resize((size_t)(R + 2) * row);
  double* __restrict s = strip.data();
  for (int r0 = y0; r0 < y1; r0 += R) {
    const int r1 = std::min(y1, r0 + R), s0 = std::max(0, r0 - 1), s1 = std::min(H, r1 + 1);
    const float* __restrict src = x + (size_t)s0 * row;
    for (size_t i = 0, n = (size_t)(s1 - s0) * row; i < n; ++i) s[i] = src[i];  // exact
    dot_rows<double, 4, true>(s, w, b, y + (size_t)s0 * W, s1 - s0, W, C, 1, -1.f, r0 - s0, r1 - s0);
  }
}

// Per-channel sums of an (n, C) float map in double, 8 pixels' worth of interleaved running sums
// (the same double, to far below a float ulp, in any order): SCALES' channel gate average.
BINSR_CLONES()
static void channel_sums_rows(const float* __restrict x, double* __restrict acc, size_t n, int C) {
  constexpr int K = 8;
  const size_t n8 = n / K * K;
  for (size_t p = 0; p < n8; p += K)
    for (int k = 0; k < K; ++k) {
      const float* __restrict xp = x + (p + k) * C;
      double* __restrict a = acc + (size_t)k * C;
      for (int c = 0; c < C; ++c) a[c] += (double)xp[c];
    }
  for (size_t p = n8; p < n; ++p)
    for (int c = 0; c < C; ++c) acc[c] += (double)x[p * C + c];
}

// out[c] = the k slices' acc[i * C + c] added in order.
static void add_slices(const double* acc, size_t k, int C, double* out) {
  for (int c = 0; c < C; ++c) {
    double s = 0.0;
    for (size_t i = 0; i < k; ++i) s += acc[i * C + c];
    out[c] = s;
  }
}

// Per-channel sums of n pixels x C channels into out (C doubles), on the threads: one set of 8
// interleaved running sums per part of the pixels, the parts added in order.
static void channel_sums_into(const float* xp, size_t n, int C, int threads, double* out) {
  const int parts = std::max(1, threads);
  std::vector<double> acc((size_t)parts * 8 * C, 0.0);
  double* ap = acc.data();
  parallel_range((size_t)parts, threads, 1, [=](size_t p0, size_t p1) {
    for (size_t p = p0; p < p1; ++p) {
      const size_t m0 = n * p / parts, m1 = n * (p + 1) / parts;
      channel_sums_rows(xp + m0 * C, ap + p * 8 * C, m1 - m0, C);
    }
  });
  add_slices(acc.data(), (size_t)parts * 8, C, out);
}

static py::array_t<double> channel_sums(const FArr& x, int threads) {
  if (x.ndim() != 3) throw std::invalid_argument("x must be (H, W, C)");
  const int C = (int)x.shape(2);
  py::array_t<double> out(C);
  const float* xp = x.data();
  double* o = out.mutable_data();
  py::gil_scoped_release nogil;
  channel_sums_into(xp, (size_t)x.shape(0) * x.shape(1), C, threads, o);
  return out;
}

// SCALES' spatial gate sigmoid(conv3x3(x) + b), 1 output channel, zero padding 1, summed and squashed
// in double and rounded once to float (binsr.nn.attention: the same float in any sum order, so
// PyTorch's gate and this one agree bit for bit). w: (9 * C,) in (ky, kx, c) order; out: (H, W).
// path: "avx512" (kernels_avx512.cpp), "auto" (it where the CPU has it), else the loops above.
// sums: (C,) float64 or None: filled with the per-channel sums of x, for the channel gate of the
// same map (the AVX-512 kernel adds each pixel's widened values as it reads them; the other loops
// run channel_sums_into).
static void spatial_gate3x3(const FArr& x, const FArr& w, const OptF& bias, py::array_t<float, py::array::c_style>& out,
                            int threads, const std::string& path,
                            std::optional<py::array_t<double, py::array::c_style>> sums) {
  if (x.ndim() != 3 || w.ndim() != 1) throw std::invalid_argument("x must be (H, W, C), w (9 * C,)");
  const int H = (int)x.shape(0), W = (int)x.shape(1), C = (int)x.shape(2);
  if (w.shape(0) != 9 * C) throw std::invalid_argument("w must be (9 * C,) in (ky, kx, c) order");
  if (out.ndim() != 2 || out.shape(0) != H || out.shape(1) != W) throw std::invalid_argument("out must be (H, W)");
  const float* b = vec_ptr(bias, 1, "bias");
  const float* xp = x.data();
  const std::vector<double> wd(w.data(), w.data() + 9 * (size_t)C);
  const double* wp = wd.data();
  float* yp = out.mutable_data();
  if (sums && (sums->ndim() != 1 || sums->shape(0) != C)) throw std::invalid_argument("sums must be (C,) float64");
  double* sp = sums ? sums->mutable_data() : nullptr;
  bool fast = false;
#if defined(__x86_64__)
  if (path == "avx512" && !cpu_avx512()) throw std::runtime_error("avx512 path requested but this CPU lacks AVX-512");
  fast = (path == "auto" || path == "avx512") && cpu_avx512();
#endif
  py::gil_scoped_release nogil;
  if (!fast) {
    parallel_range((size_t)H, threads, 4, [=](size_t y0, size_t y1) {
      gate3x3_dot_rows(xp, wp, b, yp, H, W, C, (int)y0, (int)y1);
    });
    if (sp) channel_sums_into(xp, (size_t)H * W, C, threads, sp);
    return;
  }
#if defined(__x86_64__)
  const int parts = std::max(1, std::min(threads, H / 4));  // rows in parts, each with its own sums
  std::vector<double> acc(sp ? (size_t)parts * C : 0, 0.0);
  double* ap = acc.data();
  parallel_range((size_t)parts, threads, 1, [=](size_t p0, size_t p1) {
    for (size_t p = p0; p < p1; ++p)
      avx512::gate3x3_rows(xp, wp, b, yp, H, W, C, (int)(H * p / parts), (int)(H * (p + 1) / parts),
                           sp ? ap + p * C : nullptr);
  });
  if (sp) add_slices(ap, (size_t)parts, C, sp);
#endif
}

static void conv3x3_direct(const FArr& x, const FArr& w, py::array_t<float, py::array::c_style>& out,
                           const OptF& bias, float leaky, int threads, bool fp64) {
  if (x.ndim() != 3 || w.ndim() != 2) throw std::invalid_argument("x must be (H, W, C), w (9 * C, O)");
  const int H = (int)x.shape(0), W = (int)x.shape(1), C = (int)x.shape(2), O = (int)w.shape(1);
  if (w.shape(0) != 9 * C) throw std::invalid_argument("w must be (9 * C, O) in (ky, kx, c) row order");
  if (out.ndim() != 3 || out.shape(0) != H || out.shape(1) != W || out.shape(2) != O)
    throw std::invalid_argument("out must be (H, W, O)");
  const float* b = vec_ptr(bias, (size_t)O, "bias");
  const float* xp = x.data();
  float* yp = out.mutable_data();
  if (O < kDotLanes && C >= kDotLanes && !fp64) {  // few outputs of many channels: a dot product per output
    std::vector<float> wt((size_t)O * 9 * C);
    for (int r = 0; r < 9 * C; ++r)
      for (int o = 0; o < O; ++o) wt[(size_t)o * 9 * C + r] = w.data()[(size_t)r * O + o];
    const float* wp = wt.data();
    py::gil_scoped_release nogil;
    parallel_range((size_t)H, threads, 4, [=](size_t y0, size_t y1) {
      conv3x3_dot_rows(xp, wp, b, yp, H, W, C, O, leaky, (int)y0, (int)y1);
    });
    return;
  }
  const int Op = (O + kDirectOB - 1) / kDirectOB * kDirectOB;
  // the weights in the sums' type (zero: 0.f or 0.0), padded to whole blocks of outputs (zero
  // columns), then the rows of that type on the threads
  auto run = [&](auto zero, auto rows) {
    std::vector<decltype(zero)> wv((size_t)9 * C * Op, zero);
    for (int r = 0; r < 9 * C; ++r)
      for (int o = 0; o < O; ++o) wv[(size_t)r * Op + o] = w.data()[(size_t)r * O + o];
    const decltype(zero)* wp = wv.data();
    py::gil_scoped_release nogil;
    parallel_range((size_t)H, threads, 4, [=](size_t y0, size_t y1) {
      rows(xp, wp, b, yp, H, W, C, O, leaky, (int)y0, (int)y1);
    });
  };
  if (fp64)
    run(0.0, conv3x3_direct_rows_fp64);
  else
    run(0.f, conv3x3_direct_rows);
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

// e^x for x <= 0 in double: x = n ln2 + r with ln2 in two parts (n ln2_hi exact), |r| <= ln2 / 2,
// the Taylor series to r^13 (truncation below 1e-18), ~1 ulp; 0 below -708. No calls, so that the
// loops using it vectorize (the fp64 attention, erf_tail).
static inline double exp_nonpos(double x) {
  static constexpr double inv_fact[14] = {1., 1., 1. / 2, 1. / 6, 1. / 24, 1. / 120, 1. / 720, 1. / 5040, 1. / 40320,
                                          1. / 362880, 1. / 3628800, 1. / 39916800, 1. / 479001600, 1. / 6227020800.};
  x = std::max(x, -708.0);
  const double n = std::floor(x * 1.4426950408889634 + 0.5);
  const double r = (x - n * 0.6931471803691238) - n * 1.9082149292705877e-10;
  double p = inv_fact[13];
#pragma GCC unroll 16
  for (int k = 12; k >= 0; --k) p = p * r + inv_fact[k];
  // 2^n without a double -> int64 conversion (none in AVX2 or plain AVX-512F): n + 1023 in [1, 1023]
  // is the low mantissa of 2^52 + n + 1023, and shifting those bits up by 52 drops the rest
  const double biased = n + (4503599627370496.0 + 1023.0);
  uint64_t e;
  std::memcpy(&e, &biased, sizeof e);
  e <<= 52;
  double two_n;
  std::memcpy(&two_n, &e, sizeof two_n);
  return p * two_n;
}

// Windows [w0, w1) of softmax(q k^T * scale + bias + mask) v per head (see
// binsr/deploy/transformer.py::window_attention). Scores are kept key-major (S[j][i], i the query)
// so every inner loop runs over the N queries of a window. NT: N known at compile time (SwinIR's
// 8 x 8 windows), so that a key's N scores, or an output channel's N values, stay in registers
// over the whole sum (0: N at run time). The sums run in the same order either way.
#if defined(__x86_64__)
// AVX-512 forms of attn_core's two sums for 64-token windows, blocked over 4 keys / 4 output
// channels so that each load of q (of S) feeds 16 fused multiply-adds; the same FMAs in the same
// order as attn_core's loops (which GCC contracts), so the results are the same bits.
__attribute__((target("avx512f"))) static void scores64_avx512(int d, size_t ld, const float* kk, const float* qT,
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
        const __m512 kv = _mm512_set1_ps(kk[(j + r) * ld + c]);
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

// The softmax's numerators in double, S[j][i] = e^(S[j][i] - m[i]), and their sums over the keys in
// key order (attn_core's exp loop for 64-token windows): e^x = 2^floor(k / 16) 2^((k mod 16) / 16) e^r
// with k = round(16 x / ln2), r = x - k ln2 / 16 (ln2 / 16 in two parts, k ln2_hi exact), |r| <= ln2 / 32;
// the 16 powers 2^(j / 16) (correctly rounded: float(Decimal(2) ** (Decimal(j) / 16)) at 50 digits) in
// two registers, picked by k's low bits (vpermt2pd); e^r by Taylor to r^7 (truncation below 1.2e-18);
// 2^floor(k / 16) by vscalefpd. Within ~1 ulp as exp_nonpos, in 12 multiplies and multiply-adds a vector
// against its 17 (1.4x the fp64 attention with the window copy in attn_core: benchmarks/window_attention.py).
__attribute__((target("avx512f"))) static void softmax_exp64_avx512(double* S, const double* m, double* sum) {
  alignas(64) static constexpr double pow2[16] = {
      0x1.0000000000000p+0, 0x1.0b5586cf9890fp+0, 0x1.172b83c7d517bp+0, 0x1.2387a6e756238p+0,
      0x1.306fe0a31b715p+0, 0x1.3dea64c123422p+0, 0x1.4bfdad5362a27p+0, 0x1.5ab07dd485429p+0,
      0x1.6a09e667f3bcdp+0, 0x1.7a11473eb0187p+0, 0x1.8ace5422aa0dbp+0, 0x1.9c49182a3f090p+0,
      0x1.ae89f995ad3adp+0, 0x1.c199bdd85529cp+0, 0x1.d5818dcfba487p+0, 0x1.ea4afa2a490dap+0};
  const __m512d t0 = _mm512_load_pd(pow2), t1 = _mm512_load_pd(pow2 + 8), lo = _mm512_set1_pd(-708.),
                k16 = _mm512_set1_pd(16 * 1.4426950408889634), hi = _mm512_set1_pd(0.6931471803691238 / 16),
                lo2 = _mm512_set1_pd(1.9082149292705877e-10 / 16), shift = _mm512_set1_pd(6755399441055744.0),
                sixteenth = _mm512_set1_pd(1. / 16);
  __m512d mx[8], acc[8];
  for (int i = 0; i < 8; ++i) {
    mx[i] = _mm512_loadu_pd(m + 8 * i);
    acc[i] = _mm512_setzero_pd();
  }
  for (int j = 0; j < 64; ++j)
    for (int i = 0; i < 8; ++i) {
      double* row = S + (size_t)j * 64 + 8 * i;
      const __m512d x = _mm512_max_pd(_mm512_sub_pd(_mm512_loadu_pd(row), mx[i]), lo);
      const __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(x, k16), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512d r = _mm512_fnmadd_pd(k, lo2, _mm512_fnmadd_pd(k, hi, x));
      __m512d p = _mm512_set1_pd(1. / 5040);
      p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1. / 720));
      p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1. / 120));
      p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1. / 24));
      p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1. / 6));
      p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.5));
      p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.));
      p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.));
      // k + 1.5 * 2^52 lies in [2^52, 2^53) and holds 2^51 + k in its mantissa: k mod 16 in the low bits
      const __m512d t = _mm512_permutex2var_pd(t0, _mm512_castpd_si512(_mm512_add_pd(k, shift)), t1);
      const __m512d e = _mm512_scalef_pd(_mm512_mul_pd(t, p), _mm512_mul_pd(k, sixteenth));
      _mm512_storeu_pd(row, e);
      acc[i] = _mm512_add_pd(acc[i], e);
    }
  for (int i = 0; i < 8; ++i) _mm512_storeu_pd(sum + 8 * i, acc[i]);
}

// O[c] = sum_j v[j][c] S[j] / sum for the first channels in blocks of 4, written to out[tok[i] * C + c];
// returns how many channels it did (the rest: attn_core's loop).
__attribute__((target("avx512f"))) static int values64_avx512(int d, size_t ld, const float* vv, const float* S, const float* sum,
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
        const __m512 vj = _mm512_set1_ps(vv[j * ld + c + r]);
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

// The same two sums in double (the fp64 attention): 8 doubles a register, so each half of the 64
// queries at a time, blocked over 4 keys / 4 output channels; again attn_core's FMAs in its order.
__attribute__((target("avx512f"))) static void scores64_avx512(int d, size_t ld, const double* kk, const double* qT,
                                                               const float* bT, const float* lab, double* S,
                                                               double* m) {
  const __m512d big = _mm512_set1_pd(-100.);
  for (int i0 = 0; i0 < 64; i0 += 32) {
    __m512d mx[4], lb[4];
    for (int i = 0; i < 4; ++i) {
      mx[i] = _mm512_set1_pd(-INFINITY);
      lb[i] = lab ? _mm512_cvtps_pd(_mm256_loadu_ps(lab + i0 + 8 * i)) : _mm512_setzero_pd();
    }
    for (int j = 0; j < 64; j += 4) {
      __m512d acc[4][4];
      for (int r = 0; r < 4; ++r)
        for (int i = 0; i < 4; ++i) acc[r][i] = _mm512_cvtps_pd(_mm256_loadu_ps(bT + (size_t)(j + r) * 64 + i0 + 8 * i));
      for (int c = 0; c < d; ++c) {
        const double* q = qT + (size_t)c * 64 + i0;
        const __m512d q0 = _mm512_loadu_pd(q), q1 = _mm512_loadu_pd(q + 8), q2 = _mm512_loadu_pd(q + 16),
                      q3 = _mm512_loadu_pd(q + 24);
        for (int r = 0; r < 4; ++r) {
          const __m512d kv = _mm512_set1_pd(kk[(j + r) * ld + c]);
          acc[r][0] = _mm512_fmadd_pd(kv, q0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_pd(kv, q1, acc[r][1]);
          acc[r][2] = _mm512_fmadd_pd(kv, q2, acc[r][2]);
          acc[r][3] = _mm512_fmadd_pd(kv, q3, acc[r][3]);
        }
      }
      for (int r = 0; r < 4; ++r)
        for (int i = 0; i < 4; ++i) {
          if (lab) {  // + (lab[i] != lab[j] ? -100 : 0)
            const __mmask8 other = _mm512_cmp_pd_mask(lb[i], _mm512_set1_pd(lab[j + r]), _CMP_NEQ_OQ);
            acc[r][i] = _mm512_add_pd(acc[r][i], _mm512_maskz_mov_pd(other, big));
          }
          mx[i] = _mm512_max_pd(mx[i], acc[r][i]);
          _mm512_storeu_pd(S + (size_t)(j + r) * 64 + i0 + 8 * i, acc[r][i]);
        }
    }
    for (int i = 0; i < 4; ++i) _mm512_storeu_pd(m + i0 + 8 * i, mx[i]);
  }
}

__attribute__((target("avx512f"))) static int values64_avx512(int d, size_t ld, const double* vv, const double* S,
                                                              const double* sum, const size_t* tok, float* out, int C) {
  int c = 0;
  for (; c + 4 <= d; c += 4)
    for (int i0 = 0; i0 < 64; i0 += 32) {
      __m512d acc[4][4];
      for (int r = 0; r < 4; ++r)
        for (int i = 0; i < 4; ++i) acc[r][i] = _mm512_setzero_pd();
      for (int j = 0; j < 64; ++j) {
        const double* row = S + (size_t)j * 64 + i0;
        const __m512d s0 = _mm512_loadu_pd(row), s1 = _mm512_loadu_pd(row + 8), s2 = _mm512_loadu_pd(row + 16),
                      s3 = _mm512_loadu_pd(row + 24);
        for (int r = 0; r < 4; ++r) {
          const __m512d vj = _mm512_set1_pd(vv[j * ld + c + r]);
          acc[r][0] = _mm512_fmadd_pd(vj, s0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_pd(vj, s1, acc[r][1]);
          acc[r][2] = _mm512_fmadd_pd(vj, s2, acc[r][2]);
          acc[r][3] = _mm512_fmadd_pd(vj, s3, acc[r][3]);
        }
      }
      alignas(32) float o[4][32];
      for (int i = 0; i < 4; ++i) {
        const __m512d inv = _mm512_div_pd(_mm512_set1_pd(1.), _mm512_loadu_pd(sum + i0 + 8 * i));
        for (int r = 0; r < 4; ++r) _mm256_store_ps(o[r] + 8 * i, _mm512_cvtpd_ps(_mm512_mul_pd(acc[r][i], inv)));
      }
      for (int i = 0; i < 32; ++i)
        for (int r = 0; r < 4; ++r) out[tok[i0 + i] * C + c + r] = o[r][i];
    }
  return c;
}
#endif

// S[j][i] = e^(S[j][i] - m[i]) and sum[i] = their sum over the keys j, in key order.
template <typename T, int NT>
__attribute__((always_inline)) static inline void softmax_exp(T* __restrict S, const T* __restrict m,
                                                              T* __restrict sum, int N) {
  for (int i = 0; i < N; ++i) sum[i] = 0;
  for (int j = 0; j < N; ++j) {
    T* __restrict row = S + (size_t)j * N;
    for (int i = 0; i < (NT ? NT : N); ++i) {
      row[i] = exp_nonpos(row[i] - m[i]);
      sum[i] += row[i];
    }
  }
}

// T: float, or double for an op with the fp64 flag (binsr.nn.exact: from the float32 qkv on, all in
// double, rounded once into out).
template <typename T, int NT>
__attribute__((always_inline)) static inline void attn_core(const float* __restrict qkv, float* __restrict out, int H,
                                                            int W, int C, int heads, int ws, int shift,
                                                            const float* __restrict biasT, T scale, int w0, int w1,
                                                            bool wide) {
  const int N = NT ? NT : ws * ws, d = C / heads, nwx = W / ws;
  const size_t ld = (size_t)3 * C;  // a token's row in the window's copy: (q|k|v, head, d)
  std::vector<T> win(N * ld), qT((size_t)d * N), S((size_t)N * N), m(N), sum(N), obuf(NT ? 0 : N);
  std::vector<float> lab(N);
  std::vector<size_t> tok(N);
  auto region = [shift, ws](int v, int n) { return v < n - ws ? 0.f : (v < n - shift ? 1.f : 2.f); };
  // the token of window wi's p-th position (coordinates after the roll by -shift)
  auto token = [=](int wi, int p) {
    return (size_t)((wi / nwx * ws + p / ws + shift) % H) * W + (wi % nwx * ws + p % ws + shift) % W;
  };
  for (int wi = w0; wi < w1; ++wi) {
    const int wy = wi / nwx, wx = wi % nwx;
    bool masked = false;
    for (int p = 0; p < N; ++p) {
      const int yr = wy * ws + p / ws, xr = wx * ws + p % ws;
      tok[p] = token(wi, p);
      lab[p] = shift ? region(yr, H) * 3.f + region(xr, W) : 0.f;
      masked |= lab[p] != lab[0];
    }
    // The next window's qkv rows into L2 while this one computes: ws runs of ws tokens, a map row
    // apart, which the hardware prefetchers miss (SwinIR's qkv map at 320x180 is larger than an
    // L3; 3-4% of the fp64 attention on Zen 4, benchmarks/window_attention.py).
    if (wi + 1 < w1)
      for (int p = 0; p < N; ++p) {
        const char* t = (const char*)(qkv + token(wi + 1, p) * ld);
        for (size_t o = 0; o < ld * sizeof(float); o += 64) __builtin_prefetch(t + o, 0, 2);
        __builtin_prefetch(t + ld * sizeof(float) - 1, 0, 2);
      }
    for (int p = 0; p < N; ++p) {  // the window's tokens, all heads, copied (converted) once
      const float* __restrict t = qkv + tok[p] * ld;
      T* __restrict w = win.data() + p * ld;
      for (size_t c = 0; c < ld; ++c) w[c] = t[c];
    }
    for (int h = 0; h < heads; ++h) {
      const T *kk = win.data() + C + h * d, *vv = kk + C;  // key / value j: kk[j * ld + c], vv[j * ld + c]
      for (int p = 0; p < N; ++p)
        for (int c = 0; c < d; ++c) qT[(size_t)c * N + p] = win[p * ld + h * d + c] * scale;
      const float* bT = biasT + (size_t)h * N * N;
#if defined(__x86_64__)
      if (NT == 64 && wide) {
        scores64_avx512(d, ld, kk, qT.data(), bT, masked ? lab.data() : nullptr, S.data(), m.data());
      } else
#endif
      {
      for (int i = 0; i < N; ++i) m[i] = -INFINITY;
      for (int j = 0; j < N; ++j) {  // S[j] = bias + sum_c k[j][c] q[c] (+ mask), and the running max
        T acc[NT ? NT : 1];
        T* __restrict row = NT ? acc : S.data() + (size_t)j * N;
        for (int i = 0; i < N; ++i) row[i] = bT[(size_t)j * N + i];
        for (int c = 0; c < d; ++c) {
          const T kv = kk[j * ld + c];
          const T* __restrict q = qT.data() + (size_t)c * N;
          for (int i = 0; i < N; ++i) row[i] += kv * q[i];
        }
        if (masked) {
          const float lj = lab[j];
          for (int i = 0; i < N; ++i) row[i] += lab[i] != lj ? (T)-100 : (T)0;
        }
        T* __restrict srow = S.data() + (size_t)j * N;
        for (int i = 0; i < N; ++i) {
          m[i] = std::max(m[i], row[i]);
          srow[i] = row[i];
        }
      }
      }
#if defined(__x86_64__)
      if constexpr (NT == 64 && std::is_same_v<T, double>) {
        if (wide) softmax_exp64_avx512(S.data(), m.data(), sum.data());
        else softmax_exp<T, NT>(S.data(), m.data(), sum.data(), N);
      } else
#endif
        softmax_exp<T, NT>(S.data(), m.data(), sum.data(), N);
      int c = 0;
#if defined(__x86_64__)
      if (NT == 64 && wide) c = values64_avx512(d, ld, vv, S.data(), sum.data(), tok.data(), out + h * d, C);
#endif
      for (; c < d; ++c) {  // O[c] = sum_j v[j][c] S[j], then / sum, into the token map
        T acc[NT ? NT : 1];
        T* __restrict o = NT ? acc : obuf.data();
        for (int i = 0; i < N; ++i) o[i] = 0;
        for (int j = 0; j < N; ++j) {
          const T vj = vv[j * ld + c];
          const T* __restrict row = S.data() + (size_t)j * N;
          for (int i = 0; i < N; ++i) o[i] += vj * row[i];
        }
        for (int i = 0; i < N; ++i) out[tok[i] * C + h * d + c] = (float)(o[i] * ((T)1 / sum[i]));
      }
    }
  }
}

BINSR_CLONES()
static void attn_windows(const float* __restrict qkv, float* __restrict out, int H, int W, int C, int heads, int ws,
                         int shift, const float* __restrict biasT, float scale, int w0, int w1) {
  if (ws == 8) attn_core<float, 64>(qkv, out, H, W, C, heads, ws, shift, biasT, scale, w0, w1, cpu_avx512());
  else attn_core<float, 0>(qkv, out, H, W, C, heads, ws, shift, biasT, scale, w0, w1, false);
}

BINSR_CLONES()
static void attn_windows_fp64(const float* __restrict qkv, float* __restrict out, int H, int W, int C, int heads,
                              int ws, int shift, const float* __restrict biasT, double scale, int w0, int w1) {
  if (ws == 8) attn_core<double, 64>(qkv, out, H, W, C, heads, ws, shift, biasT, scale, w0, w1, cpu_avx512());
  else attn_core<double, 0>(qkv, out, H, W, C, heads, ws, shift, biasT, scale, w0, w1, false);
}

// nn.GELU() = x / 2 * (1 + erf(x / sqrt 2)); erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
BINSR_CLONES()
static void gelu_range(const float* __restrict x, float* __restrict y, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float z = x[i] * 0.70710678118654752f, a = std::fabs(z);
    const float t = 1.f / (1.f + 0.3275911f * a);
    const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    const float e = 1.f - poly * exp_nonpos(-a * a);
    y[i] = 0.5f * x[i] * (1.f + (z < 0.f ? -e : e));
  }
}

// erf in double, within 1.2 ulp: |z| < 2: z P(z^2 / 2 - 1); else the sign of z times
// 1 - exp(-z^2) R((min(|z|, 6) - 4) / 2); P, R polynomials by Horner, branch-free so that the
// loops calling them vectorize. Coefficients: scripts/erf_coefficients.py (which checks the error).
static constexpr double kErfP[19] = {
    0.674933236039655,
    -0.2611118609312454,
    0.11947913860985186,
    -0.04866277744915503,
    0.017128344571816653,
    -0.005234875836158878,
    0.001405091423652028,
    -0.00033514353352396425,
    7.180100843849609e-05,
    -1.3946273745435833e-05,
    2.4758020496978075e-06,
    -4.0450946099912016e-07,
    6.119567714146862e-08,
    -8.617701483059107e-09,
    1.1348248891775e-09,
    -1.4013463829861674e-10,
    1.6331415164389115e-11,
    -1.8923035835006617e-12,
    1.9723520410355402e-13};
static constexpr double kErfcR[26] = {
    0.13699945762506138,
    -0.06476701219004291,
    0.029861732979902248,
    -0.013449456613968862,
    0.005925639503930788,
    -0.0025570841697796815,
    0.001081961552456566,
    -0.0004493269311478675,
    0.0001833076906066776,
    -7.352137887794143e-05,
    2.901194322529129e-05,
    -1.1270897033507045e-05,
    4.313446196087605e-06,
    -1.627104352609772e-06,
    6.052390878270105e-07,
    -2.2213739078636282e-07,
    8.056154060280262e-08,
    -2.8825948180677623e-08,
    1.0072566037987673e-08,
    -3.5137673583420796e-09,
    1.3198927337342087e-09,
    -4.531674601681337e-10,
    8.927547946337561e-11,
    -2.896781178130373e-11,
    3.178031856242715e-11,
    -1.0538717711696054e-11};

template <int K>
static inline double horner(const double (&c)[K], double t) {
  double p = c[K - 1];
#pragma GCC unroll 32  // unrolled whole, so that the calling loop vectorizes
  for (int k = K - 2; k >= 0; --k) p = p * t + c[k];
  return p;
}

static inline double erf_small(double z) { return z * horner(kErfP, std::min(z * z, 4.) * 0.5 - 1.); }

static inline double erf_tail(double z) {
  return std::copysign(1. - exp_nonpos(-z * z) * horner(kErfcR, (std::min(std::fabs(z), 6.) - 4.) * 0.5), z);
}

__attribute__((noinline)) static float gelu_fp64_tail(float x) {
  const double v = x;
  return (float)(v * 0.5 * (1. + erf_tail(v * 0.7071067811865476)));
}

// The fp64 GELU: PyTorch's float64 formula x * 0.5 * (1 + erf(x * M_SQRT1_2)), rounded once. A
// vectorized pass with erf_small, then blocks holding an |x| >= 2 sqrt 2 again, element by element
// (in the zoo SwinIR none of the GELU inputs is that large; 1% have |x| >= sqrt 2).
BINSR_CLONES()
static void gelu_range_fp64(const float* __restrict x, float* __restrict y, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const double v = x[i];
    y[i] = (float)(v * 0.5 * (1. + erf_small(v * 0.7071067811865476)));
  }
  for (size_t i0 = 0; i0 < n; i0 += 64) {
    const size_t i1 = std::min(n, i0 + 64);
    unsigned any = 0;  // a float test first (vectorizes), a little below 2 sqrt 2; then the exact one
    for (size_t i = i0; i < i1; ++i) any |= (unsigned)(std::fabs(x[i]) >= 2.828f);
    if (any)
      for (size_t i = i0; i < i1; ++i)
        if (std::fabs((double)x[i] * 0.7071067811865476) >= 2.) y[i] = gelu_fp64_tail(x[i]);
  }
}

static py::array_t<float> gelu(const FArr& x, int threads, bool fp64) {
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const float* xp = x.data();
  float* yp = y.mutable_data();
  const size_t n = (size_t)x.size();
  py::gil_scoped_release nogil;
  const auto range = fp64 ? gelu_range_fp64 : gelu_range;
  parallel_range(n, threads, 1 << 16, [=](size_t i0, size_t i1) { range(xp + i0, yp + i0, i1 - i0); });
  return y;
}

// LayerNorm over the last axis of (M, C): biased variance, eps inside the root; sums in double.
// Tokens [m0, m1): each token's mean and variance summed in double, channel by channel, then
// (x - mean) * inv * w + b in float, or with fp64 in double, rounded once. T tokens at a time: their
// T independent running sums overlap (one token's sum is a chain of dependent adds); each token's
// sums keep their order.
BINSR_CLONES() __attribute__((optimize("fp-contract=off")))
static void layer_norm_range(const float* __restrict x, float* __restrict y, const float* __restrict w,
                             const float* __restrict b, int C, double eps, bool fp64, size_t m0, size_t m1) {
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
      float* __restrict o = y + (m + k) * C;
      const double inv = 1.0 / std::sqrt(q[k] / C + eps);
      if (fp64) {
        for (int c = 0; c < C; ++c) o[c] = (float)(((double)r[c] - mean[k]) * inv * (double)w[c] + (double)b[c]);
      } else {
        const float fi = (float)inv, mu = (float)mean[k];
        for (int c = 0; c < C; ++c) o[c] = (r[c] - mu) * fi * w[c] + b[c];
      }
    }
  }
}

#if defined(__x86_64__)
// AVX-512 form of layer_norm_range, T tokens at a time (their chains of adds, reductions and roots
// interleaved; one token's are latency-bound), each token's channels 8 to a vector of doubles (the
// last C % 8 in masked lanes, kept at 0): each sum runs in 8 lane-wise partial sums, added at the
// end pairwise (hsum8_pd), instead of one chain channel by channel; the same formula otherwise
// (float32 or, with fp64, double output arithmetic; no FMA: each sum after a product is a masked
// _round_ intrinsic, which GCC neither contracts nor, in its GCC 12 header, warns about). Summed in
// another order, a mean or variance can move by an ulp of a double, which the float output shows
// only in the rarest ties; the tests hold both forms against torch (the fp64 one: float64
// LayerNorm rounded once, equal).
static constexpr int kRoundNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

__attribute__((target("avx512f,avx512vl"))) static inline __m512d load8_pd(const float* r, __mmask8 k) {
  return _mm512_maskz_cvtps_pd(k, _mm256_maskz_loadu_ps(k, r));  // 8 floats as doubles, 0 off k
}

// The 8 lanes' sum, pairwise in lane order (linear_range_fp64's order for its 8 partial sums).
__attribute__((target("avx512f"))) static inline double hsum8_pd(__m512d v) {
  alignas(64) double l[8];
  _mm512_store_pd(l, v);
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

template <int T>
__attribute__((target("avx512f,avx512vl"))) static inline void layer_norm_tokens_avx512(
    const float* __restrict x, float* __restrict y, const float* __restrict w, const float* __restrict b, int C,
    double eps, bool fp64) {
  const int nv = (C + 7) / 8;
  const __mmask8 tail = (__mmask8)(C % 8 ? (1u << (C % 8)) - 1 : 0xff);
  __m512d s[T], mv[T];
  double mean[T], inv[T];
  for (int t = 0; t < T; ++t) s[t] = _mm512_setzero_pd();
  for (int v = 0; v < nv; ++v) {
    const __mmask8 k = v == nv - 1 ? tail : (__mmask8)0xff;
    for (int t = 0; t < T; ++t) s[t] = _mm512_add_pd(s[t], load8_pd(x + (size_t)t * C + 8 * v, k));
  }
  for (int t = 0; t < T; ++t) {
    mean[t] = hsum8_pd(s[t]) / C;
    mv[t] = _mm512_set1_pd(mean[t]);
    s[t] = _mm512_setzero_pd();
  }
  for (int v = 0; v < nv; ++v) {
    const __mmask8 k = v == nv - 1 ? tail : (__mmask8)0xff;
    for (int t = 0; t < T; ++t) {
      const __m512d d = _mm512_maskz_sub_pd(k, load8_pd(x + (size_t)t * C + 8 * v, k), mv[t]);
      s[t] = _mm512_mask_add_round_pd(s[t], k, s[t], _mm512_mul_pd(d, d), kRoundNearest);
    }
  }
  for (int t = 0; t < T; ++t) inv[t] = 1.0 / std::sqrt(hsum8_pd(s[t]) / C + eps);
  for (int t = 0; t < T; ++t) {
    const float* __restrict r = x + (size_t)t * C;
    float* __restrict o = y + (size_t)t * C;
    if (fp64) {
      const __m512d iv = _mm512_set1_pd(inv[t]);
      for (int v = 0; v < nv; ++v) {
        const __mmask8 k = v == nv - 1 ? tail : (__mmask8)0xff;
        const __m512d u = _mm512_maskz_mul_round_pd(k, _mm512_mul_pd(_mm512_sub_pd(load8_pd(r + 8 * v, k), mv[t]), iv),
                                                    load8_pd(w + 8 * v, k), kRoundNearest);
        _mm256_mask_storeu_ps(o + 8 * v, k,
                              _mm512_maskz_cvtpd_ps(k, _mm512_maskz_add_round_pd(k, u, load8_pd(b + 8 * v, k), kRoundNearest)));
      }
    } else {
      const __m512 fi = _mm512_set1_ps((float)inv[t]), mu = _mm512_set1_ps((float)mean[t]);
      for (int c = 0; c < C; c += 16) {
        const __mmask16 k = (__mmask16)(C - c >= 16 ? 0xffff : (1u << (C - c)) - 1);
        const __m512 u = _mm512_maskz_mul_round_ps(k, _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, r + c), mu), fi),
                                                   _mm512_maskz_loadu_ps(k, w + c), kRoundNearest);
        _mm512_mask_storeu_ps(o + c, k, _mm512_maskz_add_round_ps(k, u, _mm512_maskz_loadu_ps(k, b + c), kRoundNearest));
      }
    }
  }
}

__attribute__((target("avx512f,avx512vl"))) static void layer_norm_avx512(
    const float* __restrict x, float* __restrict y, const float* __restrict w, const float* __restrict b, int C,
    double eps, bool fp64, size_t m0, size_t m1) {
  size_t m = m0;
  for (; m + 4 <= m1; m += 4) layer_norm_tokens_avx512<4>(x + m * C, y + m * C, w, b, C, eps, fp64);
  for (; m < m1; ++m) layer_norm_tokens_avx512<1>(x + m * C, y + m * C, w, b, C, eps, fp64);
}
#endif

// Tokens [m0, m1) of the LayerNorm by the fastest form here.
static void layer_norm_rows(const float* x, float* y, const float* w, const float* b, int C, double eps, bool fp64,
                            size_t m0, size_t m1) {
#if defined(__x86_64__)
  static const bool wide = cpu_avx512();
  if (wide) return layer_norm_avx512(x, y, w, b, C, eps, fp64, m0, m1);
#endif
  layer_norm_range(x, y, w, b, C, eps, fp64, m0, m1);
}

static py::array_t<float> layer_norm(const FArr& x, const FArr& w, const FArr& b, double eps, int threads, bool fp64) {
  const int C = (int)x.shape(x.ndim() - 1);
  if (w.size() != C || b.size() != C) throw std::invalid_argument("weight and bias must have C values");
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const float *xp = x.data(), *wp = w.data(), *bp = b.data();
  float* yp = y.mutable_data();
  const size_t M = (size_t)x.size() / C;
  if (!fp64) eps = (float)eps;  // a float32 eps, as before the flag
  py::gil_scoped_release nogil;
  parallel_range(M, threads, 4096, [=](size_t m0, size_t m1) { layer_norm_rows(xp, yp, wp, bp, C, eps, fp64, m0, m1); });
  return y;
}

// The fp64 linear: y[m][o] = b[o] + sum_c x[m][c] w[c][o] in double, rounded once (SCALES' token gate,
// binsr.nn.TokenGate). Each sum runs over c in 8 interleaved partial sums (channel c into sum c % 8,
// each product rounded, then added: no FMA), added pairwise in a fixed order at the end: vectorizes
// without reordering anything the source does not say.
BINSR_CLONES() __attribute__((optimize("fp-contract=off")))
static void linear_range_fp64(const float* __restrict x, const double* __restrict wT, const float* __restrict b,
                              float* __restrict y, int C, int O, size_t m0, size_t m1) {
  for (size_t m = m0; m < m1; ++m) {
    const float* __restrict r = x + m * C;
    for (int o = 0; o < O; ++o) {
      const double* __restrict wo = wT + (size_t)o * C;
      double acc[8] = {};
      int c = 0;
      for (; c + 8 <= C; c += 8)
        for (int j = 0; j < 8; ++j) acc[j] += (double)r[c + j] * wo[c + j];
      for (int j = 0; c + j < C; ++j) acc[j] += (double)r[c + j] * wo[c + j];
      const double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      y[m * O + o] = (float)(sum + (double)b[o]);
    }
  }
}

#if defined(__x86_64__)
// AVX-512 form of linear_range_fp64, the same sums in the same order (the 8 partial sums a vector's
// lanes; the last C % 8 channels added in masked lanes), T tokens at a time so that their chains of
// adds overlap (a token's is latency-bound).
template <int T>
__attribute__((target("avx512f,avx512vl"))) static inline void linear_tokens_fp64_avx512(
    const float* __restrict x, const double* __restrict wT, const float* __restrict b, float* __restrict y, int C,
    int O) {
  const __mmask8 tail = (__mmask8)((1u << (C % 8)) - 1);
  for (int o = 0; o < O; ++o) {
    const double* __restrict wo = wT + (size_t)o * C;
    __m512d acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_pd();
    int c = 0;
    for (; c + 8 <= C; c += 8) {
      const __m512d wv = _mm512_loadu_pd(wo + c);
      for (int t = 0; t < T; ++t)
        acc[t] = _mm512_maskz_add_round_pd(0xff, acc[t], _mm512_mul_pd(load8_pd(x + (size_t)t * C + c, 0xff), wv),
                                           kRoundNearest);  // masked form: GCC 12's unmasked one warns
    }
    if (tail) {
      const __m512d wv = _mm512_maskz_loadu_pd(tail, wo + c);
      for (int t = 0; t < T; ++t)
        acc[t] = _mm512_mask_add_round_pd(acc[t], tail, acc[t], _mm512_mul_pd(load8_pd(x + (size_t)t * C + c, tail), wv),
                                          kRoundNearest);
    }
    for (int t = 0; t < T; ++t) y[(size_t)t * O + o] = (float)(hsum8_pd(acc[t]) + (double)b[o]);
  }
}

__attribute__((target("avx512f,avx512vl"))) static void linear_range_fp64_avx512(
    const float* __restrict x, const double* __restrict wT, const float* __restrict b, float* __restrict y, int C,
    int O, size_t m0, size_t m1) {
  size_t m = m0;
  for (; m + 4 <= m1; m += 4) linear_tokens_fp64_avx512<4>(x + m * C, wT, b, y + m * O, C, O);
  for (; m < m1; ++m) linear_tokens_fp64_avx512<1>(x + m * C, wT, b, y + m * O, C, O);
}
#endif

// Tokens [m0, m1) of the fp64 linear by the fastest form here.
static void linear_rows_fp64(const float* x, const double* wT, const float* b, float* y, int C, int O, size_t m0,
                             size_t m1) {
#if defined(__x86_64__)
  static const bool wide = cpu_avx512();
  if (wide) return linear_range_fp64_avx512(x, wT, b, y, C, O, m0, m1);
#endif
  linear_range_fp64(x, wT, b, y, C, O, m0, m1);
}

static py::array_t<float> linear_fp64(const FArr& x, const FArr& w, const FArr& b, int threads) {
  const int C = (int)x.shape(x.ndim() - 1);
  if (w.ndim() != 2 || w.shape(0) != C || b.size() != w.shape(1))
    throw std::invalid_argument("w must be (C, out) and b (out,)");
  const int O = (int)w.shape(1);
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  shape.back() = O;
  py::array_t<float> y(shape);
  std::vector<double> wT((size_t)O * C);
  for (int c = 0; c < C; ++c)
    for (int o = 0; o < O; ++o) wT[(size_t)o * C + c] = w.data()[(size_t)c * O + o];
  const float *xp = x.data(), *bp = b.data();
  const double* wp = wT.data();
  float* yp = y.mutable_data();
  const size_t M = (size_t)x.size() / C;
  py::gil_scoped_release nogil;
  parallel_range(M, threads, 4096, [=](size_t m0, size_t m1) { linear_rows_fp64(xp, wp, bp, yp, C, O, m0, m1); });
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
  const PackFn range = select_pack();
  py::gil_scoped_release nogil;
  parallel_range(M, threads, 4096, [=](size_t m0, size_t m1) { range(xp, tp, op, C, m0, m1); });
  return out;
}

// What a SCALES binary linear reads of its input in one pass over the tokens (runtime.py's token
// fusion): per block of 32 tokens, the optional op before it (pre 1: LayerNorm with pre_w, pre_b,
// eps; 2: GELU; pre_fp64 as those ops' fp64) into a block in the cache, then that block's sign bits
// against thr (pack_signs) and its token gate's logit (the fp64 linear, gw (C, 1), gb (1,)).
// The same functions on the same values as the separate ops, so the same bits, without writing the
// pre-op's map and reading it twice. Returns (bits (..., words), logits (..., 1)).
static py::tuple pack_gate(const FArr& x, const OptF& thr, const FArr& gw, const FArr& gb, int threads, int pre,
                           const OptF& pre_w, const OptF& pre_b, double eps, bool pre_fp64) {
  const int C = (int)x.shape(x.ndim() - 1), nw = (C + 63) / 64;
  if (gw.ndim() != 2 || gw.shape(0) != C || gw.shape(1) != 1 || gb.size() != 1)
    throw std::invalid_argument("gw must be (C, 1) and gb (1,)");
  if (pre < 0 || pre > 2) throw std::invalid_argument("pre must be 0 (none), 1 (LayerNorm) or 2 (GELU)");
  const float* tp = vec_ptr(thr, C, "thr");
  const float* wp = pre == 1 ? vec_ptr(pre_w, C, "pre_w") : nullptr;
  const float* bp = pre == 1 ? vec_ptr(pre_b, C, "pre_b") : nullptr;
  if (pre == 1 && (!wp || !bp)) throw std::invalid_argument("a LayerNorm needs pre_w and pre_b");
  if (pre == 1 && !pre_fp64) eps = (float)eps;  // as layer_norm
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  shape.back() = nw;
  py::array_t<uint64_t> bits(shape);
  shape.back() = 1;
  py::array_t<float> logits(shape);
  std::vector<double> wT(gw.data(), gw.data() + C);
  const float *xp = x.data(), *gbp = gb.data();
  const double* wTp = wT.data();
  uint64_t* bitp = bits.mutable_data();
  float* lp = logits.mutable_data();
  const size_t M = (size_t)x.size() / C;
  const PackFn pack = select_pack();
  const auto act = pre_fp64 ? gelu_range_fp64 : gelu_range;
  {
    py::gil_scoped_release nogil;
    parallel_range(M, threads, 4096, [=](size_t m0, size_t m1) {
      constexpr size_t B = 32;
      std::vector<float> block(pre ? B * C : 0);
      for (size_t a = m0; a < m1; a += B) {
        const size_t n = std::min(B, m1 - a);
        const float* src = xp + a * C;
        if (pre == 1) layer_norm_rows(src, block.data(), wp, bp, C, eps, pre_fp64, 0, n);
        if (pre == 2) act(src, block.data(), n * C);
        if (pre) src = block.data();
        pack(src, tp, bitp + a * nw, C, 0, n);
        linear_rows_fp64(src, wTp, gbp, lp + a, C, 1, 0, n);
      }
    });
  }
  return py::make_tuple(bits, logits);
}


static py::array_t<float> window_attention(const FArr& qkv, int heads, int ws, int shift, const FArr& biasT,
                                           double scale, int threads, bool fp64) {
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
    if (fp64) attn_windows_fp64(q, o, H, W, C, heads, ws, shift, b, scale, (int)w0, (int)w1);
    else attn_windows(q, o, H, W, C, heads, ws, shift, b, (float)scale, (int)w0, (int)w1);
  });
  return out;
}

}  // namespace binsr

PYBIND11_MODULE(_engine, m) {
  using namespace binsr;
  m.doc() = "Bit-packed binary convolution kernels (AVX-512 VPOPCNTDQ or AMX / AVX2 / NEON / portable).";
  m.def("cpu_features", []() {
    py::dict d;
    d["avx2"] = cpu_avx2();
    d["avx512"] = cpu_avx512();
    d["amx"] = cpu_amx();
#if defined(__aarch64__)
    d["neon"] = true;
#else
    d["neon"] = false;
#endif
    return d;
  }, "Which compiled paths this CPU can run.");
  m.def("wino_in", &wino_in, py::arg("x"), py::arg("r0"), py::arg("r1"), py::arg("out") = py::none(),
        "Winograd F(4x4,3x3) input transform of tile rows [r0, r1): (H, W, C) -> (36, tiles, C) (into out if given).");
  m.def("channel_sums", &channel_sums, py::arg("x"), py::arg("threads") = 1,
        "Per-channel sums of an (H, W, C) float map, in double.");
  m.def("spatial_gate3x3", &spatial_gate3x3, py::arg("x"), py::arg("w"), py::arg("bias").none(true),
        py::arg("out").noconvert(), py::arg("threads") = 1, py::arg("path") = "auto",
        py::arg("sums").noconvert() = py::none());
  m.def("conv3x3_direct", &conv3x3_direct, py::arg("x"), py::arg("w"), py::arg("out").noconvert(),
        py::arg("bias") = py::none(), py::arg("leaky") = -1.f, py::arg("threads") = 1, py::arg("fp64") = false,
        "Direct 3x3 conv (zero padding 1) of (H, W, C) with (9 * C, O) weights into out (H, W, O), + bias, LeakyReLU; "
        "fp64: summed in double, rounded once before the LeakyReLU.");
  m.def("wino_out", &wino_out, py::arg("m"), py::arg("out").noconvert(), py::arg("r0"), py::arg("r1"), py::arg("H"), py::arg("W"),
        py::arg("bias") = py::none(), py::arg("leaky") = -1.f, py::arg("shuffle") = 1,
        "Winograd output transform + bias + LeakyReLU + PixelShuffle into out (H*r, W*r, O/r^2).");
  m.def("bilinear_add", &bilinear_add, py::arg("x"), py::arg("y").noconvert(), py::arg("scale"), py::arg("threads") = 1,
        "y += bilinear upsampling of x (H, W, C) by an integer scale (align_corners=False).");
  m.def("layer_norm", &layer_norm, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        py::arg("threads") = 1, py::arg("fp64") = false,
        "nn.LayerNorm over the last axis (sums in double; fp64: all in double, rounded once).");
  m.def("linear_fp64", &linear_fp64, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("threads") = 1,
        "x @ w + b over the last axis, w (C, out), summed in double and rounded once.");
  m.def("pack_gate", &pack_gate, py::arg("x"), py::arg("thr"), py::arg("gw"), py::arg("gb"), py::arg("threads") = 1,
        py::arg("pre") = 0, py::arg("pre_w") = py::none(), py::arg("pre_b") = py::none(), py::arg("eps") = 0.0,
        py::arg("pre_fp64") = false,
        "pack_signs and the fp64 token-gate linear of x (after an optional LayerNorm or GELU) in one pass: "
        "(bits, logits).");
  m.def("pack_signs", &pack_signs, py::arg("x"), py::arg("thr") = py::none(), py::arg("threads") = 1,
        "Sign bits (x >= thr) of channel-last float x, packed as binsr.deploy.bitpack.pack_bits.");
  m.def("gelu", &gelu, py::arg("x"), py::arg("threads") = 1, py::arg("fp64") = false,
        "nn.GELU() (exact erf form, |error| < 1e-6; fp64: in double with a 2-ulp erf, rounded once).");
  m.def("window_attention", &window_attention, py::arg("qkv"), py::arg("heads"), py::arg("ws"), py::arg("shift"),
        py::arg("biasT"), py::arg("scale"), py::arg("threads") = 1, py::arg("fp64") = false,
        "SwinIR (S)W-MSA before the projection: qkv (H, W, 3C), key-major bias (heads, N, N) -> (H, W, C); "
        "fp64: in double, rounded once.");
  m.def("run_chain", &run_chain, py::arg("steps"), py::arg("H"), py::arg("W"), py::arg("path"), py::arg("threads") = 1,
        "Same-size binary convs on one H x W image, depth first; False (nothing run) if a step cannot run so.");
  py::class_<Layer>(m, "BinaryConv")
      .def(py::init(&make_layer_py), py::arg("weights"), py::arg("cin"), py::arg("k"), py::arg("dilation"),
           py::arg("padding"), py::arg("groups"))
      .def_readonly("cout", &Layer::cout)
      .def_readonly("cin", &Layer::cin)
      .def_readonly("k", &Layer::k)
      .def_readonly("dilation", &Layer::dil)
      .def_readonly("padding", &Layer::pad)
      .def_readonly("groups", &Layer::groups)
      .def("run", &run, py::arg("x"), py::arg("path"), py::arg("threads") = 1, py::arg("scale") = py::none(),
           py::arg("bias") = py::none(), py::arg("gate_bias") = py::none(), py::arg("pix") = py::none(), py::arg("chan") = py::none(), py::arg("act_shift") = py::none(),
           py::arg("act_slope") = py::none(), py::arg("act_bias") = py::none(), py::arg("act_first") = false,
           py::arg("res") = std::vector<FArr>{},
           py::arg("out_float") = true, py::arg("out_int") = false, py::arg("pack") = false,
           py::arg("thr") = py::none(), py::arg("div") = 1.f, py::arg("post_scale") = 1.f, py::arg("post_after") = 0,
           py::arg("out") = py::none(), py::arg("bits_out") = py::none(),
           "Binary conv of packed x (N, H, W, ceil(cin / 64)); returns (float NHWC | None, int32 dots | None, bits | None); out / bits_out: buffers to write them into.");
}
