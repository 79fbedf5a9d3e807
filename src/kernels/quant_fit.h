// Scale searches shared by the quantizers. Each one picks the integer levels for a small group of
// values and the float scale (and offset) that minimise the weighted squared error, trying a grid
// of candidate scales and solving the least-squares problem for each assignment of levels. This is
// what lifts quantization quality above plain max-abs rounding.
#pragma once
#include <cstdint>

namespace pensieve::quant {

// Nearest integer of v clamped to [lo, hi]; NaN maps to 0 (then clamped), so corrupt inputs never
// reach an undefined float-to-int conversion.
int round_clamp(float v, int lo, int hi);

// x ≈ d * q with q in [-nmax, nmax - 1]. Returns d (0 for an all-zero group) and the levels in q.
// w: per-element weights of the error (nullptr: all 1).
float fit_symmetric(const float* x, const float* w, int n, int nmax, int8_t* q);

// x ≈ d * q + m with q in [0, nmax]. With `allow_positive_min` false the offset m is kept <= 0 (the
// K-quants store -m as an unsigned number). Returns d; writes m and the levels.
float fit_affine(const float* x, const float* w, int n, int nmax, bool allow_positive_min,
                 uint8_t* q, float* m);

// Weights for the error of one K-quant sub-block: large magnitudes matter more, but every element
// counts (the mean square keeps near-zero elements from being ignored).
void importance_weights(const float* x, int n, float* w);

}  // namespace pensieve::quant
