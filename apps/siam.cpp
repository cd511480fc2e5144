// The siam command. Subcommands: info (this build and machine). Pretraining and evaluation
// subcommands come with the apps.
#include <cblas.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "apps/bench.h"
#include "apps/eval_commands.h"
#include "apps/mine.h"
#include "apps/pretrain.h"
#include "tensor/cuda_runtime.h"
#include "tensor/error.h"

static void print_info() {
  std::cout << "siam " << SIAM_VERSION << "\n";
  std::cout << "threads: " << omp_get_max_threads() << " (OpenMP)\n";
  std::cout << "BLAS: OpenBLAS " << openblas_get_config() << ", " << openblas_get_num_threads()
            << " threads\n";
  if (!siam::cuda::compiled()) {
    std::cout << "CUDA: not compiled (no GPU backend in this build)\n";
    return;
  }
  std::cout << "CUDA: " << siam::cuda::runtime_versions() << "\n";
  if (!siam::cuda::available()) {
    std::cout << "GPU: " << siam::cuda::unavailable_reason() << "; running on the CPU\n";
    return;
  }
  for (const auto& d : siam::cuda::devices())
    std::cout << "GPU cuda:" << d.index << ": " << d.name << ", sm_" << d.cc_major << d.cc_minor
              << ", " << d.sm_count << " SMs, " << (d.total_memory >> 20) << " MiB ("
              << (d.free_memory >> 20) << " MiB free)\n";
}

int main(int argc, char** argv) {
  CLI::App app{"siam: self-supervised learning of visual representations, from scratch"};
  app.set_version_flag("--version", std::string("siam ") + SIAM_VERSION);
  app.require_subcommand(1);
  auto* info = app.add_subcommand("info", "Show threads, BLAS, CUDA devices and library versions");
  info->callback(print_info);
  siam::apps::add_pretrain_command(app);
  siam::apps::add_bench_command(app);
  siam::apps::add_eval_commands(app);
  siam::apps::add_mine_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help, --version and a command's own exit code go through CLI11; a bad flag is one line.
    if (e.get_exit_code() == 0 || e.get_name() == "RuntimeError") return app.exit(e);
    std::cerr << "siam: " << e.what() << " (see --help)\n";
    return e.get_exit_code();
  } catch (const std::exception& e) {  // siam::Error and whatever the system throws
    std::cerr << "siam: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
