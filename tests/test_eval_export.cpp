// `siam export`'s file: torchvision / timm names and the architecture in the metadata, and a
// round trip siam -> safetensors -> PyTorch (load_state_dict(strict=True) into torchvision's
// ResNet or the timm-named ViT, tools/reference/check_export.py) -> safetensors -> siam that
// must give back every tensor bit for bit. The PyTorch half runs when /usr/bin/python3 has
// torch and torchvision, and is skipped with the reason otherwise.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "apps/eval_commands.h"
#include "tensor/rng.h"
#include "tensor/safetensors.h"

namespace siam::test {
namespace {

namespace fs = std::filesystem;

// Every float tensor random (not the initialisation's structure: running statistics, zero
// biases) and every integer one 7, so a swapped or dropped tensor cannot go unnoticed.
ssl::Backbone randomised(const ssl::BackboneConfig& cfg, uint64_t seed) {
  ssl::Backbone b = ssl::make_backbone(cfg);
  Generator g(seed);
  NoGradGuard no_grad;
  for (auto& [name, t] : b.module->state_dict()) {
    if (is_floating(t.dtype())) copy_(t, add(mul(rand(t.shape(), g), 0.5), name.ends_with("running_var") ? 0.75 : -0.25));
    else fill_(t, 7);
  }
  return b;
}

struct Case {
  const char* name;
  ssl::BackboneConfig cfg;
};
const std::vector<Case> kCases = {
    {"resnet18", {.arch = "resnet18"}},
    {"resnet18_small_gray_w16", {.arch = "resnet18", .in_channels = 1, .small_input = true, .width = 16}},
    {"resnet50_w8", {.arch = "resnet50", .width = 8}},
    {"vit_tiny_p4_16", {.arch = "vit_tiny", .image_size = 16, .patch = 4}},
};

class Export : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("siam-export-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(Export, NamesAndMetadata) {
  ssl::Backbone b = randomised({.arch = "resnet18", .in_channels = 1, .small_input = true, .width = 16}, 1);
  apps::export_backbone(path("r.safetensors"), *b.module,
                        {.arch = "resnet18", .in_channels = 1, .small_input = true, .width = 16}, b.feature_dim,
                        {{"epoch", "3"}});
  SafeTensors st = load_safetensors(path("r.safetensors"));
  EXPECT_EQ(st.metadata.at("format"), "siam.backbone");
  EXPECT_EQ(st.metadata.at("arch"), "resnet18");
  EXPECT_EQ(st.metadata.at("in_channels"), "1");
  EXPECT_EQ(st.metadata.at("small_input"), "true");
  EXPECT_EQ(st.metadata.at("width"), "16");
  EXPECT_EQ(st.metadata.at("feature_dim"), "128");
  EXPECT_EQ(st.metadata.at("epoch"), "3");
  // torchvision's names, no classifier.
  EXPECT_EQ(st.at("conv1.weight").shape(), (Shape{16, 1, 3, 3}));
  EXPECT_EQ(st.at("layer4.1.bn2.running_var").shape(), (Shape{128}));
  EXPECT_EQ(st.at("layer2.0.downsample.0.weight").shape(), (Shape{32, 16, 1, 1}));
  EXPECT_EQ(st.tensors.count("fc.weight"), 0u);
  EXPECT_EQ(st.tensors.size(), b.module->state_dict().size());
}

TEST_F(Export, RoundTripThroughPyTorchIsExact) {
  if (std::system("/usr/bin/python3 -c 'import torch, torchvision' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 has no torch and torchvision (apt-get install python3-torch "
                    "python3-torchvision): the PyTorch round trip is not checked";
  std::string args;
  std::vector<ssl::Backbone> originals;
  for (size_t i = 0; i < kCases.size(); ++i) {
    originals.push_back(randomised(kCases[i].cfg, 10 + i));
    const std::string in = path(std::string(kCases[i].name) + ".safetensors");
    apps::export_backbone(in, *originals.back().module, kCases[i].cfg, originals.back().feature_dim);
    args += " " + in + " " + path(std::string(kCases[i].name) + ".torch.safetensors");
  }
  const std::string script = std::string(SIAM_SOURCE_DIR) + "/tools/reference/check_export.py";
  const std::string log = path("check_export.log");
  const int rc = std::system(("/usr/bin/python3 " + script + args + " > " + log + " 2>&1").c_str());
  std::ifstream lf(log);
  const std::string messages((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
  ASSERT_EQ(rc, 0) << "check_export.py failed:\n" << messages;
  for (size_t i = 0; i < kCases.size(); ++i) {
    SCOPED_TRACE(kCases[i].name);
    SafeTensors back = load_safetensors(path(std::string(kCases[i].name) + ".torch.safetensors"));
    // Loaded into the exporting module itself (strictly: the same names and shapes), after
    // keeping a copy of what it held.
    nn::Module& m = *originals[i].module;
    std::map<std::string, Tensor> want;
    for (const auto& [name, t] : m.state_dict()) want[name] = clone(t);
    m.load_state_dict(back.tensors, true);
    const auto got = m.state_dict();
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [name, t] : want) {
      const Tensor g = contiguous(got.at(name));
      ASSERT_EQ(g.dtype(), t.dtype()) << name;
      ASSERT_EQ(g.shape(), t.shape()) << name;
      EXPECT_EQ(std::memcmp(g.raw_data(), t.raw_data(), t.nbytes()), 0) << name << " differs";
    }
  }
}

}  // namespace
}  // namespace siam::test
