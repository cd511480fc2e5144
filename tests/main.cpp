// Test main: registers one f32, one f64 and one gradcheck test per op case of the table,
// then runs GoogleTest.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "op_harness.h"
#include "tensor/safetensors.h"

namespace siam::test {

std::vector<OpCase>& op_table() {
  static std::vector<OpCase> t;
  return t;
}

OpTable::OpTable(std::vector<OpCase> cases) {
  for (auto& c : cases) op_table().push_back(std::move(c));
}

std::string fixture_dir() { return std::string(SIAM_SOURCE_DIR) + "/tests/fixtures/ops"; }

static SafeTensors load_fixture(const std::string& name) {
  std::string path = fixture_dir() + "/" + name + ".safetensors";
  if (!std::filesystem::exists(path))
    fail("missing fixture ", path, ": regenerate with `make reference` (needs python3-torch)");
  SafeTensors st = load_safetensors(path);
  auto it = st.metadata.find("format_version");
  if (it == st.metadata.end() || it->second != std::to_string(kFixtureFormat))
    fail("stale fixture ", path, ": format_version ", it == st.metadata.end() ? "missing" : it->second,
         ", this test expects ", kFixtureFormat, ": regenerate with `make reference`");
  return st;
}

static std::vector<Tensor> fixture_inputs(const SafeTensors& st, DType dt, bool requires_grad) {
  std::vector<Tensor> in;
  for (int i = 0;; ++i) {
    auto it = st.tensors.find("input." + std::to_string(i));
    if (it == st.tensors.end()) break;
    Tensor t = it->second;
    if (is_floating(t.dtype())) {
      t = copy_to(t, Device::cpu(), dt);
      if (requires_grad) t.requires_grad_(true);
    }
    in.push_back(t);
  }
  return in;
}

// Worst |a - b| - (atol + rtol |b|) over the elements; message names the element.
static ::testing::AssertionResult close(const std::string& what, const Tensor& got, const Tensor& want,
                                        double rtol, double atol) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure() << what << ": shape " << shape_str(got.shape()) << ", PyTorch "
                                         << shape_str(want.shape());
  std::vector<double> a = got.to_vector(), b = want.to_vector();
  int64_t bad = -1, nbad = 0;
  double worst = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    double err = std::abs(a[k] - b[k]);
    double excess = err - (atol + rtol * std::abs(b[k]));
    bool nan_mismatch = std::isnan(a[k]) != std::isnan(b[k]);
    if (nan_mismatch || excess > 0) {
      ++nbad;
      if (bad < 0 || nan_mismatch || excess > worst) { bad = static_cast<int64_t>(k); worst = excess; }
    }
  }
  if (nbad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << nbad << " of " << a.size()
                                       << " elements differ (rtol " << rtol << ", atol " << atol
                                       << "); worst at flat index " << bad << ": siam " << a[bad]
                                       << ", PyTorch " << b[bad];
}

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

template <class F>
static void add_test(const std::string& suite, const std::string& name, F body) {
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
