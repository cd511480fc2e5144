#include "dist/dist.h"

#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "dist/backend.h"

namespace siam::dist {

namespace {

// One process: every collective is the identity (all_gather returns its input as is).
class SelfGroup final : public Group {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend(const Device&) const override { return "self"; }
  void all_reduce(Tensor&, ReduceOp) override {}
  std::unique_ptr<Work> all_reduce_async(Tensor, ReduceOp) override {
    struct Done final : Work {
      void wait() override {}
      bool done() override { return true; }
    };
    return std::make_unique<Done>();
  }
  Tensor all_gather(const Tensor& x) override { return x; }
  Tensor reduce_scatter(const Tensor& x, ReduceOp) override { return x; }
  void broadcast(Tensor&, int root) override {
    if (root != 0) fail("broadcast: root ", root, " is not a rank of a one-process group");
  }
  void barrier() override {}
  std::unique_ptr<Group> split(int) const override { return std::make_unique<SelfGroup>(); }
  std::unique_ptr<Group> duplicate() const override { return std::make_unique<SelfGroup>(); }
};

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// Which launcher started this process, from the variables each one sets.
std::string detect_launcher() {
  if (env("SIAM_NO_MPI")) return "none";
  if (env("OMPI_COMM_WORLD_SIZE")) return "mpirun";
  if (env("SLURM_STEP_ID") && (env("PMIX_RANK") || env("PMI_RANK") || env("PMI_FD"))) return "srun";
  if (env("PMIX_RANK") || env("PMI_RANK") || env("PMI_SIZE")) return "pmi";
  return "none";
}

std::mutex g_mu;
std::unique_ptr<Group> g_world;
Launch g_launch;

}  // namespace

void init() {
  std::lock_guard<std::mutex> lk(g_mu);
  if (g_world) return;
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  g_launch.host = host;
  g_launch.launcher = detect_launcher();
  if (g_launch.launcher != "none") {
    if (!mpi_compiled())
      fail("this process was started by ", g_launch.launcher,
           " but this siam build has no MPI (install libopenmpi-dev and rebuild); run it without a launcher");
    g_world = detail::mpi_start(g_launch);
  } else {
    g_world = std::make_unique<SelfGroup>();
  }
}

void finalize() {
  std::lock_guard<std::mutex> lk(g_mu);
  if (detail::mpi_running()) {
    g_world.reset();
    detail::mpi_finalize();
  }
}

Group& world() {
  if (!g_world) init();
  return *g_world;
}

const Launch& launch() {
  world();
  return g_launch;
}

std::string mpi_version() { return detail::mpi_version(); }

std::unique_ptr<Group> self_group() { return std::make_unique<SelfGroup>(); }

std::unique_ptr<Group> make_group(const std::string& backend, Group& base, int cuda_device) {
  if (backend != "auto" && backend != "mpi" && backend != "nccl")
    fail("run.dist_backend must be \"auto\", \"mpi\" or \"nccl\", got \"", backend, "\"");
  if (backend == "nccl" && !nccl_compiled())
    fail("run.dist_backend = \"nccl\" but this build has no NCCL (it needs the CUDA backend and MPI); use \"mpi\"");
  if (backend == "mpi" || cuda_device < 0) return base.duplicate();
  if (backend == "nccl") return detail::make_nccl(base, cuda_device);  // even for one rank
  if (base.size() == 1 || !nccl_compiled()) return base.duplicate();
  return detail::make_nccl(base, cuda_device);
}

[[noreturn]] void abort_job(const std::string& message, int code) {
  const Launch& l = g_launch;
  std::ostringstream os;
  if (l.size > 1) os << "[rank " << l.rank << "/" << l.size << " on " << l.host << "] ";
  os << "siam: " << message << "\n";
  std::cerr << os.str() << std::flush;
  if (detail::mpi_running() && l.size > 1) detail::mpi_abort(code);
  std::exit(code);
}

int default_threads() {
  cpu_set_t set;
  int cores = static_cast<int>(std::thread::hardware_concurrency());
  if (sched_getaffinity(0, sizeof set, &set) == 0) cores = CPU_COUNT(&set);
  const Launch& l = launch();
  // mpirun binds each rank to its own cores unless oversubscribed; the affinity then already
  // is the rank's share.
  const int node = static_cast<int>(std::thread::hardware_concurrency());
  if (cores < node) return std::max(1, cores);
  return std::max(1, cores / std::max(1, l.local_size));
}

uint64_t fnv1a(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

void require_same(Group& g, uint64_t value, const std::string& what) {
  if (g.size() == 1) return;
  Tensor mine = empty({1}, {DType::i64});
  mine.data<int64_t>()[0] = static_cast<int64_t>(value);
  Tensor all = g.all_gather(mine);
  const int64_t* v = all.data<int64_t>();
  bool same = true;
  for (int r = 1; r < g.size(); ++r) same = same && v[r] == v[0];
  if (same) return;
  std::ostringstream os;
  for (int r = 0; r < g.size(); ++r) os << (r ? ", " : "") << "rank " << r << ": " << std::hex << static_cast<uint64_t>(v[r]);
  fail("the ranks disagree on ", what, " (", os.str(), ")");
}

}  // namespace siam::dist
