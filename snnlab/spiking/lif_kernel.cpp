// The LIF layer's two time loops as one C++ kernel each (the "cpp" backend, snnlab/spiking/cpp.py).
//
// Same equations and the same floating-point operation order as the eager and fused paths
// (built with -ffp-contract=off, so no fused multiply-add changes a rounding):
//
//   forward   U[t] = beta U[t-1] + I[t] - S[t-1] theta,   S[t] = (U[t] > theta)
//   backward  g[t] = gS[t] sg(U[t] - theta; k) + gU[t] + beta g[t+1],   dL/dI[t] = g[t]
//
// Layout: every [T, R, N] tensor is T slices of R*N contiguous values (R rows = batch, N neurons);
// a slice stride of 0 means "the same [R, N] values at every step" (a static input current, or
// the gradient of a sum over time). beta and theta are [N] vectors. Work is split into blocks of
// whole rows; one block runs all T steps while its slice stays in cache, blocks are shared
// among OpenMP threads (the process's libgomp, the one torch uses).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kBlock = 4096;  // values per block and time step

inline int64_t rows_per_block(int64_t n) { return std::max<int64_t>(1, kBlock / n); }

// counts[r, n]: the number of spikes of neuron n in row r over the T steps - a spike-count
// readout and the spike rate without another pass over the spike train. With WriteSpikes false
// the spike train itself is not written (spikes may be null): the counts are all that is kept.
template <typename F, bool WriteSpikes>
void forward(const F* __restrict__ cur, int64_t cur_ts, const F* __restrict__ mem0,
             const F* __restrict__ beta, const F* __restrict__ theta, F* __restrict__ spikes,
             F* __restrict__ mems, F* __restrict__ counts, int64_t T, int64_t R, int64_t N,
             int threads) {
  const int64_t M = R * N, rb = rows_per_block(N), nblocks = (R + rb - 1) / rb;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && nblocks > 1)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t r1 = std::min(R, (blk + 1) * rb);
    std::fill(counts + blk * rb * N, counts + r1 * N, F(0));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t r = blk * rb; r < r1; ++r) {
        const int64_t o = r * N;
        const F* c = cur + t * cur_ts + o;
        const F* p = (t ? mems + (t - 1) * M : mem0) + o;
        F* m = mems + t * M + o;
        F* s = WriteSpikes ? spikes + t * M + o : nullptr;
        F* k = counts + o;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
          const F s_prev = p[n] > theta[n] ? F(1) : F(0);
          const F u = beta[n] * p[n] + c[n] - s_prev * theta[n];
          const F spike = u > theta[n] ? F(1) : F(0);
          m[n] = u;
          if constexpr (WriteSpikes) s[n] = spike;
          k[n] += spike;
        }
      }
    }
  }
}

template <typename F, int Family>
inline F surrogate(F x, F k) {  // dS/dx; the formulas of surrogate.py
  if constexpr (Family == 0) {  // fast_sigmoid
    const F d = F(1) + k * std::abs(x);
    return F(1) / (d * d);
  } else if constexpr (Family == 1) {  // sigmoid, peak 1
    const F s = F(1) / (F(1) + std::exp(-(k * x)));
    return F(4) * s * (F(1) - s);
  } else {  // atan
    const F z = F(M_PI / 2.0) * k * x;
    return (k / F(2)) / (F(1) + z * z);
  }
}

// g_cur: [T, R, N], or [R, N] (the sum over t) when Static. g_mem0 (beta g[0]) is [R, N] and
// optional (null). With Params, g_beta (sum_t g[t] U[t-1]) and g_theta
// (-sum_t gS[t] sg[t] + g[t] S[t-1]) are [R, N] per-element sums. The branches are template
// parameters so that the inner loop has no control flow and vectorises.
template <typename F, int Family, bool Static, bool Params>
void backward(const F* __restrict__ mems, const F* __restrict__ mem0, const F* __restrict__ beta,
              const F* __restrict__ theta, F k, const F* __restrict__ gs, int64_t gs_ts,
              const F* __restrict__ gm, int64_t gm_ts, F* __restrict__ g_cur,
              F* __restrict__ g_mem0, F* __restrict__ g_beta, F* __restrict__ g_theta, int64_t T,
              int64_t R, int64_t N, int threads) {
  const int64_t M = R * N, rb = rows_per_block(N), nblocks = (R + rb - 1) / rb;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && nblocks > 1)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t r0 = blk * rb, r1 = std::min(R, r0 + rb), o0 = r0 * N, o1 = r1 * N;
    std::vector<F> carry(static_cast<size_t>(o1 - o0), F(0));  // g[t+1] of this block
    if (Static) std::fill(g_cur + o0, g_cur + o1, F(0));
    if (Params) {
      std::fill(g_beta + o0, g_beta + o1, F(0));
      std::fill(g_theta + o0, g_theta + o1, F(0));
    }
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t o = r * N;
        const F* u = mems + t * M + o;
        const F* up = (t ? mems + (t - 1) * M : mem0) + o;
        const F* gsp = gs + t * gs_ts + o;
        const F* gmp = gm + t * gm_ts + o;
        F* gnext = carry.data() + (o - o0);
        F* gc = Static ? g_cur + o : g_cur + t * M + o;
        F* gb = g_beta + o;
        F* gt = g_theta + o;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
          const F sg = surrogate<F, Family>(u[n] - theta[n], k);
          const F g = (gsp[n] * sg + gmp[n]) + beta[n] * gnext[n];
          gnext[n] = g;
          if constexpr (Static) gc[n] += g;
          else gc[n] = g;
          if constexpr (Params) {
            gb[n] += g * up[n];
            const F s_prev = up[n] > theta[n] ? F(1) : F(0);
            gt[n] -= gsp[n] * sg + g * s_prev;
          }
        }
      }
    }
    if (g_mem0)
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t n = 0; n < N; ++n) g_mem0[r * N + n] = beta[n] * carry[r * N + n - o0];
  }
}

template <typename F, int Family>
void backward_flags(bool static_cur, bool params, const F* mems, const F* mem0, const F* beta,
                    const F* theta, F k, const F* gs, int64_t gs_ts, const F* gm, int64_t gm_ts,
                    F* g_cur, F* g_mem0, F* g_beta, F* g_theta, int64_t T, int64_t R, int64_t N,
                    int threads) {
  auto run = [&](auto fn) {
    fn(mems, mem0, beta, theta, k, gs, gs_ts, gm, gm_ts, g_cur, g_mem0, g_beta, g_theta, T, R, N,
       threads);
  };
  if (static_cur) {
    if (params) run(backward<F, Family, true, true>);
    else run(backward<F, Family, true, false>);
  } else {
    if (params) run(backward<F, Family, false, true>);
    else run(backward<F, Family, false, false>);
  }
}

template <typename F>
void backward_family(int family, const F* mems, const F* mem0, const F* beta, const F* theta,
                     double k, const F* gs, int64_t gs_ts, const F* gm, int64_t gm_ts, F* g_cur,
                     int static_cur, F* g_mem0, F* g_beta, F* g_theta, int64_t T, int64_t R,
                     int64_t N, int threads) {
  const bool st = static_cur != 0, params = g_beta != nullptr;
  const F kf = static_cast<F>(k);
  if (family == 0)
    backward_flags<F, 0>(st, params, mems, mem0, beta, theta, kf, gs, gs_ts, gm, gm_ts, g_cur,
                         g_mem0, g_beta, g_theta, T, R, N, threads);
  else if (family == 1)
    backward_flags<F, 1>(st, params, mems, mem0, beta, theta, kf, gs, gs_ts, gm, gm_ts, g_cur,
                         g_mem0, g_beta, g_theta, T, R, N, threads);
  else
    backward_flags<F, 2>(st, params, mems, mem0, beta, theta, kf, gs, gs_ts, gm, gm_ts, g_cur,
                         g_mem0, g_beta, g_theta, T, R, N, threads);
}

// --- Linear layers fed by spikes (spike_matmul="sparse") -------------------------------------
// x [M, K] is a spike train (mostly zeros): out = x W^T + b adds, per row, the weight columns of
// the inputs that are non-zero (times the value: exact for spikes, correct for any x), in
// increasing input order, starting from the bias - the same sum as the dense product, in
// another order. wt is W^T [K, N] (contiguous); bias may be null.
constexpr int64_t kRowsPerTask = 64;

// idx[0..n) = the positions j < K with x[j] != 0, in increasing order; returns n.
template <typename F>
inline int64_t nonzeros(const F* __restrict__ x, int64_t K, int32_t* __restrict__ idx) {
  int64_t n = 0;
  for (int64_t j = 0; j < K; ++j) {  // branch-free: the index is written, kept if x[j] != 0
    idx[n] = static_cast<int32_t>(j);
    n += x[j] != F(0);
  }
  return n;
}

#if defined(__AVX512F__)
template <>
inline int64_t nonzeros<float>(const float* __restrict__ x, int64_t K, int32_t* __restrict__ idx) {
  // 16 values per step: a compare mask, the register form of compress (the memory form is slow
  // on some CPUs), a full store of which the first popcount(mask) indices are kept. idx needs
  // room for 16 more entries than it keeps.
  int64_t n = 0, j = 0;
  const __m512i step = _mm512_set1_epi32(16);
  __m512i pos = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; j + 16 <= K; j += 16) {
    const __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + j), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    _mm512_storeu_si512(idx + n, _mm512_maskz_compress_epi32(m, pos));
    n += __builtin_popcount(static_cast<unsigned>(m));
    pos = _mm512_add_epi32(pos, step);
  }
  for (; j < K; ++j) {
    idx[n] = static_cast<int32_t>(j);
    n += x[j] != 0.0f;
  }
  return n;
}
#endif

// o[0..N) (N <= 128) = start (or 0) + sum over the listed a of v_a * rows[idx[a], :] (v_a = 1: a
// plain add), in list order; v_a = vals[idx[a]] (ByPos: vals[a]). The AVX-512 float version keeps
// the 128 sums in 8 registers.
template <typename F, bool ByPos = false>
inline void add_rows(const F* __restrict__ rows, int64_t ld, int64_t N, const int32_t* idx,
                     int64_t na, const F* __restrict__ vals, const F* start, F* __restrict__ o) {
  if (start) std::copy(start, start + N, o);
  else std::fill(o, o + N, F(0));
  for (int64_t a = 0; a < na; ++a) {
    const F v = ByPos ? vals[a] : vals[idx[a]];
    const F* w = rows + idx[a] * ld;
    if (v == F(1)) {
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) o[n] += w[n];
    } else {
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) o[n] += v * w[n];
    }
  }
}

#if defined(__AVX512F__)
template <bool ByPos>
inline void add_rows_f32(const float* __restrict__ rows, int64_t ld, int64_t N,
                         const int32_t* idx, int64_t na, const float* __restrict__ vals,
                         const float* start, float* __restrict__ o) {
  __mmask16 mask[8];
  __m512 acc[8];
  for (int c = 0; c < 8; ++c) {
    const int64_t lanes = std::max<int64_t>(0, std::min<int64_t>(16, N - 16 * c));
    mask[c] = static_cast<__mmask16>((1u << lanes) - 1u);
    acc[c] = start ? _mm512_maskz_loadu_ps(mask[c], start + 16 * c) : _mm512_setzero_ps();
  }
  for (int64_t a = 0; a < na; ++a) {
    const float v = ByPos ? vals[a] : vals[idx[a]];
    const float* w = rows + idx[a] * ld;
    if (v == 1.0f) {
      for (int c = 0; c < 8; ++c) acc[c] = _mm512_add_ps(acc[c], _mm512_maskz_loadu_ps(mask[c], w + 16 * c));
    } else {
      const __m512 vv = _mm512_set1_ps(v);
      for (int c = 0; c < 8; ++c)
        acc[c] = _mm512_add_ps(acc[c], _mm512_mul_ps(vv, _mm512_maskz_loadu_ps(mask[c], w + 16 * c)));
    }
  }
  for (int c = 0; c < 8; ++c) _mm512_mask_storeu_ps(o + 16 * c, mask[c], acc[c]);
}
template <>
inline void add_rows<float, false>(const float* rows, int64_t ld, int64_t N, const int32_t* idx,
                                   int64_t na, const float* vals, const float* start, float* o) {
  add_rows_f32<false>(rows, ld, N, idx, na, vals, start, o);
}
template <>
inline void add_rows<float, true>(const float* rows, int64_t ld, int64_t N, const int32_t* idx,
                                  int64_t na, const float* vals, const float* start, float* o) {
  add_rows_f32<true>(rows, ld, N, idx, na, vals, start, o);
}
#endif

constexpr int64_t kChunk = 128;  // outputs summed at once (8 AVX-512 registers of floats)

template <typename F>
void spike_linear_forward(const F* __restrict__ x, const F* __restrict__ wt,
                          const F* __restrict__ bias, F* __restrict__ out, int64_t M, int64_t K,
                          int64_t N, int threads) {
  const int64_t tasks = (M + kRowsPerTask - 1) / kRowsPerTask;
#pragma omp parallel num_threads(threads) if (threads > 1 && tasks > 1)
  {
    std::vector<int32_t> idx(static_cast<size_t>(K + 16));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      for (int64_t r = task * kRowsPerTask; r < std::min(M, (task + 1) * kRowsPerTask); ++r) {
        const F* xr = x + r * K;
        const int64_t na = nonzeros(xr, K, idx.data());
        for (int64_t n0 = 0; n0 < N; n0 += kChunk)
          add_rows<F>(wt + n0, N, std::min(kChunk, N - n0), idx.data(), na, xr,
                      bias ? bias + n0 : nullptr, out + r * N + n0);
      }
    }
  }
}

// gwt [K, N] = x^T g: row j sums g's rows r where x[r, j] != 0 (times the value), in increasing
// r. The fired (r, j) pairs are first sorted by j (a counting sort of each row's list), then each
// row of gwt is summed in registers like the forward's output rows.
template <typename F>
void spike_linear_grad_weight(const F* __restrict__ x, const F* __restrict__ g, F* __restrict__ gwt,
                              int64_t M, int64_t K, int64_t N, int threads) {
  std::vector<int32_t> idx(static_cast<size_t>(K + 16));
  std::vector<int64_t> start(static_cast<size_t>(K + 1), 0);
  std::vector<int32_t> rows;  // the rows of input j: rows[start[j] .. start[j + 1])
  std::vector<F> vals;        // x[r, j] of each of them
  {
    std::vector<int64_t> count(static_cast<size_t>(K), 0);
    std::vector<int32_t> pairs;  // (row-major) the fired inputs of every row
    std::vector<int64_t> row_end(static_cast<size_t>(M), 0);
    pairs.reserve(static_cast<size_t>(M * K / 4 + 16));
    for (int64_t r = 0; r < M; ++r) {
      const int64_t na = nonzeros(x + r * K, K, idx.data());
      for (int64_t a = 0; a < na; ++a) {
        pairs.push_back(idx[a]);
        ++count[idx[a]];
      }
      row_end[r] = static_cast<int64_t>(pairs.size());
    }
    for (int64_t j = 0; j < K; ++j) start[j + 1] = start[j] + count[j];
    rows.resize(pairs.size() + 16);
    vals.resize(pairs.size() + 16);
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    int64_t p = 0;
    for (int64_t r = 0; r < M; ++r)
      for (; p < row_end[r]; ++p) {
        const int64_t at = fill[pairs[p]]++;
        rows[at] = static_cast<int32_t>(r);
        vals[at] = x[r * K + pairs[p]];
      }
  }
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && K > 1)
  for (int64_t j = 0; j < K; ++j)
    for (int64_t n0 = 0; n0 < N; n0 += kChunk)
      add_rows<F, true>(g + n0, N, std::min(kChunk, N - n0), rows.data() + start[j],
                        start[j + 1] - start[j], vals.data() + start[j], nullptr, gwt + j * N + n0);
}

}  // namespace

extern "C" {

int snnlab_lif_abi() { return 4; }

void snnlab_spike_linear_forward_f32(const float* x, const float* wt, const float* bias, float* out,
                                     int64_t M, int64_t K, int64_t N, int threads) {
  spike_linear_forward<float>(x, wt, bias, out, M, K, N, threads);
}

void snnlab_spike_linear_forward_f64(const double* x, const double* wt, const double* bias,
                                     double* out, int64_t M, int64_t K, int64_t N, int threads) {
  spike_linear_forward<double>(x, wt, bias, out, M, K, N, threads);
}

void snnlab_spike_linear_grad_weight_f32(const float* x, const float* g, float* gwt, int64_t M,
                                         int64_t K, int64_t N, int threads) {
  spike_linear_grad_weight<float>(x, g, gwt, M, K, N, threads);
}

void snnlab_spike_linear_grad_weight_f64(const double* x, const double* g, double* gwt, int64_t M,
                                         int64_t K, int64_t N, int threads) {
  spike_linear_grad_weight<double>(x, g, gwt, M, K, N, threads);
}

void snnlab_lif_forward_f32(const float* cur, int64_t cur_ts, const float* mem0, const float* beta,
                            const float* theta, float* spikes, float* mems, float* counts,
                            int64_t T, int64_t R, int64_t N, int threads) {
  if (spikes) forward<float, true>(cur, cur_ts, mem0, beta, theta, spikes, mems, counts, T, R, N, threads);
  else forward<float, false>(cur, cur_ts, mem0, beta, theta, spikes, mems, counts, T, R, N, threads);
}

void snnlab_lif_forward_f64(const double* cur, int64_t cur_ts, const double* mem0,
                            const double* beta, const double* theta, double* spikes, double* mems,
                            double* counts, int64_t T, int64_t R, int64_t N, int threads) {
  if (spikes) forward<double, true>(cur, cur_ts, mem0, beta, theta, spikes, mems, counts, T, R, N, threads);
  else forward<double, false>(cur, cur_ts, mem0, beta, theta, spikes, mems, counts, T, R, N, threads);
}

void snnlab_lif_backward_f32(int family, const float* mems, const float* mem0, const float* beta,
                             const float* theta, double k, const float* gs, int64_t gs_ts,
                             const float* gm, int64_t gm_ts, float* g_cur, int static_cur,
                             float* g_mem0, float* g_beta, float* g_theta, int64_t T, int64_t R,
                             int64_t N, int threads) {
  backward_family<float>(family, mems, mem0, beta, theta, k, gs, gs_ts, gm, gm_ts, g_cur,
                         static_cur, g_mem0, g_beta, g_theta, T, R, N, threads);
}

void snnlab_lif_backward_f64(int family, const double* mems, const double* mem0,
                             const double* beta, const double* theta, double k, const double* gs,
                             int64_t gs_ts, const double* gm, int64_t gm_ts, double* g_cur,
                             int static_cur, double* g_mem0, double* g_beta, double* g_theta,
                             int64_t T, int64_t R, int64_t N, int threads) {
  backward_family<double>(family, mems, mem0, beta, theta, k, gs, gs_ts, gm, gm_ts, g_cur,
                          static_cur, g_mem0, g_beta, g_theta, T, R, N, threads);
}

}  // extern "C"
