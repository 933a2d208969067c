// AMX-INT8 kernel of the "avx512" path on CPUs with AMX (built with -mamx-tile -mamx-int8 and the
// AVX-512 flags of its epilogue): dot = 2 * sum(a * s) - sum(s) with a in {0, 1} (input bits as
// bytes) and s in {-1, 0, +1} (signed weights, 0 outside the group / past cout).
#if defined(__x86_64__)
#if !defined(__AMX_INT8__) || !defined(__AVX512BW__)
#error "kernels_amx.cpp needs -mamx-tile -mamx-int8 -mavx512f -mavx512bw (setup.py passes them)"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine.h"

namespace binsr::amx {
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
__attribute__((always_inline)) static inline void epi16(
    const Job& j, size_t pi, int np, int o0, const int32_t* acc, const int32_t* bsum) {
  const Epilogue& e = j.e;
  const int C = j.L->cout, no = std::min(16, C - o0);
  const __mmask16 m = (__mmask16)((1u << no) - 1);
  const __m512i bs = _mm512_loadu_si512((const void*)bsum);
  int32_t* const oi = e.out_int;
  float* const of = e.out;
  const float* const pix = e.pix;
  const float* const res[3] = {e.res[0], e.res[1], e.res[2]};
  const bool fl = of || e.bits, fma = e.scale && e.bias && !pix && !e.chan, act = e.act_slope, af = e.act_first;
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
  auto rprelu16 = [&](__m512 v) {  // torch's PReLU: u > 0 ? u : slope * u (-0 and NaN included)
    const __m512 u = _mm512_sub_round_ps(v, ash, RN);
    const __mmask16 le = _mm512_cmp_ps_mask(u, zero, _CMP_NGT_UQ);
    return _mm512_add_round_ps(_mm512_mask_mul_round_ps(u, le, u, asl, RN), abi, RN);
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
    if (e.chan) {
      const __m512 ch = _mm512_maskz_loadu_ps(m, e.chan + o0);
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) v[p] = _mm512_mul_round_ps(v[p], ch, RN);
    }
    if (bi_on)
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) v[p] = _mm512_add_round_ps(v[p], bi, RN);
  }
  if (e.gate_bias) {
    const __m512 gb = _mm512_maskz_loadu_ps(m, e.gate_bias + o0);
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p)
      v[p] = _mm512_add_round_ps(v[p], _mm512_mul_round_ps(_mm512_set1_ps(p < np ? pix[pi + p] : 0.f), gb, RN), RN);
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

static inline void epi_piece(const Job& j, const Pending& u, int i,
                                                                          const int32_t (*cb)[256]) {
  epi16(j, u.pi[i], u.np[i], u.o0[i], cb[u.c[i]], j.L->bsum.data() + u.o0[i]);
}

// One tap of a (32 pixels, 2 blocks) unit: C tiles 0..3 (pixels 0-15 / 16-31 x block 0 / 1) +=
// A (tile 4 / 5: the tap's expanded input bytes) . B (tile 6 / 7: the blocks' +-1 weights), over
// the ps 64-byte words of a pixel. ``two``: a second block; ``twop``: a second 16-pixel half.
__attribute__((always_inline)) static inline void tap_tiles(
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

void rows(const Job& j, int y0, int y1) {
  const Layer& L = *j.L;
  const int ps = L.ps, R = (L.k - 1) * L.dil + 1, nb = L.nb16, T = L.taps;
  const size_t pstride = (size_t)ps * 64;              // bytes per expanded pixel
  const size_t rowbytes = ((size_t)j.Wp + 32) * pstride;  // + slack: whole 32-pixel tiles past the row end
  const size_t tile_step = (size_t)T * ps * 1024;      // bytes of one block's B tiles
  uint8_t* rb = (uint8_t*)scratch(0, R * rowbytes);
  int* slot_row = (int*)scratch(1, sizeof(int) * R);
  std::fill_n(slot_row, R, -1);
  const uint8_t** tapsrc = (const uint8_t**)scratch(2, sizeof(const uint8_t*) * T);
  alignas(64) int32_t cb[4][256];
  Pending pend;
  // all weights of a pixel window past ~L1: the kernel-row-chunked order
  const bool chunked = (size_t)nb * T * ps * 1024 > 40 * 1024 && L.k > 1;
  int32_t* cbuf = chunked ? (int32_t*)scratch(3, sizeof(int32_t) * ((j.Wo + 31) / 32) * 1024) : nullptr;
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
            int32_t* cs = cbuf + (size_t)(x0 / 32) * 1024;
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
}  // namespace binsr::amx
#endif
