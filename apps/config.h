#pragma once
// Run configuration: TOML files (toml++) flattened to "section.key" entries, checked against
// a schema of known keys with types and defaults, plus command-line overrides
// (`--set optimizer.lr=0.3`). An unknown key is an error that lists the valid keys.
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace siam::apps {

using ConfigValue = std::variant<bool, int64_t, double, std::string, std::vector<double>>;

struct ConfigKey {
  std::string name;     // "optimizer.lr"
  ConfigValue value;    // default; its alternative fixes the key's type
  std::string help;     // one line shown by `siam pretrain --help-config`
};

class Config {
 public:
  explicit Config(std::vector<ConfigKey> schema);

  // Reads a TOML file over the current values.
  void load_file(const std::string& path);
  void load_string(const std::string& toml, const std::string& source);
  // "section.key=value"; the value is parsed as the key's type.
  void set(const std::string& assignment);

  bool get_bool(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_double(const std::string& key) const;  // ints are accepted for float keys
  const std::string& get_string(const std::string& key) const;
  const std::vector<double>& get_list(const std::string& key) const;

  // The resolved configuration as TOML (stored in checkpoints and run folders).
  std::string to_toml() const;
  // One line per key: name = default  # help
  std::string describe() const;
  const std::vector<ConfigKey>& schema() const { return schema_; }

 private:
  const ConfigValue& find(const std::string& key) const;
  void assign(const std::string& key, const ConfigValue& v, const std::string& source);
  std::string valid_keys_near(const std::string& key) const;
  std::vector<ConfigKey> schema_;
  std::map<std::string, ConfigValue> values_;
};

}  // namespace siam::apps
