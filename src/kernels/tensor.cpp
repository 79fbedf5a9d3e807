#include "kernels/tensor.h"

namespace pensieve {

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (int i = 0; i < n_dims; ++i) {
    if (i) s += ", ";
    s += std::to_string(ne[i]);
  }
  return s + "]";
}

const Tensor& ready(const Tensor& t) {
  if (t.fill) std::call_once(t.fill->once, t.fill->run);
  return t;
}

}  // namespace pensieve
