#pragma once
// The table-driven op test. Each OpCase names a fixture written by the PyTorch generator
// (tools/reference/gen_ops.py, same case name) and builds the op from the fixture's inputs.
// For every case three tests run:
//   <name>.f32      f32 forward output and every input gradient vs PyTorch (case tolerance)
//   <name>.f64      the same in f64, tight tolerance: same formula, same semantics
//   <name>.gradcheck finite differences in f64 on the fixture's inputs
// Cases live in tests/ops_*.cpp, registered with a static OpTable.
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

namespace siam::test {

struct OpCase {
  std::string name;      // fixture: tests/fixtures/ops/<name>.safetensors
  OpFn fn;               // builds the op from the inputs (floating inputs arrive as f32 or f64)
  double rtol = 1e-5;    // f32 vs PyTorch
  double atol = 1e-6;
  std::string why;       // why the f32 tolerance is what it is
  GradcheckOptions gc{};  // gradcheck tolerances and inputs without gradient
  bool run_gradcheck = true;
};

// An OpCase with its f32 tolerance and the reason for it.
inline OpCase op_case(std::string name, OpFn fn, const char* why, double rtol, double atol) {
  OpCase k;
  k.name = std::move(name);
  k.fn = std::move(fn);
  k.why = why;
  k.rtol = rtol;
  k.atol = atol;
  return k;
}

std::vector<OpCase>& op_table();
struct OpTable {
  explicit OpTable(std::vector<OpCase> cases);
};

constexpr int kFixtureFormat = 1;
std::string fixture_dir();  // tests/fixtures/ops in the source tree

}  // namespace siam::test
