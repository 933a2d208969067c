// Depth-first execution of a chain of same-size binary convs (an E2FIF residual body): in sweep b
// every conv of the chain computes its next rows (one per thread), skewed by the rows its inputs
// must run ahead (a conv's halo), so the rows a conv reads were written moments before and are
// still in the caches, and maps that only later convs of the chain read live in rings of a few
// rows instead of whole maps (32 convs x 14.7 MB at 320x180x64 would not fit the L3). The same
// kernels run on the same inputs (a window of padded input rows instead of the whole padded map),
// so the outputs are bit-identical to running the convs one after the other
// (tests/deploy/test_chain.py). Built with no ISA flags, as conv.cpp.
#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "engine.h"

namespace binsr {

namespace {
using Words = std::vector<uint64_t, Aligned64<uint64_t>>;
using Floats = std::vector<float, Aligned64<float>>;

// Skewed row schedule: step i's sweep b computes its output rows [b * band - off[i], (b + 1) * band - off[i]),
// clipped to the map; off[i] is the largest of its sources' offsets (+ its halo for the input bits), so
// every row a step reads was made earlier in the same sweep or before it. A ring of an internal output
// holds the rows from the oldest one a later step still reads to the newest one written.
struct Plan {
  int band = 1, sweeps = 0;
  std::vector<int> off, out_ring, bits_ring;  // per step; ring sizes in rows (0: a whole map)
};

Plan plan(const std::vector<ChainStep>& steps, int H, int band) {
  const size_t n = steps.size();
  Plan p;
  p.band = band;
  p.off.assign(n, 0);
  int max_off = 0;
  for (size_t i = 0; i < n; ++i) {
    const ChainStep& s = steps[i];
    if (s.src >= 0) p.off[i] = std::max(p.off[i], p.off[s.src] + s.L->pad);
    for (int r = 0; r < 3; ++r)
      if (s.res_src[r] >= 0) p.off[i] = std::max(p.off[i], p.off[s.res_src[r]]);
    max_off = std::max(max_off, p.off[i]);
  }
  p.sweeps = (H + max_off + band - 1) / band;
  p.out_ring.assign(n, 0);
  p.bits_ring.assign(n, 0);
  for (size_t q = 0; q < n; ++q) {
    int far_out = 0, far_bits = 0;  // the largest lag of a reader's oldest row behind q's rows
    for (size_t c = q + 1; c < n; ++c) {
      if (steps[c].src == (int)q) far_bits = std::max(far_bits, p.off[c] + steps[c].L->pad - p.off[q]);
      for (int r = 0; r < 3; ++r)
        if (steps[c].res_src[r] == (int)q) far_out = std::max(far_out, p.off[c] - p.off[q]);
    }
    if (steps[q].ring_out) p.out_ring[q] = std::min(H, band + far_out);
    if (steps[q].ring_bits) p.bits_ring[q] = std::min(H, band + far_bits);
  }
  return p;
}
}  // namespace

bool chain_supported(const ChainStep& s) {
  return !s.kern.pads_itself && !(s.L->corr && !s.kern.masks_groups) && 2 * s.L->pad == s.L->dil * (s.L->k - 1);
}

void chain_run(std::vector<ChainStep>& steps, int H, int W, int threads) {
  for (const ChainStep& s : steps)
    if (!chain_supported(s)) throw std::invalid_argument("binary conv chain: a step is not a same-size conv on windows");
  const int nt = std::max(1, threads);
  const Plan p = plan(steps, H, nt);  // a sweep gives each thread one row of each step
  const size_t n = steps.size();
  // rings and windows kept from call to call (a runtime runs its chains again and again: fresh
  // buffers would cost their page faults each time); one set per calling thread
  thread_local std::vector<Floats> out_ring;
  thread_local std::vector<Words> bits_ring, window;
  out_ring.resize(std::max(out_ring.size(), n));
  bits_ring.resize(std::max(bits_ring.size(), n));
  window.resize(std::max(window.size(), n));
  std::vector<std::vector<Job>> jobs(n);  // per step, one job per thread (its row's pointers)
  for (size_t i = 0; i < n; ++i) {
    ChainStep& s = steps[i];
    const Layer& L = *s.L;
    if (s.ring_out) {
      out_ring[i].resize((size_t)p.out_ring[i] * W * L.cout);
      s.e.out = out_ring[i].data();
      s.e.stream = false;
    }
    if (s.ring_bits) {
      bits_ring[i].resize((size_t)p.bits_ring[i] * W * s.e.pwd);
      s.e.bits = bits_ring[i].data();
    }
    const int Wp = W + 2 * L.pad;
    window[i].assign((size_t)(p.band + 2 * L.pad) * Wp * L.ps, ~0ull);  // the +1 border stays all ones
    Job j;
    j.L = &L;
    j.corr = nullptr;
    j.Wp = Wp;
    j.Ho = 1;
    j.Wo = W;
    for (int t = 0; t < L.taps; ++t) {
      j.tappix.push_back((std::ptrdiff_t)(t / L.k) * L.dil * Wp + (t % L.k) * L.dil);
      j.tapoff.push_back(j.tappix.back() * (std::ptrdiff_t)L.ps);
    }
    jobs[i].assign(nt, j);
  }
  for (ChainStep& s : steps)  // residuals from rings: their bases exist now
    for (int r = 0; r < 3; ++r)
      if (s.res_src[r] >= 0) s.e.res[r] = steps[s.res_src[r]].e.out;
  // row y of step q's float output or bits, as stored (ring slot or whole map)
  auto row = [&](int q, int y, bool bits) -> size_t {
    const int ring = bits ? (steps[q].ring_bits ? p.bits_ring[q] : 0) : (steps[q].ring_out ? p.out_ring[q] : 0);
    return ring ? (size_t)((y + p.off[q]) % ring) : (size_t)y;
  };
  for (int b = 0; b < p.sweeps; ++b)
    for (size_t i = 0; i < n; ++i) {
      const ChainStep& s = steps[i];
      const Layer& L = *s.L;
      const int y0 = std::max(0, b * p.band - p.off[i]), y1 = std::min(H, (b + 1) * p.band - p.off[i]);
      if (y0 >= y1) continue;
      const int Wp = W + 2 * L.pad;
      for (int r = 0; r < y1 - y0 + 2 * L.pad; ++r) {  // input rows y0 - pad .. y1 + pad - 1
        const int y = y0 - L.pad + r;
        uint64_t* dst = window[i].data() + ((size_t)r * Wp + L.pad) * L.ps;
        if (y < 0 || y >= H) { std::fill(dst, dst + (size_t)W * L.ps, ~0ull); continue; }
        const uint64_t* src = s.src < 0 ? s.x + (size_t)y * W * L.ps : steps[s.src].e.bits + row(s.src, y, true) * W * L.ps;
        std::memcpy(dst, src, sizeof(uint64_t) * (size_t)W * L.ps);
      }
      const size_t C = L.cout;
      const uint64_t* win = window[i].data();  // thread_local: the workers' own would be empty
      auto one_row = [&](size_t t0, size_t t1) {
        for (size_t t = t0; t < t1; ++t) {
          const int y = y0 + (int)t;
          Job& j = jobs[i][t];
          j.xp = win + t * Wp * L.ps;
          j.e = s.e;
          if (s.e.out) j.e.out = s.e.out + (s.ring_out ? row((int)i, y, false) : (size_t)y) * W * C;
          if (s.e.bits) j.e.bits = s.e.bits + (s.ring_bits ? row((int)i, y, true) : (size_t)y) * W * s.e.pwd;
          if (s.e.pix) j.e.pix = s.e.pix + (size_t)y * W;
          for (int r = 0; r < 3; ++r)
            if (s.e.res[r]) j.e.res[r] = s.e.res[r] + (s.res_src[r] >= 0 ? row(s.res_src[r], y, false) : (size_t)y) * W * C;
          s.kern.rows(j, 0, 1);
        }
      };
      parallel_range((size_t)(y1 - y0), nt, 1, one_row);
    }
}

}  // namespace binsr
