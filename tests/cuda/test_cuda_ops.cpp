// CUDA vs CPU parity for every op case of the table (tests/ops_*.cpp), forward and backward.
// The reference is the CPU f64 result on the fixture's inputs; the CUDA runs are
//   <case>.cuda_f32   f32, TF32 off: the case's own f32 tolerance (same arithmetic, another
//                     summation order)
//   <case>.cuda_tf32  f32 with TF32 tensor cores: kCudaTf32* unless the case sets its own
//   <case>.cuda_bf16  bf16 inputs, outputs and gradients: kCudaBf16* unless the case sets its own
// A case's own CUDA tolerances are written beside it with the reason (OpCase::cuda_why).
#include <gtest/gtest.h>

#include "kernels/precision.h"
#include "op_harness.h"
#include "tensor/cuda_runtime.h"

namespace siam::test {

namespace {

enum class Mode { f32, tf32, bf16 };

struct Reference {
  Tensor out;
  std::vector<Tensor> grads;  // undefined where the input takes no gradient
};

Reference cpu_reference(const OpCase& c, const SafeTensors& st) {
  std::vector<Tensor> in = fixture_inputs(st, DType::f64, true);
  Reference r;
  r.out = c.fn(in);
  if (r.out.requires_grad()) {
    autograd::backward(r.out, copy_to(st.at("grad_output"), Device::cpu(), DType::f64));
    for (const Tensor& t : in) r.grads.push_back(t.requires_grad() ? t.grad() : Tensor());
  }
  return r;
}

void run_cuda_case(const OpCase& c, Mode mode) {
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason();
  SafeTensors st = load_fixture(c.name);
  Reference ref = cpu_reference(c, st);

  DType dt = mode == Mode::bf16 ? DType::bf16 : DType::f32;
  double rtol = c.rtol, atol = c.atol;
  std::string why = c.why;
  if (mode == Mode::tf32) {
    rtol = c.tf32_rtol >= 0 ? c.tf32_rtol : std::max(kCudaTf32Rtol, c.rtol);
    atol = c.tf32_atol >= 0 ? c.tf32_atol : std::max(kCudaTf32Atol, c.atol);
    why = c.tf32_rtol >= 0 ? c.cuda_why : "TF32: 10-bit mantissa products in GEMM and convolution";
  } else if (mode == Mode::bf16) {
    rtol = c.bf16_rtol >= 0 ? c.bf16_rtol : std::max(kCudaBf16Rtol, c.rtol);
    atol = c.bf16_atol >= 0 ? c.bf16_atol : std::max(kCudaBf16Atol, c.atol);
    why = c.bf16_rtol >= 0 ? c.cuda_why : "bf16: 8-bit mantissa for inputs, outputs and intermediates";
  }
  kernels::Tf32Guard tf32(mode == Mode::tf32);

  Device gpu = Device::cuda(0);
  std::vector<Tensor> in = fixture_inputs(st, dt, true, gpu);
  Tensor out = c.fn(in);
  ASSERT_TRUE(out.device().is_cuda()) << "the op returned a " << out.device().str() << " tensor for CUDA inputs";
  EXPECT_TRUE(close("CUDA output", copy_to(out, Device::cpu(), DType::f64), ref.out, rtol, atol, "CPU f64")) << why;
  if (!ref.out.requires_grad()) return;
  ASSERT_TRUE(out.requires_grad()) << "the CUDA output has no gradient; the CPU one has";
  autograd::backward(out, copy_to(st.at("grad_output"), gpu, dt));
  for (size_t i = 0; i < in.size() && i < ref.grads.size(); ++i) {
    if (!ref.grads[i].defined()) continue;
    ASSERT_TRUE(in[i].grad().defined()) << "CUDA input " << i << " got no gradient; on the CPU it has one";
    EXPECT_TRUE(in[i].grad().device().is_cuda()) << "gradient of input " << i << " is on " << in[i].grad().device().str();
    EXPECT_TRUE(close("CUDA gradient of input " + std::to_string(i), copy_to(in[i].grad(), Device::cpu(), DType::f64),
                      ref.grads[i], rtol, atol, "CPU f64"))
        << why;
  }
}

}  // namespace

void register_cuda_op_tests() {
  for (const OpCase& c : op_table()) {
    add_test("CudaOp_" + c.name, "cuda_f32", [c] { run_cuda_case(c, Mode::f32); });
    add_test("CudaOp_" + c.name, "cuda_tf32", [c] { run_cuda_case(c, Mode::tf32); });
    add_test("CudaOp_" + c.name, "cuda_bf16", [c] { run_cuda_case(c, Mode::bf16); });
  }
}

}  // namespace siam::test
