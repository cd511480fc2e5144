// The op-case table and the fixture helpers shared by the CPU op suite (tests/main.cpp) and the
// CUDA parity suite (tests/cuda/test_cuda_ops.cpp).
#include "op_harness.h"

#include <cmath>
#include <filesystem>

namespace siam::test {

std::vector<OpCase>& op_table() {
  static std::vector<OpCase> t;
  return t;
}

OpTable::OpTable(std::vector<OpCase> cases) {
  for (auto& c : cases) op_table().push_back(std::move(c));
}

std::string fixture_dir() { return std::string(SIAM_SOURCE_DIR) + "/tests/fixtures/ops"; }

SafeTensors load_fixture(const std::string& name) {
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

std::vector<Tensor> fixture_inputs(const SafeTensors& st, DType dt, bool requires_grad, Device device) {
  std::vector<Tensor> in;
  for (int i = 0;; ++i) {
    auto it = st.tensors.find("input." + std::to_string(i));
    if (it == st.tensors.end()) break;
    Tensor t = it->second;
    if (is_floating(t.dtype())) {
      t = copy_to(t, device, dt);
      if (requires_grad) t.requires_grad_(true);
    } else if (!device.is_cpu()) {
      t = copy_to(t, device, t.dtype());
    }
    in.push_back(t);
  }
  return in;
}

// Worst |a - b| - (atol + rtol |b|) over the elements; message names the element.
::testing::AssertionResult close(const std::string& what, const Tensor& got, const Tensor& want,
                                 double rtol, double atol, const char* ref) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure() << what << ": shape " << shape_str(got.shape()) << ", " << ref << " "
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
                                       << ", " << ref << " " << b[bad];
}

}  // namespace siam::test
