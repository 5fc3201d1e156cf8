/*
 * The "limit" column of benchmarks/gradient.py: the parameter-shift gradient of the
 * hardware-efficient circuit's loss, in plain C with OpenMP.
 *
 * Circuit (backends.templates.hardware_efficient_circuit(n, L)): RY(pi x_q) on every
 * qubit, then L layers of RX(w) RY(w) RZ(w) on every qubit (weights layer-major, then
 * qubit, then rotation) followed by CNOT(q, q + 1) for q = 0 .. n - 2.
 * Loss: mean over the B inputs of sum_q <Z_q>.
 *
 * For each of the B x 2P (input, shifted weight vector) pairs, one thread simulates the
 * whole circuit gate by gate on a complex128 state of its own (split real and imaginary
 * arrays of 2^n doubles: 16 bytes an amplitude, 64 KiB at n = 12 and 1 MiB at n = 16, so
 * in L2 or L3; 16 MiB at n = 20, where two threads fill a 32 MiB L3), with
 * weight k shifted by +pi/2 or -pi/2, and reduces it to sum_q <Z_q>. The gradient is
 * d loss / d w_k = mean_b (f_b(w + pi/2 e_k) - f_b(w - pi/2 e_k)) / 2.
 *
 * Nothing is shared between the shifted circuits (no common prefix is reused): this is the
 * parameter-shift rule itself, run as fast as a straightforward compiled loop runs it.
 *
 * Built by the benchmark: cc -O3 -march=native -fopenmp -shared -fPIC ps_kernel.c
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    double *re;
    double *im;
    int64_t dim;
} state_t;

/* Apply one 2x2 gate to qubit q: BODY reads r0 i0 r1 i1 (the pair's amplitudes) and
 * writes n0r n0i n1r n1i. Qubit 0 pairs neighbours (a loop of its own, so that the compiler
 * can vectorize it); higher qubits pair two contiguous runs of 2^q amplitudes. */
#define PAIR_LOOP(BODY)                                                               \
    do {                                                                              \
        double *restrict re = s->re, *restrict im = s->im;                            \
        const int64_t stride = (int64_t)1 << q;                                       \
        if (stride == 1) {                                                            \
            for (int64_t i = 0; i < s->dim; i += 2) {                                 \
                const double r0 = re[i], i0 = im[i], r1 = re[i + 1], i1 = im[i + 1];  \
                double n0r, n0i, n1r, n1i;                                            \
                BODY;                                                                 \
                re[i] = n0r;                                                          \
                im[i] = n0i;                                                          \
                re[i + 1] = n1r;                                                      \
                im[i + 1] = n1i;                                                      \
            }                                                                         \
        } else {                                                                      \
            for (int64_t hi = 0; hi < s->dim; hi += 2 * stride) {                     \
                double *restrict ra = re + hi, *restrict ia = im + hi;                \
                double *restrict rb = re + hi + stride, *restrict ib = im + hi + stride; \
                for (int64_t l = 0; l < stride; ++l) {                                \
                    const double r0 = ra[l], i0 = ia[l], r1 = rb[l], i1 = ib[l];      \
                    double n0r, n0i, n1r, n1i;                                        \
                    BODY;                                                             \
                    ra[l] = n0r;                                                      \
                    ia[l] = n0i;                                                      \
                    rb[l] = n1r;                                                      \
                    ib[l] = n1i;                                                      \
                }                                                                     \
            }                                                                         \
        }                                                                             \
    } while (0)

/* RX = [[c, -i s], [-i s, c]] */
static void apply_rx(state_t *s, int q, double theta) {
    const double c = cos(0.5 * theta), sn = sin(0.5 * theta);
    PAIR_LOOP(n0r = c * r0 + sn * i1; n0i = c * i0 - sn * r1; n1r = c * r1 + sn * i0;
              n1i = c * i1 - sn * r0);
}

/* RY = [[c, -s], [s, c]] */
static void apply_ry(state_t *s, int q, double theta) {
    const double c = cos(0.5 * theta), sn = sin(0.5 * theta);
    PAIR_LOOP(n0r = c * r0 - sn * r1; n0i = c * i0 - sn * i1; n1r = sn * r0 + c * r1;
              n1i = sn * i0 + c * i1);
}

/* RZ = diag(e^{-i theta/2}, e^{+i theta/2}) */
static void apply_rz(state_t *s, int q, double theta) {
    const double c = cos(0.5 * theta), sn = sin(0.5 * theta);
    PAIR_LOOP(n0r = c * r0 + sn * i0; n0i = c * i0 - sn * r0; n1r = c * r1 - sn * i1;
              n1i = c * i1 + sn * r1);
}

/* CNOT: swap the amplitudes of |..1_c..0_t..> and |..1_c..1_t..>. Loops over the indices
 * whose bits a < b (the two qubits) are clear; the innermost run (2^a) is contiguous. */
static void apply_cnot(state_t *s, int control, int target) {
    const int64_t cbit = (int64_t)1 << control, tbit = (int64_t)1 << target;
    const int a = control < target ? control : target, b = control < target ? target : control;
    const int64_t abit = (int64_t)1 << a, bbit = (int64_t)1 << b;
    for (int64_t h = 0; h < s->dim; h += 2 * bbit) {
        for (int64_t m = h; m < h + bbit; m += 2 * abit) {
            double *restrict ri = s->re + (m | cbit), *restrict ii = s->im + (m | cbit);
            double *restrict rj = s->re + (m | cbit | tbit), *restrict ij = s->im + (m | cbit | tbit);
            for (int64_t l = 0; l < abit; ++l) {
                const double r = ri[l], v = ii[l];
                ri[l] = rj[l];
                ii[l] = ij[l];
                rj[l] = r;
                ij[l] = v;
            }
        }
    }
}

/* sum_q <Z_q> = sum_i |a_i|^2 (n - 2 popcount(i)). */
static double sum_z(const state_t *s, int n) {
    double total = 0.0;
    for (int64_t i = 0; i < s->dim; ++i) {
        const double p = s->re[i] * s->re[i] + s->im[i] * s->im[i];
        total += p * (double)(n - 2 * __builtin_popcountll((unsigned long long)i));
    }
    return total;
}

/* One circuit: inputs x [n], weights w [3 n L] with w[shifted] += shift. */
static double run_circuit(state_t *s, int n, int layers, const double *x, const double *w,
                          int64_t shifted, double shift) {
    memset(s->re, 0, (size_t)s->dim * sizeof(double));
    memset(s->im, 0, (size_t)s->dim * sizeof(double));
    s->re[0] = 1.0;
    for (int q = 0; q < n; ++q) apply_ry(s, q, M_PI * x[q]);
    int64_t k = 0;
    for (int l = 0; l < layers; ++l) {
        for (int q = 0; q < n; ++q) {
            apply_rx(s, q, w[k] + (k == shifted ? shift : 0.0));
            apply_ry(s, q, w[k + 1] + (k + 1 == shifted ? shift : 0.0));
            apply_rz(s, q, w[k + 2] + (k + 2 == shifted ? shift : 0.0));
            k += 3;
        }
        for (int q = 0; q + 1 < n; ++q) apply_cnot(s, q, q + 1);
    }
    return sum_z(s, n);
}

/*
 * grad [3 n L] = d/dw of mean_b sum_q <Z_q>(x_b, w), by the two-term shift rule.
 * xs is [batch, n] row-major, w is [3 n L]. threads <= 0: OpenMP's default.
 * Returns 0, or -1 when a state could not be allocated.
 */
int ps_gradient(int n, int layers, int batch, const double *xs, const double *w, double *grad,
                int threads) {
    const int64_t p = (int64_t)3 * n * layers;
    const int64_t items = (int64_t)batch * 2 * p;
    double *f = malloc((size_t)items * sizeof(double));
    int failed = 0;
    if (f == NULL) return -1;
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_max_threads();
#else
    threads = 1;
#endif
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        state_t s;
        const size_t bytes = (((size_t)1 << n) * sizeof(double) + 63) / 64 * 64;
        s.dim = (int64_t)1 << n;
        s.re = aligned_alloc(64, bytes);
        s.im = aligned_alloc(64, bytes);
        const int ok = s.re != NULL && s.im != NULL;
        /* Every thread enters the loop (its barrier waits for all); one without a state
         * computes nothing and reports the failure. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < items; ++item) {
            if (!ok) {
                failed = 1;
                continue;
            }
            const int64_t b = item / (2 * p), e = item % (2 * p);
            const double shift = (e % 2 == 0) ? M_PI / 2 : -M_PI / 2;
            f[item] = run_circuit(&s, n, layers, xs + b * n, w, e / 2, shift);
        }
        free(s.re);
        free(s.im);
    }
    if (failed) {
        free(f);
        return -1;
    }
    for (int64_t k = 0; k < p; ++k) {
        double g = 0.0;
        for (int64_t b = 0; b < batch; ++b) g += f[b * 2 * p + 2 * k] - f[b * 2 * p + 2 * k + 1];
        grad[k] = 0.5 * g / batch;
    }
    free(f);
    return 0;
}
