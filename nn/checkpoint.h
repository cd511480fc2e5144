#pragma once
// A training checkpoint: one safetensors file holding every tensor of a run under a section
// prefix ("model.conv1.weight", "optim.conv1.weight.momentum_buffer", "target.head.bias") and,
// as metadata, the position (epoch, step), the RNG states, the section names and the config
// text that made the run. The model section uses PyTorch's names and layouts, so with "model."
// stripped it is a state dict PyTorch can load. Saving is atomic (temporary file, fsync,
// rename): a crash mid-save leaves the previous checkpoint intact.
#include <cstdint>
#include <map>
#include <string>

#include "tensor/rng.h"
#include "tensor/tensor.h"

namespace siam::nn {

// Written to the metadata; load refuses any other version.
constexpr int kCheckpointFormat = 1;

struct Checkpoint {
  // Section name (no '.') -> tensors by name: "model" (Module::state_dict), "optim"
  // (Optimizer::state_dict), "target" (an EMA network), ... A section may be empty.
  std::map<std::string, std::map<std::string, Tensor>> sections;
  std::map<std::string, Generator> rng;  // named generators' (seed, offset): "default", "data", ...
  int64_t epoch = 0;
  int64_t step = 0;  // optimizer steps taken: the position of every per-step schedule
  std::string config;  // the config text of the run
  std::string source;  // the file it was loaded from (for messages); empty when built in memory

  // The section's tensors; a siam::Error naming the file and the sections it has when absent.
  const std::map<std::string, Tensor>& section(const std::string& name) const;
  const Generator& generator(const std::string& name) const;  // likewise
};

void save_checkpoint(const std::string& path, const Checkpoint& ck);
// Reads a checkpoint written by save_checkpoint. A missing, truncated or malformed file, a
// safetensors file that is not a siam checkpoint, or one of another format version is a
// siam::Error naming the file and the problem.
Checkpoint load_checkpoint(const std::string& path);

}  // namespace siam::nn
