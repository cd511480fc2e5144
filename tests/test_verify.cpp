// `siam verify` (apps/verify.h): PyTorch's op and loss fixtures (tests/fixtures/ops, inputs,
// outputs and gradients computed by PyTorch in f64) turned into verify files by adding the
// metadata that names the op; files written by tools/reference/make_verify_file.py
// (tests/fixtures/verify); --write round trips for every target; a wrong gradient; bad files.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apps/verify.h"
#include "autograd/ops.h"
#include "tensor/safetensors.h"
#include "test_util.h"

using namespace siam;
using namespace siam::apps;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() {
  fs::path d = fs::temp_directory_path() / ("siam_verify_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

std::string fixture(const std::string& dir, const std::string& name) {
  return std::string(SIAM_SOURCE_DIR) + "/tests/fixtures/" + dir + "/" + name + ".safetensors";
}

// A PyTorch op fixture with the metadata that makes it a verify file.
std::string from_fixture(const std::string& name, const std::string& kind, const std::string& op,
                         const std::string& settings) {
  SafeTensors st = load_safetensors(fixture("ops", name));
  std::string out = (temp_dir() / (name + ".safetensors")).string();
  save_safetensors(out, st.tensors,
                   {{"siam_verify", "1"}, {"kind", kind}, {"name", op}, {"settings", settings},
                    {"producer", "torch (tests/fixtures/ops/" + name + ")"}});
  return out;
}

VerifyReport verify(const std::string& file, const std::string& dtype = "auto", bool gradcheck = false) {
  VerifyCommand c;
  c.file = file;
  c.dtype = dtype;
  c.gradcheck = gradcheck;
  std::ostringstream out;
  VerifyReport r = run_verify(c, out);
  if (!r.pass) ADD_FAILURE() << out.str();
  return r;
}

struct FixtureCase {
  const char* fixture;
  const char* kind;
  const char* name;
  const char* settings;
};

// The settings are those of the C++ twins in tests/ops_*.cpp.
const FixtureCase kCases[] = {
    {"ntxent_pairs", "loss", "nt_xent", R"({"temperature": 0.5})"},
    {"ntxent_pairs_cold_composite", "loss", "nt_xent", R"({"temperature": 0.1, "impl": "composite"})"},
    {"ntxent_groups", "loss", "nt_xent", R"({"temperature": 0.2})"},
    {"ntxent_mined", "loss", "nt_xent", R"({"temperature": 0.3})"},
    {"infonce_queue", "loss", "info_nce", R"({"temperature": 0.2})"},
    {"infonce_queue_warm_composite", "loss", "info_nce", R"({"temperature": 1.0, "impl": "composite"})"},
    {"byol_loss", "loss", "byol", "{}"},
    {"simsiam_loss_composite", "loss", "simsiam", R"({"impl": "composite"})"},
    {"dino_loss_2crops", "loss", "dino", R"({"student_temp": 0.1, "teacher_temp": 0.04})"},
    {"dino_loss_multicrop", "loss", "dino", R"({"student_crops": 5, "teacher_temp": 0.07})"},
    {"vicreg_loss", "loss", "vicreg", "{}"},
    {"vicreg_terms", "loss", "vicreg", R"({"sim_coeff": 10, "std_coeff": 5, "cov_coeff": 2, "output": "terms"})"},
    {"barlow_loss", "loss", "barlow_twins", "{}"},
    {"barlow_terms_composite", "loss", "barlow_twins", R"({"lambda": 0.5, "output": "terms", "impl": "composite"})"},
    {"linear_bias", "op", "linear", "{}"},
    {"linear_nobias", "op", "linear", "{}"},
    {"matmul_batched", "op", "matmul", "{}"},
    {"conv2d_stride2_pad", "op", "conv2d", R"({"stride": 2, "padding": 1})"},
    {"conv2d_depthwise", "op", "conv2d", R"({"stride": 2, "padding": 1, "groups": 3})"},
    {"conv2d_dilation2", "op", "conv2d", R"({"padding": 1, "dilation": 2})"},
    {"batch_norm_4d_train", "op", "batch_norm", "{}"},
    {"layer_norm_last2", "op", "layer_norm", "{}"},
    {"softmax_dim1", "op", "softmax", R"({"dim": 1})"},
    {"log_softmax_dim0", "op", "log_softmax", R"({"dim": 0})"},
    {"cross_entropy_label_smoothing", "op", "cross_entropy", R"({"label_smoothing": 0.1})"},
    {"cross_entropy_index_sum", "op", "cross_entropy", R"({"reduction": "sum"})"},
    {"cross_entropy_soft", "op", "cross_entropy", "{}"},
    {"max_pool2d_k3s2p1", "op", "max_pool2d", R"({"kernel_size": 3, "stride": 2, "padding": 1})"},
    {"avg_pool2d_k3s2p1", "op", "avg_pool2d", R"({"kernel_size": 3, "stride": 2, "padding": 1})"},
    {"adaptive_avg_pool2d_5x7_3x2", "op", "adaptive_avg_pool2d", R"({"output_size": [3, 2]})"},
    {"gelu_tanh", "op", "gelu", R"({"approximate": "tanh"})"},
    {"attention", "op", "scaled_dot_product_attention", "{}"},
    {"normalize_dim0", "op", "normalize", R"({"dim": 0})"},
    {"cosine_similarity", "op", "cosine_similarity", "{}"},
};

}  // namespace

// Every fixture passes in f64 (the reference is f64, the inputs f32-representable) with the
// tight default tolerance, and again in f32 with the f32 tolerance; the losses also pass
// --gradcheck.
TEST(Verify, PyTorchFixturesPassInF64AndF32) {
  for (const auto& k : kCases) {
    SCOPED_TRACE(k.fixture);
    std::string file = from_fixture(k.fixture, k.kind, k.name, k.settings);
    VerifyReport r64 = verify(file, "auto", std::string(k.kind) == "loss");
    EXPECT_EQ(r64.dtype, "f64");
    EXPECT_TRUE(r64.pass);
    EXPECT_GE(r64.rows.size(), 2u);  // the output and at least one gradient
    EXPECT_EQ(r64.rows[0].tensor, "output");
    VerifyReport r32 = verify(file, "f32");
    EXPECT_EQ(r32.dtype, "f32");
    EXPECT_TRUE(r32.pass);
  }
}

// One wrong element of a reference gradient fails that row (and only it), names the element,
// and the command exits with status 1.
TEST(Verify, AWrongGradientIsCaught) {
  SafeTensors st = load_safetensors(fixture("ops", "ntxent_pairs"));
  Tensor g = siam::clone(st.tensors.at("grad.0"));
  g.data<double>()[17] += 1e-3;
  st.tensors["grad.0"] = g;
  std::string file = (temp_dir() / "wrong_grad.safetensors").string();
  save_safetensors(file, st.tensors, {{"siam_verify", "1"}, {"kind", "loss"}, {"name", "nt_xent"}, {"settings", R"({"temperature": 0.5})"}});
  VerifyCommand c;
  c.file = file;
  std::ostringstream out;
  VerifyReport r = run_verify(c, out);
  EXPECT_FALSE(r.pass);
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_TRUE(r.rows[0].pass);
  EXPECT_FALSE(r.rows[1].pass);
  EXPECT_EQ(r.rows[1].tensor, "grad.0");
  EXPECT_EQ(r.rows[1].worst, 17);
  EXPECT_NEAR(r.rows[1].max_abs, 1e-3, 1e-9);
  EXPECT_NE(out.str().find("FAIL"), std::string::npos);
  EXPECT_NE(out.str().find("\"pass\":false"), std::string::npos) << "the JSON line";
  // A wrong temperature is a wrong output.
  save_safetensors(file, load_safetensors(fixture("ops", "ntxent_pairs")).tensors,
                   {{"siam_verify", "1"}, {"kind", "loss"}, {"name", "nt_xent"}, {"settings", R"({"temperature": 0.4})"}});
  EXPECT_FALSE(run_verify(c, out).pass);
}

// --write: siam on the fixture's inputs writes the format; the file verifies, and its output
// and gradient agree with PyTorch's.
TEST(Verify, WriteRoundTripMatchesPyTorch) {
  SafeTensors torch = load_safetensors(fixture("ops", "infonce_queue"));
  std::map<std::string, Tensor> inputs;
  for (const auto& [name, t] : torch.tensors)
    if (name.rfind("input.", 0) == 0 || name == "grad_output") inputs[name] = t;
  fs::path dir = temp_dir();
  std::string spec = (dir / "spec.safetensors").string(), out = (dir / "siam.safetensors").string();
  save_safetensors(spec, inputs, {{"siam_verify", "1"}, {"kind", "loss"}, {"name", "info_nce"}, {"settings", R"({"temperature": 0.2})"}});
  VerifyCommand w;
  w.file = spec;
  w.write = out;
  std::ostringstream log;
  run_verify_write(w, log);
  SafeTensors mine = load_safetensors(out);
  EXPECT_EQ(mine.metadata.at("kind"), "loss");
  EXPECT_EQ(mine.metadata.at("settings"), R"({"impl":"fused","temperature":0.2})");
  for (const char* name : {"output", "grad.0", "grad.1", "grad.2"}) {
    std::vector<double> a = mine.at(name).to_vector(), b = torch.at(name).to_vector();
    ASSERT_EQ(a.size(), b.size()) << name;
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-12 + 1e-10 * std::abs(b[i])) << name << " " << i;
  }
  EXPECT_TRUE(verify(out, "auto", true).pass);
}

// Every target --write can make from example inputs verifies, with --gradcheck (ops, losses
// and layers: every element; backbones: 2 per tensor, at their default step 1e-7). A few need settings the example cannot
// guess. The DINO head's gradients reach 3e4 (normalising a small bottleneck), so its central
// differences need a smaller step: with 1e-6 the truncation error is 4.5e-4 relative.
TEST(Verify, EveryTargetRoundTripsThroughWrite) {
  const std::map<std::string, std::string> settings = {
      {"op max_pool2d", R"({"kernel_size": 2})"},
      {"op avg_pool2d", R"({"kernel_size": 2})"},
      {"op interpolate", R"({"size": [7, 4], "mode": "bicubic"})"},
      {"layer linear", R"({"out_features": 3})"},
      {"layer conv2d", R"({"out_channels": 4, "kernel_size": 3, "padding": 1})"},
      {"layer mlp", R"({"hidden_features": 6, "out_features": 3})"},
      {"layer attention", R"({"num_heads": 2})"},
      {"layer projector", R"({"dims": [6, 4], "last_norm": "batch_norm_no_affine"})"},
      {"layer dino_head", R"({"out_dim": 5, "hidden_dim": 6, "bottleneck_dim": 3})"},
      {"backbone resnet18", R"({"width": 4, "small_input": true})"},
      {"backbone resnet50", R"({"width": 4, "small_input": true})"},
      {"backbone vit_tiny", R"({"patch": 8, "depth": 1})"},
  };
  std::ostringstream list;
  print_verify_targets(list);
  std::istringstream lines(list.str());
  std::string line, kind;
  int n = 0;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == ':' && line[0] != ' ') kind = line == "losses:" ? "loss" : line.substr(0, line.size() - 2);
    if (line.size() < 3 || line[0] != ' ' || line[2] == ' ') continue;
    std::string name = line.substr(2);
    std::string key = kind + " " + name;
    if (name == "resnet34" || name == "vit_small" || name == "vit_base") continue;  // the same code as their siblings
    SCOPED_TRACE(key);
    VerifyCommand w;
    w.kind = kind;
    w.name = name;
    w.settings = settings.count(key) ? settings.at(key) : "{}";
    w.write = (temp_dir() / (kind + "_" + name + ".safetensors")).string();
    std::ostringstream log;
    run_verify_write(w, log);
    VerifyCommand c;
    c.file = w.write;
    c.gradcheck = true;
    if (name == "dino_head") c.gradcheck_eps = 1e-7;
    if (kind == "backbone") c.gradcheck_elements = 2;  // 2 of each tensor: 2 x 161 tensors x 2 forwards for ResNet-50
    std::ostringstream out;
    VerifyReport r = run_verify(c, out);
    EXPECT_TRUE(r.pass) << out.str();
    bool has_gradcheck = false;
    for (const auto& row : r.rows) has_gradcheck = has_gradcheck || row.tensor.rfind("gradcheck.", 0) == 0;
    EXPECT_TRUE(has_gradcheck) << out.str();
    ++n;
  }
  EXPECT_GE(n, 50);
}

// Files that tools/reference/make_verify_file.py wrote with PyTorch (regenerate with
// `make reference`): losses written the way the official code computes them, and torch.nn
// layers with their state dicts.
TEST(Verify, FilesWrittenByMakeVerifyFilePass) {
  fs::path dir = fs::path(SIAM_SOURCE_DIR) / "tests/fixtures/verify";
  ASSERT_TRUE(fs::exists(dir)) << "missing " << dir << ": regenerate with `make reference`";
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    SCOPED_TRACE(e.path().filename().string());
    VerifyReport r = verify(e.path().string(), "auto", e.path().filename().string().rfind("backbone", 0) != 0);
    EXPECT_TRUE(r.pass);
    ++n;
  }
  EXPECT_GE(n, 8);
}

// Bad files: one error naming the tensor (or the key) and what was expected.
TEST(Verify, BadFilesNameTheTensor) {
  fs::path dir = temp_dir();
  SafeTensors base = load_safetensors(fixture("ops", "infonce_queue"));
  std::map<std::string, std::string> meta = {{"siam_verify", "1"}, {"kind", "loss"}, {"name", "info_nce"}, {"settings", "{}"}};
  std::string file = (dir / "bad.safetensors").string();
  auto check = [&](std::map<std::string, Tensor> t, std::map<std::string, std::string> m, const std::string& fragment) {
    save_safetensors(file, t, m);
    VerifyCommand c;
    c.file = file;
    std::ostringstream out;
    test::expect_error([&] { run_verify(c, out); }, fragment);
  };
  auto without = [&](const std::string& name) {
    auto t = base.tensors;
    t.erase(name);
    return t;
  };
  check(without("input.2"), meta, "tensor \"input.2\" is missing");
  check(without("input.1"), meta, "tensor \"input.1\" is missing");
  check(without("output"), meta, "tensor \"output\" is missing");
  auto wrong_shape = base.tensors;
  wrong_shape["grad.0"] = zeros({3, 3}, {DType::f64});
  check(wrong_shape, meta, "tensor \"grad.0\" is [3, 3], siam computes [");
  auto nan = base.tensors;
  Tensor q = siam::clone(nan.at("input.0"));
  q.data<float>()[2] = NAN;
  nan["input.0"] = q;
  check(nan, meta, "tensor \"input.0\" has nan at flat index 2");
  auto extra = base.tensors;
  extra["input.3"] = zeros({2}, {DType::f32});
  check(extra, meta, "tensor \"input.3\" is one too many");
  auto typo = base.tensors;
  typo["grad_ouput"] = zeros({1}, {DType::f64});
  check(typo, meta, "unexpected tensor \"grad_ouput\"");
  auto m = meta;
  m["name"] = "nt_xnet";
  check(base.tensors, m, "unknown loss \"nt_xnet\"; known: nt_xent, info_nce");
  m = meta;
  m["kind"] = "model";
  check(base.tensors, m, "kind \"model\" is unknown");
  m = meta;
  m["settings"] = R"({"temprature": 0.2})";
  check(base.tensors, m, "unknown setting \"temprature\"; known: impl, temperature");
  m["settings"] = R"({"temperature": "warm"})";
  check(base.tensors, m, "setting \"temperature\" is \"warm\", expected a number");
  m["settings"] = "{temperature: 0.2";
  check(base.tensors, m, "metadata settings is not JSON");
  m = meta;
  m.erase("kind");
  check(base.tensors, m, "metadata \"kind\" is missing");
  // A layer: a missing or misshapen parameter is named.
  VerifyCommand w;
  w.kind = "layer";
  w.name = "linear";
  w.settings = R"({"out_features": 3})";
  w.write = (dir / "linear.safetensors").string();
  std::ostringstream log;
  run_verify_write(w, log);
  SafeTensors lin = load_safetensors(w.write);
  auto no_bias = lin.tensors;
  no_bias.erase("param.bias");
  no_bias.erase("grad.param.bias");
  check(no_bias, lin.metadata, "tensor \"param.bias\" is missing");
  auto bad_weight = lin.tensors;
  bad_weight["param.weight"] = zeros({3, 4}, {DType::f64});
  check(bad_weight, lin.metadata, "tensor \"param.weight\" is [3, 4], layer linear with these settings expects [3, 5]");
  // Running the op itself fails: the error says on what.
  auto mismatch = base.tensors;
  mismatch["input.1"] = zeros({4, 7}, {DType::f32});
  check(mismatch, meta, "running loss info_nce on input.0 [");
  // A truncated file is the safetensors reader's error, naming the file.
  std::string bytes;
  {
    std::ifstream in(fixture("ops", "ntxent_pairs"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  {
    std::ofstream o(file, std::ios::binary);
    o.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  VerifyCommand c;
  c.file = file;
  std::ostringstream out;
  test::expect_error([&] { run_verify(c, out); }, "bad.safetensors");
}

// The command: status 0 when every tensor passes, 1 when one fails or the file is bad; the
// last line of stdout is the JSON line.
TEST(Verify, CommandExitStatus) {
  std::error_code ec;
  fs::path siam = fs::read_symlink("/proc/self/exe", ec).parent_path() / "siam";
  if (ec || !fs::exists(siam)) GTEST_SKIP() << "the siam binary is not built beside the tests";
  fs::path dir = temp_dir();
  std::string good = from_fixture("byol_loss", "loss", "byol", "{}");
  auto run = [&](const std::string& args) {
    std::string cmd = siam.string() + " verify " + args + " > " + (dir / "out.txt").string() + " 2> " + (dir / "err.txt").string();
    int st = std::system(cmd.c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  auto text = [&](const char* name) {
    std::ifstream in(dir / name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(run(good), 0) << text("out.txt") << text("err.txt");
  std::string out = text("out.txt");
  EXPECT_NE(out.find("PASS"), std::string::npos) << out;
  EXPECT_NE(out.rfind("{\"atol\""), std::string::npos) << out;
  EXPECT_EQ(run(good + " --rtol 0 --atol 0 --dtype f32"), 1) << text("out.txt");
  EXPECT_NE(text("out.txt").find("FAIL"), std::string::npos);
  EXPECT_EQ(run((dir / "no_such_file.safetensors").string()), 1);
  EXPECT_NE(text("err.txt").find("no_such_file.safetensors"), std::string::npos) << text("err.txt");
  EXPECT_EQ(run("--list"), 0);
  EXPECT_NE(text("out.txt").find("barlow_twins"), std::string::npos);
}
