#include "apps/metrics_log.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tensor/error.h"

namespace siam::apps {

namespace {

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected Castagnoli
    t[i] = c;
  }
  return t;
}

// ---- the few protocol-buffer encodings an Event needs

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

template <class T>
void put_le(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // x86-64 and aarch64 are little-endian, as the format is
  out.append(b, sizeof(T));
}

void put_key(std::string& out, int field, int wire_type) { put_varint(out, static_cast<uint64_t>(field << 3 | wire_type)); }

void put_bytes(std::string& out, int field, std::string_view bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out.append(bytes);
}

// Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
//         SessionLog session_log = 7; } (6 is the deprecated LogMessage)
double wall_clock_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string event_header(int64_t step) {
  std::string e;
  put_key(e, 1, 1);
  put_le(e, wall_clock_seconds());
  put_key(e, 2, 0);
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

// ---- reading

struct Reader {
  std::string_view s;
  size_t pos = 0;
  const std::string& where;
  bool done() const { return pos >= s.size(); }
  [[noreturn]] void bad(const std::string& what) const { fail(where, ": malformed Event (", what, ")"); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= s.size()) bad("truncated varint");
      uint8_t b = static_cast<uint8_t>(s[pos++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    bad("varint longer than 10 bytes");
  }
  template <class T>
  T fixed() {
    if (pos + sizeof(T) > s.size()) bad("truncated fixed-width field");
    T v;
    std::memcpy(&v, s.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string_view bytes() {
    uint64_t n = varint();
    if (n > s.size() - pos) bad("length-delimited field runs past the end");
    std::string_view b = s.substr(pos, n);
    pos += n;
    return b;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: fixed<uint64_t>(); break;
      case 2: bytes(); break;
      case 5: fixed<uint32_t>(); break;
      default: bad("wire type " + std::to_string(wire_type));
    }
  }
};

TensorBoardEvent parse_event(std::string_view data, const std::string& where) {
  TensorBoardEvent ev;
  Reader r{data, 0, where};
  while (!r.done()) {
    uint64_t key = r.varint();
    int field = static_cast<int>(key >> 3), wt = static_cast<int>(key & 7);
    if (field == 1 && wt == 1) ev.wall_time = r.fixed<double>();
    else if (field == 2 && wt == 0) ev.step = static_cast<int64_t>(r.varint());
    else if (field == 3 && wt == 2) ev.file_version = std::string(r.bytes());
    else if (field == 5 && wt == 2) {
      Reader sum{r.bytes(), 0, where};
      while (!sum.done()) {
        uint64_t k = sum.varint();
        if (k >> 3 != 1 || (k & 7) != 2) {
          sum.skip(static_cast<int>(k & 7));
          continue;
        }
        Reader val{sum.bytes(), 0, where};
        std::string tag;
        float value = 0;
        bool has_value = false;
        while (!val.done()) {
          uint64_t vk = val.varint();
          if (vk >> 3 == 1 && (vk & 7) == 2) tag = std::string(val.bytes());
          else if (vk >> 3 == 2 && (vk & 7) == 5) value = val.fixed<float>(), has_value = true;
          else val.skip(static_cast<int>(vk & 7));
        }
        if (has_value) ev.scalars.emplace_back(tag, value);
      }
    } else if (field == 7 && wt == 2) {
      Reader log{r.bytes(), 0, where};
      while (!log.done()) {
        uint64_t k = log.varint();
        if (k >> 3 == 1 && (k & 7) == 0) ev.session_status = static_cast<int>(log.varint());
        else log.skip(static_cast<int>(k & 7));
      }
    } else {
      r.skip(wt);
    }
  }
  return ev;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
  return buf;
}

}  // namespace

uint32_t crc32c(std::string_view bytes) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  uint32_t c = 0xFFFFFFFFu;
  for (char ch : bytes) c = table[(c ^ static_cast<uint8_t>(ch)) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(std::string_view bytes) {
  uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// ---------------------------------------------------------------- TensorBoardWriter

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  // TensorBoard reads a folder's event files in name order, so the time leads and a
  // per-process counter keeps two writers of one second apart (both zero-padded, to sort).
  static std::atomic<int> counter{0};
  char stamp[32], seq[16];
  std::snprintf(stamp, sizeof stamp, "%010lld", static_cast<long long>(wall_clock_seconds()));
  std::snprintf(seq, sizeof seq, "%06d", counter++);
  path_ = (std::filesystem::path(dir) / ("events.out.tfevents." + std::string(stamp) + "." + host_name() + "." +
                                         std::to_string(::getpid()) + "." + seq))
              .string();
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) fail("cannot create the TensorBoard event file ", path_, ": ", std::strerror(errno));
  std::string e;
  put_key(e, 1, 1);
  put_le(e, wall_clock_seconds());
  put_bytes(e, 3, "brain.Event:2");
  record(e);
}

void TensorBoardWriter::record(const std::string& data) {
  std::string rec;
  put_le(rec, static_cast<uint64_t>(data.size()));
  put_le(rec, masked_crc32c(std::string_view(rec.data(), 8)));
  rec += data;
  put_le(rec, masked_crc32c(data));
  out_.write(rec.data(), static_cast<std::streamsize>(rec.size()));
  out_.flush();
  if (!out_) fail("cannot write the TensorBoard event file ", path_, ": ", std::strerror(errno));
}

void TensorBoardWriter::scalars(int64_t step, const std::map<std::string, double>& values) {
  std::string summary;
  for (const auto& [tag, v] : values) {
    std::string value;
    put_bytes(value, 1, tag);
    put_key(value, 2, 5);
    put_le(value, static_cast<float>(v));
    put_bytes(summary, 1, value);
  }
  std::string e = event_header(step);
  put_bytes(e, 5, summary);
  record(e);
}

void TensorBoardWriter::restart(int64_t step) {
  std::string log;
  put_key(log, 1, 0);
  put_varint(log, 1);  // SessionLog.START
  std::string e = event_header(step);
  put_bytes(e, 7, log);
  record(e);
}

std::vector<TensorBoardEvent> read_tensorboard_events(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open the TensorBoard event file ", path);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<TensorBoardEvent> events;
  size_t pos = 0;
  while (pos < s.size()) {
    const std::string where = path + " at byte " + std::to_string(pos);
    if (s.size() - pos < 12) fail(where, ": truncated record header (", s.size() - pos, " bytes left, 12 needed)");
    uint64_t len;
    uint32_t len_crc;
    std::memcpy(&len, s.data() + pos, 8);
    std::memcpy(&len_crc, s.data() + pos + 8, 4);
    if (len_crc != masked_crc32c(std::string_view(s.data() + pos, 8)))
      fail(where, ": the length's CRC does not match (corrupt record)");
    if (len > s.size() - pos - 12 || s.size() - pos - 12 - len < 4)
      fail(where, ": truncated record (", len, " data bytes + 4 CRC bytes announced, ", s.size() - pos - 12, " left)");
    std::string_view data(s.data() + pos + 12, len);
    uint32_t data_crc;
    std::memcpy(&data_crc, s.data() + pos + 12 + len, 4);
    if (data_crc != masked_crc32c(data)) fail(where, ": the data's CRC does not match (corrupt record)");
    events.push_back(parse_event(data, where));
    pos += 12 + len + 4;
  }
  return events;
}

// ---------------------------------------------------------------- MetricsLog

// A new run owns its folder's event files: those of an earlier attempt that died before its
// first checkpoint would otherwise show beside the new curves.
static const std::string& clear_event_files(const std::string& dir, int64_t resume_step) {
  if (resume_step < 0) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec))
      if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) std::filesystem::remove(e.path(), ec);
  }
  return dir;
}

MetricsLog::MetricsLog(const std::string& dir, int64_t resume_step)
    : jsonl_path_((std::filesystem::path(dir) / "metrics.jsonl").string()), tb_(clear_event_files(dir, resume_step)) {
  std::vector<std::string> kept;
  if (resume_step >= 0) {
    std::ifstream old(jsonl_path_);
    for (std::string line; std::getline(old, line);) {
      // A line cut short by a kill does not parse; lines past the checkpoint are rewritten.
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.contains("step") && j["step"].is_number_integer() &&
          j["step"].get<int64_t>() <= resume_step)
        kept.push_back(line);
    }
    tb_.restart(resume_step + 1);
  }
  jsonl_.open(jsonl_path_, std::ios::trunc);
  if (!jsonl_) fail("cannot create ", jsonl_path_, ": ", std::strerror(errno));
  for (const auto& line : kept) jsonl_ << line << "\n";
  jsonl_.flush();
}

void MetricsLog::write(const std::string& kind, int64_t step, const std::map<std::string, double>& values) {
  nlohmann::ordered_json j;
  j["kind"] = kind;
  j["step"] = step;
  std::map<std::string, double> scalars;
  for (const auto& [name, v] : values) {
    if (!std::isfinite(v)) {
      j[name] = nullptr;
      continue;
    }
    // Counts (epoch, images) read better as integers.
    if (v == std::floor(v) && std::fabs(v) < 9e15) j[name] = static_cast<int64_t>(v);
    else j[name] = v;
    scalars[kind + "/" + name] = v;
  }
  jsonl_ << j.dump() << "\n";
  jsonl_.flush();
  if (!jsonl_) fail("cannot write ", jsonl_path_, ": ", std::strerror(errno));
  if (!scalars.empty()) tb_.scalars(step, scalars);
}

}  // namespace siam::apps
