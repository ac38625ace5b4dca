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

}  // namespace

extern "C" {

int snnlab_lif_abi() { return 3; }

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
