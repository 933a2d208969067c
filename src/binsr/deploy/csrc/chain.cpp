// Depth-first execution of a chain of same-size binary convs (an E2FIF residual body): in sweep b
// every conv of the chain computes its next row, skewed by the rows its inputs must run ahead (a
// conv's halo), so the rows a conv reads were written moments before and are still in the caches,
// and maps that only later convs of the chain read live in rings of a few rows instead of whole
// maps (32 convs x 14.7 MB at 320x180x64 would not fit the L3). With several threads the image is
// cut into horizontal parts, one per thread, each running the whole schedule on its own rows and
// rings: parts 0, 2, .. go down and parts 1, 3, .. go up, so two parts meet at each seam at the
// start or at the end of their rows, and a conv reads its neighbour's few seam rows (copied aside
// for it, with a release / acquire row count) instead of waiting at a barrier for every row of
// every conv. The same kernels run on the same inputs (a window of padded input rows instead of
// the whole padded map), so the outputs are bit-identical to running the convs one after the
// other (tests/deploy/test_chain.py). Built with no ISA flags, as conv.cpp.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>

#include "engine.h"

namespace binsr {

namespace {
using Words = std::vector<uint64_t, Aligned64<uint64_t>>;
using Floats = std::vector<float, Aligned64<float>>;

// Skewed row schedule of a part: sweep b computes the part's local row b - off[i] of step i; off[i]
// is the largest of its sources' offsets (+ its halo for the input bits), so every row a step reads
// was made earlier in the same sweep or before it. A ring of an internal output holds the rows from
// the oldest one a later step still reads to the newest one written. reach[q]: the largest halo of
// a step reading q's bits, the rows next to a seam that the neighbouring part reads.
struct Plan {
  int max_off = 0;
  std::vector<int> off, out_ring, bits_ring, reach;  // per step; ring sizes in rows
};

Plan plan(const std::vector<ChainStep>& steps, int rows) {
  const size_t n = steps.size();
  Plan p;
  p.off.assign(n, 0);
  p.reach.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const ChainStep& s = steps[i];
    if (s.src >= 0) {
      p.off[i] = std::max(p.off[i], p.off[s.src] + s.L->pad);
      p.reach[s.src] = std::max(p.reach[s.src], s.L->pad);
    }
    for (int r = 0; r < 3; ++r)
      if (s.res_src[r] >= 0) p.off[i] = std::max(p.off[i], p.off[s.res_src[r]]);
    p.max_off = std::max(p.max_off, p.off[i]);
  }
  p.out_ring.assign(n, 0);
  p.bits_ring.assign(n, 0);
  for (size_t q = 0; q < n; ++q) {
    int far_out = 0, far_bits = 0;  // the largest lag of a reader's oldest row behind q's rows
    for (size_t c = q + 1; c < n; ++c) {
      if (steps[c].src == (int)q) far_bits = std::max(far_bits, p.off[c] + steps[c].L->pad - p.off[q]);
      for (int r = 0; r < 3; ++r)
        if (steps[c].res_src[r] == (int)q) far_out = std::max(far_out, p.off[c] - p.off[q]);
    }
    if (steps[q].ring_out) p.out_ring[q] = std::min(rows, 1 + far_out);
    if (steps[q].ring_bits) p.bits_ring[q] = std::min(rows, 1 + far_bits);
  }
  return p;
}

// Rows [y0, y1) of the image, computed from y1 - 1 down to y0 when up.
struct Part {
  int y0, y1;
  bool up;
  int local(int y) const { return up ? y1 - 1 - y : y - y0; }
  int row(int s) const { return up ? y1 - 1 - s : y0 + s; }
  // the seam copy's slot of row y (its first `reach` rows, then its last `reach` rows), or -1
  int top_slot(int y, int reach) const { return y - y0 < reach ? y - y0 : -1; }
  int bottom_slot(int y, int reach) const { return y1 - 1 - y < reach ? reach + (y1 - 1 - y) : -1; }
};
}  // namespace

bool chain_supported(const ChainStep& s) {
  return !s.kern.pads_itself && !(s.L->corr && !s.kern.masks_groups) && 2 * s.L->pad == s.L->dil * (s.L->k - 1);
}

void chain_run(std::vector<ChainStep>& steps, int H, int W, int threads) {
  for (const ChainStep& s : steps)
    if (!chain_supported(s)) throw std::invalid_argument("binary conv chain: a step is not a same-size conv on windows");
  const size_t n = steps.size();
  int max_reach = 1;
  for (const ChainStep& s : steps) max_reach = std::max(max_reach, s.L->pad);
  // every part at least as tall as a halo, so a row past a seam lies in the neighbouring part
  const int np = std::max(1, std::min(threads, H / max_reach));
  std::vector<Part> parts;
  for (int k = 0; k < np; ++k) parts.push_back({(int)((size_t)H * k / np), (int)((size_t)H * (k + 1) / np), k % 2 == 1});
  const Plan p = plan(steps, (H + np - 1) / np);
  // rings, windows and seam copies per part and step, kept from call to call (a runtime runs its
  // chains again and again: fresh buffers would cost their page faults each time); one set per
  // calling thread; the workers reach them through these references (by name they would get their own)
  thread_local std::vector<Floats> out_ring_tl;
  thread_local std::vector<Words> bits_ring_tl, window_tl, seam_tl;
  std::vector<Floats>& out_ring = out_ring_tl;
  std::vector<Words>& bits_ring = bits_ring_tl;
  std::vector<Words>& window = window_tl;
  std::vector<Words>& seam = seam_tl;
  const size_t slots = (size_t)np * n;
  for (auto* v : {&bits_ring, &window, &seam}) v->resize(std::max(v->size(), slots));
  out_ring.resize(std::max(out_ring.size(), slots));
  std::vector<Job> jobs(slots);
  for (size_t i = 0; i < n; ++i) {
    const ChainStep& s = steps[i];
    const Layer& L = *s.L;
    const int Wp = W + 2 * L.pad;
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
    for (int k = 0; k < np; ++k) {
      const size_t ki = k * n + i;
      if (s.ring_out) out_ring[ki].resize((size_t)p.out_ring[i] * W * L.cout);
      if (s.ring_bits) bits_ring[ki].resize((size_t)p.bits_ring[i] * W * s.e.pwd);
      if (np > 1) seam[ki].resize((size_t)2 * p.reach[i] * W * s.e.pwd);  // one part: no seam
      window[ki].assign((size_t)(1 + 2 * L.pad) * Wp * L.ps, ~0ull);  // the +1 border stays all ones
      jobs[ki] = j;
    }
  }
  // rows of each step that each part has finished (its seam copies written before the count)
  std::unique_ptr<std::atomic<int>[]> done(new std::atomic<int>[slots]);
  for (size_t ki = 0; ki < slots; ++ki) done[ki].store(0, std::memory_order_relaxed);

  // row y (in part k) of step q's float output or bits, as stored (ring slot or whole map)
  auto out_row = [&](int k, int q, int y) -> float* {
    const ChainStep& s = steps[q];
    if (!s.ring_out) return s.e.out + (size_t)y * W * s.L->cout;
    const size_t slot = (size_t)(parts[k].local(y) + p.off[q]) % p.out_ring[q];
    return out_ring[k * n + q].data() + slot * W * s.L->cout;
  };
  auto bits_row = [&](int k, int q, int y) -> uint64_t* {
    const ChainStep& s = steps[q];
    if (!s.ring_bits) return s.e.bits + (size_t)y * W * s.e.pwd;
    const size_t slot = (size_t)(parts[k].local(y) + p.off[q]) % p.bits_ring[q];
    return bits_ring[k * n + q].data() + slot * W * s.e.pwd;
  };
  // row y of step q's bits from the neighbouring part k, once it has made it
  auto seam_row = [&](int k, int q, int y) -> const uint64_t* {
    const Part& P = parts[k];
    const int s = P.local(y);
    for (int spins = 0; done[k * n + q].load(std::memory_order_acquire) <= s; ++spins)
      if (spins < 1 << 12) cpu_relax();
      else std::this_thread::yield();  // more threads than cores: let the neighbour run
    int slot = P.top_slot(y, p.reach[q]);
    if (slot < 0) slot = P.bottom_slot(y, p.reach[q]);
    return seam[k * n + q].data() + (size_t)slot * W * steps[q].e.pwd;
  };

  auto run_part = [&](int k) {
    const Part& P = parts[k];
    const int len = P.y1 - P.y0;
    for (int b = 0; b < len + p.max_off; ++b)
      for (size_t i = 0; i < n; ++i) {
        const int s_local = b - p.off[i];
        if (s_local < 0 || s_local >= len) continue;
        const int y = P.row(s_local);
        const ChainStep& s = steps[i];
        const Layer& L = *s.L;
        const int Wp = W + 2 * L.pad;
        const size_t ki = k * n + i, words = (size_t)W * L.ps;
        for (int r = 0; r < 1 + 2 * L.pad; ++r) {  // input rows y - pad .. y + pad
          const int yy = y - L.pad + r;
          uint64_t* dst = window[ki].data() + ((size_t)r * Wp + L.pad) * L.ps;
          if (yy < 0 || yy >= H) {
            std::fill(dst, dst + words, ~0ull);
            continue;
          }
          const uint64_t* src = s.src < 0                       ? s.x + (size_t)yy * words
                                : yy >= P.y0 && yy < P.y1        ? bits_row(k, s.src, yy)
                                : seam_row(yy < P.y0 ? k - 1 : k + 1, s.src, yy);
          std::memcpy(dst, src, sizeof(uint64_t) * words);
        }
        Job& j = jobs[ki];
        j.xp = window[ki].data();
        j.e = s.e;
        if (s.ring_out) j.e.stream = false;
        if (s.e.out || s.ring_out) j.e.out = out_row(k, (int)i, y);
        if (s.e.bits || s.ring_bits) j.e.bits = bits_row(k, (int)i, y);
        if (s.e.pix) j.e.pix = s.e.pix + (size_t)y * W;
        for (int r = 0; r < 3; ++r)
          if (s.res_src[r] >= 0) j.e.res[r] = out_row(k, s.res_src[r], y);
          else if (s.e.res[r]) j.e.res[r] = s.e.res[r] + (size_t)y * W * L.cout;
        s.kern.rows(j, 0, 1);
        if (p.reach[i] > 0 && np > 1) {  // the rows a neighbour reads, copied aside
          const size_t pw = (size_t)W * s.e.pwd;
          for (int slot : {P.top_slot(y, p.reach[i]), P.bottom_slot(y, p.reach[i])})
            if (slot >= 0) std::memcpy(seam[ki].data() + slot * pw, j.e.bits, sizeof(uint64_t) * pw);
        }
        done[ki].store(s_local + 1, std::memory_order_release);
      }
  };
  parallel_range((size_t)np, np, 1, [&](size_t k0, size_t k1) {
    for (size_t k = k0; k < k1; ++k) run_part((int)k);
  });
}

}  // namespace binsr
