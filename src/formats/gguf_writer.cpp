// GGUF v3 writer: the header (metadata + tensor table with precomputed aligned offsets) is written
// first, then each tensor's bytes are streamed in declaration order, so a converter holds one
// tensor in memory at a time. A writer destroyed before finish() removes its partial file.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <utility>

#include "formats/gguf.h"
#include "util/error.h"

namespace pensieve {

struct GgufWriter::Impl {
  struct TensorDecl {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t offset = 0;
    uint64_t nbytes = 0;
  };

  std::string path;
  std::FILE* fp = nullptr;
  std::vector<std::pair<std::string, GgufValue>> kv;
  std::vector<TensorDecl> tensors;
  uint64_t alignment = 32;
  size_t next_tensor = 0;
  uint64_t data_written = 0;  // bytes since the start of the data section
  uint64_t current_filled = 0;  // bytes of tensors[next_tensor] appended so far
  bool header_written = false;
  bool finished = false;

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path + ": " + what);
  }

  void write(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, fp) != n) fail(std::string("write failed: ") + std::strerror(errno));
  }
  template <typename T>
  void put(T v) { write(&v, sizeof(T)); }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    write(s.data(), s.size());
  }
  void pad_to(uint64_t pos) {
    static const uint8_t zeros[64] = {};
    const uint64_t padded = (pos + alignment - 1) / alignment * alignment;
    for (uint64_t left = padded - pos; left > 0;) {
      const size_t n = size_t(std::min<uint64_t>(left, sizeof zeros));
      write(zeros, n);
      left -= n;
    }
  }

  void put_value(const std::string& key, const GgufValue& v) {
    try {
      switch (v.type) {
        case GgufType::UINT8: put<uint8_t>(uint8_t(v.as_int())); break;
        case GgufType::INT8: put<int8_t>(int8_t(v.as_int())); break;
        case GgufType::UINT16: put<uint16_t>(uint16_t(v.as_int())); break;
        case GgufType::INT16: put<int16_t>(int16_t(v.as_int())); break;
        case GgufType::UINT32: put<uint32_t>(uint32_t(v.as_int())); break;
        case GgufType::INT32: put<int32_t>(int32_t(v.as_int())); break;
        case GgufType::UINT64:
          if (auto p = std::get_if<uint64_t>(&v.v)) put<uint64_t>(*p);
          else put<uint64_t>(uint64_t(v.as_int()));
          break;
        case GgufType::INT64: put<int64_t>(v.as_int()); break;
        case GgufType::FLOAT32: put<float>(float(v.as_float())); break;
        case GgufType::FLOAT64: put<double>(v.as_float()); break;
        case GgufType::BOOL: put<uint8_t>(v.as_bool() ? 1 : 0); break;
        case GgufType::STRING: put_string(v.as_string()); break;
        case GgufType::ARRAY: {
          const GgufArray& a = v.as_array();
          put<uint32_t>(uint32_t(a.elem_type));
          put<uint64_t>(a.items.size());
          for (const auto& item : a.items) {
            if (item.type != a.elem_type)
              fail("key '" + key + "': array item type differs from the array element type");
            put_value(key, item);
          }
          break;
        }
      }
    } catch (const Error& e) {
      if (std::string(e.what()).rfind(path, 0) == 0) throw;
      fail("key '" + key + "': " + e.what());
    }
  }
};

GgufWriter::GgufWriter(std::string path) : impl_(std::make_unique<Impl>()) {
  impl_->path = std::move(path);
}

GgufWriter::~GgufWriter() {
  if (impl_->fp) std::fclose(impl_->fp);
  if (!impl_->finished && impl_->header_written) std::remove(impl_->path.c_str());
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  if (impl_->header_written) impl_->fail("metadata '" + key + "' set after the header was written");
  if (key == "general.alignment") {
    const int64_t al = value.as_int();
    if (al <= 0 || (al & (al - 1)) != 0) impl_->fail("general.alignment must be a power of two");
    impl_->alignment = uint64_t(al);
  }
  for (auto& [k, v] : impl_->kv)
    if (k == key) {
      v = std::move(value);
      return;
    }
  impl_->kv.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne) {
  if (impl_->header_written) impl_->fail("tensor '" + name + "' added after the header was written");
  auto tr = type_traits(type);
  if (!tr || type == GgmlType::Q8_A || type == GgmlType::Q4_A)
    impl_->fail("tensor '" + name + "': type " + std::string(type_name(type)) + " cannot be written to GGUF");
  if (ne.empty() || ne.size() > 4) impl_->fail("tensor '" + name + "': rank must be 1 to 4");
  if (ne[0] % tr->block_elems != 0)
    impl_->fail("tensor '" + name + "': row of " + std::to_string(ne[0]) +
                " elements is not a multiple of the " + std::string(tr->name) + " block size");
  for (const auto& t : impl_->tensors)
    if (t.name == name) impl_->fail("duplicate tensor '" + name + "'");
  uint64_t elements = 1;
  for (int64_t n : ne) {
    if (n <= 0) impl_->fail("tensor '" + name + "': non-positive dimension");
    elements *= uint64_t(n);
  }
  Impl::TensorDecl d{name, type, std::move(ne), 0, elements / tr->block_elems * tr->block_bytes};
  impl_->tensors.push_back(std::move(d));
}

void GgufWriter::write_header() {
  Impl& m = *impl_;
  if (m.header_written) m.fail("header written twice");
  m.fp = std::fopen(m.path.c_str(), "wb");
  if (!m.fp) m.fail(std::string("cannot create: ") + std::strerror(errno));
  m.header_written = true;
  uint64_t offset = 0;
  for (auto& t : m.tensors) {
    t.offset = offset;
    offset = (offset + t.nbytes + m.alignment - 1) / m.alignment * m.alignment;
  }
  m.write("GGUF", 4);
  m.put<uint32_t>(3);
  m.put<uint64_t>(m.tensors.size());
  m.put<uint64_t>(m.kv.size());
  for (const auto& [k, v] : m.kv) {
    m.put_string(k);
    m.put<uint32_t>(uint32_t(v.type));
    m.put_value(k, v);
  }
  for (const auto& t : m.tensors) {
    m.put_string(t.name);
    m.put<uint32_t>(uint32_t(t.ne.size()));
    for (int64_t n : t.ne) m.put<uint64_t>(uint64_t(n));
    m.put<uint32_t>(uint32_t(t.type));
    m.put<uint64_t>(t.offset);
  }
  const long here = std::ftell(m.fp);
  if (here < 0) m.fail("cannot tell the file position");
  m.pad_to(uint64_t(here));
}

void GgufWriter::write_tensor_data(const void* data, size_t nbytes) {
  Impl& m = *impl_;
  if (!m.header_written) m.fail("tensor data written before the header");
  if (m.next_tensor >= m.tensors.size()) m.fail("more tensor data than declared tensors");
  const auto& t = m.tensors[m.next_tensor];
  if (nbytes != t.nbytes)
    m.fail("tensor '" + t.name + "': " + std::to_string(nbytes) + " bytes given, " +
           std::to_string(t.nbytes) + " expected");
  if (m.current_filled != 0) m.fail("tensor '" + t.name + "': already partly appended");
  append_tensor_data(data, nbytes);
}

void GgufWriter::append_tensor_data(const void* data, size_t nbytes) {
  Impl& m = *impl_;
  if (!m.header_written) m.fail("tensor data written before the header");
  if (m.next_tensor >= m.tensors.size()) m.fail("more tensor data than declared tensors");
  const auto& t = m.tensors[m.next_tensor];
  if (nbytes > t.nbytes - m.current_filled)
    m.fail("tensor '" + t.name + "': more than its " + std::to_string(t.nbytes) + " bytes given");
  m.write(data, nbytes);
  m.current_filled += nbytes;
  if (m.current_filled < t.nbytes) return;
  m.data_written = t.offset + t.nbytes;
  m.pad_to(m.data_written);
  m.data_written = (m.data_written + m.alignment - 1) / m.alignment * m.alignment;
  m.current_filled = 0;
  ++m.next_tensor;
}

void GgufWriter::finish() {
  Impl& m = *impl_;
  if (!m.header_written) write_header();
  if (m.next_tensor != m.tensors.size())
    m.fail("finish() with " + std::to_string(m.tensors.size() - m.next_tensor) +
           " tensors not written");
  if (std::fflush(m.fp) != 0 || std::ferror(m.fp))
    m.fail(std::string("write failed: ") + std::strerror(errno));
  const int rc = std::fclose(m.fp);
  m.fp = nullptr;
  if (rc != 0) m.fail(std::string("close failed: ") + std::strerror(errno));
  m.finished = true;
}

}  // namespace pensieve
