// The pybind-free core of the engine: worker threads, per-thread scratch, CPU features, the kernel
// dispatch, weight packing and the padded job a kernel runs on. Built with no ISA flags: the
// kernels live in kernels_<isa>.cpp, each compiled for its own ISA and called only where
// the CPU has it.
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "engine.h"

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
    while (left_.load() != 0) cpu_relax();
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
          for (int i = 0; i < 16; ++i) cpu_relax();
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

void parallel_range(size_t n, int threads, size_t grain, const std::function<void(size_t, size_t)>& fn) {
  const int nt = (int)std::max<size_t>(1, std::min<size_t>((size_t)std::max(threads, 1), n / std::max<size_t>(grain, 1)));
  if (nt == 1) return fn(0, n);
  const std::function<void(int)> part = [&](int t) { fn(n * t / nt, n * (t + 1) / nt); };
  if (Pool::get().run(nt, part)) return;
  std::vector<std::thread> pool;
  for (int t = 1; t < nt; ++t) pool.emplace_back(part, t);
  part(0);
  for (auto& th : pool) th.join();
}

void* scratch(int slot, size_t bytes, bool zero) {
  thread_local std::vector<uint8_t, Aligned64<uint8_t>> buf[4];
  auto& b = buf[slot];
  if (b.size() < bytes) b.resize(bytes);
  if (zero) std::memset(b.data(), 0, bytes);
  return b.data();
}

#if defined(__x86_64__)
bool cpu_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}
bool cpu_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vpopcntdq");
}

bool cpu_bitalg() {
  __builtin_cpu_init();
  return cpu_avx512() && __builtin_cpu_supports("avx512bitalg");
}

// AMX-INT8: CPUID.(7,0):EDX bits 24 (AMX-TILE) and 25 (AMX-INT8), and the kernel's permission to
// use the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, Linux 5.16+), asked once per process.
bool cpu_amx() {
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
#else
bool cpu_avx2() { return false; }
bool cpu_avx512() { return false; }
bool cpu_bitalg() { return false; }
bool cpu_amx() { return false; }
#endif

Kernel select_kernel(const std::string& path, const Layer& L) {
  if (path == "portable") return {portable::rows, false, false};
#if defined(__x86_64__)
  const bool vpop = path == "avx512-vpopcnt";  // the VPOPCNTDQ kernels even where AMX is there (tests)
  if (path == "avx512" || vpop) {
    if (!cpu_avx512()) throw std::runtime_error("avx512 path requested but this CPU lacks AVX-512 VPOPCNTDQ");
    const char* env = std::getenv("BINSR_AMX");
    if (!vpop && cpu_amx() && !(env && std::string(env) == "0")) return {amx::rows, true, true};
    if (L.seg && cpu_bitalg()) return {avx512::rows_seg, false, true};
    return {avx512::rows, false, false};
  }
  if (path == "avx2") {
    if (!cpu_avx2()) throw std::runtime_error("avx2 path requested but this CPU lacks AVX2");
    return {L.seg ? avx2::rows_seg : avx2::rows, false, false};
  }
#elif defined(__aarch64__)
  if (path == "neon") return {neon::rows, false, false};
#endif
  if (path == "avx2" || path == "avx512" || path == "avx512-vpopcnt" || path == "neon")
    throw std::runtime_error(path + " path requested but this build is not for its architecture");
  throw std::invalid_argument("path must be portable, avx2, avx512 or neon");
}

PackFn select_pack() {
#if defined(__x86_64__)
  return cpu_avx512() ? avx512::pack_range : cpu_avx2() ? avx2::pack_range : portable::pack_range;
#elif defined(__aarch64__)
  return neon::pack_range;
#else
  return portable::pack_range;
#endif
}

Layer make_layer(const uint64_t* w, int cout, int cin, int k, int dil, int pad, int groups) {
  Layer L;
  L.cout = cout; L.cin = cin; L.k = k; L.dil = dil; L.pad = pad; L.groups = groups;
  if (cout < 1 || k < 1 || dil < 1 || pad < 0 || groups < 1 || cin < 1) throw std::invalid_argument("bad conv geometry");
  if (cin % groups || L.cout % groups) throw std::invalid_argument("channels do not split into groups");
  L.cpg_in = cin / groups; L.cpg_out = L.cout / groups;
  L.ps = (cin + 63) / 64; L.nob = (L.cpg_out + 7) / 8; L.taps = k * k;
  const int wdc = (L.cpg_in + 63) / 64;  // words of one output channel's weights as stored
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
  auto src = [&](int o, int ky, int kx, int word) { return w[(((size_t)o * k + ky) * k + kx) * wdc + word]; };
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

void conv_out_size(const Layer& L, int H, int W, int& Ho, int& Wo) {
  Ho = H + 2 * L.pad - L.dil * (L.k - 1);
  Wo = W + 2 * L.pad - L.dil * (L.k - 1);
}

// corr[q], q = pixel * groups + g: the set bits of padded pixel q / groups outside group g's channels
// (kernels that do not mask groups subtract them); popcnt where the CPU has it, not libgcc's loop.
#if defined(__x86_64__)
__attribute__((target_clones("popcnt", "default")))
#endif
static void group_corr(const Layer& L, const uint64_t* xp, size_t ps, int32_t* corr, size_t n) {
  for (size_t q = 0; q < n; ++q) {
    const size_t px = q / L.groups;
    const int g = (int)(q % L.groups);
    int32_t c = 0;
    for (int i = 0; i < L.wd; ++i) c += __builtin_popcountll(xp[px * ps + L.w0[g] + i] & ~L.mask[(size_t)g * L.wd + i]);
    corr[q] = c;
  }
}

void conv_run(const Layer& L, const Kernel& kern, const uint64_t* x, int N, int H, int W, const Epilogue& e0,
              int threads) {
  int Ho, Wo;
  conv_out_size(L, H, W, Ho, Wo);
  const int Hp = H + 2 * L.pad, Wp = W + 2 * L.pad;
  const size_t ps = L.ps, npix = (size_t)Ho * Wo, C = L.cout;
  const bool pads = kern.pads_itself;
  const bool copy = !pads && L.pad > 0;  // unpadded (1x1) convs read x in place
  std::vector<uint64_t> padded(copy ? (size_t)Hp * Wp * ps : 0);
  const bool need_corr = L.corr && !kern.masks_groups;
  std::vector<int32_t> corr(need_corr ? (size_t)Hp * Wp * L.groups : 0);
  for (int n = 0; n < N; ++n) {
    const uint64_t* xn = x + (size_t)n * H * W * ps;
    const uint64_t* xp = copy ? padded.data() : xn;
    if (copy) {
      std::fill(padded.begin(), padded.end(), ~0ull);
      for (int y = 0; y < H; ++y)
        std::memcpy(padded.data() + (((size_t)(y + L.pad)) * Wp + L.pad) * ps, xn + (size_t)y * W * ps,
                    sizeof(uint64_t) * W * ps);
    }
    if (need_corr) group_corr(L, xp, ps, corr.data(), corr.size());
    Job j{&L, pads ? nullptr : xp, need_corr ? corr.data() : nullptr, Wp, Ho, Wo, {}, {}, e0, xn, H, W};
    for (int t = 0; t < L.taps; ++t) {
      j.tappix.push_back((std::ptrdiff_t)(t / L.k) * L.dil * Wp + (t % L.k) * L.dil);
      j.tapoff.push_back(j.tappix.back() * (std::ptrdiff_t)ps);
    }
    if (e0.pix) j.e.pix = e0.pix + n * npix;
    if (e0.chan) j.e.chan = e0.chan + n * C;
    for (int r = 0; r < 3; ++r)
      if (e0.res[r]) j.e.res[r] = e0.res[r] + n * npix * C;
    if (e0.out) j.e.out = e0.out + n * npix * C;
    if (e0.out_int) j.e.out_int = e0.out_int + n * npix * C;
    if (e0.bits) j.e.bits = e0.bits + n * npix * e0.pwd;
    parallel_range((size_t)Ho, threads, 1, [&](size_t y0, size_t y1) { kern.rows(j, (int)y0, (int)y1); });
  }
}

}  // namespace binsr
