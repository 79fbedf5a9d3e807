// GGUF v2/v3 reader (tensors used in place from the mmap) and a streaming writer.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "kernels/tensor.h"
#include "util/mapped_file.h"

namespace pensieve {

enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

struct GgufValue;
struct GgufArray {
  GgufType elem_type = GgufType::UINT8;
  std::vector<GgufValue> items;
};

// One metadata value. Integers of every width are held as int64/uint64, floats as double; `type`
// keeps the on-disk type so a round trip writes the same bytes.
struct GgufValue {
  GgufType type = GgufType::UINT8;
  std::variant<int64_t, uint64_t, double, bool, std::string, GgufArray> v;

  bool is_int() const;
  bool is_float() const;
  int64_t as_int() const;       // throws Error unless an integer or bool
  double as_float() const;      // throws Error unless a number
  bool as_bool() const;         // throws Error unless bool or integer
  const std::string& as_string() const;
  const GgufArray& as_array() const;
  // Typed views of arrays; throw Error naming the element type when it does not fit.
  std::vector<std::string> as_string_array() const;
  std::vector<float> as_float_array() const;
  std::vector<int64_t> as_int_array() const;

  static GgufValue of(int64_t x, GgufType t = GgufType::INT32);
  static GgufValue of(uint64_t x, GgufType t = GgufType::UINT32);
  static GgufValue of(double x, GgufType t = GgufType::FLOAT32);
  static GgufValue of(bool x);
  static GgufValue of(std::string x);
  static GgufValue of(std::vector<std::string> xs);
  static GgufValue of(const std::vector<float>& xs);
  static GgufValue of(const std::vector<int32_t>& xs);
};

class GgufFile {
 public:
  // Parses the header, metadata and tensor table and checks every tensor lies inside the file.
  // Every failure is an Error that names the path (and the key or tensor involved).
  static GgufFile open(const std::string& path);

  uint32_t version() const { return version_; }
  const std::string& path() const { return path_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<Tensor>& tensors() const { return tensors_; }
  const std::shared_ptr<const MappedFile>& mapping() const { return file_; }

  const GgufValue* find(const std::string& key) const;
  const Tensor* find_tensor(const std::string& name) const;
  // Typed getters: the default when the key is absent, an Error naming the key on a type mismatch.
  std::string get_string(const std::string& key, const std::string& def = "") const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key, double def) const;
  bool get_bool(const std::string& key, bool def) const;

 private:
  std::string path_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<Tensor> tensors_;
  std::shared_ptr<const MappedFile> file_;
};

// Writes a GGUF v3 file: metadata and tensor infos first, then tensor data streamed one tensor at a
// time, so that converting a large model never holds it in memory. Alignment 32 (general.alignment).
class GgufWriter {
 public:
  explicit GgufWriter(std::string path);
  void set(const std::string& key, GgufValue value);  // insertion order is kept
  // Declares a tensor: ne in GGUF order, data supplied later by write_tensor_data in the same order.
  void add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne);
  void write_header();                                        // after all set/add_tensor
  void write_tensor_data(const void* data, size_t nbytes);    // once per tensor, in order
  // The same in pieces: bytes go to the current tensor, which is complete (and padded) once it
  // has all its bytes; lets a converter stream a large tensor a slice of rows at a time.
  void append_tensor_data(const void* data, size_t nbytes);
  void finish();                                              // flush and close; throws on I/O error
  ~GgufWriter();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pensieve
