#pragma once
// The Earth Mover's Distance between two sets of feature vectors with uniform weights and
// cost 1 - cosine similarity (methods.md, pair generator 4: how far apart two views are).
// Both problems are solved exactly: equal counts are an assignment problem (the Hungarian
// method with potentials, O(n^3)); unequal counts a transportation problem (successive
// shortest paths on integer masses, see transport_cost).
#include <cstdint>
#include <vector>

#include "data/datasets.h"
#include "data/pairs.h"
#include "nn/module.h"
#include "tensor/tensor.h"

namespace siam::apps {

struct Assignment {
  std::vector<int64_t> col_of_row;  // (n): the column each row is assigned to
  double cost = 0;                  // sum of the assigned costs
};

// Minimum-cost assignment of every row to a distinct column (scipy.optimize.
// linear_sum_assignment). cost: n x m row-major with n <= m, finite.
Assignment linear_sum_assignment(const std::vector<double>& cost, int64_t n, int64_t m);

// Minimum cost of moving mass 1/n from each of n sources to mass 1/m at each of m sinks:
// sum_ij c_ij f_ij over f >= 0 with row sums 1/n and column sums 1/m. cost: n x m row-major,
// finite. Scaled by L = lcm(n, m) the masses are the integers L/n and L/m, so successive
// shortest paths ship integer flows and reach an exact optimum.
double transport_cost(const std::vector<double>& cost, int64_t n, int64_t m);

// 1 - cos(a_i, b_j) for a (n, D), b (m, D) -> (n, m) f64 (a zero vector has cosine 0).
Tensor cosine_cost(const Tensor& a, const Tensor& b);

// EMD between the rows of a (n, D) and b (m, D): transport_cost of cosine_cost, which for
// n = m is linear_sum_assignment's cost / n. In [0, 2].
double emd(const Tensor& a, const Tensor& b);

// The backbone's spatial feature vectors: x (N, C, H, W) -> (N, P, D), a ResNet's last
// feature map with its h x w positions as rows (P = h w, D = channels) or a ViT's patch
// tokens after the final norm (P = patches, the class token left out). Another module is a
// siam::Error.
Tensor spatial_features(nn::Module& backbone, const Tensor& x);

// The EMD between the spatial features of views 0 and 1 of each of the first `pairs` rows of
// epoch 0 of `gen` (in the epoch's order), the backbone in eval mode (and left in the mode it
// was in). images: the set gen was built on. One value per pair.
std::vector<double> view_emd(nn::Module& backbone, const data::ImageSet& images, const data::PairGenerator& gen,
                             int64_t pairs, int64_t batch_size = 64);

}  // namespace siam::apps
