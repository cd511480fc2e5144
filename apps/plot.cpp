#include "apps/plot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tensor/error.h"

extern char** environ;

namespace siam::apps {

namespace fs = std::filesystem;

// A gnuplot single-quoted string: a quote is written twice.
std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

namespace {

struct Series {
  const char* key;   // file suffix
  const char* title;
  const char* xlabel;
  std::vector<std::array<double, 2>> RunMetrics::*points;
};
const Series kSeries[] = {
    {"loss", "training loss", "step", &RunMetrics::loss},
    {"lr", "learning rate", "step", &RunMetrics::lr},
    {"knn", "kNN top-1 (%)", "epoch", &RunMetrics::knn},
    {"embedding_std", "embedding std (0: collapse)", "step", &RunMetrics::embedding_std},
};

std::string quoted(const std::string& s) { return gnuplot_quote(s); }

std::string find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string d; std::getline(dirs, d, ':');) {
    if (d.empty()) continue;
    fs::path p = fs::path(d) / program;
    if (access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "";
}

// A fresh folder under the system's temporary folder, removed when the object goes.
class TempDir {
 public:
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "siam-plot-XXXXXX").string();
    if (!mkdtemp(templ.data())) fail("plot: cannot create a temporary folder from ", templ);
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

RunMetrics read_metrics(const std::string& run_dir) {
  const std::string path = (fs::path(run_dir) / "metrics.jsonl").string();
  std::ifstream in(path);
  if (!in) fail("plot: cannot read ", path, " (expected a run folder with metrics.jsonl)");
  RunMetrics r;
  r.name = fs::path(run_dir).lexically_normal().filename().string();
  if (r.name.empty()) r.name = fs::path(run_dir).lexically_normal().parent_path().filename().string();
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      fail(path, ":", n, ": expected one JSON object per line, found '", line.substr(0, 80), "'");
    auto number = [&](const char* key, double* out) {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) return false;
      if (!it->is_number()) fail(path, ":", n, ": \"", key, "\" is ", it->dump(), ", expected a number");
      *out = it->get<double>();
      return true;
    };
    double step, epoch, v;
    const bool has_step = number("step", &step), has_epoch = number("epoch", &epoch);
    // siam pretrain's epoch records ("kind": "epoch") carry the epoch's mean loss at the
    // epoch's last step: drawn among the step records it would make a kink.
    auto kind = j.find("kind");
    const bool epoch_record = kind != j.end() && kind->is_string() && kind->get<std::string>() == "epoch";
    if (has_step && !epoch_record && number("loss", &v)) r.loss.push_back({step, v});
    if (has_step && !epoch_record && number("lr", &v)) r.lr.push_back({step, v});
    if (has_epoch && number("knn_top1", &v)) r.knn.push_back({epoch, v});
    if (has_step && !epoch_record && number("embedding_std", &v)) r.embedding_std.push_back({step, v});
  }
  if (r.loss.empty() && r.lr.empty() && r.knn.empty())
    fail(path, ": no \"loss\" or \"lr\" (with \"step\") and no \"knn_top1\" (with \"epoch\") in any line");
  return r;
}

void write_plot_data(const std::vector<RunMetrics>& runs, const std::string& data_dir) {
  for (size_t i = 0; i < runs.size(); ++i)
    for (const Series& s : kSeries) {
      const auto& pts = runs[i].*s.points;
      if (pts.empty()) continue;
      const std::string path = data_dir + "/run" + std::to_string(i) + "_" + s.key + ".dat";
      std::ofstream out(path);
      out.precision(17);
      for (const auto& p : pts) out << p[0] << ' ' << p[1] << '\n';
      if (!out) fail("plot: cannot write ", path);
    }
}

std::string gnuplot_script(const std::vector<RunMetrics>& runs, const std::string& data_dir,
                           const std::string& output_png) {
  std::vector<const Series*> panels;
  for (const Series& s : kSeries)
    for (const RunMetrics& r : runs)
      if (!(r.*s.points).empty()) {
        panels.push_back(&s);
        break;
      }
  SIAM_CHECK(!panels.empty(), "gnuplot_script: no series to draw");
  const int width = 560 * static_cast<int>(panels.size()), height = 420;
  std::ostringstream o;
  // pngcairo draws antialiased lines; the libgd png terminal is the fallback of minimal builds.
  o << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
    << "  set terminal pngcairo noenhanced size " << width << "," << height << " font ',10'\n"
    << "} else {\n"
    << "  set terminal png noenhanced size " << width << "," << height << "\n"
    << "}\n"
    << "set output " << quoted(output_png) << "\n"
    << "set grid\n"
    << "set multiplot layout 1," << panels.size() << "\n";
  for (const Series* s : panels) {
    // Loss and learning rate fall, accuracy rises: the key goes where the curves are not.
    o << "set key " << (std::string(s->key) == "knn" ? "bottom" : "top") << " right\n"
      << "set title " << quoted(s->title) << "\n"
      << "set xlabel " << quoted(s->xlabel) << "\n"
      << "plot";
    bool first = true;
    for (size_t i = 0; i < runs.size(); ++i) {
      if ((runs[i].*s->points).empty()) continue;
      o << (first ? " " : ", \\\n     ")
        << quoted(data_dir + "/run" + std::to_string(i) + "_" + s->key + ".dat") << " using 1:2 with "
        << (std::string(s->key) == "knn" ? "linespoints" : "lines") << " lw 1.5 lc " << i + 1 << " title "
        << quoted(runs[i].name);
      first = false;
    }
    o << "\n";
  }
  o << "unset multiplot\n";
  return o.str();
}

void run_gnuplot(const std::string& script_text, const std::string& output_png) {
  const std::string gnuplot = find_on_path("gnuplot");
  if (gnuplot.empty())
    fail("plot: gnuplot not found on PATH; install it (Debian: apt-get install gnuplot-nox)");
  TempDir tmp;
  const std::string script = tmp.path() + "/plot.gp", log = tmp.path() + "/gnuplot.log";
  const std::string target = fs::absolute(output_png).string();
  {
    std::ofstream out(script);
    out << script_text;
    if (!out) fail("plot: cannot write ", script);
  }
  std::error_code ec;
  fs::remove(target, ec);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> argv = {const_cast<char*>(gnuplot.c_str()), const_cast<char*>(script.c_str()), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, gnuplot.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) fail("plot: cannot run ", gnuplot, ": ", std::strerror(rc));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) fail("plot: waiting for gnuplot: ", std::strerror(errno));
  std::ifstream lf(log);
  std::string messages((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("plot: gnuplot failed (", WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status)) : "killed",
         "): ", messages);
  if (!fs::exists(target, ec) || fs::file_size(target, ec) == 0)
    fail("plot: gnuplot did not write ", target, messages.empty() ? "" : ": " + messages);
}

void plot_runs(const std::vector<std::string>& run_dirs, const std::string& output_png) {
  if (run_dirs.empty()) fail("plot: no run folder given");
  std::vector<RunMetrics> runs;
  for (const std::string& d : run_dirs) runs.push_back(read_metrics(d));
  TempDir data;
  write_plot_data(runs, data.path());
  run_gnuplot(gnuplot_script(runs, data.path(), fs::absolute(output_png).string()), output_png);
}

}  // namespace siam::apps
