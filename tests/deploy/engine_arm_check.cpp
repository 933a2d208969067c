// make test-arm's driver, cross-compiled for aarch64 and run under qemu (no Python there): the
// engine core (conv.cpp) with its portable and NEON kernels.
//  1. The cases of engine_arm_cases.py: both kernels' dots, floats and packed bits equal, bit for
//     bit, the NumPy reference's values (which the x86 engine also gave when they were written).
//  2. Random convs and epilogues (grouped, 16 / 32-channel groups, dilations, partial blocks): the
//     NEON kernel equals the portable one bit for bit.
//  3. Random residual chains (chain.cpp) on 1-4 threads equal conv by conv, bit for bit.
// Usage: engine_arm_check CASES.bin; exit 0 when every comparison holds.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine.h"

using namespace binsr;

namespace {

struct Outputs {
  std::vector<int32_t> dots;
  std::vector<float> out;
  std::vector<uint64_t> bits;
};

struct Case {
  int k, dil, pad, groups, cin, cout, N, H, W, act_first, post_after, pack;
  float div, post_scale;
  std::vector<uint64_t> w, x;
  std::vector<float> vec[8];  // scale, bias, pix, act shift / slope / bias, thr, gate_bias
  std::vector<float> res[3];
  Outputs want;
};

template <class T>
std::vector<T> read_array(FILE* f) {
  int64_t n = -1;
  if (std::fread(&n, sizeof n, 1, f) != 1 || n < 0 || n > (1 << 28)) throw std::runtime_error("bad array length");
  std::vector<T> v((size_t)n);
  if (n && std::fread(v.data(), sizeof(T), (size_t)n, f) != (size_t)n) throw std::runtime_error("truncated array");
  return v;
}

const float* ptr(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

Outputs run(const Case& c, const std::string& path, int threads) {
  const Layer L = make_layer(c.w.data(), c.cout, c.cin, c.k, c.dil, c.pad, c.groups);
  int Ho, Wo;
  conv_out_size(L, c.H, c.W, Ho, Wo);
  const size_t m = (size_t)c.N * Ho * Wo;
  Outputs o{std::vector<int32_t>(m * c.cout), std::vector<float>(m * c.cout), {}};
  Epilogue e;
  e.scale = ptr(c.vec[0]);
  e.bias = ptr(c.vec[1]);
  e.pix = ptr(c.vec[2]);
  e.act_shift = ptr(c.vec[3]);
  e.act_slope = ptr(c.vec[4]);
  e.act_bias = ptr(c.vec[5]);
  e.thr = ptr(c.vec[6]);
  e.gate_bias = ptr(c.vec[7]);
  for (int r = 0; r < 3; ++r) e.res[r] = ptr(c.res[r]);
  e.act_first = c.act_first;
  e.div = c.div;
  e.post_scale = c.post_scale;
  e.post_after = c.post_after;
  e.out = o.out.data();
  e.out_int = o.dots.data();
  if (c.pack) {
    e.pwd = (c.cout + 63) / 64;
    o.bits.assign(m * e.pwd, 0);
    e.bits = o.bits.data();
  }
  conv_run(L, select_kernel(path, L), c.x.data(), c.N, c.H, c.W, e, threads);
  return o;
}

// Bitwise equality of two runs' outputs; prints and counts what differs.
int compare(const Outputs& got, const Outputs& want, const std::string& what) {
  auto differ = [](const void* a, const void* b, size_t n, size_t sz) {
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) bad += std::memcmp((const char*)a + i * sz, (const char*)b + i * sz, sz) != 0;
    return bad;
  };
  if (got.dots.size() != want.dots.size() || got.bits.size() != want.bits.size()) {
    std::printf("FAIL %s: output sizes differ\n", what.c_str());
    return 1;
  }
  const size_t bd = differ(got.dots.data(), want.dots.data(), got.dots.size(), 4);
  const size_t bf = differ(got.out.data(), want.out.data(), got.out.size(), 4);
  const size_t bb = differ(got.bits.data(), want.bits.data(), got.bits.size(), 8);
  if (bd || bf || bb) {
    std::printf("FAIL %s: %zu dots, %zu floats, %zu bit words differ\n", what.c_str(), bd, bf, bb);
    return 1;
  }
  return 0;
}

// splitmix64 (Steele et al. 2014): deterministic random inputs on every machine.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  int below(int n) { return (int)(next() % (uint64_t)n); }
  float normal() {  // sum of 4 uniforms, centred: enough spread for signs and thresholds
    float v = 0;
    for (int i = 0; i < 4; ++i) v += (float)(next() >> 40) / (float)(1 << 24);
    return v - 2.f;
  }
};

Case random_case(Rng& r) {
  static const int kCpg[] = {1, 5, 16, 21, 32, 64, 70};
  Case c{};
  c.k = 1 + 2 * r.below(3);
  c.dil = 1 + r.below(2);
  c.groups = 1 + r.below(4);
  c.cin = c.groups * kCpg[r.below(7)];
  c.cout = c.groups * (1 + r.below(40));
  c.pad = c.dil * (c.k - 1) / 2;
  c.N = 1 + r.below(2);
  c.H = 1 + c.dil * (c.k - 1) + r.below(6);
  c.W = 1 + c.dil * (c.k - 1) + r.below(40);
  c.act_first = r.below(2);
  c.div = r.below(2) ? 1.f : 3.f;
  c.post_scale = r.below(2) ? 1.f : 0.5f;
  c.pack = 1;
  const int wdc = (c.cin / c.groups + 63) / 64;
  c.w.resize((size_t)c.cout * c.k * c.k * wdc);
  for (auto& v : c.w) v = r.next();
  c.x.resize((size_t)c.N * c.H * c.W * ((c.cin + 63) / 64));
  for (auto& v : c.x) v = r.next();
  const size_t m = (size_t)c.N * c.H * c.W;  // the output size: padding keeps it
  for (int i = 0; i < 8; ++i) {
    if (r.below(2)) continue;
    c.vec[i].resize(i == 2 ? m : (size_t)c.cout);
    for (auto& v : c.vec[i]) v = (i == 0 || i == 4) ? std::abs(r.normal()) : r.normal();
  }
  if (c.vec[7].size() && c.vec[2].empty()) c.vec[7].clear();  // the gated bias needs pix
  const bool act = c.vec[3].size() && c.vec[4].size() && c.vec[5].size();
  for (int i = 3; i < 6 && !act; ++i) c.vec[i].clear();  // RPReLU needs all three
  const int nres = r.below(4);
  for (int i = 0; i < nres; ++i) {
    c.res[i].resize(m * c.cout);
    for (auto& v : c.res[i]) v = r.normal();
  }
  c.post_after = r.below(nres + 1);
  return c;
}

// A residual chain of same-size 3x3 convs (each reads the one before as its input bits and its
// residual, E2FIF's shape), run depth first by chain_run on `path` with `threads` threads (one
// horizontal part per thread, meeting at seams) against conv_run one conv after the other:
// equal bit for bit. Returns the failures.
int chain_check(Rng& r, const std::string& path, int threads, int index) {
  const int C = 64 * (1 + r.below(2)), dil = 1 + r.below(2), n = 2 + r.below(5);  // whole words: no correction
  const int H = 1 + r.below(20), W = 1 + r.below(15), ps = (C + 63) / 64;
  const size_t m = (size_t)H * W;
  std::vector<Layer> layers;
  std::vector<std::vector<float>> par(3 * n);  // scale, bias, thr per step
  for (int i = 0; i < n; ++i) {
    std::vector<uint64_t> w((size_t)C * 9 * ps);
    for (auto& v : w) v = r.next();
    layers.push_back(make_layer(w.data(), C, C, 3, dil, dil, 1));
    for (int j = 0; j < 3; ++j) {
      par[3 * i + j].resize(C);
      for (auto& v : par[3 * i + j]) v = j == 0 ? std::abs(r.normal()) : r.normal();
    }
  }
  std::vector<uint64_t> x(m * ps);
  for (auto& v : x) v = r.next();
  std::vector<float> res0(m * C);
  for (auto& v : res0) v = r.normal();
  auto epilogue = [&](int i) {
    Epilogue e;
    e.scale = par[3 * i].data();
    e.bias = par[3 * i + 1].data();
    e.thr = par[3 * i + 2].data();
    e.pwd = ps;
    return e;
  };
  // one conv after the other: whole maps
  std::vector<std::vector<float>> out(n, std::vector<float>(m * C));
  std::vector<std::vector<uint64_t>> bits(n, std::vector<uint64_t>(m * ps));
  for (int i = 0; i < n; ++i) {
    Epilogue e = epilogue(i);
    e.res[0] = i ? out[i - 1].data() : res0.data();
    e.out = out[i].data();
    e.bits = bits[i].data();
    conv_run(layers[i], select_kernel(path, layers[i]), i ? bits[i - 1].data() : x.data(), 1, H, W, e, 1);
  }
  // depth first: the inner maps in rings, the last one whole
  std::vector<float> got_out(m * C);
  std::vector<uint64_t> got_bits(m * ps);
  std::vector<ChainStep> steps(n);
  for (int i = 0; i < n; ++i) {
    ChainStep& s = steps[i];
    s.L = &layers[i];
    s.kern = select_kernel(path, layers[i]);
    s.e = epilogue(i);
    s.src = i - 1;
    s.x = i ? nullptr : x.data();
    s.res_src[0] = i - 1;
    if (!i) s.e.res[0] = res0.data();
    s.ring_out = s.ring_bits = i < n - 1;
    if (i == n - 1) {
      s.e.out = got_out.data();
      s.e.bits = got_bits.data();
    }
  }
  chain_run(steps, H, W, threads);
  const bool same = !std::memcmp(got_out.data(), out[n - 1].data(), m * C * sizeof(float)) &&
                    !std::memcmp(got_bits.data(), bits[n - 1].data(), m * ps * sizeof(uint64_t));
  if (!same)
    std::printf("FAIL chain %d (%s, %d threads, %d convs of %d channels, dilation %d, %dx%d) vs conv by conv\n", index,
                path.c_str(), threads, n, C, dil, H, W);
  return same ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CASES.bin\n", argv[0]);
    return 2;
  }
  FILE* f = std::fopen(argv[1], "rb");
  char magic[4];
  int32_t count = 0;
  if (!f || std::fread(magic, 1, 4, f) != 4 || std::memcmp(magic, "BSRC", 4) || std::fread(&count, 4, 1, f) != 1) {
    std::fprintf(stderr, "cannot read cases from %s\n", argv[1]);
    return 1;
  }
  int failures = 0, checks = 0;
  for (int i = 0; i < count; ++i) {
    Case c{};
    int32_t h[12];
    float fl[2];
    if (std::fread(h, 4, 12, f) != 12 || std::fread(fl, 4, 2, f) != 2) {
      std::fprintf(stderr, "truncated case %d\n", i);
      return 1;
    }
    c.k = h[0]; c.dil = h[1]; c.pad = h[2]; c.groups = h[3]; c.cin = h[4]; c.cout = h[5];
    c.N = h[6]; c.H = h[7]; c.W = h[8]; c.act_first = h[9]; c.post_after = h[10]; c.pack = h[11];
    c.div = fl[0]; c.post_scale = fl[1];
    c.w = read_array<uint64_t>(f);
    c.x = read_array<uint64_t>(f);
    for (auto& v : c.vec) v = read_array<float>(f);
    for (auto& v : c.res) v = read_array<float>(f);
    c.want.dots = read_array<int32_t>(f);
    c.want.out = read_array<float>(f);
    c.want.bits = read_array<uint64_t>(f);
    for (const char* path : {"portable", "neon"})
      for (int threads : {1, 2}) {
        failures += compare(run(c, path, threads), c.want, "case " + std::to_string(i) + " " + path + " vs reference");
        ++checks;
      }
  }
  std::fclose(f);
  Rng rng{12345};
  for (int i = 0; i < 200; ++i) {
    const Case c = random_case(rng);
    failures += compare(run(c, "neon", 1 + i % 2), run(c, "portable", 1), "random case " + std::to_string(i) +
                        " (k " + std::to_string(c.k) + ", groups " + std::to_string(c.groups) + ", cin " +
                        std::to_string(c.cin) + ", cout " + std::to_string(c.cout) + ") neon vs portable");
    ++checks;
  }
  for (int i = 0; i < 60; ++i) {
    failures += chain_check(rng, i % 2 ? "neon" : "portable", 1 + i % 4, i);
    ++checks;
  }
  std::printf("%s: %d of %d comparisons bit-exact (%d reference cases x portable, neon x 1, 2 threads; "
              "200 random convs neon vs portable; 60 random residual chains depth first on 1-4 threads vs "
              "conv by conv)\n", failures ? "FAIL" : "ok", checks - failures, checks, count);
  return failures ? 1 : 0;
}
