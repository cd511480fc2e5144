// Test main: registers one f32, one f64 and one gradcheck test per op case of the table,
// then runs GoogleTest.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "op_harness.h"
#include "tensor/safetensors.h"

namespace siam::test {

static void run_against_fixture(const OpCase& c, DType dt) {
  SafeTensors st = load_fixture(c.name);
  std::vector<Tensor> in = fixture_inputs(st, dt, true);
  Tensor out = c.fn(in);
  double rtol = dt == DType::f64 ? 1e-9 : c.rtol, atol = dt == DType::f64 ? 1e-10 : c.atol;
  EXPECT_TRUE(close("output", out, st.at("output"), rtol, atol)) << c.why;
  Tensor gout = copy_to(st.at("grad_output"), Device::cpu(), dt);
  if (!out.requires_grad()) return;
  autograd::backward(out, gout);
  for (size_t i = 0; i < in.size(); ++i) {
    auto it = st.tensors.find("grad." + std::to_string(i));
    if (it == st.tensors.end()) continue;
    ASSERT_TRUE(in[i].grad().defined()) << "input " << i << " got no gradient; PyTorch has one";
    EXPECT_TRUE(close("gradient of input " + std::to_string(i), in[i].grad(), it->second, rtol, atol)) << c.why;
  }
}

static void run_gradcheck(const OpCase& c) {
  SafeTensors st = load_fixture(c.name);
  std::vector<Tensor> in = fixture_inputs(st, DType::f64, false);
  GradcheckResult r = gradcheck(c.fn, in, st.at("grad_output"), c.gc);
  EXPECT_TRUE(r.ok) << r.report;
}

static void register_op_tests() {
  for (const OpCase& c : op_table()) {
    add_test("Op_" + c.name, "f32", [c] { run_against_fixture(c, DType::f32); });
    add_test("Op_" + c.name, "f64", [c] { run_against_fixture(c, DType::f64); });
    if (c.run_gradcheck) add_test("Op_" + c.name, "gradcheck", [c] { run_gradcheck(c); });
  }
}

}  // namespace siam::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  siam::test::register_op_tests();
  return RUN_ALL_TESTS();
}
