// GGUF reader. The file is untrusted: every count, length, shape and offset is checked against the
// bytes that are really there before it is used, and every failure names the file and the key or
// tensor being read.
#include "formats/gguf.h"

#include <cstring>
#include <limits>
#include <unordered_set>

#include "util/error.h"

namespace pensieve {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian uint32
constexpr int kMaxArrayDepth = 8;             // nested arrays deeper than this are refused

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::UINT8: return "uint8";
    case GgufType::INT8: return "int8";
    case GgufType::UINT16: return "uint16";
    case GgufType::INT16: return "int16";
    case GgufType::UINT32: return "uint32";
    case GgufType::INT32: return "int32";
    case GgufType::FLOAT32: return "float32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::UINT64: return "uint64";
    case GgufType::INT64: return "int64";
    case GgufType::FLOAT64: return "float64";
  }
  return "unknown";
}

// Smallest number of bytes one value of this type occupies on disk: bounds a declared count by
// the bytes left before anything is allocated for it.
size_t min_encoded_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    case GgufType::STRING: return 8;
    case GgufType::ARRAY: return 12;
  }
  return 1;
}

bool valid_type(uint32_t t) { return t <= uint32_t(GgufType::FLOAT64); }

// A bounds-checked cursor over the mapped bytes.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path_ + ": " + what + " (at byte " + std::to_string(pos_) + " of " +
                std::to_string(size_) + ")");
  }

  template <typename T>
  T read(const char* what) {
    if (left() < sizeof(T)) fail(std::string("truncated file while reading ") + what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what.c_str());
    if (n > left())
      fail(what + ": string length " + std::to_string(n) + " runs past the end of the file");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(n));
    pos_ += size_t(n);
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
};

GgufValue read_value(Cursor& c, GgufType type, const std::string& key, int depth);

GgufArray read_array(Cursor& c, const std::string& key, int depth) {
  if (depth >= kMaxArrayDepth)
    c.fail("key '" + key + "': arrays nested deeper than " + std::to_string(kMaxArrayDepth));
  const uint32_t et = c.read<uint32_t>("array element type");
  if (!valid_type(et)) c.fail("key '" + key + "': unknown array element type " + std::to_string(et));
  const uint64_t n = c.read<uint64_t>("array length");
  const GgufType elem = GgufType(et);
  if (n > c.left() / min_encoded_size(elem))
    c.fail("key '" + key + "': array of " + std::to_string(n) + " " + gguf_type_name(elem) +
           " values does not fit in the file");
  GgufArray arr;
  arr.elem_type = elem;
  arr.items.reserve(size_t(n));
  for (uint64_t i = 0; i < n; ++i) arr.items.push_back(read_value(c, elem, key, depth + 1));
  return arr;
}

GgufValue read_value(Cursor& c, GgufType type, const std::string& key, int depth) {
  GgufValue v;
  v.type = type;
  const std::string what = "value of key '" + key + "'";
  switch (type) {
    case GgufType::UINT8: v.v = uint64_t(c.read<uint8_t>(what.c_str())); break;
    case GgufType::INT8: v.v = int64_t(c.read<int8_t>(what.c_str())); break;
    case GgufType::UINT16: v.v = uint64_t(c.read<uint16_t>(what.c_str())); break;
    case GgufType::INT16: v.v = int64_t(c.read<int16_t>(what.c_str())); break;
    case GgufType::UINT32: v.v = uint64_t(c.read<uint32_t>(what.c_str())); break;
    case GgufType::INT32: v.v = int64_t(c.read<int32_t>(what.c_str())); break;
    case GgufType::UINT64: v.v = c.read<uint64_t>(what.c_str()); break;
    case GgufType::INT64: v.v = c.read<int64_t>(what.c_str()); break;
    case GgufType::FLOAT32: v.v = double(c.read<float>(what.c_str())); break;
    case GgufType::FLOAT64: v.v = c.read<double>(what.c_str()); break;
    case GgufType::BOOL: {
      const uint8_t b = c.read<uint8_t>(what.c_str());
      if (b > 1) c.fail("key '" + key + "': bool value " + std::to_string(b) + " is not 0 or 1");
      v.v = b != 0;
      break;
    }
    case GgufType::STRING: v.v = c.read_string(what); break;
    case GgufType::ARRAY: v.v = read_array(c, key, depth); break;
  }
  return v;
}

// Reads one tensor info and checks everything about it that does not need the data offset base.
Tensor read_tensor_info(Cursor& c, uint64_t* offset, size_t index) {
  Tensor t;
  t.name = c.read_string("name of tensor " + std::to_string(index));
  const std::string who = "tensor '" + t.name + "'";
  const uint32_t n_dims = c.read<uint32_t>("tensor rank");
  if (n_dims < 1 || n_dims > 4)
    c.fail(who + ": rank " + std::to_string(n_dims) + " (expected 1 to 4)");
  t.n_dims = int(n_dims);
  int64_t elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t ne = c.read<uint64_t>("tensor dimension");
    if (ne == 0 || ne > uint64_t(std::numeric_limits<int64_t>::max()))
      c.fail(who + ": dimension " + std::to_string(d) + " is " + std::to_string(ne));
    t.ne[d] = int64_t(ne);
    if (__builtin_mul_overflow(elements, t.ne[d], &elements))
      c.fail(who + ": element count overflows (shape dimension " + std::to_string(d) + ")");
  }
  const uint32_t type_id = c.read<uint32_t>("tensor type");
  auto traits = type_traits(GgmlType(type_id));
  if (!traits || GgmlType(type_id) == GgmlType::Q8_A ||
      GgmlType(type_id) == GgmlType::Q4_A)
    c.fail(who + ": unknown or unsupported tensor type id " + std::to_string(type_id));
  t.type = GgmlType(type_id);
  if (t.ne[0] % traits->block_elems != 0)
    c.fail(who + ": row of " + std::to_string(t.ne[0]) + " elements is not a multiple of the " +
           std::string(traits->name) + " block size " + std::to_string(traits->block_elems));
  const uint64_t blocks = uint64_t(elements) / uint64_t(traits->block_elems);
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(blocks, uint64_t(traits->block_bytes), &nbytes) ||
      nbytes > uint64_t(std::numeric_limits<size_t>::max()))
    c.fail(who + ": data size overflows");
  t.nbytes = size_t(nbytes);
  *offset = c.read<uint64_t>("tensor data offset");
  return t;
}

}  // namespace

// ---- GgufValue -------------------------------------------------------------------------------

bool GgufValue::is_int() const {
  return std::holds_alternative<int64_t>(v) || std::holds_alternative<uint64_t>(v);
}
bool GgufValue::is_float() const { return std::holds_alternative<double>(v); }

int64_t GgufValue::as_int() const {
  if (auto p = std::get_if<int64_t>(&v)) return *p;
  if (auto p = std::get_if<uint64_t>(&v)) {
    if (*p > uint64_t(std::numeric_limits<int64_t>::max()))
      throw Error("integer value " + std::to_string(*p) + " is too large");
    return int64_t(*p);
  }
  if (auto p = std::get_if<bool>(&v)) return *p ? 1 : 0;
  throw Error(std::string("expected an integer, found ") + gguf_type_name(type));
}

double GgufValue::as_float() const {
  if (auto p = std::get_if<double>(&v)) return *p;
  if (auto p = std::get_if<int64_t>(&v)) return double(*p);
  if (auto p = std::get_if<uint64_t>(&v)) return double(*p);
  throw Error(std::string("expected a number, found ") + gguf_type_name(type));
}

bool GgufValue::as_bool() const {
  if (auto p = std::get_if<bool>(&v)) return *p;
  if (is_int()) return as_int() != 0;
  throw Error(std::string("expected a bool, found ") + gguf_type_name(type));
}

const std::string& GgufValue::as_string() const {
  if (auto p = std::get_if<std::string>(&v)) return *p;
  throw Error(std::string("expected a string, found ") + gguf_type_name(type));
}

const GgufArray& GgufValue::as_array() const {
  if (auto p = std::get_if<GgufArray>(&v)) return *p;
  throw Error(std::string("expected an array, found ") + gguf_type_name(type));
}

std::vector<std::string> GgufValue::as_string_array() const {
  const GgufArray& a = as_array();
  if (a.elem_type != GgufType::STRING)
    throw Error(std::string("expected an array of strings, found an array of ") +
                gguf_type_name(a.elem_type));
  std::vector<std::string> out;
  out.reserve(a.items.size());
  for (const auto& x : a.items) out.push_back(x.as_string());
  return out;
}

std::vector<float> GgufValue::as_float_array() const {
  const GgufArray& a = as_array();
  std::vector<float> out;
  out.reserve(a.items.size());
  for (const auto& x : a.items) {
    if (!x.is_float() && !x.is_int())
      throw Error(std::string("expected an array of numbers, found an array of ") +
                  gguf_type_name(a.elem_type));
    out.push_back(float(x.as_float()));
  }
  return out;
}

std::vector<int64_t> GgufValue::as_int_array() const {
  const GgufArray& a = as_array();
  std::vector<int64_t> out;
  out.reserve(a.items.size());
  for (const auto& x : a.items) {
    if (!x.is_int())
      throw Error(std::string("expected an array of integers, found an array of ") +
                  gguf_type_name(a.elem_type));
    out.push_back(x.as_int());
  }
  return out;
}

GgufValue GgufValue::of(int64_t x, GgufType t) {
  GgufValue r;
  r.type = t;
  r.v = x;
  return r;
}
GgufValue GgufValue::of(uint64_t x, GgufType t) {
  GgufValue r;
  r.type = t;
  r.v = x;
  return r;
}
GgufValue GgufValue::of(double x, GgufType t) {
  GgufValue r;
  r.type = t;
  r.v = x;
  return r;
}
GgufValue GgufValue::of(bool x) {
  GgufValue r;
  r.type = GgufType::BOOL;
  r.v = x;
  return r;
}
GgufValue GgufValue::of(std::string x) {
  GgufValue r;
  r.type = GgufType::STRING;
  r.v = std::move(x);
  return r;
}
GgufValue GgufValue::of(std::vector<std::string> xs) {
  GgufArray a;
  a.elem_type = GgufType::STRING;
  a.items.reserve(xs.size());
  for (auto& s : xs) a.items.push_back(of(std::move(s)));
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.v = std::move(a);
  return r;
}
GgufValue GgufValue::of(const std::vector<float>& xs) {
  GgufArray a;
  a.elem_type = GgufType::FLOAT32;
  a.items.reserve(xs.size());
  for (float f : xs) a.items.push_back(of(double(f), GgufType::FLOAT32));
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.v = std::move(a);
  return r;
}
GgufValue GgufValue::of(const std::vector<int32_t>& xs) {
  GgufArray a;
  a.elem_type = GgufType::INT32;
  a.items.reserve(xs.size());
  for (int32_t i : xs) a.items.push_back(of(int64_t(i), GgufType::INT32));
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.v = std::move(a);
  return r;
}

// ---- GgufFile --------------------------------------------------------------------------------

GgufFile GgufFile::open(const std::string& path) {
  GgufFile f;
  f.path_ = path;
  f.file_ = MappedFile::open(path);
  Cursor c(f.file_->data(), f.file_->size(), path);

  if (c.left() < 4) c.fail("not a GGUF file (too short for the magic)");
  const uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kGgufMagic) c.fail("not a GGUF file (bad magic)");
  f.version_ = c.read<uint32_t>("version");
  if (f.version_ == 1) c.fail("GGUF version 1 is not supported (only 2 and 3)");
  if (f.version_ != 2 && f.version_ != 3) {
    if ((f.version_ & 0xffff) == 0 && (f.version_ >> 24) <= 3)
      c.fail("big-endian GGUF files are not supported");
    c.fail("unsupported GGUF version " + std::to_string(f.version_) + " (expected 2 or 3)");
  }
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // A tensor info takes at least 8 (name) + 4 + 8 + 4 + 8 bytes; a key/value at least 8 + 4 + 1.
  if (n_tensors > c.left() / 32) c.fail("tensor count " + std::to_string(n_tensors) + " is too large for the file");
  if (n_kv > c.left() / 13) c.fail("metadata count " + std::to_string(n_kv) + " is too large for the file");

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.read_string("metadata key " + std::to_string(i));
    const uint32_t t = c.read<uint32_t>("metadata value type");
    if (!valid_type(t)) c.fail("key '" + key + "': unknown value type " + std::to_string(t));
    GgufValue v = read_value(c, GgufType(t), key, 0);
    if (f.metadata_.count(key)) c.fail("duplicate metadata key '" + key + "'");
    f.metadata_.emplace(std::move(key), std::move(v));
  }

  uint64_t alignment = 32;
  if (const GgufValue* a = f.find("general.alignment")) {
    if (!a->is_int()) c.fail("general.alignment is not an integer");
    const int64_t al = a->as_int();
    if (al <= 0 || (al & (al - 1)) != 0 || al > (1 << 20))
      c.fail("general.alignment " + std::to_string(al) + " is not a power of two");
    alignment = uint64_t(al);
  }

  std::vector<uint64_t> offsets;
  std::unordered_set<std::string> names;
  f.tensors_.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    uint64_t off = 0;
    Tensor t = read_tensor_info(c, &off, size_t(i));
    if (!names.insert(t.name).second) c.fail("duplicate tensor '" + t.name + "'");
    if (off % alignment != 0)
      c.fail("tensor '" + t.name + "': data offset " + std::to_string(off) +
             " is not a multiple of the alignment " + std::to_string(alignment));
    offsets.push_back(off);
    f.tensors_.push_back(std::move(t));
  }

  const uint64_t data_start = (uint64_t(c.pos()) + alignment - 1) / alignment * alignment;
  const uint64_t size = f.file_->size();
  for (size_t i = 0; i < f.tensors_.size(); ++i) {
    Tensor& t = f.tensors_[i];
    uint64_t begin = 0, end = 0;
    if (__builtin_add_overflow(data_start, offsets[i], &begin) ||
        __builtin_add_overflow(begin, uint64_t(t.nbytes), &end) || end > size)
      throw Error(path + ": tensor '" + t.name + "' data (" + std::to_string(t.nbytes) +
                  " bytes at offset " + std::to_string(offsets[i]) +
                  ") lies outside the file of " + std::to_string(size) + " bytes");
    t.data = f.file_->data() + begin;
  }
  return f;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const Tensor* GgufFile::find_tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

namespace {
template <typename F>
auto typed_get(const std::string& path, const std::string& key, F&& get) {
  try {
    return get();
  } catch (const Error& e) {
    throw Error(path + ": metadata key '" + key + "': " + e.what());
  }
}
}  // namespace

std::string GgufFile::get_string(const std::string& key, const std::string& def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  return typed_get(path_, key, [&] { return v->as_string(); });
}

int64_t GgufFile::get_int(const std::string& key, int64_t def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  return typed_get(path_, key, [&] { return v->as_int(); });
}

double GgufFile::get_float(const std::string& key, double def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  return typed_get(path_, key, [&] { return v->as_float(); });
}

bool GgufFile::get_bool(const std::string& key, bool def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  return typed_get(path_, key, [&] { return v->as_bool(); });
}

}  // namespace pensieve
