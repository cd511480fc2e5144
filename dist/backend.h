#pragma once
// What dist.cpp needs from the transports; each is compiled or replaced by a stub that says
// why it is missing (dist/mpi.cpp or dist/no_mpi.cpp, dist/nccl.cpp or its absence).
#include <memory>
#include <string>

#include "dist/dist.h"

namespace siam::dist::detail {

// MPI_Init under a launcher; fills the ranks of `l` and returns the world group.
std::unique_ptr<Group> mpi_start(Launch& l);
void mpi_finalize();
[[noreturn]] void mpi_abort(int code);
bool mpi_running();
std::string mpi_version();

// A group that sends CUDA tensors through NCCL (one communicator over base's ranks, bootstrapped
// through `base`) and everything else through `base`.
std::unique_ptr<Group> make_nccl(Group& base, int cuda_device);

}  // namespace siam::dist::detail
