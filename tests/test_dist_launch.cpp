// Multi-rank runs through the real launchers. The failure path of `mpirun -np 2 siam pretrain`:
// one rank throws a siam::Error, or is killed with SIGKILL mid-run; the job must end within
// seconds (never hang), with the failing rank's message, the last checkpoint must load, and
// `--resume` must finish the same run as one never interrupted (bit for bit: the same world
// size reduces in the same order). And a real scheduler: a one-node Slurm started by
// scripts/slurm_local.sh runs `srun -n 2 --mpi=pmix siam pretrain`, which must end with the
// weights of the mpirun run. Skipped with the reason when mpirun or the siam binary is missing
// (scripts/deps.sh build installs OpenMPI), or Slurm cannot be set up without root.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "autograd/ops.h"
#include "nn/checkpoint.h"
#include "tests/synthetic_mnist.h"

using namespace siam;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

std::string siam_binary() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec).parent_path() / "siam";
  return !ec && fs::exists(p) ? p.string() : "";
}

std::string mpirun_path() {
  for (const char* d : {"/usr/bin/mpirun", "/usr/local/bin/mpirun"})
    if (fs::exists(d)) return d;
  return "";
}

std::string slurm_script() { return std::string(SIAM_SOURCE_DIR) + "/scripts/slurm_local.sh"; }

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs `args` with stdout and stderr to `log`; returns its pid.
pid_t spawn(std::vector<std::string> args, const std::string& log) {
  pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(log.c_str(), "w", stdout) || dup2(fileno(stdout), 2) < 0) _exit(127);
    setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// mpirun -np 2 siam args..., stdout and stderr to `log`; returns mpirun's pid.
pid_t launch(const std::vector<std::string>& siam_args, const std::string& log,
             const std::vector<std::string>& env = {}) {
  std::vector<std::string> args{mpirun_path(), "--oversubscribe", "--allow-run-as-root", "-np", "2"};
  for (const auto& e : env) {
    args.push_back("-x");
    args.push_back(e);
  }
  args.push_back(siam_binary());
  args.insert(args.end(), siam_args.begin(), siam_args.end());
  return spawn(args, log);
}

// Waits up to `limit` for pid; returns its exit status (128 + signal), or -1 on time-out (and
// kills it).
int wait_for(pid_t pid, std::chrono::seconds limit) {
  const auto end = clock_type::now() + limit;
  int status = 0;
  while (clock_type::now() < end) {
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

// The pid of the rank `rank` of the run writing to `folder` (found by its environment).
pid_t rank_pid(const std::string& folder, int rank) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = file_text(e.path().string() + "/cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find(folder) == std::string::npos || cmd.find("mpirun") != std::string::npos) continue;
    std::string env = file_text(e.path().string() + "/environ");
    std::replace(env.begin(), env.end(), '\0', '\n');
    if (env.find("\nOMPI_COMM_WORLD_RANK=" + std::to_string(rank) + "\n") != std::string::npos) return std::stoi(name);
  }
  return -1;
}

struct FaultRun {
  std::string dir, config;
  FaultRun(const std::string& name) {
    dir = (fs::temp_directory_path() / ("siam_fault_" + std::to_string(getpid()) + "_" + name)).string();
    fs::remove_all(dir);
    fs::create_directories(dir + "/mnist");
    testdata::write_synthetic_mnist(dir + "/mnist", "train", 192, 1);
    testdata::write_synthetic_mnist(dir + "/mnist", "t10k", 40, 2);
    config = dir + "/run.toml";
    testdata::write_file(config,
                         "[run]\nepochs = 8\nbatch_size = 16\ncheckpoint_every = 1\nlog_every = 1\nknn_every = 0\n"
                         "[backbone]\nsmall_input = true\nwidth = 8\n"
                         "[data]\ndataset = \"mnist\"\nroot = \"" + dir + "/mnist\"\nheldout = 0\n"
                         "[method]\nname = \"byol\"\n[method.byol]\nprojector = [32, 16]\npredictor = [32, 16]\n"
                         "[augment]\nblur_p = [0.0, 0.0]\n[optimizer]\nwarmup_epochs = 1\n");
  }
  ~FaultRun() { fs::remove_all(dir); }
  std::vector<std::string> args(const std::string& out, bool resume = false) const {
    std::vector<std::string> a{"pretrain", config, "--output", dir + "/" + out};
    if (resume) a.push_back("--resume");
    return a;
  }
  std::string checkpoint(const std::string& out) const { return dir + "/" + out + "/checkpoint.safetensors"; }
};

void expect_identical_models(const std::string& a, const std::string& b) {
  const auto x = nn::load_checkpoint(a).section("model"), y = nn::load_checkpoint(b).section("model");
  ASSERT_EQ(x.size(), y.size());
  for (const auto& [name, t] : x) {
    const Tensor u = contiguous(t), v = contiguous(y.at(name));
    ASSERT_EQ(u.nbytes(), v.nbytes()) << name;
    EXPECT_EQ(std::memcmp(u.raw_data(), v.raw_data(), u.nbytes()), 0) << name << " differs";
  }
}

#define SKIP_WITHOUT_LAUNCHER()                                                                  \
  if (mpirun_path().empty()) GTEST_SKIP() << "no mpirun (scripts/deps.sh build installs OpenMPI)"; \
  if (siam_binary().empty()) GTEST_SKIP() << "the siam binary is not built beside the tests"

}  // namespace

TEST(DistFaults, AnErrorOnOneRankEndsTheJobWithItsMessage) {
  SKIP_WITHOUT_LAUNCHER();
  FaultRun f("error");
  const auto t0 = clock_type::now();
  const int rc = wait_for(launch(f.args("run"), f.dir + "/log", {"SIAM_FAULT_INJECT=1:20"}), std::chrono::seconds(120));
  const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
  const std::string log = file_text(f.dir + "/log");
  ASSERT_NE(rc, -1) << "the job hung after a rank failed:\n" << log;
  EXPECT_NE(rc, 0) << log;
  EXPECT_NE(log.find("[rank 1/2 on "), std::string::npos) << log;
  EXPECT_NE(log.find("an error injected at step 20"), std::string::npos) << log;
  // 12 steps an epoch: the checkpoint of epoch 1 (step 12) is there and loads.
  nn::Checkpoint ck = nn::load_checkpoint(f.checkpoint("run"));
  EXPECT_EQ(ck.step, 12);
  std::cerr << "job ended " << s << " s after its start\n";
}

TEST(DistFaults, KilledRankEndsTheJobAndResumeFinishesTheSameRun) {
  SKIP_WITHOUT_LAUNCHER();
  FaultRun f("kill");
  ASSERT_EQ(wait_for(launch(f.args("whole"), f.dir + "/whole.log"), std::chrono::seconds(300)), 0)
      << file_text(f.dir + "/whole.log");
  const pid_t job = launch(f.args("run"), f.dir + "/log");
  // Wait for the first checkpoint, then kill rank 1 while the run goes on.
  const auto end = clock_type::now() + std::chrono::seconds(120);
  while (!fs::exists(f.checkpoint("run")) && clock_type::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(fs::exists(f.checkpoint("run"))) << file_text(f.dir + "/log");
  const pid_t victim = rank_pid(f.dir + "/run", 1);
  ASSERT_GT(victim, 0) << "rank 1 not found";
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  const auto t0 = clock_type::now();
  const int rc = wait_for(job, std::chrono::seconds(60));
  const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
  ASSERT_NE(rc, -1) << "the job hung after a rank was killed:\n" << file_text(f.dir + "/log");
  EXPECT_NE(rc, 0);
  std::cerr << "job ended " << s << " s after rank 1 was killed\n";
  const nn::Checkpoint ck = nn::load_checkpoint(f.checkpoint("run"));
  EXPECT_LT(ck.step, 96) << "the run finished before the kill; the test did not test anything";
  ASSERT_EQ(wait_for(launch(f.args("run", true), f.dir + "/resume.log"), std::chrono::seconds(300)), 0)
      << file_text(f.dir + "/resume.log");
  EXPECT_EQ(nn::load_checkpoint(f.checkpoint("run")).step, 96);
  expect_identical_models(f.checkpoint("whole"), f.checkpoint("run"));
}

TEST(DistLaunch, SrunUnderOneNodeSlurmEqualsMpirun) {
  SKIP_WITHOUT_LAUNCHER();
  FaultRun f("slurm");
  std::vector<std::string> mpi = f.args("mpi"), srun = f.args("srun");
  for (auto* a : {&mpi, &srun})
    for (const char* s : {"run.epochs=2", "run.threads=1"}) {
      a->push_back("--set");
      a->push_back(s);
    }
  ASSERT_EQ(wait_for(launch(mpi, f.dir + "/mpi.log"), std::chrono::seconds(300)), 0) << file_text(f.dir + "/mpi.log");
  std::vector<std::string> cmd{"/bin/bash", slurm_script(), "--", "srun", "-n", "2", "--mpi=pmix", siam_binary()};
  cmd.insert(cmd.end(), srun.begin(), srun.end());
  const int rc = wait_for(spawn(cmd, f.dir + "/srun.log"), std::chrono::seconds(600));
  const std::string log = file_text(f.dir + "/srun.log");
  if (rc == 2 && getuid() != 0 && log.find("root") != std::string::npos)
    GTEST_SKIP() << "a one-node Slurm needs root here: " << log;
  ASSERT_EQ(rc, 0) << log;
  EXPECT_NE(log.find("Slurm up"), std::string::npos) << log;
  expect_identical_models(f.checkpoint("mpi"), f.checkpoint("srun"));
}
