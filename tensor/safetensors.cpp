#include "tensor/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace siam {

namespace {

constexpr uint64_t kMaxHeader = 100u << 20;  // the reference implementation's limit

const char* st_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
    case DType::b8: return "BOOL";
  }
  return "?";
}

bool parse_st_dtype(const std::string& s, DType* t) {
  for (DType d : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64, DType::u8, DType::b8})
    if (s == st_dtype(d)) { *t = d; return true; }
  return false;
}

}  // namespace

const Tensor& SafeTensors::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) {
    std::string keys;
    for (const auto& [k, v] : tensors) keys += (keys.empty() ? "" : ", ") + k;
    fail(source, ": no tensor named '", name, "' (the file has: ", keys.empty() ? "none" : keys, ")");
  }
  return it->second;
}

SafeTensors parse_safetensors(const std::string& bytes, const std::string& name) {
  using nlohmann::json;
  if (bytes.size() < 8)
    fail(name, ": truncated safetensors file: ", bytes.size(), " bytes, expected at least 8 for the header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  if (n > kMaxHeader) fail(name, ": safetensors header of ", n, " bytes is larger than the ", kMaxHeader, "-byte limit");
  if (n > bytes.size() - 8)
    fail(name, ": truncated safetensors file: header says ", n, " bytes, only ", bytes.size() - 8, " follow");
  json h;
  try {
    h = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<int64_t>(n));
  } catch (const json::exception& e) {
    fail(name, ": invalid safetensors header JSON: ", e.what());
  }
  if (!h.is_object()) fail(name, ": safetensors header is not a JSON object");
  SafeTensors st;
  st.source = name;
  const uint64_t data_size = bytes.size() - 8 - n;
  const char* data = bytes.data() + 8 + n;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto& [key, v] : h.items()) {
    if (key == "__metadata__") {
      if (!v.is_object()) fail(name, ": __metadata__ must be an object of strings");
      for (auto& [mk, mv] : v.items()) {
        if (!mv.is_string()) fail(name, ": metadata value for '", mk, "' is not a string");
        st.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    auto where = [&] { return name + ": tensor '" + key + "'"; };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail(where(), ": expected an object with dtype, shape and data_offsets");
    if (!v["dtype"].is_string()) fail(where(), ": dtype is not a string");
    DType dt;
    if (!parse_st_dtype(v["dtype"].get<std::string>(), &dt))
      fail(where(), ": unknown dtype '", v["dtype"].get<std::string>(), "' (expected F32, F64, BF16, I32, I64, U8 or BOOL)");
    Shape shape;
    if (!v["shape"].is_array()) fail(where(), ": shape is not an array");
    for (auto& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) fail(where(), ": shape entries must be non-negative integers");
      shape.push_back(d.get<int64_t>());
    }
    auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(where(), ": data_offsets must be two non-negative integers");
    uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e) fail(where(), ": data_offsets [", b, ", ", e, "] are reversed");
    if (e > data_size)
      fail(where(), ": data_offsets end ", e, " is past the end of the data (", data_size, " bytes; file truncated?)");
    uint64_t want = static_cast<uint64_t>(shape_numel(shape)) * dtype_size(dt);
    if (e - b != want)
      fail(where(), ": shape ", shape_str(shape), " of ", v["dtype"].get<std::string>(), " needs ", want,
           " bytes, data_offsets give ", e - b);
    ranges.push_back({b, e});
    st.tensors[key] = from_host(data + b, shape, dt);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      fail(name, ": tensors overlap in the data section at bytes [", ranges[i].first, ", ", ranges[i - 1].second, ")");
  return st;
}

SafeTensors load_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open safetensors file: ", std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_safetensors(ss.str(), path);
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  using nlohmann::json;
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  std::vector<Tensor> host;
  for (const auto& [k, t] : tensors) {
    if (k == "__metadata__") fail(path, ": '__metadata__' is reserved and cannot name a tensor");
    Tensor c = copy_to(t, Device::cpu(), t.dtype());
    h[k] = {{"dtype", st_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {off, off + c.nbytes()}}};
    off += c.nbytes();
    host.push_back(c);
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail(path, ": cannot write (", tmp, "): ", std::strerror(errno));
  auto write_all = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::write(fd, c, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        fail(path, ": write failed: ", std::strerror(err));
      }
      c += w;
      n -= static_cast<size_t>(w);
    }
  };
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  write_all(len, 8);
  write_all(header.data(), header.size());
  for (const Tensor& c : host) write_all(c.raw_data(), c.nbytes());
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail(path, ": flush failed: ", std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail(path, ": rename from ", tmp, " failed: ", std::strerror(err));
  }
}

}  // namespace siam
