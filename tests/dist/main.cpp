// The multi-rank test runner: ctest starts it under `mpirun -np K`. MPI starts before the
// tests (dist::init), rank 0 prints GoogleTest's usual report, the other ranks only their
// failures (prefixed with the rank), and the job fails when any rank fails.
#include <gtest/gtest.h>

#include <iostream>

#include "dist/dist.h"

namespace {

class FailuresOnly : public ::testing::EmptyTestEventListener {
 public:
  explicit FailuresOnly(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::cerr << "[rank " << rank_ << "] " << (r.file_name() ? r.file_name() : "?") << ":" << r.line_number() << ": "
                << r.summary() << "\n";
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  siam::dist::init();
  const int rank = siam::dist::world().rank();
  if (siam::dist::world().size() < 2 && !std::getenv("SIAM_DIST_TESTS_ALONE"))
    std::cerr << "siam_dist_tests: one rank only (run it under mpirun -np 2 or 4 for the multi-rank checks)\n";
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailuresOnly(rank));
  }
  const int rc = RUN_ALL_TESTS();
  siam::dist::finalize();
  return rc;
}
