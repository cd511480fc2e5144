// A build without MPI: one process only. dist::init() refuses a launcher with the reason.
#include <cstdlib>

#include "dist/backend.h"

namespace siam::dist {

bool mpi_compiled() { return false; }

namespace detail {

std::unique_ptr<Group> mpi_start(Launch&) { fail("this siam build has no MPI (install libopenmpi-dev and rebuild)"); }
void mpi_finalize() {}
void mpi_abort(int code) { std::exit(code); }
bool mpi_running() { return false; }
std::string mpi_version() { return "not compiled (no MPI found at build time: install libopenmpi-dev and rebuild)"; }

}  // namespace detail
}  // namespace siam::dist
