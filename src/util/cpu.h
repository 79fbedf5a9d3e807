// What the CPU can do, read once from CPUID, and how many physical cores it has.
#pragma once

namespace pensieve {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx_vnni = false;
  // True when the AVX2/FMA/F16C kernels may run. PENSIEVE_NO_SIMD=1 forces the scalar path.
  bool use_avx2() const { return avx2 && fma && f16c; }
};

const CpuFeatures& cpu_features();
int physical_core_count();

}  // namespace pensieve
