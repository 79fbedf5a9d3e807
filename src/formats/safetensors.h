// safetensors files (a JSON header followed by raw little-endian tensor bytes), read by mmap with
// every offset and size checked, and Hugging Face folders of one or several such shards.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "util/mapped_file.h"

namespace pensieve {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;           // "F32", "F16", "BF16", "U32", ...
  std::vector<int64_t> shape;  // PyTorch order (outermost first)
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  size_t elements() const;
};

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);
  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::shared_ptr<const MappedFile>& mapping() const { return file_; }
  const SafetensorsTensor* find(const std::string& name) const;

 private:
  std::string path_;
  std::vector<SafetensorsTensor> tensors_;
  std::shared_ptr<const MappedFile> file_;
};

// Bytes per element of a safetensors dtype; 0 when unknown.
size_t safetensors_dtype_size(const std::string& dtype);

// The shards of a folder: model.safetensors, or every file that model.safetensors.index.json
// names. Error naming the folder when neither exists.
std::vector<SafetensorsFile> open_safetensors_folder(const std::string& dir);

}  // namespace pensieve

#include "formats/weight_store.h"

namespace pensieve {

// Registers a float (F32/F16/BF16) safetensors tensor in `w` under `canonical` with GGUF dim order.
// Used in place from the mmap when its address suits its element size, else copied; any other
// dtype is an Error naming the file and tensor.
void add_safetensors_weight(const SafetensorsFile& file, const SafetensorsTensor& t,
                            const std::string& canonical, WeightStore& w);

}  // namespace pensieve
