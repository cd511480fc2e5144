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
#include "apps/study.h"
#include "apps/verify.h"
#include "dist/dist.h"
#include "tensor/cuda_runtime.h"
#include "tensor/error.h"

// This rank's threads, BLAS, distributed set-up and devices.
static void print_rank_info(const siam::dist::Launch& l, int world_size) {
  std::cout << "siam " << SIAM_VERSION << "\n";
  std::cout << "threads: " << omp_get_max_threads() << " (OpenMP)";
  if (l.local_size > 1)
    std::cout << "; a run uses " << siam::dist::default_threads() << " (run.threads = 0: the node's cores shared by its "
              << l.local_size << " ranks)";
  std::cout << "\n";
  std::cout << "BLAS: OpenBLAS " << openblas_get_config()
            << ", one thread per call (large products are cut over the OpenMP threads)\n";
  std::cout << "MPI: " << siam::dist::mpi_version() << "; NCCL: "
            << (siam::dist::nccl_compiled() ? "compiled" : "not compiled") << "\n";
  if (l.launcher == "none") {
    std::cout << "distributed: one process (no launcher; start ranks with mpirun or srun)\n";
  } else {
    std::cout << "distributed: rank " << l.rank << " of " << world_size << " (" << l.launcher << "), local rank "
              << l.local_rank << " of " << l.local_size << " on " << l.host << "; backend: "
              << siam::dist::world().backend(siam::Device::cpu()) << " for CPU tensors, "
              << (siam::dist::nccl_compiled() ? "nccl" : "mpi (host-staged)") << " for CUDA tensors (run.dist_backend = auto)\n";
  }
  if (!siam::cuda::compiled()) {
    std::cout << "CUDA: not compiled (no GPU backend in this build)\n";
    std::cout << "device: cpu\n";
    return;
  }
  std::cout << "CUDA: " << siam::cuda::runtime_versions() << "\n";
  if (!siam::cuda::available()) {
    std::cout << "GPU: " << siam::cuda::unavailable_reason() << "; running on the CPU\n";
    std::cout << "device: cpu\n";
    return;
  }
  for (const auto& d : siam::cuda::devices())
    std::cout << "GPU cuda:" << d.index << ": " << d.name << ", sm_" << d.cc_major << d.cc_minor << ", " << d.sm_count
              << " SMs, " << (d.total_memory >> 20) << " MiB (" << (d.free_memory >> 20) << " MiB free)\n";
  std::cout << "device: cuda:" << l.local_rank % siam::cuda::device_count() << " (the local rank picks the GPU)\n";
}

// Under a launcher every rank answers, in rank order.
static void print_info() {
  siam::dist::Group& world = siam::dist::world();
  const siam::dist::Launch& l = siam::dist::launch();
  for (int r = 0; r < world.size(); ++r) {
    world.barrier();
    if (r != world.rank()) continue;
    if (world.size() > 1) std::cout << "---- rank " << r << " of " << world.size() << "\n";
    print_rank_info(l, world.size());
    std::cout << std::flush;
  }
  world.barrier();
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
  siam::apps::add_study_command(app);
  siam::apps::add_verify_command(app);
  try {
    siam::dist::init();  // MPI starts only under a launcher (mpirun, srun)
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help, --version and a command's own exit code go through CLI11; a bad flag is one line.
    if (e.get_exit_code() == 0 || e.get_name() == "RuntimeError") {
      const int code = app.exit(e);
      siam::dist::finalize();
      return code;
    }
    siam::dist::abort_job(std::string(e.what()) + " (see --help)", e.get_exit_code());
  } catch (const std::exception& e) {  // siam::Error and whatever the system throws
    // Under a launcher this ends every rank (MPI_Abort), so no rank waits for a dead peer.
    siam::dist::abort_job(e.what(), 1);
  }
  siam::dist::finalize();
  return 0;
}
