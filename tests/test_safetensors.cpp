// safetensors: round trip of every dtype, and a clear siam::Error (never a crash) for each
// kind of malformed file.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "autograd/ops.h"
#include "tensor/safetensors.h"

using namespace siam;
namespace fs = std::filesystem;

static std::string tmp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("siam_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

TEST(Safetensors, RoundTripEveryDtypeAndMetadata) {
  std::map<std::string, Tensor> in;
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64, DType::u8, DType::b8})
    in[std::string("t.") + dtype_name(t)] = to(reshape(arange(0, 6), {2, 3}), t);
  in["scalar"] = scalar_tensor(7);
  in["empty"] = zeros({0, 4});
  in["strided"] = transpose(reshape(arange(0, 6), {2, 3}), 0, 1);  // written contiguous
  std::string p = tmp_path("rt.safetensors");
  save_safetensors(p, in, {{"format_version", "1"}, {"note", "hello"}});
  SafeTensors st = load_safetensors(p);
  EXPECT_EQ(st.metadata.at("note"), "hello");
  ASSERT_EQ(st.tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    const Tensor& r = st.at(name);
    EXPECT_EQ(r.dtype(), t.dtype()) << name;
    EXPECT_EQ(r.shape(), t.shape()) << name;
    EXPECT_EQ(r.to_vector(), t.to_vector()) << name;
  }
  for (const auto& e : fs::directory_iterator(fs::temp_directory_path()))
    EXPECT_EQ(e.path().string().find(p + ".tmp"), std::string::npos) << "temporary file left behind";
  fs::remove(p);
}

TEST(Safetensors, MissingTensorNamesTheKeys) {
  std::string p = tmp_path("keys.safetensors");
  save_safetensors(p, {{"a", ones({1})}});
  try {
    load_safetensors(p).at("b");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the file has: a"), std::string::npos) << e.what();
  }
  fs::remove(p);
}

static std::string with_header(const std::string& json, const std::string& data) {
  std::string h = json;
  std::string out(8, '\0');
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + h + data;
}

struct Malformed {
  const char* what;
  std::string bytes;
  const char* expect;  // a phrase the error must contain
};

TEST(Safetensors, MalformedFilesGiveClearErrors) {
  std::string ok_data(8, '\0');
  std::string good = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string huge(8, '\0');
  huge[5] = 0x10;  // 2^44 bytes of header
  std::vector<Malformed> cases = {
      {"empty file", "", "truncated"},
      {"4 bytes", "abcd", "truncated"},
      {"header longer than file", with_header(good, ok_data).substr(0, 20), "truncated"},
      {"oversized header", huge + "{}", "limit"},
      {"invalid json", with_header("{\"x\": [1, 2", ""), "invalid safetensors header JSON"},
      {"header not object", with_header("[1,2,3]", ""), "not a JSON object"},
      {"unknown dtype", with_header(R"({"x":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", ok_data), "unknown dtype 'F17'"},
      {"missing field", with_header(R"({"x":{"dtype":"F32","shape":[2]}})", ok_data), "data_offsets"},
      {"shape mismatch", with_header(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", ok_data), "needs 12 bytes"},
      {"negative shape", with_header(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", ok_data), "non-negative"},
      {"offsets past end", with_header(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", ok_data), "past the end"},
      {"truncated data", with_header(good, ok_data.substr(0, 5)), "past the end"},
      {"reversed offsets", with_header(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", ok_data), "reversed"},
      {"overlap", with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", ok_data), "overlap"},
      {"metadata not strings", with_header(R"({"__metadata__":{"a":1}})", ""), "not a string"},
  };
  for (const auto& c : cases) {
    try {
      parse_safetensors(c.bytes, "bad.safetensors");
      ADD_FAILURE() << c.what << ": no error";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << c.what << ": " << msg;
      EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << ": " << msg;
    }
  }
  EXPECT_NO_THROW(parse_safetensors(with_header(good, ok_data), "good"));
}

TEST(Safetensors, TruncatedFileOnDisk) {
  std::string p = tmp_path("trunc.safetensors");
  save_safetensors(p, {{"w", ones({16})}});
  fs::resize_file(p, fs::file_size(p) - 10);
  EXPECT_THROW(load_safetensors(p), Error);
  fs::remove(p);
  EXPECT_THROW(load_safetensors(p), Error) << "missing file";
  EXPECT_THROW(save_safetensors("/nonexistent-dir/x.safetensors", {{"w", ones({1})}}), Error);
}
