// The VPOPCNTDQ kernel's bound on this CPU: a register-only loop of xor + vpopcntq + add (the
// kernel's inner step, 8 independent accumulators), in cycles per 512 bits, zmm vs ymm.
//   g++ -O2 benchmarks/popcnt_bound.cpp -o /tmp/popcnt_bound && /tmp/popcnt_bound
// The cycle count assumes 2.6 GHz (the nominal clock of the machine it was measured on).
#include <immintrin.h>
#include <chrono>
#include <cstdio>
__attribute__((target("avx512f,avx512vpopcntdq,avx512vl"))) double zmm(long n){
  __m512i a[8],w[8],acc[8];
  for(int i=0;i<8;i++){a[i]=_mm512_set1_epi64(i*7+1);w[i]=_mm512_set1_epi64(i*13+5);acc[i]=_mm512_setzero_si512();}
  auto t0=std::chrono::steady_clock::now();
  for(long k=0;k<n;k++){
    #pragma GCC unroll 8
    for(int i=0;i<8;i++){ acc[i]=_mm512_add_epi64(acc[i],_mm512_popcnt_epi64(_mm512_xor_si512(a[i],w[(i+k)&7]))); }
    asm volatile("" : "+v"(w[0]),"+v"(w[1]),"+v"(w[2]),"+v"(w[3]));
  }
  double s=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
  long long r=0; for(int i=0;i<8;i++) r+=_mm512_reduce_add_epi64(acc[i]); if(r==42) printf("x");
  return s/(n*8.0)*2.6e9; // cycles per 512-bit popcnt
}
__attribute__((target("avx512f,avx512vpopcntdq,avx512vl"))) double ymm(long n){
  __m256i a[8],w[8],acc[8];
  for(int i=0;i<8;i++){a[i]=_mm256_set1_epi64x(i*7+1);w[i]=_mm256_set1_epi64x(i*13+5);acc[i]=_mm256_setzero_si256();}
  auto t0=std::chrono::steady_clock::now();
  for(long k=0;k<n;k++){
    #pragma GCC unroll 8
    for(int i=0;i<8;i++){ acc[i]=_mm256_add_epi64(acc[i],_mm256_popcnt_epi64(_mm256_xor_si256(a[i],w[(i+k)&7]))); }
    asm volatile("" : "+v"(w[0]),"+v"(w[1]),"+v"(w[2]),"+v"(w[3]));
  }
  double s=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
  long long r=0; alignas(32) long long t[4]; for(int i=0;i<8;i++){_mm256_store_si256((__m256i*)t,acc[i]); r+=t[0]+t[1]+t[2]+t[3];} if(r==42) printf("x");
  return 2*s/(n*8.0)*2.6e9; // cycles per 512 bits (two ymm)
}
int main(){ for(int r=0;r<3;r++) printf("zmm %.2f  ymm %.2f cycles per 512 bits\n", zmm(20000000), ymm(20000000)); }
