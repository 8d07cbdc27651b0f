/* Fused float32 CPU kernels for one decode step of a Llama/Qwen2-style model (workbench/ckernels.py).

   The matmuls stay in torch (MKL is already near this core's float32 peak on them); these kernels replace
   the ~140 small elementwise and attention ops per layer that sit between the matmuls, each of which
   streamed a [rows, width] tensor through memory once. Here each row is handled start to finish while it
   is in L1. Decode attention then runs at about 60% of the rate at which one core can stream the KV cache
   (docs/benchmarks.md), the part of a step no engine can skip.

   Same math as fast_rollout._decode (attention="bmm"), with float32 rounding that can differ in the last
   bits: sums are accumulated in another order, and exp is the polynomial below (about 1 ulp, like the
   SLEEF exp torch uses) -- tests/test_ckernels.py checks each kernel against torch, and
   tests/test_fast_rollout.py checks greedy output against model.generate.
   Single-threaded by design: the engine runs one torch thread (docs/benchmarks.md, "Threads"). */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* 8 floats as one vector (GCC/clang vector extension: AVX/AVX2/AVX-512 or NEON pairs, as -march allows) */
typedef float v8 __attribute__((vector_size(32)));
static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof(v));
    return v;
}
static inline float hsum8(v8 a) {
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

/* exp(x) for float32: x = n ln2 + r with |r| <= ln2/2, e^r by the Cephes expf polynomial, 2^n through the
   exponent bits. Written without branches so that the compiler vectorises the loops that call it. */
static inline float exp_poly(float x) {
    const float hi = 88.3762626647949f, lo = -87.3365447504019f;
    float xc = x > hi ? hi : (x < lo ? lo : x);
    float n = nearbyintf(xc * 1.44269504088896341f);
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } u;
    u.i = ((int32_t)n + 127) << 23;
    float y = p * u.f;
    return x < lo ? 0.0f : (x > hi ? INFINITY : y);
}

/* out[i, :] = w * (x[i, :] * (1 / sqrt(mean(x[i, :]^2) + eps)))  (LlamaRMSNorm in float32) */
void rmsnorm(const float *x, const float *w, float *out, int rows, int d, float eps) {
    for (int i = 0; i < rows; i++) {
        const float *xi = x + (int64_t)i * d;
        float *oi = out + (int64_t)i * d;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int j = 0; j < d; j++) ss += xi[j] * xi[j];
        float r = 1.0f / sqrtf(ss / (float)d + eps);
#pragma omp simd
        for (int j = 0; j < d; j++) oi[j] = w[j] * (xi[j] * r);
    }
}

/* out[i, j] = silu(gu[i, j]) * gu[i, inter + j], gu = [rows, 2 * inter]  (gate and up fused) */
void silu_mul(const float *gu, float *out, int rows, int inter) {
    for (int i = 0; i < rows; i++) {
        const float *g = gu + (int64_t)i * 2 * inter, *u = g + inter;
        float *o = out + (int64_t)i * inter;
#pragma omp simd
        for (int j = 0; j < inter; j++) o[j] = (g[j] / (1.0f + exp_poly(-g[j]))) * u[j];
    }
}

/* One decode step of attention for `rows` rows, one new token each.
   qkv   [rows, (H + 2 Hkv) D]  this step's projections (q heads, k heads, v heads); q and k are rotated here
   cs    [rows, 2 D]            cos and sin (rotate_half's sign folded into sin) at each row's position
   K, V  row r's cache starts at K + r * row_stride: [S, Hkv D], slot `slot` is written here
   mask  [rows, mask_stride] additive (0 or -inf) over cache slots, or NULL
   out   [rows, H D]
   Head h uses kv head h / (H / Hkv) (grouped-query attention). Scores are (q * scale) . k, as in the bmm
   path; softmax subtracts the row maximum. */
void attn_decode(float *qkv, const float *cs, float *K, float *V, int64_t row_stride, int slot,
                 const float *mask, int64_t mask_stride, float *out, int rows, int H, int Hkv, int D,
                 float scale, float *scratch /* [H * (slot + 1)] */) {
    const int half = D / 2, nrep = H / Hkv, width = (H + 2 * Hkv) * D, kvw = Hkv * D, n = slot + 1, dv = D / 8;
    int koff[H]; /* offset of head h's kv head in a cache row (an integer division, kept out of the loops) */
    for (int h = 0; h < H; h++) koff[h] = (h / nrep) * D;
    for (int r = 0; r < rows; r++) {
        float *restrict x = qkv + (int64_t)r * width;
        const float *restrict cosr = cs + (int64_t)r * 2 * D, *restrict sinr = cosr + D;
        float *restrict Kr = K + (int64_t)r * row_stride, *restrict Vr = V + (int64_t)r * row_stride;
        /* rotary on every q and k head: x * cos + swap_halves(x) * sin_signed; k goes straight to the cache,
           q is also scaled (scores are (q * scale) . k, as in the bmm path) */
        float *restrict kslot = Kr + (int64_t)slot * kvw;
        for (int hh = 0; hh < H + Hkv; hh++) {
            float *restrict v = x + hh * D;
            float *restrict dst = hh < H ? v : kslot + (hh - H) * D;
            float lo[D / 2], hi[D / 2];
            for (int j = 0; j < half; j++) {
                lo[j] = v[j] * cosr[j] + v[j + half] * sinr[j];
                hi[j] = v[j + half] * cosr[j + half] + v[j] * sinr[j + half];
            }
            for (int j = 0; j < half; j++) { dst[j] = lo[j]; dst[j + half] = hi[j]; }
            if (hh < H)
                for (int j = 0; j < D; j++) v[j] = v[j] * scale;
        }
        memcpy(Vr + (int64_t)slot * kvw, x + (H + Hkv) * D, sizeof(float) * kvw);
        const float *restrict m = mask ? mask + (int64_t)r * mask_stride : 0;
        /* scores: one sequential pass over the row's keys, every head at each position */
        for (int t = 0; t < n; t++) {
            const float *restrict kt = Kr + (int64_t)t * kvw;
            for (int h = 0; h < H; h++) {
                const float *restrict q = x + h * D, *restrict k = kt + koff[h];
                v8 acc = load8(q) * load8(k);
                for (int c = 1; c < dv; c++) acc += load8(q + 8 * c) * load8(k + 8 * c);
                scratch[h * n + t] = hsum8(acc) + (m ? m[t] : 0.0f);
            }
        }
        /* softmax per head */
        for (int h = 0; h < H; h++) {
            float *restrict p = scratch + h * n, mx = -INFINITY, sum = 0.0f;
            for (int t = 0; t < n; t++) mx = p[t] > mx ? p[t] : mx;
#pragma omp simd reduction(+ : sum)
            for (int t = 0; t < n; t++) {
                p[t] = exp_poly(p[t] - mx);
                sum += p[t];
            }
            float inv = 1.0f / sum;
            for (int t = 0; t < n; t++) p[t] = p[t] * inv;
        }
        /* values: one sequential pass over the row's values, every head at each position */
        float *restrict o = out + (int64_t)r * H * D;
        memset(o, 0, sizeof(float) * H * D);
        for (int t = 0; t < n; t++) {
            const float *restrict vt = Vr + (int64_t)t * kvw;
            for (int h = 0; h < H; h++) {
                const float *restrict v = vt + koff[h];
                float *restrict oh = o + h * D;
                const float w = scratch[h * n + t];
                for (int c = 0; c < dv; c++) {
                    v8 acc = load8(oh + 8 * c) + w * load8(v + 8 * c);
                    memcpy(oh + 8 * c, &acc, sizeof(v8));
                }
            }
        }
    }
}
