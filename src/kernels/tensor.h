// A non-owning view of a weight tensor: type, shape and a pointer into a mapped file or an owned
// buffer. Shapes use the GGUF order: ne[0] is the innermost (contiguous) dimension, so a linear
// layer y = W x with W of PyTorch shape [out, in] has ne = {in, out} and each output row is one
// contiguous run of blocks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "kernels/ggml_type.h"

namespace pensieve {

// Work that writes a tensor's data when it is first needed: a conversion left out of the load (see
// WeightStore::add_deferred). Until it has run, the data is not the tensor's.
struct TensorFill {
  mutable std::once_flag once;
  std::function<void()> run;
};

struct Tensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};
  const void* data = nullptr;
  size_t nbytes = 0;
  const TensorFill* fill = nullptr;  // set when data is written on first need: read it via ready()

  int64_t cols() const { return ne[0]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }
  int64_t elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  size_t row_bytes() const { return row_size(type, ne[0]); }
  const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + size_t(r) * row_bytes(); }
  std::string shape_string() const;  // "[4096, 32064]"
};

// t, with its data written: runs its fill once (another thread asking meanwhile waits for it); a
// no-op for tensors that have none.
const Tensor& ready(const Tensor& t);

}  // namespace pensieve
