#include "apps/emd.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "apps/eval.h"
#include "autograd/ops.h"
#include "data/loader.h"
#include "nn/resnet.h"
#include "nn/vit.h"

namespace siam::apps {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

void check_cost(const char* what, const std::vector<double>& cost, int64_t n, int64_t m) {
  if (n < 1 || m < 1) fail(what, ": a ", n, " x ", m, " cost matrix, expected at least one row and one column");
  if (static_cast<int64_t>(cost.size()) != n * m)
    fail(what, ": ", cost.size(), " costs for a ", n, " x ", m, " matrix, expected ", n * m);
  for (size_t k = 0; k < cost.size(); ++k)
    if (!std::isfinite(cost[k]))
      fail(what, ": cost (", static_cast<int64_t>(k) / m, ", ", static_cast<int64_t>(k) % m, ") is ", cost[k],
           ", expected a finite number");
}

}  // namespace

// The Hungarian method in its shortest-augmenting-path form (Jonker-Volgenant style): rows are
// added one at a time, each by a Dijkstra over the columns on reduced costs with row
// potentials u and column potentials v, so every step is O(n m) and the whole O(n^2 m).
Assignment linear_sum_assignment(const std::vector<double>& cost, int64_t n, int64_t m) {
  check_cost("linear_sum_assignment", cost, n, m);
  if (n > m) fail("linear_sum_assignment: ", n, " rows and ", m, " columns, expected rows <= columns");
  // 1-based with a virtual column 0 that holds the row being inserted.
  std::vector<double> u(n + 1, 0.0), v(m + 1, 0.0), minv(m + 1);
  std::vector<int64_t> row_of(m + 1, 0), way(m + 1, 0);
  std::vector<char> used(m + 1);
  for (int64_t i = 1; i <= n; ++i) {
    row_of[0] = i;
    int64_t j0 = 0;
    std::fill(minv.begin(), minv.end(), kInf);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[j0] = 1;
      const int64_t i0 = row_of[j0];
      double delta = kInf;
      int64_t j1 = -1;
      for (int64_t j = 1; j <= m; ++j) {
        if (used[j]) continue;
        const double cur = cost[(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int64_t j = 0; j <= m; ++j) {
        if (used[j]) {
          u[row_of[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (row_of[j0] != 0);
    do {
      const int64_t j1 = way[j0];
      row_of[j0] = row_of[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  Assignment a;
  a.col_of_row.assign(n, -1);
  for (int64_t j = 1; j <= m; ++j)
    if (row_of[j] != 0) a.col_of_row[row_of[j] - 1] = j - 1;
  for (int64_t i = 0; i < n; ++i) a.cost += cost[i * m + a.col_of_row[i]];
  return a;
}

// Successive shortest paths on the residual graph of the complete bipartite network: source
// i -> sink j always (cost c_ij, unbounded), sink j -> source i while f_ij > 0 (cost -c_ij).
// Potentials keep reduced costs non-negative so each search is a dense Dijkstra over n + m
// nodes from every source with supply left; the path ends at the nearest sink with demand
// left and carries the bottleneck of the supply, the demand and the reversed flows on it.
double transport_cost(const std::vector<double>& cost, int64_t n, int64_t m) {
  check_cost("transport_cost", cost, n, m);
  const int64_t g = std::gcd(n, m);
  const int64_t total = n / g * m;  // lcm(n, m): each source holds m / g units, each sink n / g
  std::vector<int64_t> supply(n, m / g), demand(m, n / g), flow(n * m, 0);
  const int64_t V = n + m;  // nodes: sources 0 .. n-1, sinks n .. n+m-1
  std::vector<double> pot(V, 0.0), dist(V);
  std::vector<int64_t> prev(V);
  std::vector<char> done(V);
  int64_t shipped = 0;
  while (shipped < total) {
    std::fill(dist.begin(), dist.end(), kInf);
    std::fill(prev.begin(), prev.end(), -1);
    std::fill(done.begin(), done.end(), 0);
    for (int64_t i = 0; i < n; ++i)
      if (supply[i] > 0) dist[i] = 0;
    for (;;) {
      int64_t x = -1;
      for (int64_t y = 0; y < V; ++y)
        if (!done[y] && dist[y] < kInf && (x < 0 || dist[y] < dist[x])) x = y;
      if (x < 0) break;
      done[x] = 1;
      if (x < n) {
        for (int64_t j = 0; j < m; ++j) {
          const int64_t y = n + j;
          const double d = dist[x] + std::max(0.0, cost[x * m + j] + pot[x] - pot[y]);
          if (!done[y] && d < dist[y]) {
            dist[y] = d;
            prev[y] = x;
          }
        }
      } else {
        const int64_t j = x - n;
        for (int64_t i = 0; i < n; ++i) {
          if (flow[i * m + j] == 0) continue;
          const double d = dist[x] + std::max(0.0, -cost[i * m + j] + pot[x] - pot[i]);
          if (!done[i] && d < dist[i]) {
            dist[i] = d;
            prev[i] = x;
          }
        }
      }
    }
    int64_t end = -1;
    for (int64_t j = 0; j < m; ++j)
      if (demand[j] > 0 && dist[n + j] < kInf && (end < 0 || dist[n + j] < dist[end])) end = n + j;
    SIAM_CHECK(end >= 0, "transport_cost: no augmenting path with ", total - shipped, " units left");
    int64_t amount = demand[end - n];
    int64_t x = end;
    while (prev[x] >= 0) {
      const int64_t p = prev[x];
      if (p >= n) amount = std::min(amount, flow[x * m + (p - n)]);  // a reversed edge sink p -> source x
      x = p;
    }
    amount = std::min(amount, supply[x]);
    supply[x] -= amount;
    demand[end - n] -= amount;
    for (x = end; prev[x] >= 0; x = prev[x]) {
      const int64_t p = prev[x];
      if (p < n) flow[p * m + (x - n)] += amount;
      else flow[x * m + (p - n)] -= amount;
    }
    shipped += amount;
    // Unreached nodes move by the largest distance found, which keeps every residual edge's
    // reduced cost non-negative (an edge from a reached to an unreached node cannot exist).
    double reach = 0;
    for (int64_t y = 0; y < V; ++y)
      if (dist[y] < kInf) reach = std::max(reach, dist[y]);
    for (int64_t y = 0; y < V; ++y) pot[y] += dist[y] < kInf ? dist[y] : reach;
  }
  double c = 0;
  for (int64_t k = 0; k < n * m; ++k) c += static_cast<double>(flow[k]) * cost[k];
  return c / static_cast<double>(total);
}

Tensor cosine_cost(const Tensor& a, const Tensor& b) {
  if (a.dim() != 2 || b.dim() != 2 || a.size(1) != b.size(1) || !is_floating(a.dtype()) || !is_floating(b.dtype()))
    fail("EMD: expected two floating (n, D) and (m, D) feature sets, got ", shape_str(a.shape()), " ",
         dtype_name(a.dtype()), " and ", shape_str(b.shape()), " ", dtype_name(b.dtype()));
  NoGradGuard no_grad;
  Tensor an = normalize(copy_to(a, Device::cpu(), DType::f64), 1);
  Tensor bn = normalize(copy_to(b, Device::cpu(), DType::f64), 1);
  return contiguous(add(neg(matmul(an, transpose(bn, 0, 1))), 1.0));
}

double emd(const Tensor& a, const Tensor& b) {
  Tensor c = cosine_cost(a, b);
  const int64_t n = c.size(0), m = c.size(1);
  const double* p = c.data<double>();
  std::vector<double> cost(p, p + n * m);
  if (n == m) return linear_sum_assignment(cost, n, m).cost / static_cast<double>(n);
  return transport_cost(cost, n, m);
}

Tensor spatial_features(nn::Module& backbone, const Tensor& x) {
  if (auto* r = dynamic_cast<nn::ResNet*>(&backbone)) {
    Tensor f = r->feature_map(x);  // (N, C, h, w)
    return permute(flatten(f, 2), {0, 2, 1});
  }
  if (auto* v = dynamic_cast<nn::ViT*>(&backbone)) {
    Tensor t = v->tokens(x);  // (N, 1 + L, D)
    return slice(t, 1, 1, t.size(1));
  }
  fail("EMD: spatial features need a ResNet or a ViT backbone (its feature map or patch tokens)");
}

std::vector<double> view_emd(nn::Module& backbone, const data::ImageSet& images, const data::PairGenerator& gen,
                             int64_t pairs, int64_t batch_size) {
  if (gen.num_views() < 2) fail("view EMD: the pair generator has ", gen.num_views(), " view, expected >= 2");
  if (pairs < 1 || pairs > gen.rows_per_epoch())
    fail("view EMD: ", pairs, " pairs asked, expected 1 .. ", gen.rows_per_epoch(), " (the rows of an epoch)");
  if (batch_size < 1) fail("view EMD: batch size ", batch_size, ", expected >= 1");
  EvalModeGuard mode(backbone);
  NoGradGuard no_grad;
  std::vector<double> out(static_cast<size_t>(pairs));
  const std::vector<int64_t> order = gen.epoch_order(0);
  for (int64_t start = 0; start < pairs; start += batch_size) {
    const int64_t count = std::min(batch_size, pairs - start);
    data::Batch b = data::build_batch(images, gen.plan(0, order.data() + start, count), 0);
    // Costs 1 - cos for the whole batch at once: (B, P0, P1) f64.
    Tensor f0 = normalize(copy_to(spatial_features(backbone, b.views[0]), Device::cpu(), DType::f64), -1);
    Tensor f1 = normalize(copy_to(spatial_features(backbone, b.views[1]), Device::cpu(), DType::f64), -1);
    Tensor c = contiguous(add(neg(matmul(f0, transpose(f1, 1, 2))), 1.0));
    const int64_t n = c.size(1), m = c.size(2);
    const double* p = c.data<double>();
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t r = 0; r < count; ++r) {
      std::vector<double> cost(p + r * n * m, p + (r + 1) * n * m);
      out[static_cast<size_t>(start + r)] =
          n == m ? linear_sum_assignment(cost, n, m).cost / static_cast<double>(n) : transport_cost(cost, n, m);
    }
  }
  return out;
}

}  // namespace siam::apps
