#include "apps/study.h"

#include <CLI/CLI.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "apps/eval_commands.h"
#include "apps/plot.h"
#include "apps/pretrain.h"
#include "apps/run_config.h"
#include "nn/checkpoint.h"
#include "tensor/error.h"

namespace siam::apps {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

const std::set<std::string> kEvaluations = {"linear",   "knn",    "view_emd", "invariance", "invariance_random",
                                            "finetune", "transfer", "mining"};

std::string number_text(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, end);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // a TOML float, not an integer
  return s;
}

// A TOML value as TOML text (what Config::set parses) and as a short label.
void value_text(const toml::node& n, const std::string& where, std::string& text, std::string& label) {
  if (auto s = n.as_string()) {
    text = toml_quote(s->get());
    label = s->get();
  } else if (auto i = n.as_integer()) {
    text = label = std::to_string(i->get());
  } else if (auto f = n.as_floating_point()) {
    text = number_text(f->get());
    label = text;
  } else if (auto b = n.as_boolean()) {
    text = label = b->get() ? "true" : "false";
  } else if (auto a = n.as_array()) {
    text = "[";
    label.clear();
    for (size_t k = 0; k < a->size(); ++k) {
      std::string t, l;
      value_text(*a->get(k), where, t, l);
      text += (k ? ", " : "") + t;
      label += (k ? "-" : "") + l;
    }
    text += "]";
  } else {
    fail(where, ": expected a string, number, boolean or array");
  }
}

std::vector<std::string> assignments(const toml::table& t, const std::string& where) {
  std::vector<std::string> out;
  for (const auto& [k, v] : t) {
    std::string text, label;
    value_text(v, where + " key '" + std::string(k.str()) + "'", text, label);
    out.push_back(std::string(k.str()) + "=" + text);
  }
  return out;
}

const toml::table& table_at(const toml::table& t, const char* key, const std::string& path) {
  const toml::node* n = t.get(key);
  if (!n || !n->is_table()) fail(path, ": [", key, "] must be a table");
  return *n->as_table();
}

void allow_keys(const toml::table& t, const std::set<std::string>& allowed, const std::string& where) {
  for (const auto& [k, v] : t)
    if (!allowed.count(std::string(k.str()))) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail(where, ": unknown key '", k.str(), "' (expected one of ", list, ")");
    }
}

// A folder-name piece: letters, digits, '.', '-' and '=' kept, every run of others one '_'.
std::string slug(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool keep = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '=';
    if (keep) out += c;
    else if (!out.empty() && out.back() != '_') out += '_';
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out;
}

// What a metric is, for axis labels.
std::string metric_title(const std::string& m) {
  if (m == "linear_top1") return "linear probe top-1 (%)";
  if (m == "transfer_top1") return "transfer linear probe top-1 (%)";
  if (m == "view_emd") return "view EMD (mean over pairs)";
  if (m.rfind("knn", 0) == 0) return "kNN top-1, k = " + m.substr(3, m.find('_') - 3) + " (%)";
  if (m == "mining_precision") return "mined neighbours with the anchor's label (%)";
  if (m == "mining_coverage") return "images with a usable mined neighbour (%)";
  if (m.rfind("finetune_", 0) == 0) return "fine-tuned top-1 with " + m.substr(9, m.rfind('_') - 9) + " labels (%)";
  return m;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string duration(double s) {
  std::ostringstream os;
  const int64_t t = std::llround(s);
  if (t >= 3600) os << t / 3600 << "h" << std::setw(2) << std::setfill('0') << (t / 60) % 60 << "m";
  else if (t >= 60) os << t / 60 << "m" << std::setw(2) << std::setfill('0') << t % 60 << "s";
  else os << t << "s";
  return os.str();
}

// The JSON line a command printed (its last line that parses as an object).
json command_json(const std::string& printed, const char* command) {
  std::istringstream in(printed);
  json last;
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') last = json::parse(line, nullptr, false);
  if (!last.is_object()) fail("study: ", command, " printed no JSON result");
  return last;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

}  // namespace

// ---------------------------------------------------------------- the study file

namespace {

void read_eval(const toml::table& e, StudyEval& v, const std::string& where) {
  allow_keys(e, {"train_images", "linear_epochs", "linear_lr", "linear_batch", "knn_k", "knn_temperature", "emd_pairs",
                 "invariance_sets", "finetune_labels", "finetune_epochs", "transfer", "probe_sets"},
             where);
  v.train_images = e["train_images"].value_or(v.train_images);
  v.linear_epochs = e["linear_epochs"].value_or(v.linear_epochs);
  v.linear_lr = e["linear_lr"].value_or(v.linear_lr);
  v.linear_batch = e["linear_batch"].value_or(v.linear_batch);
  v.knn_k = e["knn_k"].value_or(v.knn_k);
  v.knn_temperature = e["knn_temperature"].value_or(v.knn_temperature);
  v.emd_pairs = e["emd_pairs"].value_or(v.emd_pairs);
  v.invariance_sets = e["invariance_sets"].value_or(v.invariance_sets);
  v.finetune_epochs = e["finetune_epochs"].value_or(v.finetune_epochs);
  v.transfer = e["transfer"].value_or(v.transfer);
  if (const auto* a = e["finetune_labels"].as_array()) {
    v.finetune_labels.clear();
    for (const auto& x : *a) v.finetune_labels.push_back(x.value_or(std::string()));
  }
  if (const auto* a = e["probe_sets"].as_array()) {
    v.probe_sets.clear();
    for (const auto& x : *a) v.probe_sets.push_back(x.value_or(std::string()));
  }
}

// [[variants]] and [[prepare]]: arrays of tables { name = "...", set = { key = value, ... } }.
std::vector<StudyVariant> named_sets(const toml::node* node, const std::string& kind, const std::string& path) {
  std::vector<StudyVariant> out;
  if (!node) return out;
  const auto* arr = node->as_array();
  if (!arr) fail(path, ": ", kind, " must be an array of tables ([[", kind, "]])");
  for (const auto& v : *arr) {
    const auto* vt = v.as_table();
    if (!vt) fail(path, ": each [[", kind, "]] must be a table");
    allow_keys(*vt, {"name", "set"}, path + " [[" + kind + "]]");
    StudyVariant named{.name = (*vt)["name"].value_or(std::string()), .sets = {}};
    if (named.name.empty()) fail(path, ": every [[", kind, "]] needs a name");
    if (const auto* set = (*vt)["set"].as_table())
      named.sets = assignments(*set, path + " " + kind + " '" + named.name + "'");
    out.push_back(named);
  }
  return out;
}

void read_videos(const toml::table& v, StudyVideos& out, const std::string& where) {
  allow_keys(v, {"clips", "frames", "seed", "source"}, where);
  out.enabled = true;
  out.clips = v["clips"].value_or(out.clips);
  out.frames = v["frames"].value_or(out.frames);
  out.seed = static_cast<uint64_t>(v["seed"].value_or(static_cast<int64_t>(out.seed)));
  if (const auto* a = v["source"].as_array()) {
    out.source.clear();
    for (const auto& x : *a) out.source.push_back(x.value_or(std::string()));
  }
}

}  // namespace

StudySpec load_study(const std::string& path) {
  if (!fs::exists(path)) fail("study: ", path, " does not exist");
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    fail(path, ": ", e.description(), " at line ", e.source().begin.line);
  }
  allow_keys(t, {"study", "axes", "variants", "set", "scale", "eval", "prepare", "videos"}, path);
  StudySpec s;
  s.path = path;
  const toml::table& st = table_at(t, "study", path);
  allow_keys(st, {"name", "description", "base", "output", "seeds", "evaluations", "x"}, path + " [study]");
  s.name = st["name"].value_or(std::string());
  if (s.name.empty()) fail(path, ": [study] needs a name");
  s.description = st["description"].value_or(std::string());
  const std::string base = st["base"].value_or(std::string());
  if (base.empty()) fail(path, ": [study] needs base, the config every cell starts from");
  s.base = (fs::path(path).parent_path() / base).lexically_normal().string();
  if (!fs::exists(s.base)) fail(path, ": base config ", s.base, " does not exist");
  s.output = st["output"].value_or(std::string());
  if (const auto* a = st["seeds"].as_array()) {
    s.seeds.clear();
    for (const auto& v : *a) {
      if (!v.is_integer() || v.as_integer()->get() < 0) fail(path, ": [study] seeds must be non-negative integers");
      s.seeds.push_back(v.as_integer()->get());
    }
  }
  if (s.seeds.empty()) fail(path, ": [study] seeds is empty");
  if (const auto* a = st["evaluations"].as_array())
    for (const auto& v : *a) {
      const std::string e = v.value_or(std::string());
      if (!kEvaluations.count(e))
        fail(path, ": [study] evaluation '", e,
             "' unknown (expected linear, knn, view_emd, invariance, invariance_random, finetune, transfer or mining)");
      s.evaluations.push_back(e);
    }
  if (s.evaluations.empty()) fail(path, ": [study] evaluations is empty");
  if (const toml::node* ax = t.get("axes")) {
    if (!ax->is_table()) fail(path, ": [axes] must be a table");
    for (const auto& [k, v] : *ax->as_table()) {
      StudyAxis a{.key = std::string(k.str()), .values = {}, .labels = {}, .value_sets = {}};
      const auto* arr = v.as_array();
      if (!arr || arr->empty()) fail(path, ": axis '", a.key, "' must be a non-empty array of values");
      for (const auto& x : *arr) {
        std::string text, label;
        if (const auto* vt = x.as_table()) {
          allow_keys(*vt, {"name", "set"}, path + " axis '" + a.key + "'");
          label = (*vt)["name"].value_or(std::string());
          if (label.empty()) fail(path, ": every value of the named axis '", a.key, "' needs a name");
          const auto* set = (*vt)["set"].as_table();
          a.value_sets.push_back(set ? assignments(*set, path + " axis '" + a.key + "' value '" + label + "'")
                                     : std::vector<std::string>{});
          text = label;
        } else {
          value_text(x, path + " axis '" + a.key + "'", text, label);
        }
        a.values.push_back(text);
        a.labels.push_back(label);
      }
      if (!a.value_sets.empty() && a.value_sets.size() != a.values.size())
        fail(path, ": axis '", a.key, "' mixes named values (tables) with plain ones");
      s.axes.push_back(a);
    }
  }
  s.variants = named_sets(t.get("variants"), "variants", path);
  if (s.variants.empty()) s.variants.push_back({});
  s.prepare = named_sets(t.get("prepare"), "prepare", path);
  if (t.get("set")) s.sets = assignments(table_at(t, "set", path), path + " [set]");
  if (t.get("scale")) {
    for (const auto& [k, v] : table_at(t, "scale", path)) {
      if (!v.is_table()) fail(path, ": [scale.", k.str(), "] must be a table");
      toml::table settings = *v.as_table();
      settings.erase("eval");
      settings.erase("videos");
      s.scales[std::string(k.str())] = assignments(settings, path + " [scale." + std::string(k.str()) + "]");
    }
  }
  if (t.get("eval")) read_eval(table_at(t, "eval", path), s.eval, path + " [eval]");
  if (t.get("videos")) read_videos(table_at(t, "videos", path), s.videos, path + " [videos]");
  // A scale's own [scale.<name>.eval] starts from [eval].
  if (const auto* sc = t["scale"].as_table())
    for (const auto& [k, v] : *sc) {
      StudyEval e = s.eval;
      if (const auto* et = v.as_table() ? (*v.as_table())["eval"].as_table() : nullptr)
        read_eval(*et, e, path + " [scale." + std::string(k.str()) + ".eval]");
      s.scale_eval[std::string(k.str())] = e;
      StudyVideos vid = s.videos;
      if (const auto* vt = v.as_table() ? (*v.as_table())["videos"].as_table() : nullptr)
        read_videos(*vt, vid, path + " [scale." + std::string(k.str()) + ".videos]");
      s.scale_videos[std::string(k.str())] = vid;
    }
  for (const auto& e : s.evaluations)
    if (e == "transfer" && s.eval.transfer.empty())
      fail(path, ": the transfer evaluation needs [eval] transfer, e.g. transfer = 'data.dataset=\"mnist\"'");
  s.x = st["x"].value_or(s.axes.empty() ? std::string() : s.axes.front().key);
  if (!s.x.empty() && std::none_of(s.axes.begin(), s.axes.end(), [&](const StudyAxis& a) { return a.key == s.x; }))
    fail(path, ": [study] x = '", s.x, "' is not one of the axes");
  return s;
}

std::vector<StudyCell> study_cells(const StudySpec& spec, const std::string& scale,
                                   const std::vector<std::string>& extra_sets) {
  if (scale != "smoke" && scale != "small" && scale != "full")
    fail("study: --scale must be smoke, small or full, got '", scale, "'");
  std::vector<StudyCell> cells;
  std::vector<size_t> idx(spec.axes.size(), 0);
  const auto scale_sets = spec.scales.count(scale) ? spec.scales.at(scale) : std::vector<std::string>{};
  for (;;) {
    for (const StudyVariant& var : spec.variants)
      for (int64_t seed : spec.seeds) {
        StudyCell c;
        c.variant = var.name;
        c.seed = seed;
        c.sets = spec.sets;
        std::vector<std::string> id;
        for (size_t a = 0; a < spec.axes.size(); ++a) {
          const std::string& v = spec.axes[a].values[idx[a]];
          if (spec.axes[a].value_sets.empty()) c.sets.push_back(spec.axes[a].key + "=" + v);
          else c.sets.insert(c.sets.end(), spec.axes[a].value_sets[idx[a]].begin(), spec.axes[a].value_sets[idx[a]].end());
          const std::string& label = spec.axes[a].labels[idx[a]];
          c.coords.emplace_back(spec.axes[a].key, label);
          id.push_back(slug(spec.axes[a].key + "=" + label));
        }
        if (!var.name.empty()) {
          c.sets.insert(c.sets.end(), var.sets.begin(), var.sets.end());
          c.coords.emplace_back("variant", var.name);
          id.push_back(slug(var.name));
        }
        // The scale shrinks (or grows) every cell, the axes included: smoke is a few steps.
        c.sets.insert(c.sets.end(), scale_sets.begin(), scale_sets.end());
        c.sets.push_back("run.seed=" + std::to_string(seed));
        c.sets.insert(c.sets.end(), extra_sets.begin(), extra_sets.end());
        id.push_back("seed=" + std::to_string(seed));
        c.id = join(id, "__");
        cells.push_back(std::move(c));
      }
    size_t a = 0;
    while (a < idx.size() && ++idx[a] == spec.axes[a].values.size()) idx[a++] = 0;
    if (a == idx.size()) break;
  }
  return cells;
}

// ---------------------------------------------------------------- one cell

namespace {

// Evaluations already recorded in a cell (a truncated last line, from a kill, is not one).
std::map<std::string, json> recorded(const std::string& folder) {
  std::map<std::string, json> out;
  std::ifstream in(folder + "/eval.jsonl");
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("eval")) out[j["eval"].get<std::string>()] = j;
  }
  return out;
}

// Names of the evaluations one study evaluation stands for (finetune: one per label share).
std::vector<std::string> eval_names(const StudySpec& s) {
  std::vector<std::string> out;
  for (const auto& e : s.evaluations) {
    if (e == "finetune")
      for (const auto& l : s.eval.finetune_labels) out.push_back("finetune_" + l);
    else out.push_back(e);
  }
  return out;
}

// The mined pairs a cell trained on: of the neighbours its generator could use (similarity at
// least pairs.mined_threshold), the share that have the anchor's label, and the share of
// images with at least one usable neighbour. A cell without mined pairs reports nothing.
json mining_precision(const std::string& checkpoint) {
  const nn::Checkpoint ck = nn::load_checkpoint(checkpoint);
  const Config cfg = checkpoint_config(ck.config, checkpoint);
  json j{{"command", "mining"}};
  if (cfg.get_string("pairs.generator") != "mined") return j;
  const data::Neighbours nb = data::load_neighbours(cfg.get_string("pairs.neighbours"));
  const data::ImageSet images = load_train_set(cfg);
  const Tensor idx = copy_to(nb.indices, Device::cpu(), DType::i64), sim = copy_to(nb.similarities, Device::cpu(), DType::f64);
  const Tensor lab = copy_to(images.labels, Device::cpu(), DType::i64);
  const int64_t n = idx.size(0), k = idx.size(1);
  if (n != images.size()) fail("mining: ", cfg.get_string("pairs.neighbours"), " holds ", n, " images, the training set ", images.size());
  const double threshold = cfg.get_double("pairs.mined_threshold");
  int64_t usable = 0, same = 0, anchored = 0;
  for (int64_t i = 0; i < n; ++i) {
    bool any = false;
    for (int64_t q = 0; q < k; ++q) {
      const int64_t nbr = idx.data<int64_t>()[i * k + q];
      if (nbr == i || sim.data<double>()[i * k + q] < threshold) continue;
      ++usable;
      any = true;
      same += lab.data<int64_t>()[nbr] == lab.data<int64_t>()[i];
    }
    anchored += any;
  }
  j["neighbours_usable"] = usable;
  j["label_precision"] = usable ? 100.0 * static_cast<double>(same) / static_cast<double>(usable) : 0.0;
  j["images_with_neighbour"] = 100.0 * static_cast<double>(anchored) / static_cast<double>(n);
  return j;
}

json evaluate(const StudyEval& e, const std::string& name, const std::string& checkpoint) {
  std::ostringstream out;
  CheckpointInput in{.checkpoint = checkpoint, .sets = e.probe_sets};
  in.sets.push_back("data.limit=" + std::to_string(e.train_images));
  if (name == "linear" || name == "transfer") {
    LinearCommand c;
    c.input = in;
    c.probe.epochs = e.linear_epochs;
    c.probe.lr = e.linear_lr;
    c.probe.batch_size = e.linear_batch;
    if (name == "transfer") c.input.sets.push_back(e.transfer);
    run_linear(c, out);
    return command_json(out.str(), "linear");
  }
  if (name == "knn") {
    run_knn(KnnCommand{.input = in, .k = {e.knn_k}, .temperature = e.knn_temperature, .features = "backbone"}, out);
    return command_json(out.str(), "knn");
  }
  if (name == "view_emd") {
    run_view_emd(ViewEmdCommand{.input = {.checkpoint = checkpoint}, .pairs = "", .n = e.emd_pairs}, out);
    return command_json(out.str(), "view-emd");
  }
  if (name == "invariance" || name == "invariance_random") {
    InvarianceCommand c;
    c.input = {.checkpoint = checkpoint, .sets = e.probe_sets};
    c.limit = e.invariance_sets;
    if (name == "invariance_random") c.features = "random";
    run_invariance(c, out);
    return command_json(out.str(), "invariance");
  }
  if (name == "mining") return mining_precision(checkpoint);
  if (name.rfind("finetune_", 0) == 0) {
    FinetuneCommand c;
    c.input = {.checkpoint = checkpoint, .sets = e.probe_sets};  // its label share is of the whole training split
    c.labels = name.substr(9);
    c.options.epochs = e.finetune_epochs;
    run_finetune(c, out);
    return command_json(out.str(), "finetune");
  }
  fail("study: unknown evaluation ", name);
}

// The numbers a result line contributes to the table: (metric, value).
std::vector<std::pair<std::string, double>> metrics_of(const std::string& name, const json& j) {
  std::vector<std::pair<std::string, double>> m;
  if (name == "linear" || name == "transfer" || name.rfind("finetune_", 0) == 0) {
    m.emplace_back(name + "_top1", j.at("top1").get<double>());
  } else if (name == "knn") {
    for (const auto& [k, v] : j.at("top1").items()) m.emplace_back("knn" + k + "_top1", v.get<double>());
  } else if (name == "mining") {
    if (j.contains("label_precision")) {
      m.emplace_back("mining_precision", j.at("label_precision").get<double>());
      m.emplace_back("mining_coverage", j.at("images_with_neighbour").get<double>());
    }
  } else if (name == "view_emd") {
    m.emplace_back("view_emd", j.at("emd").at("mean").get<double>());
  } else if (name == "invariance" || name == "invariance_random") {
    for (const auto& [kind, r] : j.at("results").items())
      for (const auto& [k, v] : r.at("score").items()) m.emplace_back(name + "_" + kind + "_k" + k, v.get<double>());
  }
  return m;
}

}  // namespace

// ---------------------------------------------------------------- the report

namespace {

// The cells that differ only in the seed, with every metric's values over the seeds.
struct Group {
  std::vector<std::pair<std::string, std::string>> coords;
  std::map<std::string, std::vector<double>> values;
};

std::pair<double, double> mean_std(const std::vector<double>& v) {
  double m = 0, s = 0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  for (double x : v) s += (x - m) * (x - m);
  s = v.size() > 1 ? std::sqrt(s / static_cast<double>(v.size() - 1)) : 0.0;
  return {m, s};
}

// Each metric against the x axis (one line per combination of the other coordinates, error
// bars over seeds), and every accuracy against view EMD when EMD was measured.
void plot_study(const StudySpec& spec, const std::string& folder, const std::vector<Group>& groups,
                const std::vector<std::string>& metric_names) {
  const StudyAxis& xa = *std::find_if(spec.axes.begin(), spec.axes.end(), [&](const StudyAxis& a) { return a.key == spec.x; });
  const std::vector<std::string>& xlabels = xa.labels;
  auto series_of = [&](const Group& g) {
    std::vector<std::string> parts;
    for (const auto& [k, v] : g.coords)
      if (k != spec.x) parts.push_back(k == "variant" ? v : k + "=" + v);
    return parts.empty() ? std::string("all") : join(parts, ", ");
  };
  auto x_of = [&](const Group& g) {
    for (const auto& [k, v] : g.coords)
      if (k == spec.x) return static_cast<int>(std::find(xlabels.begin(), xlabels.end(), v) - xlabels.begin());
    return 0;
  };
  std::vector<std::string> series;
  for (const Group& g : groups)
    if (std::find(series.begin(), series.end(), series_of(g)) == series.end()) series.push_back(series_of(g));
  std::string xtics;
  for (size_t i = 0; i < xlabels.size(); ++i) xtics += (i ? ", " : "") + gnuplot_quote(xlabels[i]) + " " + std::to_string(i);
  auto plot = [&](const std::string& file, const std::string& title, const std::string& xlabel, const std::string& ylabel,
                  const std::string& data_and_plot) {
    std::ostringstream gp;
    gp << "set terminal pngcairo noenhanced size 900,560 font 'sans,10'\nset output " << gnuplot_quote(fs::absolute(file).string())
       << "\nset title " << gnuplot_quote(title) << "\nset xlabel " << gnuplot_quote(xlabel) << "\nset ylabel "
       << gnuplot_quote(ylabel) << "\nset grid\nset key outside right top\n" << data_and_plot;
    try {
      run_gnuplot(gp.str(), file);
    } catch (const Error& e) {
      std::cerr << "study: no plot " << file << ": " << e.what() << "\n";
    }
  };
  for (const auto& m : metric_names) {
    std::ostringstream body;
    body << "set xtics (" << xtics << ")\nset xrange [-0.5:" << xlabels.size() - 0.5 << "]\n";
    std::vector<std::string> plots;
    for (size_t s = 0; s < series.size(); ++s) {
      body << "$s" << s << " << EOD\n";
      std::vector<std::pair<int, std::pair<double, double>>> pts;
      for (const Group& g : groups)
        if (series_of(g) == series[s] && g.values.count(m)) pts.push_back({x_of(g), mean_std(g.values.at(m))});
      std::sort(pts.begin(), pts.end());
      for (const auto& [x, ms] : pts) body << x << " " << ms.first << " " << ms.second << "\n";
      body << "EOD\n";
      plots.push_back("$s" + std::to_string(s) + " using 1:2:3 with yerrorlines lc " + std::to_string(s + 1) + " title " +
                      gnuplot_quote(series[s]));
    }
    body << "plot " << join(plots, ", ") << "\n";
    plot(folder + "/plot_" + slug(m) + ".png", spec.name + ": " + metric_title(m), spec.x, metric_title(m), body.str());
  }
  if (std::find(metric_names.begin(), metric_names.end(), "view_emd") != metric_names.end())
    for (const auto& m : metric_names) {
      if (m == "view_emd" || m.find("top1") == std::string::npos) continue;
      std::ostringstream body;
      std::vector<std::string> plots;
      for (size_t s = 0; s < series.size(); ++s) {
        body << "$e" << s << " << EOD\n";
        for (const Group& g : groups)
          if (series_of(g) == series[s] && g.values.count(m) && g.values.count("view_emd"))
            body << mean_std(g.values.at("view_emd")).first << " " << mean_std(g.values.at(m)).first << " \""
                 << xlabels[static_cast<size_t>(x_of(g))] << "\"\n";  // a data string: double quotes
        body << "EOD\n";
        // One colour a series, fixed, so the labels' plots do not shift the colour cycle.
        const std::string lc = " lc " + std::to_string(s + 1);
        plots.push_back("$e" + std::to_string(s) + " using 1:2 with points pt 7 ps 1.4" + lc + " title " +
                        gnuplot_quote(series[s]) + ", $e" + std::to_string(s) +
                        " using 1:2:3 with labels offset 0,0.9 font ',8' textcolor 'gray30' notitle");
      }
      body << "plot " << join(plots, ", ") << "\n";
      plot(folder + "/plot_" + slug(m) + "_vs_view_emd.png", spec.name + ": " + metric_title(m) + " against view EMD",
           metric_title("view_emd"), metric_title(m), body.str());
    }
}

}  // namespace

void write_study_report(const StudySpec& spec, const std::vector<StudyCell>& cells, const std::string& folder,
                        const std::string& scale) {
  // results.jsonl: one line per cell and evaluation (and one per failed cell).
  struct Row {
    const StudyCell* cell;
    std::map<std::string, double> metrics;
  };
  std::vector<Row> rows;
  std::vector<std::pair<std::string, std::string>> failures;
  {
    std::ofstream out(folder + "/results.jsonl.tmp", std::ios::trunc);
    for (const StudyCell& c : cells) {
      const std::string dir = folder + "/cells/" + c.id;
      json base;
      base["study"] = spec.name;
      base["scale"] = scale;
      base["cell"] = c.id;
      for (const auto& [k, v] : c.coords) base[k] = v;
      base["seed"] = c.seed;
      if (fs::exists(dir + "/error.txt")) {
        std::ifstream ef(dir + "/error.txt");
        std::string msg((std::istreambuf_iterator<char>(ef)), std::istreambuf_iterator<char>());
        json j = base;
        j["error"] = msg;
        out << j.dump() << "\n";
        failures.emplace_back(c.id, msg);
        continue;
      }
      Row row{&c, {}};
      for (const auto& [name, r] : recorded(dir)) {
        json j = base;
        j["eval"] = name;
        for (const auto& [m, v] : metrics_of(name, r)) {
          j[m] = v;
          row.metrics[m] = v;
        }
        j["result"] = r;
        out << j.dump() << "\n";
      }
      if (!row.metrics.empty()) rows.push_back(row);
    }
    if (!out) fail("study: cannot write ", folder, "/results.jsonl");
  }
  fs::rename(folder + "/results.jsonl.tmp", folder + "/results.jsonl");

  // Groups: the cells that differ only in the seed.
  std::vector<Group> groups;
  std::vector<std::string> metric_names;
  for (const Row& r : rows) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) { return g.coords == r.cell->coords; });
    if (it == groups.end()) {
      groups.push_back({r.cell->coords, {}});
      it = groups.end() - 1;
    }
    for (const auto& [m, v] : r.metrics) {
      it->values[m].push_back(v);
      if (std::find(metric_names.begin(), metric_names.end(), m) == metric_names.end()) metric_names.push_back(m);
    }
  }


  // Plots: each metric against the x axis (one line per combination of the other coordinates,
  // error bars over seeds), and accuracy against view EMD when both were measured.
  if (!groups.empty() && !spec.x.empty()) plot_study(spec, folder, groups, metric_names);
  // results.md
  {
    std::ofstream md(folder + "/results.md.tmp", std::ios::trunc);
    md << "# Study " << spec.name << " (scale " << scale << ")\n\n";
    if (!spec.description.empty()) md << spec.description << "\n\n";
    md << "Study file `" << spec.path << "`, base config `" << spec.base << "`; " << cells.size() << " cells ("
       << spec.seeds.size() << " seed" << (spec.seeds.size() == 1 ? "" : "s") << " each); mean +- sample std over seeds.\n\n";
    std::vector<std::string> coord_names;
    if (!groups.empty())
      for (const auto& [k, v] : groups.front().coords) coord_names.push_back(k);
    md << "| " << join(coord_names, " | ") << (coord_names.empty() ? "" : " | ") << "seeds | " << join(metric_names, " | ")
       << " |\n|";
    for (size_t i = 0; i < coord_names.size() + 1 + metric_names.size(); ++i) md << "---|";
    md << "\n";
    for (const Group& g : groups) {
      md << "| ";
      for (const auto& [k, v] : g.coords) md << v << " | ";
      size_t n = 0;
      for (const auto& [m, v] : g.values) n = std::max(n, v.size());
      md << n;
      for (const auto& m : metric_names) {
        md << " | ";
        if (!g.values.count(m)) {
          md << "-";
          continue;
        }
        const auto [mu, sd] = mean_std(g.values.at(m));
        md << std::fixed << std::setprecision(m == "view_emd" ? 4 : 2) << mu;
        if (g.values.at(m).size() > 1) md << " +- " << sd;
        md << std::defaultfloat;
      }
      md << " |\n";
    }
    if (!failures.empty()) {
      md << "\nFailed cells:\n\n";
      for (const auto& [id, msg] : failures) md << "- `" << id << "`: " << msg << "\n";
    }
    std::vector<std::string> pngs;
    for (const auto& e : fs::directory_iterator(folder))
      if (e.path().extension() == ".png") pngs.push_back(e.path().filename().string());
    std::sort(pngs.begin(), pngs.end());
    if (!pngs.empty()) md << "\n";
    for (const auto& p : pngs) md << "![" << p << "](" << p << ")\n";
    if (!md) fail("study: cannot write ", folder, "/results.md");
  }
  fs::rename(folder + "/results.md.tmp", folder + "/results.md");

}

// ---------------------------------------------------------------- the runner

namespace {

// A cell's (or prepared run's) pretraining in `dir`: resumed when a checkpoint is there.
PretrainOptions run_options(const StudySpec& spec, const StudyCell& c, const std::string& dir) {
  PretrainOptions p;
  p.config_path = spec.base;
  p.sets = c.sets;
  p.output = dir;
  p.console = false;
  p.resume = fs::exists(dir + "/checkpoint.safetensors");
  return p;
}

}  // namespace

StudySummary run_study(const StudyOptions& o) {
  const StudySpec spec = load_study(o.path);
  StudySummary sum;
  sum.folder = !o.output.empty() ? o.output : !spec.output.empty() ? spec.output : "runs/studies/" + spec.name;
  if (o.scale != "small") sum.folder += "_" + o.scale;
  std::vector<StudyCell> cells = study_cells(spec, o.scale, o.sets);
  // The prepared runs, trained with the scale's and the study's settings and their own.
  std::vector<StudyCell> prepared;
  for (const StudyVariant& p : spec.prepare) {
    StudyCell c;
    c.id = "prepare/" + slug(p.name);
    c.seed = spec.seeds.front();
    c.sets = spec.sets;
    if (spec.scales.count(o.scale)) c.sets.insert(c.sets.end(), spec.scales.at(o.scale).begin(), spec.scales.at(o.scale).end());
    c.sets.push_back("run.seed=" + std::to_string(c.seed));
    c.sets.insert(c.sets.end(), p.sets.begin(), p.sets.end());
    c.sets.insert(c.sets.end(), o.sets.begin(), o.sets.end());
    prepared.push_back(c);
  }
  // "{prepare.NAME}" -> that run's folder, "{videos}" -> the synthetic videos' folder.
  std::vector<std::pair<std::string, std::string>> places{{"{videos}", fs::absolute(sum.folder + "/videos").string()}};
  for (const StudyVariant& p : spec.prepare)
    places.emplace_back("{prepare." + p.name + "}", fs::absolute(sum.folder + "/prepare/" + slug(p.name)).string());
  for (std::vector<StudyCell>* group : {&cells, &prepared})
    for (StudyCell& c : *group)
      for (std::string& a : c.sets)
        for (const auto& [tag, where] : places)
          for (size_t at; (at = a.find(tag)) != std::string::npos;) a.replace(at, tag.size(), where);
  // Every run's config is checked before any training, so a bad key fails at once.
  for (const StudyCell& c : prepared) load_run_config(spec.base, c.sets, sum.folder + "/" + c.id);
  for (const StudyCell& c : cells) load_run_config(spec.base, c.sets, sum.folder + "/cells/" + c.id);
  fs::create_directories(sum.folder + "/cells");
  {
    std::ofstream f(sum.folder + "/study.toml");
    std::ifstream in(spec.path);
    f << in.rdbuf();
  }
  sum.cells = static_cast<int>(cells.size());
  const std::vector<std::string> names = eval_names(spec);
  const StudyEval& eval = spec.scale_eval.count(o.scale) ? spec.scale_eval.at(o.scale) : spec.eval;
  auto say = [&](const std::string& s) {
    if (o.console) std::cerr << s << std::endl;
  };
  say("study " + spec.name + " (scale " + o.scale + "): " + std::to_string(cells.size()) + " cells in " + sum.folder);
  const auto t_start = std::chrono::steady_clock::now();
  const StudyVideos& videos = spec.scale_videos.count(o.scale) ? spec.scale_videos.at(o.scale) : spec.videos;
  if (videos.enabled && !fs::exists(sum.folder + "/videos/.done")) {
    MakeVideosCommand m;
    m.sets = videos.source;
    for (const std::string& a : o.sets)
      if (a.rfind("data.", 0) == 0) m.sets.push_back(a);  // the command line's data is the source too
    m.output = sum.folder + "/videos";
    m.clips = videos.clips;
    m.frames = videos.frames;
    m.seed = videos.seed;
    std::ostringstream out;
    run_make_videos(m, out);
    std::ofstream(sum.folder + "/videos/.done") << out.str();
    say("videos: " + std::to_string(m.clips) + " clips of " + std::to_string(m.frames) + " frames in " + m.output);
  }
  for (const StudyCell& c : prepared) {
    const std::string dir = sum.folder + "/" + c.id;
    if (fs::exists(dir + "/pretrain.done")) continue;
    const PretrainOptions p = run_options(spec, c, dir);
    say(c.id + (p.resume ? ": resuming pretraining" : ": pretraining (the cells need it)"));
    const PretrainResult r = pretrain(p);  // an error here stops the study: the cells depend on it
    if (r.interrupted) {
      say("interrupted in " + c.id + " (its checkpoint is saved); run the same command to continue the study");
      return sum;
    }
    std::ofstream(dir + "/pretrain.done") << "step " << r.step << "\n";
    say(c.id + ": done in " + duration(seconds_since(t_start)));
  }
  int worked = 0;
  double worked_s = 0;
  for (size_t i = 0; i < cells.size(); ++i) {
    const StudyCell& c = cells[i];
    const std::string dir = sum.folder + "/cells/" + c.id;
    const std::string tag = "[" + std::to_string(i + 1) + "/" + std::to_string(cells.size()) + "] " + c.id;
    std::map<std::string, json> have = recorded(dir);
    const bool complete =
        fs::exists(dir + "/pretrain.done") && std::all_of(names.begin(), names.end(), [&](const std::string& n) { return have.count(n); });
    if (complete) {
      ++sum.skipped;
      say(tag + ": finished before, skipped");
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    fs::remove(dir + "/error.txt");
    try {
      if (!fs::exists(dir + "/pretrain.done")) {
        const PretrainOptions p = run_options(spec, c, dir);
        say(tag + (p.resume ? ": resuming pretraining" : ": pretraining"));
        PretrainResult r = pretrain(p);
        if (r.interrupted) {
          say("interrupted in " + c.id + " (its checkpoint is saved); run the same command to continue the study");
          write_study_report(spec, cells, sum.folder, o.scale);
          return sum;
        }
        std::ofstream(dir + "/pretrain.done") << "step " << r.step << "\n";
      }
      std::ostringstream got;
      for (const std::string& n : names) {
        if (have.count(n)) continue;
        json r = evaluate(eval, n, dir + "/checkpoint.safetensors");
        r["eval"] = n;
        std::ofstream f(dir + "/eval.jsonl", std::ios::app);
        f << r.dump() << "\n";
        if (!f) fail("study: cannot write ", dir, "/eval.jsonl");
        for (const auto& [m, v] : metrics_of(n, r)) got << (got.tellp() > 0 ? ", " : "") << m << " " << v;
      }
      ++sum.done;
      ++worked;
      worked_s += seconds_since(t0);
      const double left = worked_s / worked * static_cast<double>(cells.size() - i - 1);
      say(tag + ": done in " + duration(seconds_since(t0)) + (got.tellp() > 0 ? " (" + got.str() + ")" : "") +
          "; study ETA " + duration(left));
    } catch (const Error& e) {
      ++sum.failed;
      std::ofstream(dir + "/error.txt") << e.what();
      say(tag + ": FAILED: " + e.what());
    }
    write_study_report(spec, cells, sum.folder, o.scale);
  }
  write_study_report(spec, cells, sum.folder, o.scale);
  say("study " + spec.name + ": " + std::to_string(sum.done) + " cells run, " + std::to_string(sum.skipped) +
      " finished before, " + std::to_string(sum.failed) + " failed, in " + duration(seconds_since(t_start)) + "; " +
      sum.folder + "/results.md");
  return sum;
}

void add_study_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("study", "A grid of pretraining runs, each evaluated the same way: table and plots");
  auto o = std::make_shared<StudyOptions>();
  cmd->add_option("study", o->path, "the study file (configs/studies/*.toml)")->required();
  cmd->add_option("--scale", o->scale, "smoke (a few steps, for tests), small (CPU) or full (GPU)")->capture_default_str();
  cmd->add_option("--set", o->sets, "override a config key in every cell (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--output", o->output, "the study folder (default: runs/studies/<name>[_<scale>])");
  cmd->callback([o] {
    const StudySummary s = run_study(*o);
    if (s.failed > 0) throw CLI::RuntimeError(1);
  });
}

}  // namespace siam::apps
