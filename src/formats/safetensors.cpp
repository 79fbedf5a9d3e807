#include "formats/safetensors.h"

#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "formats/hf_config.h"
#include "util/error.h"

namespace pensieve {

namespace fs = std::filesystem;
using nlohmann::json;

size_t SafetensorsTensor::elements() const {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  return n;
}

size_t safetensors_dtype_size(const std::string& t) {
  if (t == "F64" || t == "I64" || t == "U64") return 8;
  if (t == "F32" || t == "I32" || t == "U32") return 4;
  if (t == "F16" || t == "BF16" || t == "I16" || t == "U16") return 2;
  if (t == "I8" || t == "U8" || t == "BOOL" || t == "F8_E4M3" || t == "F8_E5M2") return 1;
  return 0;
}

namespace {
constexpr uint64_t kMaxHeader = 100u << 20;  // the format's own limit is 100 MB

SafetensorsTensor parse_entry(const std::string& path, const std::string& name, const json& e,
                              const uint8_t* data, uint64_t data_size) {
  auto bad = [&](const std::string& what) -> Error {
    return Error(path + ": tensor '" + name + "': " + what);
  };
  if (!e.is_object()) throw bad("header entry is not an object");
  SafetensorsTensor t;
  t.name = name;
  if (!e.contains("dtype") || !e["dtype"].is_string()) throw bad("missing dtype");
  t.dtype = e["dtype"].get<std::string>();
  const size_t esize = safetensors_dtype_size(t.dtype);
  if (esize == 0) throw bad("unknown dtype '" + t.dtype + "'");
  if (!e.contains("shape") || !e["shape"].is_array() || e["shape"].size() > 8)
    throw bad("missing or bad shape");
  uint64_t elements = 1;
  for (const auto& d : e["shape"]) {
    if (!d.is_number_unsigned()) throw bad("shape must hold non-negative integers");
    const uint64_t n = d.get<uint64_t>();
    if (n > uint64_t(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(elements, n, &elements))
      throw bad("element count overflows");
    t.shape.push_back(int64_t(n));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(elements, uint64_t(esize), &nbytes)) throw bad("byte size overflows");
  const json& off = e.contains("data_offsets") ? e["data_offsets"] : json();
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned())
    throw bad("missing or bad data_offsets");
  const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  if (begin > end || end > data_size)
    throw bad("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
              "] lie outside the " + std::to_string(data_size) + " data bytes");
  if (end - begin != nbytes)
    throw bad("data_offsets span " + std::to_string(end - begin) + " bytes, shape and dtype need " +
              std::to_string(nbytes));
  t.data = data + begin;
  t.nbytes = size_t(nbytes);
  return t;
}
}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.file_ = MappedFile::open(path);
  const uint8_t* p = f.file_->data();
  const uint64_t size = f.file_->size();
  if (size < 8) throw Error(path + ": not a safetensors file (too short)");
  uint64_t header_len;
  std::memcpy(&header_len, p, 8);
  if (header_len > kMaxHeader || header_len > size - 8)
    throw Error(path + ": safetensors header length " + std::to_string(header_len) +
                " does not fit in the file of " + std::to_string(size) + " bytes");
  json header;
  try {
    header = json::parse(p + 8, p + 8 + header_len);
  } catch (const json::exception& e) {
    throw Error(path + ": safetensors header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) throw Error(path + ": safetensors header is not a JSON object");
  const uint8_t* data = p + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    f.tensors_.push_back(parse_entry(path, it.key(), it.value(), data, data_size));
  }
  return f;
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<SafetensorsFile> open_safetensors_folder(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::vector<SafetensorsFile> files;
  if (fs::exists(single)) {
    files.push_back(SafetensorsFile::open(single.string()));
    return files;
  }
  if (!fs::exists(index))
    throw Error(dir + ": no model.safetensors or model.safetensors.index.json");
  const json j = read_json_file(index.string());
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw Error(index.string() + ": missing weight_map");
  std::set<std::string> shards;
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string()) throw Error(index.string() + ": weight_map['" + name + "'] is not a file name");
    const std::string s = file.get<std::string>();
    if (s.empty() || s.find('/') != std::string::npos || s == "." || s == "..")
      throw Error(index.string() + ": bad shard file name '" + s + "'");
    shards.insert(s);
  }
  for (const auto& s : shards) files.push_back(SafetensorsFile::open((fs::path(dir) / s).string()));
  return files;
}

}  // namespace pensieve

namespace pensieve {

void add_safetensors_weight(const SafetensorsFile& file, const SafetensorsTensor& t,
                            const std::string& canonical, WeightStore& w) {
  GgmlType type;
  if (t.dtype == "F32") type = GgmlType::F32;
  else if (t.dtype == "F16") type = GgmlType::F16;
  else if (t.dtype == "BF16") type = GgmlType::BF16;
  else
    throw Error(file.path() + ": tensor '" + t.name + "' has dtype " + t.dtype +
                " (supported: F32, F16, BF16)");
  if (t.shape.empty() || t.shape.size() > 4)
    throw Error(file.path() + ": tensor '" + t.name + "' has rank " +
                std::to_string(t.shape.size()) + " (expected 1 to 4)");
  std::vector<int64_t> ne(t.shape.rbegin(), t.shape.rend());
  for (int64_t n : ne)
    if (n == 0) throw Error(file.path() + ": tensor '" + t.name + "' is empty");
  const size_t esize = safetensors_dtype_size(t.dtype);
  if (reinterpret_cast<uintptr_t>(t.data) % esize != 0) {
    uint8_t* dst = w.add_owned(canonical, type, ne);
    std::memcpy(dst, t.data, t.nbytes);
    return;
  }
  Tensor out;
  out.name = canonical;
  out.type = type;
  out.n_dims = int(ne.size());
  for (size_t i = 0; i < ne.size(); ++i) out.ne[i] = ne[i];
  out.data = t.data;
  out.nbytes = t.nbytes;
  w.keep_alive(file.mapping());
  w.add(std::move(out));
}

}  // namespace pensieve
