#include "kernels/quant_fit.h"

#include <cmath>

namespace pensieve::quant {

int round_clamp(float v, int lo, int hi) {
  if (!(v == v)) v = 0.0f;
  if (v <= float(lo)) return lo;
  if (v >= float(hi)) return hi;
  return int(std::nearbyint(v));
}

float fit_symmetric(const float* x, const float* w, int n, int nmax, int8_t* q) {
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > amax) {
      amax = a;
      max = x[i];
    }
  }
  if (!(amax > 1e-30f) || !std::isfinite(amax)) {
    for (int i = 0; i < n; ++i) q[i] = 0;
    return 0.0f;
  }
  // The element of largest magnitude goes to the extra negative level (-nmax) first; nearby
  // scales are then tried because rounding the others may favour a slightly different one.
  float best_score = -1.0f, best_d = 0.0f;
  for (int step = -9; step <= 9; ++step) {
    const float iscale = -(float(nmax) + 0.1f * float(step)) / max;
    double slx = 0.0, sll = 0.0;
    for (int i = 0; i < n; ++i) {
      const int l = round_clamp(iscale * x[i], -nmax, nmax - 1);
      const double wi = w ? w[i] : 1.0;
      slx += wi * x[i] * l;
      sll += wi * double(l) * l;
    }
    // With the optimal d = slx / sll the error is sum(w x^2) - slx^2 / sll: maximise slx^2/sll.
    if (sll > 0.0 && slx * slx / sll > best_score) {
      best_score = float(slx * slx / sll);
      best_d = float(slx / sll);
    }
  }
  const float id = best_d != 0.0f ? 1.0f / best_d : 0.0f;
  for (int i = 0; i < n; ++i) q[i] = int8_t(round_clamp(x[i] * id, -nmax, nmax - 1));
  return best_d;
}

namespace {

// Least-squares (d, m) for fixed levels; returns the weighted squared error.
double solve_affine(const float* x, const float* w, int n, const uint8_t* l, bool allow_positive_min,
                    float* d, float* m) {
  double sw = 0, sl = 0, sll = 0, sx = 0, slx = 0;
  for (int i = 0; i < n; ++i) {
    const double wi = w ? w[i] : 1.0;
    sw += wi;
    sl += wi * l[i];
    sll += wi * double(l[i]) * l[i];
    sx += wi * x[i];
    slx += wi * l[i] * x[i];
  }
  const double det = sw * sll - sl * sl;
  double dd = 0.0, mm = sx / (sw > 0 ? sw : 1.0);
  if (det > 0.0) {
    dd = (sw * slx - sl * sx) / det;
    mm = (sll * sx - sl * slx) / det;
  }
  if (!allow_positive_min && mm > 0.0) {
    mm = 0.0;
    dd = sll > 0.0 ? slx / sll : 0.0;
  }
  double err = 0.0;
  for (int i = 0; i < n; ++i) {
    const double diff = dd * l[i] + mm - x[i];
    err += (w ? w[i] : 1.0) * diff * diff;
  }
  *d = float(dd);
  *m = float(mm);
  return err;
}

}  // namespace

float fit_affine(const float* x, const float* w, int n, int nmax, bool allow_positive_min,
                 uint8_t* q, float* m) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::fmin(lo, x[i]);
    hi = std::fmax(hi, x[i]);
  }
  if (!allow_positive_min && lo > 0.0f) lo = 0.0f;
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(hi > lo)) {
    for (int i = 0; i < n; ++i) q[i] = 0;
    *m = std::isfinite(lo) ? lo : 0.0f;
    return 0.0f;
  }
  uint8_t cand[256];
  float best_d = (hi - lo) / float(nmax), best_m = lo;
  for (int i = 0; i < n; ++i) q[i] = uint8_t(round_clamp((x[i] - lo) / best_d, 0, nmax));
  double best_err = solve_affine(x, w, n, q, allow_positive_min, &best_d, &best_m);
  // Stretch the grid a little either way of max-min; each assignment gets its own LS solution.
  for (int step = -4; step <= 12; ++step) {
    const float iscale = (float(nmax) + 0.1f * float(step)) / (hi - lo);
    for (int i = 0; i < n; ++i) cand[i] = uint8_t(round_clamp(iscale * (x[i] - lo), 0, nmax));
    float d, mm;
    const double err = solve_affine(x, w, n, cand, allow_positive_min, &d, &mm);
    if (err < best_err && d > 0.0f) {
      best_err = err;
      best_d = d;
      best_m = mm;
      for (int i = 0; i < n; ++i) q[i] = cand[i];
    }
  }
  // Reassign levels to the chosen (d, m) and re-solve while that keeps helping.
  for (int iter = 0; iter < 3 && best_d > 0.0f; ++iter) {
    for (int i = 0; i < n; ++i) cand[i] = uint8_t(round_clamp((x[i] - best_m) / best_d, 0, nmax));
    float d, mm;
    const double err = solve_affine(x, w, n, cand, allow_positive_min, &d, &mm);
    if (!(err < best_err) || !(d > 0.0f)) break;
    best_err = err;
    best_d = d;
    best_m = mm;
    for (int i = 0; i < n; ++i) q[i] = cand[i];
  }
  *m = best_m;
  return best_d;
}

void importance_weights(const float* x, int n, float* w) {
  double s2 = 0.0;
  for (int i = 0; i < n; ++i) s2 += double(x[i]) * x[i];
  const float mean2 = float(s2 / n);
  for (int i = 0; i < n; ++i) w[i] = mean2 + x[i] * x[i];
}

}  // namespace pensieve::quant
