// A build without NCCL (no CUDA backend, or no MPI to bootstrap it): CUDA tensors, if any,
// go through MPI with host staging.
#include "dist/backend.h"

namespace siam::dist {

bool nccl_compiled() { return false; }

namespace detail {
std::unique_ptr<Group> make_nccl(Group& base, int) { return base.duplicate(); }
}  // namespace detail
}  // namespace siam::dist
