// Whole models against PyTorch: torchvision ResNet-50, a small-input grayscale ResNet-18,
// and a ViT-S/16 with timm's names (tools/reference/gen_models.py). Both sides fill the
// weights from the same formula, run one training-mode forward and backward, and compare
// the output and, per parameter, the gradient's norm, sum and 64 sampled elements.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>

#include "autograd/gradcheck.h"
#include "nn/resnet.h"
#include "nn/vit.h"
#include "tensor/safetensors.h"
#include "test_util.h"

using namespace siam;

namespace {

// Twin of formula() in tools/reference/gen_models.py: a Weyl sequence keyed by the name's
// CRC-32, exact in double, rounded to f32.
std::vector<double> formula(const std::string& name, const Shape& shape) {
  int64_t n = shape_numel(shape);
  uint64_t key = crc32(0, reinterpret_cast<const Bytef*>(name.data()), static_cast<uInt>(name.size()));
  std::string leaf = name.substr(name.rfind('.') == std::string::npos ? 0 : name.rfind('.') + 1);
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) {
    uint64_t h = (static_cast<uint64_t>(i) * 2654435761ull + key) % (1ull << 32);
    double u = static_cast<double>(h) / 4294967296.0 * 2.0 - 1.0;
    if (leaf == "num_batches_tracked") v[i] = 0;
    else if (leaf == "running_var") v[i] = 1.0 + 0.25 * u;
    else if (leaf == "running_mean") v[i] = 0.1 * u;
    else if (leaf == "pos_embed" || leaf == "cls_token") v[i] = 0.02 * u;
    else if (shape.size() == 1 && leaf == "weight") v[i] = 1.0 + 0.1 * u;
    else if (shape.size() == 1) v[i] = 0.05 * u;
    else v[i] = u * std::sqrt(3.0 / static_cast<double>(n / shape[0]));
    v[i] = static_cast<float>(v[i]);
  }
  return v;
}

void fill_formula(nn::Module& m) {
  for (auto& [name, t] : m.state_dict()) copy_(t, from_vector(formula(name, t.shape()), t.shape(), {DType::f64}));
}

SafeTensors load_model_fixture(const std::string& name) {
  std::string path = std::string(SIAM_SOURCE_DIR) + "/tests/fixtures/models/" + name + ".safetensors";
  if (!std::filesystem::exists(path))
    fail("missing fixture ", path, ": regenerate with `make reference` (needs python3-torch, python3-torchvision)");
  SafeTensors st = load_safetensors(path);
  if (st.metadata["format_version"] != "1")
    fail("stale fixture ", path, ": regenerate with `make reference`");
  return st;
}

double rel_err(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-12); }

// Runs the model in `dt` on the fixture: out_tol is relative to the largest output, grad_tol
// relative to each parameter's gradient norm.
void check_model(nn::Module& model, const SafeTensors& st, DType dt, double out_tol, double grad_tol) {
  EXPECT_EQ(model.num_parameters(), std::stoll(st.metadata.at("num_parameters")));
  EXPECT_EQ(static_cast<int64_t>(model.state_dict().size()), std::stoll(st.metadata.at("num_tensors")));
  fill_formula(model);
  model.to(dt);
  model.train();
  Tensor out = model.forward(to(st.at("input"), dt));
  Tensor want = st.at("output");
  ASSERT_EQ(out.shape(), want.shape());
  std::vector<double> o = out.to_vector(), w = want.to_vector();
  double scale = 0;
  for (double x : w) scale = std::max(scale, std::abs(x));
  for (size_t i = 0; i < o.size(); ++i)
    ASSERT_NEAR(o[i], w[i], out_tol * scale) << "output element " << i;
  autograd::backward(out, to(st.at("grad_output"), dt));
  int checked = 0;
  for (auto& [name, p] : model.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name << " got no gradient";
    std::vector<double> g = p.grad().to_vector();
    double norm = 0, sum = 0;
    for (double x : g) norm += x * x, sum += x;
    norm = std::sqrt(norm);
    double want_norm = st.at("grad_norm." + name).item();
    EXPECT_LT(rel_err(norm, want_norm), grad_tol) << name << ": norm " << norm << " vs " << want_norm;
    // The sum can cancel to near zero; compare it relative to the norm times sqrt(numel).
    double want_sum = st.at("grad_sum." + name).item();
    EXPECT_LT(std::abs(sum - want_sum), grad_tol * want_norm * std::sqrt(static_cast<double>(g.size())))
        << name << ": sum " << sum << " vs " << want_sum;
    std::vector<double> idx = st.at("grad_index." + name).to_vector();
    std::vector<double> sample = st.at("grad_sample." + name).to_vector();
    double worst = 0;
    for (size_t k = 0; k < idx.size(); ++k)
      worst = std::max(worst, std::abs(g[static_cast<size_t>(idx[k])] - sample[k]));
    EXPECT_LT(worst, grad_tol * want_norm) << name << ": sampled elements differ by up to " << worst;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(model.named_parameters().size()));
}

}  // namespace

// f64: the same weights and formulas as PyTorch's f64 run, so agreement is to rounding
// (measured ~1e-11). f32: a deep network in training mode amplifies f32 rounding, by an
// amount that depends on the model (batch norm over few values per channel is the worst
// case); the fixture records how far PyTorch's own f32 run lands from its f64 run, and siam's
// f32 run must land within three times that (never tighter than 1e-5).
void check_f64_and_f32(const std::function<std::unique_ptr<nn::Module>()>& make, const std::string& fixture) {
  SafeTensors st = load_model_fixture(fixture);
  auto m64 = make();
  check_model(*m64, st, DType::f64, 1e-9, 1e-8);
  double out_dev = std::stod(st.metadata.at("torch_f32_output_deviation"));
  double grad_dev = std::stod(st.metadata.at("torch_f32_gradient_deviation"));
  auto m32 = make();
  check_model(*m32, st, DType::f32, std::max(3 * out_dev, 1e-5), std::max(3 * grad_dev, 1e-5));
}

TEST(Models, ResNet50MatchesTorchvision) {
  check_f64_and_f32([] { return std::make_unique<nn::ResNet>(nn::ResNetConfig{.depth = 50}); }, "resnet50");
}

TEST(Models, ResNet18SmallGrayMatchesTorchvision) {
  check_f64_and_f32([] {
    return std::make_unique<nn::ResNet>(
        nn::ResNetConfig{.depth = 18, .in_channels = 1, .small_input = true, .num_classes = 10});
  }, "resnet18_small_gray");
}

TEST(Models, ViTSmallMatchesTimmNames) {
  check_f64_and_f32([] { return std::make_unique<nn::ViT>(nn::ViTConfig{.size = "small", .patch = 16, .image_size = 64}); },
                    "vit_small_patch16_64");
}

TEST(Models, TorchvisionNamesAndCounts) {
  nn::ResNet r50({.depth = 50, .num_classes = 0});
  auto sd = r50.state_dict();
  EXPECT_TRUE(sd.count("layer1.0.downsample.0.weight"));
  EXPECT_TRUE(sd.count("layer4.2.bn3.running_var"));
  EXPECT_FALSE(sd.count("fc.weight"));
  EXPECT_EQ(r50.feature_dim(), 2048);
  EXPECT_EQ(r50.num_parameters(), 25557032 - 2049000) << "ResNet-50 without its 2048x1000 classifier";
  nn::ResNet r18({.depth = 18});
  EXPECT_EQ(r18.num_parameters(), 11689512);
  nn::ResNet r34({.depth = 34});
  EXPECT_EQ(r34.num_parameters(), 21797672);
  nn::ViT vit({.size = "small", .patch = 16, .image_size = 224});
  EXPECT_EQ(vit.num_parameters(), 22050664) << "timm vit_small_patch16_224";
  EXPECT_TRUE(vit.state_dict().count("blocks.11.mlp.fc2.bias"));
  EXPECT_THROW(nn::ResNet({.depth = 20}), Error);
  EXPECT_THROW(nn::ViT({.size = "small", .patch = 16, .image_size = 60}), Error);
}

TEST(Models, ZeroInitResidualZeroesLastBn) {
  nn::ResNet r({.depth = 18, .num_classes = 0, .zero_init_residual = true});
  auto sd = r.state_dict();
  EXPECT_EQ(sd.at("layer1.0.bn2.weight").to_vector(), std::vector<double>(64, 0.0));
  EXPECT_EQ(sd.at("layer1.0.bn1.weight").to_vector(), std::vector<double>(64, 1.0));
}

TEST(Models, ViTPositionEmbeddingIsResizedOnLoad) {
  nn::ViT small({.size = "tiny", .patch = 16, .image_size = 32, .num_classes = 0});
  nn::ViT big({.size = "tiny", .patch = 16, .image_size = 64, .num_classes = 0});
  auto sd = small.state_dict();
  EXPECT_THROW(big.load_state_dict(sd), Error);
  big.load_state_dict_resized(sd);
  EXPECT_EQ(big.state_dict().at("pos_embed").shape(), (Shape{1, 17, 192}));
  // The class token's embedding is carried over unchanged.
  Tensor a = select(sd.at("pos_embed"), 1, 0), b = select(big.state_dict().at("pos_embed"), 1, 0);
  EXPECT_EQ(a.to_vector(), b.to_vector());
}

// ---------------------------------------------------------------- ViT on other image sizes

namespace {

// gen_models.py's vit_tiny_d2_patch4_32_*: ViT-Tiny width (192, 3 heads), 2 blocks, made for
// 32 px with patch 4 (an 8x8 position-embedding grid).
std::unique_ptr<nn::ViT> tiny_vit_32(int64_t depth = 2, int64_t classes = 10) {
  return std::make_unique<nn::ViT>(
      nn::ViTConfig{.size = "tiny", .patch = 4, .image_size = 32, .num_classes = classes, .depth = depth});
}

}  // namespace

// The position embedding resized to a 4x4 grid (16 px) and a 10x6 grid (40x24 px: one side
// up, one down) against PyTorch's F.interpolate(..., size=(gh, gw), mode="bicubic",
// align_corners=False); every parameter gradient, pos_embed and patch_embed.proj included,
// flows back through the interpolation. Tolerances as for the other models (check_f64_and_f32):
// f64 to rounding; f32 within 3x PyTorch's own f32-vs-f64 deviation, floor 1e-5 (the fixtures
// record ~1e-6 for both: two blocks amplify f32 rounding little).
TEST(Models, ViTInterpolatesPositionEmbeddingLikeDino) {
  check_f64_and_f32([] { return tiny_vit_32(); }, "vit_tiny_d2_patch4_32_at_16");
  check_f64_and_f32([] { return tiny_vit_32(); }, "vit_tiny_d2_patch4_32_at_40x24");
}

// At image_size the forward is the one without interpolation, written out here from the
// model's own modules: outputs and gradients are bit-identical.
TEST(Models, ViTAtItsImageSizeTakesThePathWithoutInterpolation) {
  nn::init_generator().set_state(77, 0);
  auto vit = tiny_vit_32();
  std::map<std::string, std::shared_ptr<nn::Module>> kids;
  for (auto& [name, m] : vit->named_children()) kids[name] = m;
  std::map<std::string, Tensor> sd = vit->state_dict();
  Tensor x = randn({2, 3, 32, 32});
  Tensor out = vit->forward(x);
  autograd::backward(out, ones(out.shape()));
  std::map<std::string, std::vector<double>> grads;
  for (auto& [name, p] : vit->named_parameters()) grads[name] = p.grad().to_vector();
  vit->zero_grad();

  Tensor t = kids.at("patch_embed")->forward(x);  // PatchEmbed::forward, which insists on 32x32
  t = cat({expand(sd.at("cls_token"), {2, 1, 192}), t}, 1);
  t = add(t, sd.at("pos_embed"));
  t = kids.at("norm")->forward(kids.at("blocks")->forward(t));
  Tensor want = kids.at("head")->forward(select(t, 1, 0));
  EXPECT_EQ(out.to_vector(), want.to_vector());
  autograd::backward(want, ones(want.shape()));
  for (auto& [name, p] : vit->named_parameters()) EXPECT_EQ(grads.at(name), p.grad().to_vector()) << name;
}

// f64 finite differences through the interpolated path: resize_pos_embed on its own (square
// and non-square grids, up and down), then a one-block ViT made for 16 px run on 8x12 px, with
// respect to its input and to its pos_embed parameter.
TEST(Models, ViTInterpolatedPathPassesGradcheck) {
  Generator gen(5);
  Tensor pe = randn({1, 1 + 9, 3}, gen, {DType::f64});
  for (auto [gh, gw] : {std::pair<int64_t, int64_t>{2, 5}, {4, 4}, {1, 1}, {5, 3}}) {
    auto resize = [gh, gw](const std::vector<Tensor>& in) { return nn::ViT::resize_pos_embed(in[0], gh, gw); };
    GradcheckResult r = gradcheck(resize, {pe}, randn({1, 1 + gh * gw, 3}, gen, {DType::f64}));
    EXPECT_TRUE(r.ok) << gh << "x" << gw << ":\n" << r.report;
  }

  nn::init_generator().set_state(78, 0);
  nn::ViT vit({.size = "tiny", .patch = 4, .image_size = 16, .num_classes = 0, .depth = 1});
  vit.to(DType::f64);
  Tensor x = randn({1, 3, 8, 12}, gen, {DType::f64});  // a 2x3 grid; the embedding's is 4x4
  Tensor gout = randn({1, 192}, gen, {DType::f64});
  GradcheckResult r = gradcheck([&](const std::vector<Tensor>& in) { return vit.forward(in[0]); }, {x}, gout);
  EXPECT_TRUE(r.ok) << r.report;

  // pos_embed: backward() against central differences of sum(forward * gout), on every 7th element.
  vit.zero_grad();
  autograd::backward(vit.forward(x), gout);
  Tensor p = vit.state_dict().at("pos_embed");
  std::vector<double> analytic = p.grad().to_vector();
  auto loss = [&] {
    NoGradGuard ng;
    return sum(mul(vit.forward(x), gout)).item();
  };
  const double eps = 1e-6;
  double* v = p.data<double>();
  int checked = 0;
  for (int64_t k = 0; k < p.numel(); k += 7) {
    const double keep = v[k];
    v[k] = keep + eps;
    const double lp = loss();
    v[k] = keep - eps;
    const double lm = loss();
    v[k] = keep;
    const double numeric = (lp - lm) / (2 * eps);
    ASSERT_NEAR(analytic[static_cast<size_t>(k)], numeric, 1e-6 + 1e-4 * std::abs(numeric))
        << "pos_embed element " << k;
    ++checked;
  }
  EXPECT_GT(checked, 400);
}

TEST(Models, ViTInputErrorsNameTheModelAndTheShapes) {
  auto vit = tiny_vit_32(1);
  test::expect_error([&] { vit->forward(zeros({2, 3, 18, 16})); },
                     "ViT-tiny/4 (image_size 32): expected input (N, 3, H, W) with H and W positive multiples of the "
                     "patch 4, got [2, 3, 18, 16]");
  test::expect_error([&] { vit->forward(zeros({2, 1, 16, 16})); }, "got [2, 1, 16, 16]");
  test::expect_error([&] { vit->forward(zeros({3, 16, 16})); }, "got [3, 16, 16]");
  test::expect_error([&] { nn::ViT::resize_pos_embed(zeros({1, 11, 4}), 2, 2); },
                     "ViT: pos_embed of shape [1, 11, 4] is not (1, 1 + g*g, dim)");
  test::expect_error([] { nn::ViT({.size = "tiny", .depth = 0}); }, "ViT: depth must be >= 1, got 0");
  EXPECT_EQ(vit->forward(zeros({2, 3, 4, 12})).shape(), (Shape{2, 10}));  // a 1x3 grid
}
