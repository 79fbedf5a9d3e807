// What the CPU can do, read once from CPUID, and how many physical cores it has.
#pragma once

namespace pensieve {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512_vnni = false;  // AVX-512 F, BW, VL and VNNI, with the OS saving their state
  // True when the AVX2/FMA/F16C kernels may run. PENSIEVE_NO_SIMD=1 forces the scalar path.
  bool use_avx2() const { return avx2 && fma && f16c; }
  // True when the kernels with 256-bit AVX-512 VNNI dot products may run (on top of AVX2).
  // PENSIEVE_NO_VNNI=1 keeps the AVX2 kernels.
  bool use_vnni() const { return use_avx2() && avx512_vnni; }
};

const CpuFeatures& cpu_features();
int physical_core_count();

}  // namespace pensieve
