// The weights of one loaded model by canonical (GGUF) tensor name. Tensors are views into mapped
// files or into buffers the store owns (for weights repacked or converted at load). Immutable once
// loading is done, so any number of sequences may read it at once.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/tensor.h"
#include "util/mapped_file.h"

namespace pensieve {

// 64-byte aligned heap buffer for owned tensor data.
class AlignedBuffer {
 public:
  // Huge: 2 MB aligned and advised for transparent huge pages (for buffers of many megabytes).
  enum class Pages { Normal, Huge };
  explicit AlignedBuffer(size_t n, Pages pages = Pages::Normal);
  ~AlignedBuffer();
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data() { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

class WeightStore {
 public:
  explicit WeightStore(std::string source = {}) : source_(std::move(source)) {}

  void keep_alive(std::shared_ptr<const MappedFile> file) { files_.push_back(std::move(file)); }
  void add(Tensor t);  // a view whose memory is kept alive elsewhere (e.g. by keep_alive)
  // A tensor whose data `fill` writes when first needed (ready(t)), not now: for conversions a
  // loader can leave to whoever uses the weights (which may do it in the background).
  void add_deferred(Tensor t, std::function<void()> fill);
  // Runs every deferred fill not run yet.
  void ready_all() const;
  // Allocates an owned buffer for a tensor of this type and shape, registers it and returns a
  // writable pointer to its data.
  uint8_t* add_owned(const std::string& name, GgmlType type, std::initializer_list<int64_t> ne);
  uint8_t* add_owned(const std::string& name, GgmlType type, const std::vector<int64_t>& ne);
  // An owned buffer of n bytes for the caller to place tensors in (registered with add()).
  uint8_t* add_buffer(size_t n, AlignedBuffer::Pages pages = AlignedBuffer::Pages::Normal);

  const Tensor* find(const std::string& name) const;
  // Error "<source>: missing tensor '<name>'" when absent.
  const Tensor& require(const std::string& name) const;
  // Also checks the shape (GGUF order); Error names source, tensor, expected and actual shape.
  const Tensor& require(const std::string& name, std::initializer_list<int64_t> ne) const;

  const std::string& source() const { return source_; }
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  size_t total_bytes() const;

 private:
  std::string source_;
  std::map<std::string, Tensor> tensors_;
  std::vector<std::shared_ptr<const MappedFile>> files_;
  std::vector<std::unique_ptr<AlignedBuffer>> owned_;
  std::vector<std::unique_ptr<TensorFill>> fills_;
};

}  // namespace pensieve
