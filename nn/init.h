#pragma once
// Parameter initialisers (in place, no autograd), drawing from a Philox Generator so a seed
// fixes the model. Formulas follow torch.nn.init.
#include "tensor/rng.h"

namespace siam::nn::init {

void uniform_(const Tensor& t, double lo, double hi, Generator& g);
void normal_(const Tensor& t, double mean, double std, Generator& g);
// Normal(mean, std) truncated to [a, b] (absolute bounds), by inverse-CDF as torch does.
void trunc_normal_(const Tensor& t, double std, Generator& g, double a = -2.0, double b = 2.0);
void constant_(const Tensor& t, double v);
// fan_in / fan_out of a Linear (out, in) or Conv (out, in/groups, kh, kw) weight.
int64_t fan_in(const Tensor& w);
int64_t fan_out(const Tensor& w);
// kaiming_normal_(mode='fan_out', nonlinearity='relu'): std = sqrt(2 / fan_out).
void kaiming_normal_fan_out_(const Tensor& w, Generator& g);
// PyTorch's default Linear/Conv init: kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(fan_in), ..),
// and the bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
void default_weight_(const Tensor& w, Generator& g);
void default_bias_(const Tensor& b, int64_t fan_in, Generator& g);

}  // namespace siam::nn::init
