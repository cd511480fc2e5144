#pragma once
// Training curves as PNG: each run folder's metrics.jsonl (one JSON object per line) drawn
// side by side by gnuplot, which siam runs as a subprocess on a generated script.
#include <array>
#include <string>
#include <vector>

namespace siam::apps {

struct RunMetrics {
  std::string name;                         // the run folder's name: the legend entry
  // (step, loss) and (step, lr) of lines with "step" and "loss" / "lr", except siam
  // pretrain's epoch records ("kind": "epoch", whose loss is the epoch's mean)
  std::vector<std::array<double, 2>> loss;
  std::vector<std::array<double, 2>> lr;
  std::vector<std::array<double, 2>> knn;   // (epoch, knn_top1) of lines with "epoch" and "knn_top1"
  // (step, embedding_std): the collapse signal, about 1/sqrt(d) when healthy, 0 when collapsed
  std::vector<std::array<double, 2>> embedding_std;
};

// Reads run_dir/metrics.jsonl. Blank lines are skipped; a line that is not a JSON object, or
// a key above that is not a number, is a siam::Error naming file:line; so is a file with no
// loss, lr or knn_top1 value.
RunMetrics read_metrics(const std::string& run_dir);

// The gnuplot script drawing one panel per quantity that any run has (loss and learning rate
// against the step, kNN top-1 against the epoch), one line per run. Each series is read from
// data_dir/run<i>_<loss|lr|knn>.dat, as write_plot_data writes them.
std::string gnuplot_script(const std::vector<RunMetrics>& runs, const std::string& data_dir,
                           const std::string& output_png);
void write_plot_data(const std::vector<RunMetrics>& runs, const std::string& data_dir);

// Reads every run, writes the data and script to a temporary folder, runs gnuplot on it and
// checks that output_png was written. A missing gnuplot, or one that fails, is a siam::Error
// (with gnuplot's own message).
void plot_runs(const std::vector<std::string>& run_dirs, const std::string& output_png);

// Runs gnuplot on a script (its data inline, or in files it names) and checks that it wrote
// output_png; a missing or failing gnuplot is a siam::Error with gnuplot's message.
void run_gnuplot(const std::string& script, const std::string& output_png);

// A gnuplot single-quoted string literal of s.
std::string gnuplot_quote(const std::string& s);

}  // namespace siam::apps
