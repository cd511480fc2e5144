#include "apps/config.h"

#include <charconv>
#include <cstdlib>
#include <sstream>
#include <toml++/toml.h>

#include "tensor/error.h"

namespace siam::apps {

static const char* type_name(const ConfigValue& v) {
  switch (v.index()) {
    case 0: return "a boolean";
    case 1: return "an integer";
    case 2: return "a number";
    case 3: return "a string";
    default: return "a list of numbers";
  }
}

// The shortest text that reads back as the same double, so to_toml() round-trips exactly
// (a stream's default 6 digits would turn 4/3 into 1.33333).
static std::string shortest(double x) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, end);
}

static std::string value_str(const ConfigValue& v) {
  std::ostringstream os;
  std::visit([&](const auto& x) {
    using T = std::decay_t<decltype(x)>;
    if constexpr (std::is_same_v<T, bool>) os << (x ? "true" : "false");
    else if constexpr (std::is_same_v<T, std::string>) os << '"' << x << '"';
    else if constexpr (std::is_same_v<T, std::vector<double>>) {
      os << '[';
      for (size_t i = 0; i < x.size(); ++i) os << (i ? ", " : "") << shortest(x[i]);
      os << ']';
    } else if constexpr (std::is_same_v<T, double>) os << shortest(x);
    else os << x;
  }, v);
  return os.str();
}

Config::Config(std::vector<ConfigKey> schema) : schema_(std::move(schema)) {
  for (const auto& k : schema_) values_[k.name] = k.value;
}

std::string Config::valid_keys_near(const std::string& key) const {
  std::string section = key.substr(0, key.find('.') + 1);
  std::string same, all;
  for (const auto& k : schema_) {
    all += (all.empty() ? "" : ", ") + k.name;
    if (!section.empty() && k.name.rfind(section, 0) == 0) same += (same.empty() ? "" : ", ") + k.name;
  }
  return same.empty() ? all : same;
}

void Config::assign(const std::string& key, const ConfigValue& v, const std::string& source) {
  auto it = values_.find(key);
  if (it == values_.end())
    fail(source, ": unknown config key '", key, "'; valid keys: ", valid_keys_near(key));
  ConfigValue converted = v;
  if (it->second.index() == 2 && v.index() == 1) converted = static_cast<double>(std::get<int64_t>(v));
  if (converted.index() != it->second.index())
    fail(source, ": '", key, "' must be ", type_name(it->second), ", got ", type_name(v), " (", value_str(v), ")");
  it->second = converted;
}

static void flatten(const toml::table& t, const std::string& prefix, std::vector<std::pair<std::string, ConfigValue>>* out,
                    const std::string& source) {
  for (const auto& [k, node] : t) {
    std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const auto* sub = node.as_table()) {
      flatten(*sub, name, out, source);
    } else if (const auto* b = node.as_boolean()) {
      out->emplace_back(name, b->get());
    } else if (const auto* i = node.as_integer()) {
      out->emplace_back(name, static_cast<int64_t>(i->get()));
    } else if (const auto* f = node.as_floating_point()) {
      out->emplace_back(name, f->get());
    } else if (const auto* s = node.as_string()) {
      out->emplace_back(name, s->get());
    } else if (const auto* a = node.as_array()) {
      std::vector<double> v;
      for (const auto& e : *a) {
        if (auto d = e.value<double>()) v.push_back(*d);
        else fail(source, ": '", name, "' must be a list of numbers");
      }
      out->emplace_back(name, v);
    } else {
      fail(source, ": '", name, "' has an unsupported value type (dates and times are not used)");
    }
  }
}

void Config::load_string(const std::string& text, const std::string& source) {
  toml::table t;
  try {
    t = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << source << ":" << e.source().begin.line << ":" << e.source().begin.column << ": " << e.description();
    throw Error(os.str());
  }
  std::vector<std::pair<std::string, ConfigValue>> entries;
  flatten(t, "", &entries, source);
  for (const auto& [k, v] : entries) assign(k, v, source);
}

void Config::load_file(const std::string& path) {
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << path << ":" << e.source().begin.line << ":" << e.source().begin.column << ": " << e.description();
    throw Error(os.str());
  }
  std::vector<std::pair<std::string, ConfigValue>> entries;
  flatten(t, "", &entries, path);
  for (const auto& [k, v] : entries) assign(k, v, path);
}

void Config::set(const std::string& a) {
  auto eq = a.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("--set '", a, "': expected key=value, e.g. optimizer.lr=0.3");
  std::string key = a.substr(0, eq), text = a.substr(eq + 1);
  auto it = values_.find(key);
  if (it == values_.end()) fail("--set: unknown config key '", key, "'; valid keys: ", valid_keys_near(key));
  // Parse the value as TOML so strings, lists and numbers follow one grammar; bare words are strings.
  std::string source = "--set " + key;
  toml::table t;
  try {
    t = toml::parse("v = " + text);
  } catch (const toml::parse_error&) {
    t = toml::table{{"v", text}};
  }
  std::vector<std::pair<std::string, ConfigValue>> entries;
  flatten(t, "", &entries, source);
  assign(key, entries.at(0).second, source);
}

const ConfigValue& Config::find(const std::string& key) const {
  auto it = values_.find(key);
  SIAM_CHECK(it != values_.end(), "config key '", key, "' is not in the schema");
  return it->second;
}

bool Config::get_bool(const std::string& key) const { return std::get<bool>(find(key)); }
int64_t Config::get_int(const std::string& key) const { return std::get<int64_t>(find(key)); }
double Config::get_double(const std::string& key) const { return std::get<double>(find(key)); }
const std::string& Config::get_string(const std::string& key) const { return std::get<std::string>(find(key)); }
const std::vector<double>& Config::get_list(const std::string& key) const {
  return std::get<std::vector<double>>(find(key));
}

std::string Config::to_toml() const {
  // Top-level keys first, then one table per section in schema order (TOML needs each
  // table written once).
  std::vector<std::string> sections{""};
  std::map<std::string, std::vector<std::string>> lines;
  for (const auto& k : schema_) {
    auto dot = k.name.rfind('.');
    std::string sec = dot == std::string::npos ? "" : k.name.substr(0, dot);
    std::string leaf = dot == std::string::npos ? k.name : k.name.substr(dot + 1);
    if (!lines.count(sec) && !sec.empty()) sections.push_back(sec);
    lines[sec].push_back(leaf + " = " + value_str(values_.at(k.name)));
  }
  std::ostringstream os;
  for (const auto& sec : sections) {
    if (!lines.count(sec)) continue;
    if (!sec.empty()) os << "\n[" << sec << "]\n";
    for (const auto& l : lines[sec]) os << l << "\n";
  }
  return os.str();
}

std::string Config::describe() const {
  std::ostringstream os;
  for (const auto& k : schema_) os << k.name << " = " << value_str(k.value) << "    # " << k.help << "\n";
  return os.str();
}

}  // namespace siam::apps
