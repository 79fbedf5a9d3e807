#include "backend/backend.h"

#include <spdlog/spdlog.h>

#include <new>

#include "backend/cuda/cuda_backend.h"
#include "util/error.h"

namespace pensieve {

void* Backend::alloc_host(size_t bytes) const { return ::operator new(bytes, std::align_val_t(64)); }
void Backend::free_host(void* p) const { ::operator delete(p, std::align_val_t(64)); }

float* HostFloats::get(size_t n) {
  if (n > size_) {
    if (data_) backend_->free_host(data_);
    data_ = nullptr;
    size_ = 0;
    const size_t want = n + n / 4;
    data_ = static_cast<float*>(backend_->alloc_host(want * sizeof(float)));
    size_ = want;
  }
  return data_;
}

DeviceChoice parse_device(const std::string& device) {
  if (device == "cpu") return {false, 0};
  if (device == "auto") return {true, -1};
  if (device == "cuda") return {true, 0};
  if (device.rfind("cuda:", 0) == 0 && device.size() > 5 && device.size() < 9 &&
      device.find_first_not_of("0123456789", 5) == std::string::npos)
    return {true, std::stoi(device.substr(5))};
  throw Error("unknown device '" + device + "': expected auto, cpu, cuda or cuda:N");
}

namespace {
std::string gib(size_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GiB", double(b) / double(1ull << 30));
  return s;
}
}  // namespace

std::shared_ptr<Backend> make_backend(const std::string& device, const ModelConfig& cfg,
                                      size_t weight_bytes) {
  const DeviceChoice c = parse_device(device);
  if (!c.cuda) return make_cpu_backend(cfg);
  if (c.index >= 0) {
    const int n = cuda_device_count();
    if (!cuda_compiled()) return make_cuda_backend(cfg, c.index);  // throws the build's reason
    if (c.index >= n)
      throw Error("device " + device + ": " + std::to_string(n) + " CUDA device(s) visible");
    return make_cuda_backend(cfg, c.index);
  }
  // auto: the first GPU whose free memory holds the weights and a margin for the KV pool and
  // workspace; else the CPU.
  const int n = cuda_device_count();
  const size_t need = weight_bytes + weight_bytes / 8 + (size_t(1) << 30);
  for (int i = 0; i < n; ++i) {
    size_t free_b = 0, total_b = 0;
    std::string name;
    if (!cuda_device_memory(i, &free_b, &total_b, &name)) continue;
    if (free_b < need) {
      spdlog::info("device auto: cuda:{} ({}) has {} free, the model needs about {}", i, name,
                   gib(free_b), gib(need));
      continue;
    }
    try {
      auto b = make_cuda_backend(cfg, i);
      spdlog::info("device auto: cuda:{} ({}, {} free)", i, name, gib(free_b));
      return b;
    } catch (const Error& e) {
      spdlog::warn("device auto: cuda:{} failed ({}); trying the next", i, e.what());
    }
  }
  spdlog::info("device auto: {}; running on the CPU",
               !cuda_compiled() ? "built without CUDA" : n == 0 ? "no CUDA GPU visible" : "no GPU fits");
  return make_cpu_backend(cfg);
}

}  // namespace pensieve
