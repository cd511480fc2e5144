// TensorBoard event files written by hand: CRC-32C against its known answers, a write/read
// round trip through the CRC-checking reader, corruption found and named, metrics.jsonl
// trimmed on resume, and the real `tensorboard` Python package reading what we write (when it
// can be imported: `python3 -m pip install --target DIR tensorboard` and set
// SIAM_TENSORBOARD_PATH=DIR, or install it for python3).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "apps/metrics_log.h"
#include "tensor/error.h"

using namespace siam;
using namespace siam::apps;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = fs::temp_directory_path() / ("siam_tb_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string only_event_file(const std::string& dir) {
  std::string found;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find("tfevents") != std::string::npos) found = e.path().string();
  return found;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// python3 with the tensorboard package importable, as a command prefix; empty when there is none.
std::string python_with_tensorboard() {
  std::string prefix;
  if (const char* p = std::getenv("SIAM_TENSORBOARD_PATH")) prefix = "PYTHONPATH=" + std::string(p) + " ";
  for (const char* py : {"python3", "/usr/bin/python3"}) {
    const std::string cmd = prefix + py;
    if (std::system((cmd + " -c 'import tensorboard' >/dev/null 2>&1").c_str()) == 0) return cmd;
  }
  return "";
}

}  // namespace

TEST(TensorBoard, Crc32cKnownAnswers) {
  EXPECT_EQ(crc32c(""), 0x00000000u);
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);  // the CRC-32C check value
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);  // RFC 3720 B.4
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  const uint32_t c = crc32c("123456789");
  EXPECT_EQ(masked_crc32c("123456789"), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(TensorBoard, WrittenEventsReadBackWithValidCrcs) {
  TempDir d;
  std::string path;
  {
    TensorBoardWriter w(d.path.string());
    path = w.path();
    EXPECT_NE(fs::path(path).filename().string().find("events.out.tfevents."), std::string::npos);
    w.scalars(1, {{"train/loss", 4.5}, {"train/lr", 0.3}});
    w.scalars(300, {{"train/loss", -1.25}});
    w.restart(200);
  }
  std::vector<TensorBoardEvent> ev = read_tensorboard_events(path);
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[0].file_version, "brain.Event:2");
  EXPECT_GT(ev[0].wall_time, 1.6e9);
  EXPECT_EQ(ev[1].step, 1);
  ASSERT_EQ(ev[1].scalars.size(), 2u);
  EXPECT_EQ(ev[1].scalars[0], (std::pair<std::string, float>{"train/loss", 4.5f}));
  EXPECT_EQ(ev[1].scalars[1], (std::pair<std::string, float>{"train/lr", 0.3f}));
  EXPECT_EQ(ev[2].step, 300) << "steps above 127 take multi-byte varints";
  EXPECT_EQ(ev[2].scalars[0].second, -1.25f);
  EXPECT_EQ(ev[3].step, 200);
  EXPECT_EQ(ev[3].session_status, 1);
  EXPECT_TRUE(ev[3].scalars.empty());
}

TEST(TensorBoard, CorruptOrTruncatedFilesAreNamed) {
  TempDir d;
  std::string path;
  {
    TensorBoardWriter w(d.path.string());
    path = w.path();
    w.scalars(7, {{"a", 1.0}});
  }
  const std::string good = file_bytes(path);
  std::string bad = good;
  bad[bad.size() - 6] ^= 0x40;  // inside the last record's data
  write_bytes(path, bad);
  std::string e = error_of([&] { read_tensorboard_events(path); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("the data's CRC does not match"), std::string::npos) << e;

  write_bytes(path, good.substr(0, good.size() - 3));
  e = error_of([&] { read_tensorboard_events(path); });
  EXPECT_NE(e.find("truncated record"), std::string::npos) << e;
}

TEST(TensorBoard, MetricsLogWritesJsonLinesAndTrimsThemOnResume) {
  TempDir d;
  {
    MetricsLog log(d.path.string(), -1);
    log.write("train", 1, {{"loss", 2.5}, {"lr", 0.1}});
    log.write("train", 2, {{"loss", std::nan("")}});
    log.write("epoch", 2, {{"epoch", 1}, {"loss", 2.0}});
    log.write("train", 3, {{"loss", 1.5}});
  }
  std::string text = file_bytes(d / "metrics.jsonl");
  EXPECT_NE(text.find("{\"kind\":\"train\",\"step\":1,\"loss\":2.5,\"lr\":0.1}"), std::string::npos) << text;
  EXPECT_NE(text.find("\"loss\":null"), std::string::npos) << "JSON has no NaN: " << text;
  EXPECT_NE(text.find("\"epoch\":1,"), std::string::npos) << "counts are integers: " << text;
  // A killed process can leave half a line; a resume from step 2 keeps steps <= 2 only.
  write_bytes(d / "metrics.jsonl", text + "{\"kind\":\"tra");
  fs::remove(only_event_file(d.path.string()));
  {
    MetricsLog log(d.path.string(), 2);
    log.write("train", 3, {{"loss", 1.4}});
  }
  std::string resumed = file_bytes(d / "metrics.jsonl");
  EXPECT_EQ(std::count(resumed.begin(), resumed.end(), '\n'), 4) << resumed;
  EXPECT_NE(resumed.find("\"step\":3,\"loss\":1.4"), std::string::npos) << resumed;
  EXPECT_EQ(resumed.find("\"loss\":1.5"), std::string::npos) << resumed;
  std::vector<TensorBoardEvent> ev = read_tensorboard_events(only_event_file(d.path.string()));
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[1].session_status, 1);
  EXPECT_EQ(ev[1].step, 3);
}

TEST(TensorBoard, ThePythonPackageReadsOurFiles) {
  const std::string python = python_with_tensorboard();
  if (python.empty())
    GTEST_SKIP() << "the tensorboard Python package is not importable; to run this test: "
                    "python3 -m pip install --target /tmp/tb tensorboard, then SIAM_TENSORBOARD_PATH=/tmp/tb";
  TempDir d;
  {
    // A first run logs steps 1..4, a resumed one restarts at step 3 and logs 3..5: TensorBoard
    // must show 1, 2 from the first and 3, 4, 5 from the second.
    TensorBoardWriter a(d.path.string());
    for (int s = 1; s <= 4; ++s) a.scalars(s, {{"train/loss", 10.0 + s}, {"train/lr", 0.5}});
  }
  {
    TensorBoardWriter b(d.path.string());
    b.restart(3);
    for (int s = 3; s <= 5; ++s) b.scalars(s, {{"train/loss", 20.0 + s}});
  }
  const std::string script = d / "read.py";
  write_bytes(script,
              "import sys\n"
              "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n"
              "ea = EventAccumulator(sys.argv[1], size_guidance={'scalars': 0})\n"
              "ea.Reload()\n"
              "for tag in sorted(ea.Tags()['scalars']):\n"
              "    print(tag, ' '.join('%d:%g' % (e.step, e.value) for e in ea.Scalars(tag)))\n");
  const std::string out = d / "out.txt";
  ASSERT_EQ(std::system((python + " " + script + " " + d.path.string() + " >" + out + " 2>&1").c_str()), 0)
      << file_bytes(out);
  const std::string got = file_bytes(out);
  EXPECT_NE(got.find("train/loss 1:11 2:12 3:23 4:24 5:25"), std::string::npos) << got;
  EXPECT_NE(got.find("train/lr 1:0.5 2:0.5\n"), std::string::npos) << got;
}
