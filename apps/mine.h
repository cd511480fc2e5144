#pragma once
// Mined semantic positives: every training image's nearest neighbours by the cosine similarity
// of a pretrained encoder's features of the un-augmented images (resized and normalised as the
// evaluation protocols do, the backbone in eval mode, global-pooled features), found by an
// exact search and saved as a neighbour file (data::save_neighbours) that a mined pair
// generator reads. The similarities are kept, so pairs.mined_threshold applies at training
// time and one file serves any threshold.
//
//   siam mine CHECKPOINT --out neighbours.safetensors [--k 10] [--dataset NAME] [--limit N]
//   [pairs] generator = "mined", neighbours = FILE, mine_from = CHECKPOINT   (pretrain mines
//   the file on the first run when it is missing, and reuses it afterwards)
#include <cstdint>
#include <map>
#include <ostream>
#include <string>

#include "apps/config.h"
#include "apps/eval_commands.h"
#include "data/pairs.h"

namespace CLI {
class App;
}

namespace siam::apps {

// Exact k-nearest-neighbour search by cosine similarity, each image's own row excluded.
// features: (N, D) floating, on any device (the search runs there); L2-normalised here. Query
// rows go in blocks of `block`: one GEMM of the block against all N features, then a top-(k+1)
// selection per row from which the row's own image is dropped. Ties rank the lower index
// first. k is capped at N - 1 (every other image). Returns indices (N, min(k, N - 1)) i64 and
// similarities f32 on the CPU, best first.
data::Neighbours nearest_neighbours(const Tensor& features, int64_t k, int64_t block = 1024);

// How semantic a neighbour list is, given the images' labels (N) i64.
struct NeighbourStats {
  double mean_similarity = 0;   // over every listed neighbour
  double label_agreement = -1;  // percent of neighbours with their anchor's label; -1: unlabelled
  double chance = -1;           // the same for a uniformly drawn other image, percent
};
NeighbourStats neighbour_stats(const data::Neighbours& nb, const Tensor& labels);

struct MineCommand {
  CheckpointInput input;               // the encoder; sets may change data.*, run.device, run.threads
  std::string output{};                // --out: the neighbour file to write
  int64_t k = 10;                      // neighbours per image
  std::string dataset{};               // another data set (its default folder unless data.root is set)
  int64_t limit = 0;                   // the first N training images; 0: the checkpoint's data.limit
  std::string features = "backbone";   // backbone, random (the architecture untrained) or pixels
  int64_t block = 1024;                // query rows per similarity block
};
void run_mine(const MineCommand& c, std::ostream& out);

// For a run whose pairs.generator is "mined": when pairs.neighbours names a file that does not
// exist and pairs.mine_from names a checkpoint, mines the run's training images (data.limit
// applied, the run's normalisation) with that checkpoint's backbone (pairs.mine_k neighbours
// each) on the run's device and saves the file. Returns a line for the run's log saying what was mined or reused
// (empty for other generators). A missing file without pairs.mine_from is a siam::Error saying
// how to make it.
std::string prepare_mined_neighbours(const Config& cfg);

// Registers `siam mine`.
void add_mine_command(CLI::App& app);

}  // namespace siam::apps
