#pragma once
// A run's metrics, written two ways: JSON lines (metrics.jsonl, one object per record, for
// scripts) and TensorBoard event files (events.out.tfevents.*, for `tensorboard --logdir`).
//
// The event file format is TensorFlow's TFRecord of Event protocol buffers, written here by
// hand: each record is
//   uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
// (little-endian), where masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8. The first Event
// holds file_version "brain.Event:2"; each later one a wall time, a step and a Summary of
// scalar values (tag, simple_value).
#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace siam::apps {

// CRC-32C (Castagnoli), as TFRecord uses it, and its masked form.
uint32_t crc32c(std::string_view bytes);
uint32_t masked_crc32c(std::string_view bytes);

class TensorBoardWriter {
 public:
  // Creates <dir>/events.out.tfevents.<seconds>.<host>.<pid> and writes the file-version
  // event. The folder must exist.
  explicit TensorBoardWriter(const std::string& dir);
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One Event at `step` holding a scalar per entry (tag -> value), flushed to disk.
  void scalars(int64_t step, const std::map<std::string, double>& values);
  // A SessionLog START at `step`: TensorBoard then drops the events of earlier runs in this
  // folder whose step is >= step, which a resumed run rewrites.
  void restart(int64_t step);
  const std::string& path() const { return path_; }

 private:
  void record(const std::string& event);
  std::string path_;
  std::ofstream out_;
};

// One parsed record of an event file: the Event's fields this writer uses.
struct TensorBoardEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;                // set in the first event only
  int session_status = 0;                  // SessionLog status (1 = START); 0 when absent
  std::vector<std::pair<std::string, float>> scalars;  // (tag, simple_value)
};

// Reads an event file back, checking both CRCs of every record; a bad CRC, a truncated record
// or a malformed Event is a siam::Error naming the file and the record's offset.
std::vector<TensorBoardEvent> read_tensorboard_events(const std::string& path);

// metrics.jsonl and the TensorBoard events of one run folder.
class MetricsLog {
 public:
  // resume_step < 0: a new run (metrics.jsonl and the folder's event files start afresh).
  // Otherwise the run continues from a checkpoint at resume_step: lines of metrics.jsonl past
  // that step (written after the checkpoint by the interrupted process) are dropped, and
  // TensorBoard is told to drop them.
  MetricsLog(const std::string& dir, int64_t resume_step);

  // One JSON object {"kind": kind, "step": step, ...values} on its own line, and the same
  // values as TensorBoard scalars "<kind>/<name>". Non-finite values are written as null
  // (JSON has no NaN) and skipped in TensorBoard.
  void write(const std::string& kind, int64_t step, const std::map<std::string, double>& values);

 private:
  std::string jsonl_path_;
  std::ofstream jsonl_;
  TensorBoardWriter tb_;
};

}  // namespace siam::apps
