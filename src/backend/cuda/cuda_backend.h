// The CUDA backend's entry points. Built from cuda_backend.cu when CMake finds the CUDA toolkit
// (PENSIEVE_CUDA); otherwise cuda_stub.cpp answers "no GPU".
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "backend/backend.h"

namespace pensieve {

bool cuda_compiled();
// Visible CUDA devices (0 without the toolkit, a driver or a GPU); never throws.
int cuda_device_count();
// Free and total memory of device `index`, and its name; false when it cannot be read.
bool cuda_device_memory(int index, size_t* free_bytes, size_t* total_bytes, std::string* name);
std::shared_ptr<Backend> make_cuda_backend(const ModelConfig& cfg, int index);
// Median device-to-device copy rate of `bytes` on device `index`, bytes read plus written per
// second (0 without CUDA).
double cuda_copy_bandwidth(int index, size_t bytes);

}  // namespace pensieve
