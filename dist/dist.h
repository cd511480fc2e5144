#pragma once
// Collectives on tensors: the layer data-parallel training stands on (docs/distributed.md).
//
// A Group is a set of processes ("ranks") that run the same program on different slices of
// the global batch. Its collectives are blocking unless named _async, act on whole tensors,
// and must be called by every rank of the group in the same order with tensors of the same
// shape and dtype (all_gather: the same shape on every rank).
//
// Backends: "self" (one process, no launcher: every collective is the identity), "mpi"
// (OpenMPI; CPU tensors directly, CUDA tensors staged through the host), "nccl" (CUDA tensors;
// MPI still carries CPU tensors and the bootstrap). The process's world group comes from the
// launcher (mpirun, srun): dist::init() reads its environment and starts MPI only then, so a
// run without a launcher never touches MPI.
//
// Layering: above tensor/ and kernels/, below autograd/ (the differentiable collectives and
// synchronised batch norm are autograd ops in autograd/ops_dist.h).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace siam::dist {

enum class ReduceOp { sum, max, min };

// A collective in flight.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  virtual bool done() = 0;  // drives progress; true once wait() would not block
};

class Group {
 public:
  virtual ~Group() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Which transport carries tensors on `device`: "self", "mpi", "mpi (host-staged)" or "nccl".
  virtual std::string backend(const Device& device) const = 0;

  // In place on every rank: t = op over ranks of t. t: contiguous.
  virtual void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum) = 0;
  // The same, returning at once; t must stay alive and untouched until wait().
  virtual std::unique_ptr<Work> all_reduce_async(Tensor t, ReduceOp op = ReduceOp::sum) = 0;
  // x: (n, ...) on every rank -> (size n, ...), rank r's rows at [r n, (r + 1) n).
  virtual Tensor all_gather(const Tensor& x) = 0;
  // x: (size n, ...) -> (n, ...): rank r gets rows [r n, (r + 1) n) reduced over ranks.
  virtual Tensor reduce_scatter(const Tensor& x, ReduceOp op = ReduceOp::sum) = 0;
  // In place: every rank gets root's t.
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;
  // A new group of the ranks that pass the same color, ordered by rank (MPI_Comm_split).
  virtual std::unique_ptr<Group> split(int color) const = 0;
  // The same ranks on a separate channel, so collectives issued on it (gradient buckets while
  // backward runs) cannot interleave with this group's.
  virtual std::unique_ptr<Group> duplicate() const = 0;
};

// The launcher, as dist::init() found it.
struct Launch {
  std::string launcher = "none";  // "none", "mpirun", "srun" or "pmi"
  int rank = 0, size = 1;          // in the world
  int local_rank = 0, local_size = 1;  // among the ranks on this node
  std::string host;
};

// Starts the world group: MPI when a launcher started this process (and the build has MPI),
// otherwise the one-process group. Idempotent; world() calls it on first use.
void init();
// Ends MPI cleanly (call once, at the end of main). Harmless when MPI never started.
void finalize();
Group& world();
const Launch& launch();
bool mpi_compiled();
bool nccl_compiled();
std::string mpi_version();  // "Open MPI v4.1.4, ..." or why there is none

// A group of one process (no communication).
std::unique_ptr<Group> self_group();

// `backend`: "auto" (NCCL for CUDA tensors when compiled, MPI for CPU tensors), "mpi" (MPI for
// every tensor; CUDA tensors go through the host, which lets two ranks share a GPU), or "nccl"
// (as auto, but an error when NCCL is not compiled). The world group for a run.
std::unique_ptr<Group> make_group(const std::string& backend, Group& base, int cuda_device);

// Ends every rank of the job now (MPI_Abort under a launcher, exit otherwise), after printing
// `message` prefixed with this rank. Used when a siam::Error reaches main() on any rank, so a
// failing rank never leaves the others waiting in a collective.
[[noreturn]] void abort_job(const std::string& message, int code = 1);

// Threads a rank should use by default: the node's cores shared among its ranks.
int default_threads();

// A 64-bit FNV-1a hash, and a check that it is the same on every rank of `g`: otherwise an
// error naming `what` and the ranks' values (configs, binary versions, initial weights).
uint64_t fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ull);
void require_same(Group& g, uint64_t value, const std::string& what);

}  // namespace siam::dist
