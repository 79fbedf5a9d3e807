// The CUDA entry points of a build without the CUDA toolkit (or with -DPENSIEVE_CUDA=OFF).
#include "backend/cuda/cuda_backend.h"
#include "util/error.h"

namespace pensieve {

bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }
bool cuda_device_memory(int, size_t*, size_t*, std::string*) { return false; }
double cuda_copy_bandwidth(int, size_t) { return 0.0; }
std::shared_ptr<Backend> make_cuda_backend(const ModelConfig&, int) {
  throw Error("this build of pensieve has no CUDA backend (built without the CUDA toolkit or with "
              "-DPENSIEVE_CUDA=OFF)");
}

}  // namespace pensieve
