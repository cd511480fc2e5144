#pragma once
// The table-driven op test. Each OpCase names a fixture written by the PyTorch generator
// (tools/reference/gen_ops.py, same case name) and builds the op from the fixture's inputs.
// For every case three tests run:
//   <name>.f32      f32 forward output and every input gradient vs PyTorch (case tolerance)
//   <name>.f64      the same in f64, tight tolerance: same formula, same semantics
//   <name>.gradcheck finite differences in f64 on the fixture's inputs
// Cases live in tests/ops_*.cpp, registered with a static OpTable.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tensor/safetensors.h"

namespace siam::test {

struct OpCase {
  std::string name;      // fixture: tests/fixtures/ops/<name>.safetensors
  OpFn fn;               // builds the op from the inputs (floating inputs arrive as f32 or f64)
  double rtol = 1e-5;    // f32 vs PyTorch
  double atol = 1e-6;
  std::string why;       // why the f32 tolerance is what it is
  GradcheckOptions gc{};  // gradcheck tolerances and inputs without gradient
  bool run_gradcheck = true;
  // CUDA vs the CPU f64 result (tests/cuda/test_cuda_ops.cpp). A negative value takes the
  // suite's default for that precision (kCuda* below); a case that needs looser bounds sets
  // them with the reason in cuda_why.
  double tf32_rtol = -1, tf32_atol = -1;  // f32 inputs, TF32 tensor cores allowed
  double bf16_rtol = -1, bf16_atol = -1;  // bf16 inputs and outputs
  std::string cuda_why;
};

// Default CUDA tolerances. Strict f32 uses the case's own f32 tolerance (same arithmetic up
// to summation order). TF32 rounds GEMM / convolution inputs to 10 mantissa bits (relative
// 2^-11 ~ 5e-4 per product, growing with sqrt of the reduction length). bf16 keeps 8 bits
// (2^-9 ~ 2e-3 per rounding), applied to inputs, outputs and intermediates.
constexpr double kCudaTf32Rtol = 5e-3, kCudaTf32Atol = 5e-3;
constexpr double kCudaBf16Rtol = 4e-2, kCudaBf16Atol = 4e-2;

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

// Loads tests/fixtures/ops/<name>.safetensors; a missing or stale file fails with the command
// that regenerates it.
SafeTensors load_fixture(const std::string& name);
// The fixture's inputs ("input.0", ...): floating ones converted to dt on `device` (with
// requires_grad when asked), integer ones moved to `device` unchanged.
std::vector<Tensor> fixture_inputs(const SafeTensors& st, DType dt, bool requires_grad,
                                   Device device = Device::cpu());
// Every element within atol + rtol |want| (NaN only where want is NaN); the failure names the
// worst element. `ref` names the reference in the message ("PyTorch", "CPU f64").
::testing::AssertionResult close(const std::string& what, const Tensor& got, const Tensor& want,
                                 double rtol, double atol, const char* ref = "PyTorch");

// Registers one GoogleTest test at run time.
template <class F>
void add_test(const std::string& suite, const std::string& name, F body) {
  class T : public ::testing::Test {
   public:
    explicit T(F b) : b_(std::move(b)) {}
    void TestBody() override { b_(); }

   private:
    F b_;
  };
  ::testing::RegisterTest(suite.c_str(), name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                          [body]() -> ::testing::Test* { return new T(body); });
}

}  // namespace siam::test
