#include "formats/weight_store.h"

#include <cstdlib>
#include <new>

#include <sys/mman.h>

#include "util/error.h"

namespace pensieve {

AlignedBuffer::AlignedBuffer(size_t n, Pages pages) : size_(n) {
  const size_t align = pages == Pages::Huge ? size_t(2) << 20 : 64;
  const size_t rounded = (n + align - 1) / align * align;
  data_ = static_cast<uint8_t*>(std::aligned_alloc(align, rounded ? rounded : align));
  if (!data_) throw std::bad_alloc();
  if (pages == Pages::Huge) madvise(data_, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
}

AlignedBuffer::~AlignedBuffer() { std::free(data_); }

uint8_t* WeightStore::add_buffer(size_t n, AlignedBuffer::Pages pages) {
  owned_.push_back(std::make_unique<AlignedBuffer>(n, pages));
  return owned_.back()->data();
}

void WeightStore::add(Tensor t) {
  std::string name = t.name;
  tensors_[name] = std::move(t);
}

void WeightStore::add_deferred(Tensor t, std::function<void()> fill) {
  fills_.push_back(std::make_unique<TensorFill>());
  fills_.back()->run = std::move(fill);
  t.fill = fills_.back().get();
  add(std::move(t));
}

void WeightStore::ready_all() const {
  for (const auto& [name, t] : tensors_) ready(t);
}

uint8_t* WeightStore::add_owned(const std::string& name, GgmlType type,
                                std::initializer_list<int64_t> ne) {
  return add_owned(name, type, std::vector<int64_t>(ne));
}

uint8_t* WeightStore::add_owned(const std::string& name, GgmlType type,
                                const std::vector<int64_t>& ne) {
  if (ne.empty() || ne.size() > 4) throw Error(source_ + ": tensor '" + name + "': bad rank");
  Tensor t;
  t.name = name;
  t.type = type;
  t.n_dims = int(ne.size());
  for (size_t i = 0; i < ne.size(); ++i) t.ne[i] = ne[i];
  auto tr = type_traits(type);
  if (!tr || t.ne[0] % tr->block_elems != 0)
    throw Error(source_ + ": tensor '" + name + "': row of " + std::to_string(t.ne[0]) +
                " elements does not fit type " + std::string(type_name(type)));
  t.nbytes = t.row_bytes() * size_t(t.rows());
  owned_.push_back(std::make_unique<AlignedBuffer>(t.nbytes));
  uint8_t* p = owned_.back()->data();
  t.data = p;
  tensors_[name] = std::move(t);
  return p;
}

const Tensor* WeightStore::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const Tensor& WeightStore::require(const std::string& name) const {
  const Tensor* t = find(name);
  if (!t) throw Error(source_ + ": missing tensor '" + name + "'");
  return *t;
}

const Tensor& WeightStore::require(const std::string& name,
                                   std::initializer_list<int64_t> ne) const {
  const Tensor& t = require(name);
  Tensor expected;
  expected.n_dims = int(ne.size());
  int i = 0;
  for (int64_t n : ne) expected.ne[i++] = n;
  bool ok = true;
  for (int d = 0; d < 4; ++d) ok = ok && expected.ne[d] == t.ne[d];
  if (!ok)
    throw Error(source_ + ": tensor '" + name + "' has shape " + t.shape_string() + ", expected " +
                expected.shape_string());
  return t;
}

size_t WeightStore::total_bytes() const {
  size_t n = 0;
  for (const auto& [_, t] : tensors_) n += t.nbytes;
  return n;
}

}  // namespace pensieve
