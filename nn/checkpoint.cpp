#include "nn/checkpoint.h"

#include <charconv>
#include <nlohmann/json.hpp>

#include "tensor/safetensors.h"

namespace siam::nn {

// The metadata value that tells a siam checkpoint from any other safetensors file.
static constexpr const char* kFormatName = "siam-checkpoint";

static std::string where(const std::string& source) { return source.empty() ? "checkpoint" : source; }

const std::map<std::string, Tensor>& Checkpoint::section(const std::string& name) const {
  auto it = sections.find(name);
  if (it == sections.end()) {
    std::string have;
    for (const auto& [n, s] : sections) have += (have.empty() ? "" : ", ") + n;
    fail(where(source), ": no section '", name, "' (the checkpoint has: ", have.empty() ? "none" : have, ")");
  }
  return it->second;
}

const Generator& Checkpoint::generator(const std::string& name) const {
  auto it = rng.find(name);
  if (it == rng.end()) {
    std::string have;
    for (const auto& [n, g] : rng) have += (have.empty() ? "" : ", ") + n;
    fail(where(source), ": no RNG state '", name, "' (the checkpoint has: ", have.empty() ? "none" : have, ")");
  }
  return it->second;
}

void save_checkpoint(const std::string& path, const Checkpoint& ck) {
  if (ck.epoch < 0 || ck.step < 0)
    fail(path, ": checkpoint epoch and step must be >= 0, got epoch ", ck.epoch, ", step ", ck.step);
  std::map<std::string, Tensor> tensors;
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [sec, ts] : ck.sections) {
    if (sec.empty() || sec.find('.') != std::string::npos)
      fail(path, ": checkpoint section name '", sec, "' must be non-empty and contain no '.'");
    names.push_back(sec);
    for (const auto& [k, t] : ts) tensors[sec + "." + k] = t;
  }
  nlohmann::json rng = nlohmann::json::object();
  for (const auto& [n, g] : ck.rng) rng[n] = {g.seed(), g.offset()};
  save_safetensors(path, tensors,
                   {{"format", kFormatName},
                    {"format_version", std::to_string(kCheckpointFormat)},
                    {"siam_version", SIAM_VERSION},
                    {"epoch", std::to_string(ck.epoch)},
                    {"step", std::to_string(ck.step)},
                    {"sections", names.dump()},
                    {"rng", rng.dump()},
                    {"config", ck.config}});
}

static const std::string& meta(const SafeTensors& st, const std::string& key) {
  auto it = st.metadata.find(key);
  if (it == st.metadata.end()) fail(st.source, ": checkpoint metadata has no '", key, "'");
  return it->second;
}

static int64_t meta_int(const SafeTensors& st, const std::string& key) {
  const std::string& s = meta(st, key);
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0)
    fail(st.source, ": checkpoint metadata '", key, "' is '", s, "', expected a non-negative integer");
  return v;
}

static nlohmann::json meta_json(const SafeTensors& st, const std::string& key) {
  try {
    return nlohmann::json::parse(meta(st, key));
  } catch (const nlohmann::json::exception& e) {
    fail(st.source, ": checkpoint metadata '", key, "' is not valid JSON: ", e.what());
  }
}

Checkpoint load_checkpoint(const std::string& path) {
  SafeTensors st = load_safetensors(path);
  auto fmt = st.metadata.find("format");
  if (fmt == st.metadata.end() || fmt->second != kFormatName)
    fail(path, ": not a siam checkpoint: expected metadata format '", kFormatName, "', found ",
         fmt == st.metadata.end() ? "no format entry" : "'" + fmt->second + "'");
  if (meta(st, "format_version") != std::to_string(kCheckpointFormat))
    fail(path, ": checkpoint format version ", meta(st, "format_version"), ", this build of siam reads version ",
         kCheckpointFormat);

  Checkpoint ck;
  ck.source = path;
  ck.epoch = meta_int(st, "epoch");
  ck.step = meta_int(st, "step");
  ck.config = meta(st, "config");

  nlohmann::json names = meta_json(st, "sections");
  if (!names.is_array()) fail(path, ": checkpoint metadata 'sections' is not a JSON array");
  for (const auto& n : names) {
    if (!n.is_string()) fail(path, ": checkpoint metadata 'sections' holds a non-string entry ", n.dump());
    ck.sections[n.get<std::string>()];
  }
  for (auto& [name, t] : st.tensors) {
    size_t dot = name.find('.');
    auto sec = dot == std::string::npos ? ck.sections.end() : ck.sections.find(name.substr(0, dot));
    if (sec == ck.sections.end())
      fail(path, ": tensor '", name, "' belongs to none of the checkpoint's sections (", names.dump(), ")");
    sec->second[name.substr(dot + 1)] = t;
  }

  nlohmann::json rng = meta_json(st, "rng");
  if (!rng.is_object()) fail(path, ": checkpoint metadata 'rng' is not a JSON object");
  for (const auto& [n, v] : rng.items()) {
    if (!v.is_array() || v.size() != 2 || !v[0].is_number_unsigned() || !v[1].is_number_unsigned())
      fail(path, ": checkpoint RNG state '", n, "' is ", v.dump(), ", expected [seed, offset]");
    ck.rng[n] = Generator(v[0].get<uint64_t>(), v[1].get<uint64_t>());
  }
  return ck;
}

}  // namespace siam::nn
